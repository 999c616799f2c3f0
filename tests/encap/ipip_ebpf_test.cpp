// The ipip part's eBPF datapath in namespaces (root): two nodes on two subnets joined by a
// router that knows no pod block, a pod behind each node. The part's programs wrap and unwrap
// the pods' packets: a ping between the pods answers, a capture on the router sees only IP
// protocol 4 between the node addresses, TCP works too, and stop leaves no tc filter behind (the
// routes it wanted are withdrawn from the sink; the test, standing in for the agent's route
// table, writes and removes them).
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../integration/netns_harness.hpp"
#include "../support/root_gate.hpp"

#include <cnf/plugins/ipip.hpp>

#include <chrono>
#include <future>
#include <map>
#include <sstream>
#include <thread>

#include <unistd.h>

CNF_TEST_ROOT_GATE("network namespaces");

namespace {
cnf::ip_prefix pfx(const char* s) { return cnf::ip_prefix::parse(s, true).value(); }
bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

/// The agent's route table in miniature: what the part wants goes into the node's kernel.
struct kernel_sink final : cnf::encap_sink {
  const cnf_test::test_netns* ns;
  std::map<cnf::ip_prefix, cnf::route_entry> routes;
  std::vector<cnf::tunnel_info> tunnels;
  explicit kernel_sink(const cnf_test::test_netns& n) : ns(&n) {}
  void route_wanted(const cnf::route_entry& r) noexcept override {
    routes[r.dst] = r;
    auto& h = r.next_hops.at(0);
    (void)ns->ip("route replace " + r.dst.to_string() + " via " + h.gateway.to_string() + " dev " + h.device + (h.onlink ? " onlink" : "") +
                 " proto 81");
  }
  void route_unwanted(const cnf::ip_prefix& p) noexcept override {
    routes.erase(p);
    (void)ns->ip("route del " + p.to_string() + " proto 81");
  }
  void tunnel_changed(const cnf::tunnel_info& t) noexcept override { tunnels.push_back(t); }
};

/// router (r0: 192.168.91.254/24, r1: 192.168.92.254/24) between node a (192.168.91.1) and
/// node b (192.168.92.1); pod pa (10.244.1.5) behind a, pod pb (10.244.2.5) behind b, plumbed
/// as Calico does (a /32 on the pod, proxy ARP on the node's side, a host route to the pod).
struct lab {
  cnf_test::test_netns router, a, b, pa, pb;
  lab() {
    cnf_test::veth_between(router, "r0", a, "eth0");
    cnf_test::veth_between(router, "r1", b, "eth0");
    router.exec_or_throw("ip addr add 192.168.91.254/24 dev r0 && ip addr add 192.168.92.254/24 dev r1");
    cnf_test::set_ip_forward(router);
    plumb(a, "192.168.91.1/24", "192.168.91.254", pa, "10.244.1.5");
    plumb(b, "192.168.92.1/24", "192.168.92.254", pb, "10.244.2.5");
  }
  static void plumb(const cnf_test::test_netns& node, const char* addr, const char* gw, const cnf_test::test_netns& pod, const char* pod_ip) {
    node.exec_or_throw(std::string("ip addr add ") + addr + " dev eth0 && ip route add default via " + gw);
    cnf_test::set_ip_forward(node);
    cnf_test::veth_between(node, "cali0", pod, "eth0");
    node.exec_or_throw(std::string("sysctl -q -w net.ipv4.conf.cali0.proxy_arp=1 && ip route add ") + pod_ip + "/32 dev cali0");
    pod.exec_or_throw(std::string("ip link set eth0 mtu 1480 && ip addr add ") + pod_ip +
                      "/32 dev eth0 && ip route add 169.254.1.1 dev eth0 && ip route add default via 169.254.1.1 dev eth0");
  }
};

cnf::node_info node(const char* name, const char* addr) {
  cnf::node_info n;
  n.name = name;
  n.addresses = {pfx(addr)};
  return n;
}
cnf::remote_node remote(const char* name, const char* addr, const char* block) {
  cnf::remote_node r;
  r.name = name;
  r.addresses = {pfx(addr)};
  r.pod_cidrs = {pfx(block)};
  return r;
}

/// `tcpdump -c n` on the router's interface while `during` runs; what it printed.
std::string capture(const cnf_test::test_netns& router, const std::string& dev, int n, const std::function<void()>& during) {
  auto out = std::async(std::launch::async, [&] {
    return cnf_test::run("ip netns exec " + router.name() + " timeout 5 tcpdump -l -nn -i " + dev + " -c " + std::to_string(n) +
                         " ip 2>&1").output;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // tcpdump is listening by then
  during();
  return out.get();
}
}  // namespace

TEST_CASE("ipip eBPF: pod to pod across two subnets, encapsulated on the wire, nothing left after stop", "[integration][ipip]") {
  lab l;
  // The router knows no pod block: without the tunnel there is no way between the pods.
  CHECK_FALSE(cnf_test::ping_ok(l.pa, "10.244.2.5"));

  cnf::ipip::config cfg;
  cfg.path = cnf::ipip::datapath::ebpf;
  const std::vector<cnf::encap_pool> pools{{"default", pfx("10.244.0.0/16"), cnf::encap_mode::cross_subnet}};
  kernel_sink sa(l.a), sb(l.b);
  cnf::ipip::encapsulation ea(cfg), eb(cfg);
  {
    cnf_test::enter_netns in(l.a);
    ea.set_pools(pools);
    ea.upsert_node(remote("node-b", "192.168.92.1/24", "10.244.2.0/26"));
    auto t = ea.start(node("node-a", "192.168.91.1/24"), sa);
    REQUIRE(t);
    CHECK(t->device == "eth0");
    CHECK(t->mtu == 1480);
    CHECK(ea.in_use() == cnf::ipip::datapath::ebpf);
    REQUIRE(ea.apply());
  }
  {
    cnf_test::enter_netns in(l.b);
    eb.set_pools(pools);
    eb.upsert_node(remote("node-a", "192.168.91.1/24", "10.244.1.0/26"));
    REQUIRE(eb.start(node("node-b", "192.168.92.1/24"), sb));
    REQUIRE(eb.apply());
  }
  // Routes toward the router (the next hop to the other node), on the uplink.
  REQUIRE(sa.routes.size() == 1);
  CHECK(sa.routes.begin()->second.next_hops == std::vector<cnf::route_next_hop>{{cnf::ip_address::parse("192.168.91.254").value(), "eth0", false}});
  const auto egress_a = l.a.exec_or_throw("tc filter show dev eth0 egress");
  CHECK(has(egress_a, "ipip_egress"));
  // The program's id: once detached, the kernel frees it (and its maps): nothing is pinned.
  const auto id_at = egress_a.find(" id ");
  REQUIRE(id_at != std::string::npos);
  const std::string prog_id = std::to_string(std::stoul(egress_a.substr(id_at + 4)));
  CHECK(cnf_test::run("bpftool prog show id " + prog_id).ok());
  CHECK(has(l.a.exec_or_throw("tc filter show dev eth0 ingress"), "ipip_ingress"));
  auto st = ea.status();
  CHECK(st.remote_nodes == 1);
  CHECK(st.routes == 1);
  CHECK(st.pending == 0);
  REQUIRE_FALSE(st.notes.empty());
  CHECK(has(st.notes[0], "datapath ebpf"));

  bool answered = false;
  auto seen = capture(l.router, "r1", 4, [&] { answered = cnf_test::ping_ok(l.pa, "10.244.2.5", 2); });
  CHECK(answered);
  INFO(seen);
  CHECK(has(seen, "192.168.91.1 > 192.168.92.1: IP 10.244.1.5 > 10.244.2.5: ICMP echo request"));
  CHECK(has(seen, "192.168.92.1 > 192.168.91.1: IP 10.244.2.5 > 10.244.1.5: ICMP echo reply"));
  // Never plain on the wire: every pod packet the router sees is inside an outer header.
  std::istringstream lines(seen);
  for (std::string line; std::getline(lines, line);)
    if (has(line, "10.244.")) CHECK((has(line, "IP 192.168.91.1 > 192.168.92.1: IP 10.244.") || has(line, "IP 192.168.92.1 > 192.168.91.1: IP 10.244.")));

  // TCP too (GSO packets wrapped as IP-in-IP and segmented on the way): 8 MB with iperf3, the
  // server in pod b stopped by its PID file.
  const std::string pidfile = "/tmp/cnf-ipip-iperf3-" + std::to_string(::getpid()) + ".pid";
  l.pb.exec_or_throw("iperf3 -s -1 -D -B 10.244.2.5 -p 5201 -I " + pidfile);
  for (int i = 0; i < 100 && cnf_test::run("test -s " + pidfile).status != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto tcp = l.pa.exec("timeout 20 iperf3 -c 10.244.2.5 -p 5201 -n 8M -J");
  (void)cnf_test::run("kill $(cat " + pidfile + ") 2>/dev/null; rm -f " + pidfile);
  INFO(tcp.output);
  CHECK(tcp.ok());
  CHECK(has(tcp.output, "\"sum_received\""));

  // Never: the routes are withdrawn and the programs detached; the pods are cut off again.
  {
    cnf_test::enter_netns in(l.a);
    ea.set_pools({{"default", pfx("10.244.0.0/16"), cnf::encap_mode::never}});
    REQUIRE(ea.apply());
  }
  CHECK(sa.routes.empty());
  CHECK(ea.status().routes == 0);
  CHECK_FALSE(has(l.a.exec_or_throw("tc filter show dev eth0 egress; tc filter show dev eth0 ingress"), "ipip"));
  CHECK_FALSE(has(l.a.exec_or_throw("tc qdisc show dev eth0"), "clsact"));  // it made the qdisc, so it goes
  CHECK_FALSE(cnf_test::ping_ok(l.pa, "10.244.2.5"));
  CHECK_FALSE(cnf_test::run("bpftool prog show id " + prog_id).ok());

  // Stop on b: the same, and nothing else of the node touched.
  {
    cnf_test::enter_netns in(l.b);
    REQUIRE(eb.stop());
  }
  CHECK(sb.routes.empty());
  CHECK_FALSE(has(l.b.exec_or_throw("tc filter show dev eth0 egress; tc filter show dev eth0 ingress; tc qdisc show dev eth0"), "clsact"));
  CHECK_FALSE(has(l.b.exec_or_throw("ip route show proto 81"), "10.244"));
  CHECK(has(l.b.exec_or_throw("ip route show"), "default via 192.168.92.254 dev eth0"));
  CHECK(has(l.b.exec_or_throw("ip route show"), "10.244.2.5 dev cali0"));
  {
    cnf_test::enter_netns in(l.a);
    REQUIRE(ea.stop());
  }
}
