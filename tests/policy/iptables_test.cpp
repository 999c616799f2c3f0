// The iptables policy part in throw-away network namespaces: Felix's chain layout read back
// with iptables-save (both backends), restart without changes, stale chains swept, drift
// repaired, a refused ruleset leaving the old one, and TCP reachability between two pods
// under default-deny and allow policies.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../integration/netns_harness.hpp"
#include "../support/root_gate.hpp"

#include <cnf/plugins/policy_iptables.hpp>
#include <cnf/policy/calculator.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <regex>
#include <sstream>

CNF_TEST_ROOT_GATE("network namespaces and iptables");

using namespace cnf::netpol;
using cnf_test::test_netns;

namespace {

cnf::workload_endpoint pod(std::string ns, std::string name, std::string iface, std::string ip, label_map labels) {
  cnf::workload_endpoint w;
  w.ns = ns;
  w.name = "node1-k8s-" + name + "-eth0";
  w.pod = name;
  w.orchestrator = "k8s";
  w.node = "node1";
  w.container_id = "c-" + name;
  w.endpoint = "eth0";
  w.interface_name = iface;
  w.ip_networks = {cnf::ip_prefix::parse(ip + "/32").value()};
  w.labels = std::move(labels);
  w.profiles = {"kns." + ns, "ksa." + ns + ".default"};
  w.service_account_name = "default";
  return w;
}

policy_def k8s(std::string ns, std::string name, std::string spec) {
  cnf::resource r;
  r.kind = "NetworkPolicy";
  r.ns = std::move(ns);
  r.name = std::move(name);
  r.spec = std::move(spec);
  return parse_k8s_network_policy(r).value();
}

/// `-A <chain> ...` lines of iptables-save, the cali:<hash> replaced by cali:HASH.
std::vector<std::string> saved_chain(const test_netns& ns, const std::string& backend, const std::string& chain) {
  auto out = ns.exec_or_throw("iptables-" + backend + "-save -t filter");
  std::vector<std::string> lines;
  std::istringstream in(out);
  std::string l;
  static const std::regex hash("cali:[A-Za-z0-9_-]{16}");
  while (std::getline(in, l))
    if (l.starts_with("-A " + chain + " ")) lines.push_back(std::regex_replace(l, hash, "cali:HASH"));
  return lines;
}

bool backend_works(const test_netns& ns, const std::string& backend) {
  return ns.exec("iptables-" + backend + "-save -t filter >/dev/null && ipset list -n >/dev/null").ok();
}

}  // namespace

TEST_CASE("a pod in namespace default with no policy gets Felix's seed chain", "[integration]") {
  for (std::string backend : {"nft", "legacy"}) {
    DYNAMIC_SECTION(backend) {
      test_netns node;
      if (!backend_works(node, backend)) {
        WARN("iptables-" << backend << " or ipset does not work in a network namespace here; case skipped");
        continue;
      }
      const std::string iface = "calic9f294a6bbf";
      {
        cnf_test::enter_netns in(node);
        cnf::any_policy plugin{cnf::iptables_policy::dataplane({.backend = backend})};
        calculator calc("node1");
        calc.upsert_namespace("default", {});
        calc.upsert_endpoint(pod("default", "web", iface, "10.65.0.5", {{"app", "web"}}));
        REQUIRE(calc.flush(plugin));
      }
      const std::vector<std::string> seed{
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -m conntrack --ctstate INVALID -j DROP",
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -j MARK --set-xmark 0x0/0x30000",
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -j cali-pri-kns.default",
          "-A cali-tw-" + iface +
              " -m comment --comment \"cali:HASH\" -m mark --mark 0x10000/0x10000 -m comment --comment \"Return if profile accepted\" -j RETURN",
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -j cali-pri-ksa.default.default",
          "-A cali-tw-" + iface +
              " -m comment --comment \"cali:HASH\" -m mark --mark 0x10000/0x10000 -m comment --comment \"Return if profile accepted\" -j RETURN",
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -m comment --comment \"Drop if no profiles matched\" -j DROP",
      };
      CHECK(saved_chain(node, backend, "cali-tw-" + iface) == seed);
      // iptables -L shows the mark clear as Felix's "MARK and 0xfffcffff".
      CHECK(node.exec_or_throw("iptables-" + backend + " -n -L cali-tw-" + iface).find("MARK and 0xfffcffff") != std::string::npos);
      CHECK(saved_chain(node, backend, "FORWARD").at(0) == "-A FORWARD -m comment --comment \"cali:HASH\" -j cali-FORWARD");
      CHECK(saved_chain(node, backend, "cali-from-wl-dispatch") ==
            std::vector<std::string>{"-A cali-from-wl-dispatch -i " + iface + " -m comment --comment \"cali:HASH\" -g cali-fw-" + iface,
                                     "-A cali-from-wl-dispatch -m comment --comment \"cali:HASH\" -m comment --comment \"Unknown interface\" -j DROP"});
      CHECK(saved_chain(node, backend, "cali-pri-kns.default") ==
            std::vector<std::string>{"-A cali-pri-kns.default -m comment --comment \"cali:HASH\" -j MARK --set-xmark 0x10000/0x10000",
                                     "-A cali-pri-kns.default -m comment --comment \"cali:HASH\" -m mark --mark 0x10000/0x10000 -j RETURN"});

      // A restarted part with the same state changes nothing; one with a chain someone left
      // behind sweeps it; a rule deleted by hand comes back.
      node.exec_or_throw("iptables-" + backend + " -N cali-stale && iptables-" + backend + " -A cali-stale -j DROP");
      node.exec_or_throw("iptables-" + backend + " -D cali-tw-" + iface + " 2");
      {
        cnf_test::enter_netns in(node);
        cnf::iptables_policy::dataplane dp({.backend = backend});
        calculator calc("node1");
        calc.upsert_namespace("default", {});
        calc.upsert_endpoint(pod("default", "web", iface, "10.65.0.5", {{"app", "web"}}));
        for (auto& u : calc.take_updates()) {
          if (auto* e = std::get_if<update::endpoint_upsert>(&u)) REQUIRE(dp.upsert_endpoint(e->endpoint));
          if (auto* p = std::get_if<update::profile_upsert>(&u)) REQUIRE(dp.upsert_profile(p->profile));
        }
        REQUIRE(dp.apply());
        // Only the chain that differs is rewritten, the stale one deleted.
        const auto want = dp.desired();
        std::string tw_rules;
        for (auto& r : want.at("cali-tw-" + iface).rules) tw_rules += "-A cali-tw-" + iface + " " + r + "\n";
        CHECK(dp.last_restore() == "*filter\n:cali-tw-" + iface + " - [0:0]\n:cali-stale - [0:0]\n" + tw_rules + "-X cali-stale\nCOMMIT\n");
        CHECK(saved_chain(node, backend, "cali-tw-" + iface) == seed);
        CHECK(saved_chain(node, backend, "cali-stale").empty());
        // Again: nothing differs, nothing is written.
        node.exec_or_throw("iptables-" + backend + " -D cali-tw-" + iface + " 1");
        auto d = dp.check_drift();
        REQUIRE(d);
        CHECK(*d == 1);
        CHECK(saved_chain(node, backend, "cali-tw-" + iface) == seed);
        auto again = dp.check_drift();
        REQUIRE(again);
        CHECK(*again == 0);

        // A ruleset the kernel refuses (multiport on a protocol without ports): a clear error,
        // and what was programmed stays.
        cnf::network_policy bad;
        bad.ns = "default";
        bad.name = "bad";
        bad.endpoints = {"default/node1-k8s-web-eth0"};
        cnf::policy_rule r;
        r.protocol = 47;
        r.destination_ports = {{80, 80}};
        bad.ingress = {r};
        REQUIRE(dp.upsert_policy(bad));
        auto refused = dp.apply();
        REQUIRE_FALSE(refused);
        CHECK(refused.error().message.find("refused the change, nothing applied") != std::string::npos);
        INFO(refused.error().message);
        CHECK(refused.error().message.find("cali-pi-default.bad") != std::string::npos);
        CHECK(saved_chain(node, backend, "cali-tw-" + iface) == seed);
        CHECK(saved_chain(node, backend, "cali-pi-default.bad").empty());
      }
    }
  }
}

namespace {

/// A listening TCP socket inside `ns` (the kernel completes handshakes without accept()).
int listen_in(const test_netns& ns, const std::string& ip, int port) {
  cnf_test::enter_netns in(ns);
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 16) != 0) throw std::runtime_error("listen " + ip);
  return s;
}

/// A TCP connect from inside `ns`, 700 ms to complete.
bool connects(const test_netns& ns, const std::string& ip, int port) {
  cnf_test::enter_netns in(ns);
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (!ok && errno == EINPROGRESS) {
    pollfd p{s, POLLOUT, 0};
    if (::poll(&p, 1, 700) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
      ok = err == 0;
    }
  }
  ::close(s);
  return ok;
}

}  // namespace

TEST_CASE("two pods: default deny blocks TCP, an allow policy opens one port", "[integration]") {
  for (std::string backend : {"nft", "legacy"}) {
    DYNAMIC_SECTION(backend) {
      test_netns node, a, b;
      if (!backend_works(node, backend)) {
        WARN("iptables-" << backend << " or ipset does not work in a network namespace here; case skipped");
        continue;
      }
      // Calico's plumbing: /32 in the pod, default via 169.254.1.1, proxy ARP on the host side.
      cnf_test::set_ip_forward(node);
      // Proxy ARP answers for 169.254.1.1 only with a route to it: a default via a spare link.
      node.exec_or_throw("ip link add up0 type veth peer name up1 && ip link set up1 up && ip link set up0 up && ip route add default dev up0");
      for (auto [p, ifc, ip] : {std::tuple{&a, "calia0000000001", "10.65.0.1"}, std::tuple{&b, "calib0000000002", "10.65.0.2"}}) {
        cnf_test::veth_between(node, ifc, *p, "eth0");
        node.exec_or_throw(std::string("sysctl -q -w net.ipv4.conf.") + ifc + ".proxy_arp=1 net.ipv4.neigh." + ifc + ".proxy_delay=0 && ip route add " + ip + "/32 dev " + ifc);
        p->exec_or_throw(std::string("ip addr add ") + ip + "/32 dev eth0 && ip route add 169.254.1.1 dev eth0 scope link && ip route add default via 169.254.1.1");
      }
      int s80 = listen_in(b, "10.65.0.2", 8080), s81 = listen_in(b, "10.65.0.2", 8081);
      REQUIRE(connects(a, "10.65.0.2", 8080));  // no policy programmed yet: plain forwarding

      cnf_test::enter_netns in(node);
      cnf::any_policy plugin{cnf::iptables_policy::dataplane({.backend = backend})};
      calculator calc("node1");
      calc.upsert_namespace("default", {});
      calc.upsert_endpoint(pod("default", "a", "calia0000000001", "10.65.0.1", {{"app", "client"}}));
      calc.upsert_endpoint(pod("default", "b", "calib0000000002", "10.65.0.2", {{"app", "server"}}));
      REQUIRE(calc.flush(plugin));
      CHECK(connects(a, "10.65.0.2", 8080));  // profiles: kns.default allows

      calc.upsert_policy(k8s("default", "deny-all", R"j({"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"]})j"));
      REQUIRE(calc.flush(plugin));
      CHECK_FALSE(connects(a, "10.65.0.2", 8080));
      CHECK_FALSE(connects(a, "10.65.0.2", 8081));

      calc.upsert_policy(k8s("default", "allow-client", R"j({"podSelector": {"matchLabels": {"app": "server"}},
          "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 8080}]}]})j"));
      REQUIRE(calc.flush(plugin));
      CHECK(connects(a, "10.65.0.2", 8080));
      CHECK_FALSE(connects(a, "10.65.0.2", 8081));

      // The client relabelled: it leaves the IP set, the port closes again.
      calc.upsert_endpoint(pod("default", "a", "calia0000000001", "10.65.0.1", {{"app", "other"}}));
      REQUIRE(calc.flush(plugin));
      CHECK_FALSE(connects(a, "10.65.0.2", 8080));
      calc.remove_policy("NetworkPolicy/default/knp.default.deny-all");
      calc.remove_policy("NetworkPolicy/default/knp.default.allow-client");
      REQUIRE(calc.flush(plugin));
      CHECK(connects(a, "10.65.0.2", 8081));
      ::close(s80);
      ::close(s81);
    }
  }
}
