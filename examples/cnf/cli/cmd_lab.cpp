// cnf lab: a cluster in a box (lab/lab.hpp says how it is built).
#include "app.hpp"
#include "lab/lab.hpp"

#include <fmt/format.h>

#include <unistd.h>

namespace cnf_app {

void add_lab_command(CLI::App& app) {
  static std::string dir;
  auto* lab = app.add_subcommand(
      "lab",
      "A cluster in a box, as root: nodes are network namespaces joined by a fabric of subnets behind a router namespace,\n"
      "each node runs its own `cnf agent`, pods are added through the real CNI binary, and every node shares one datastore.\n"
      "The lab's state (what it made, by name and PID) lives in its directory; nothing touches the host's network namespace.");
  lab->require_subcommand(1);
  lab->fallthrough();
  lab->add_option("--dir", dir,
                  "The lab's state directory (default: $CNF_LAB_DIR, else /run/cnf-lab/default); its path gives the lab's id, which\n"
                  "prefixes every namespace the lab makes (cnflab-<id>-...), so labs in different directories run side by side");

  // Every command reports its failure as "cnf lab <cmd>: <message>" and exits 1.
  auto guarded = [](const char* what, auto f) {
    return [what, f] {
      if (::geteuid() != 0) {
        fmt::print(stderr, "cnf lab {}: needs root (network namespaces)\n", what);
        exit_code() = 1;
        return;
      }
      try {
        exit_code() = f(lab::resolve_dir(dir));
      } catch (const std::exception& e) {
        fmt::print(stderr, "cnf lab {}: {}\n", what, e.what());
        exit_code() = 1;
      }
    };
  };

  static lab::up_options up;
  static int nodes = 0, subnets = 0;
  auto* u = lab->add_subcommand("up", "Build the lab: namespaces, fabric, datastore, one agent per node, then --pods-per-node pods on each node.\n"
                                      "With no options: the classic Calico lab, k8s-m, k8s-w1 and k8s-w2 on subnet 10.100.0.0/16 and k8s-w0 on\n"
                                      "10.101.0.0/16 behind the router. A failed `up` removes what it made.");
  u->add_option("--nodes", nodes, "N nodes named node-1..node-N instead of the classic four")->check(CLI::Range(1, 100000));
  u->add_option("--pods-per-node", up.pods_per_node, "Pods to add on each node (default 2), named default/pod-<node>-<j>")->check(CLI::NonNegativeNumber);
  u->add_option("--subnets", subnets,
                "Subnets of the fabric (10.100.0.0/16, 10.101.0.0/16, ...), nodes spread round-robin over them; default 2 for the\n"
                "classic lab (k8s-w0 alone on the second), 1 with --nodes. With the direct routing plugin only nodes on one subnet\n"
                "reach each other's pods (across subnets is the encapsulation plugins' job): use --subnets 1 for a fully routed lab")
      ->check(CLI::Range(1, 100));
  u->add_option("--profile", up.profile,
                "Profile every node's is made from (default: the built-in examples/profiles/lab.toml: local datastore,\n"
                "calico-ipam 10.244.0.0/16 in /26 blocks, direct routing); its [ipam] must be calico-ipam");
  u->add_option("--datastore", up.datastore,
                "local: a local-datastore directory in the lab's state directory; etcd: an etcd the lab starts in the router\n"
                "namespace (127.0.0.1:2379 there, and the router's address on each subnet for the nodes). Default: the profile's")
      ->check(CLI::IsMember({"local", "etcd"}));
  u->add_flag("--static-neighbours", up.static_neighbours,
              "Pin each pod's gateway (in the pod) and its address (in the node) as permanent neighbours, for this and every later\n"
              "pod. One kernel keeps every namespace's ARP entries under one limit (net.ipv4.neigh.default.gc_thresh3, 1024 by\n"
              "default, which the lab leaves alone); past ~500 pods dynamic entries overflow it and packets are dropped. The\n"
              "fabric's own neighbours (nodes, router) are always pinned");
  u->add_option("--route-reflectors", up.route_reflectors,
                "Calico's route reflection, written to the datastore before the agents start: the first N nodes labelled\n"
                "route-reflector=true with spec.bgp.routeReflectorClusterID 244.0.0.1, BGPPeer peer-with-route-reflectors\n"
                "(nodeSelector all(), peerSelector route-reflector == 'true') and BGPConfiguration default with\n"
                "nodeToNodeMeshEnabled: false. Needs [routing] plugin = \"bgp\"; default 0 (the node-to-node mesh)")
      ->check(CLI::NonNegativeNumber);
  u->add_flag("--ipv6", up.ipv6,
              "Dual stack: an IPv6 /64 per subnet beside the IPv4 one (fd00:cf:64::/64, fd00:cf:65::/64, ...; router ::1, nodes\n"
              "from ::a), each node's [node] ipv6_address set, pods given an IPv6 address too ([cni] assign_ipv6), and the IPv6 pool\n"
              "fd00:10:244::/48 (block size 122, the IPv4 pool's vxlan_mode) added when the profile has none. `cnf lab ping -6`\n"
              "probes the pods' IPv6 addresses");
  u->add_option("--jobs", up.jobs, "CNI ADDs in flight while adding the pods (default 8)")->check(CLI::Range(1, 256));
  u->callback(guarded("up", [](const std::filesystem::path& d) {
    if (nodes > 0) up.nodes = nodes;
    if (subnets > 0) up.subnets = subnets;
    return lab::up(d, up);
  }));

  auto* pod = lab->add_subcommand("pod", "Add or delete a pod");
  pod->require_subcommand(1);
  static std::string add_key, add_node, add_labels, add_ports, del_key;
  auto* pa = pod->add_subcommand("add", "Make the pod's network namespace and run the CNI ADD in its node's namespace, as a runtime does");
  pa->add_option("pod", add_key, "NAMESPACE/NAME")->required();
  pa->add_option("--node", add_node, "Node to run it on (default: the node with the fewest pods)");
  pa->add_option("--labels", add_labels, "k=v,... written on the pod's WorkloadEndpoint (what policy selectors match) and shown by `status`");
  pa->add_option("--ports", add_ports, "name=PROTO:port,... the pod's named container ports, written as its WorkloadEndpoint's spec.ports (what named ports in policies resolve to)");
  pa->callback(guarded("pod add", [](const std::filesystem::path& d) { return lab::pod_add(d, add_key, add_node, add_labels, add_ports); }));
  auto* pd = pod->add_subcommand("del", "Run the CNI DEL in the pod's node's namespace, then remove the pod's namespace");
  pd->add_option("pod", del_key, "NAMESPACE/NAME")->required();
  pd->callback(guarded("pod del", [](const std::filesystem::path& d) { return lab::pod_del(d, del_key); }));

  static std::string exec_target;
  static std::vector<std::string> exec_cmd;
  auto* ex = lab->add_subcommand("exec", "Run a command inside a node's (or the router's), or a pod's, network namespace; exits with its status.\n"
                                         "In a node, CNF_PROFILE names the node's profile, so `cnf ...` there acts for that node.");
  ex->add_option("target", exec_target, "NODE, router, or NAMESPACE/NAME")->required();
  ex->add_option("cmd", exec_cmd, "-- CMD [ARGS...]")->required();
  ex->positionals_at_end();
  ex->callback(guarded("exec", [](const std::filesystem::path& d) {
    if (!exec_cmd.empty() && exec_cmd.front() == "--") exec_cmd.erase(exec_cmd.begin());
    return lab::exec(d, exec_target, exec_cmd);
  }));

  static lab::ping_options ping;
  static int timeout_ms = 5000;
  auto* pi = lab->add_subcommand("ping", "Probe pod pairs with ICMP echo sent from inside each source pod, all at once; print how many answered\n"
                                         "and name every pair that did not. Exit 0 only if every probed pair answered.");
  pi->add_option("--sample", ping.sample, "Probe K ordered pairs picked at random (default: every ordered pair)");
  pi->add_flag("--same-node", ping.same_node, "Only pairs of pods on one node, plus each pod to its own node's address");
  pi->add_option("--timeout-ms", timeout_ms, "How long unanswered probes are retried (every 250 ms); default 5000")->check(CLI::Range(100, 600000));
  pi->add_flag("-6,--ipv6", ping.ipv6, "Probe the pods' IPv6 addresses with ICMPv6 echo (a lab made with `up --ipv6`) instead of IPv4");
  pi->add_option("--seed", ping.seed, "Seed of the --sample choice (default: random)");
  pi->callback(guarded("ping", [](const std::filesystem::path& d) {
    ping.timeout = std::chrono::milliseconds(timeout_ms);
    return lab::ping(d, ping);
  }));

  lab->add_subcommand("status", "Print the lab: datastore, subnets, nodes with their agents, pods with their addresses. Exit 1 if an agent is not running")
      ->callback(guarded("status", [](const std::filesystem::path& d) { return lab::status(d); }));
  lab->add_subcommand("down", "Remove everything of the lab: its agents and etcd (by PID), every process left in its namespaces, the namespaces,\n"
                              "its files. Also after a partial `up` or a crashed agent; doing it twice is fine.")
      ->callback(guarded("down", [](const std::filesystem::path& d) { return lab::down(d); }));
}

}  // namespace cnf_app
