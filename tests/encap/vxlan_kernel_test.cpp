// The vxlan part in a network namespace (root): the device, neighbour and FDB entries it
// makes are read back from the kernel (`ip -d link`, `ip neigh`, `bridge fdb`); the routes it
// wants reach the sink, never the kernel; stop leaves nothing of it and touches nothing else.
// Dual stack: two node namespaces, each with vxlan.calico and vxlan-v6.calico programmed by
// the part and its routes put in the kernel by cnf's route table; pods behind each answer
// ping and ping -6 across the tunnels.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../integration/netns_harness.hpp"
#include "../support/root_gate.hpp"

#include <cnf/event_loop.hpp>
#include <cnf/plugins/vxlan.hpp>
#include <cnf/route_table.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>

CNF_TEST_ROOT_GATE("network namespaces");

namespace {
cnf::ip_prefix pfx(const char* s) { return cnf::ip_prefix::parse(s, true).value(); }
cnf::ip_address ip(const char* s) { return cnf::ip_address::parse(s).value(); }
cnf::mac_address mac(const char* s) { return cnf::mac_address::parse(s).value(); }

struct recording_sink final : cnf::encap_sink {
  std::map<cnf::ip_prefix, cnf::route_entry> routes;
  std::vector<cnf::tunnel_info> tunnels;
  void route_wanted(const cnf::route_entry& r) noexcept override { routes[r.dst] = r; }
  void route_unwanted(const cnf::ip_prefix& p) noexcept override { routes.erase(p); }
  void tunnel_changed(const cnf::tunnel_info& t) noexcept override { tunnels.push_back(t); }
};

cnf::remote_node remote(const char* name, const char* addr, std::vector<cnf::ip_prefix> blocks, const char* tunnel) {
  cnf::remote_node r;
  r.name = name;
  r.addresses = {pfx(addr)};
  r.pod_cidrs = std::move(blocks);
  if (tunnel) r.vxlan_tunnel_address = ip(tunnel);
  return r;
}

/// A node namespace with an uplink eth0 (192.168.90.1/24, MTU 1500) to a peer namespace.
struct node_ns {
  cnf_test::test_netns node, peer;
  node_ns() {
    cnf_test::veth_between(node, "eth0", peer, "eth0");
    node.exec_or_throw("ip addr add 192.168.90.1/24 dev eth0");
  }
};

std::string sh(const cnf_test::test_netns& ns, const std::string& cmd) { return ns.exec_or_throw(cmd); }
bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }
}  // namespace

TEST_CASE("vxlan in a namespace: device, neighbours, FDB, routes to the sink, teardown", "[integration][vxlan]") {
  node_ns ns;
  cnf_test::enter_netns in(ns.node);
  recording_sink sink;
  cnf::node_info self;
  self.name = "node-a";
  self.addresses = {pfx("192.168.90.1/24")};
  self.vxlan_tunnel_address = ip("10.244.0.1");

  cnf::vxlan::encapsulation e(cnf::vxlan::config{});
  e.set_pools({{"default", pfx("10.244.0.0/16"), cnf::encap_mode::cross_subnet}});
  auto t = e.start(self, sink);
  REQUIRE(t);
  CHECK(t->device == "vxlan.calico");
  CHECK(t->mtu == 1450);
  CHECK(t->mac == cnf::vxlan::derive_mac("node-a"));
  CHECK(t->address == ip("10.244.0.1"));

  auto link = sh(ns.node, "ip -d link show vxlan.calico");
  CHECK(has(link, "vxlan id 4096"));
  CHECK(has(link, "local 192.168.90.1 dev eth0"));
  CHECK(has(link, "dstport 4789"));
  CHECK(has(link, "nolearning"));
  CHECK(has(link, "mtu 1450"));
  CHECK(has(link, "link/ether 66:07:02:c1:cc:60"));
  CHECK(has(link, ",UP"));
  CHECK(has(sh(ns.node, "ip -4 addr show dev vxlan.calico"), "inet 10.244.0.1/32"));

  // b on this subnet, c on another (no MAC on its Node: derived), d with no tunnel address yet.
  auto b = remote("node-b", "192.168.90.2/24", {pfx("10.244.1.0/26")}, "10.244.1.0");
  b.vxlan_tunnel_mac = mac("66:00:00:00:00:0b");
  auto c = remote("node-c", "10.99.0.5/24", {pfx("10.244.2.0/26"), pfx("10.244.2.64/26")}, "10.244.2.0");
  e.upsert_node(b);
  e.upsert_node(c);
  e.upsert_node(remote("node-d", "10.99.0.6/24", {pfx("10.244.3.0/26")}, nullptr));
  REQUIRE(e.apply());
  const std::string cmac = cnf::vxlan::derive_mac("node-c").to_string();

  auto neigh = sh(ns.node, "ip neigh show dev vxlan.calico");
  CHECK(has(neigh, "10.244.1.0 lladdr 66:00:00:00:00:0b PERMANENT"));
  CHECK(has(neigh, "10.244.2.0 lladdr " + cmac + " PERMANENT"));
  auto fdb = sh(ns.node, "bridge fdb show dev vxlan.calico");
  CHECK(has(fdb, "66:00:00:00:00:0b dst 192.168.90.2 self permanent"));
  CHECK(has(fdb, cmac + " dst 10.99.0.5 self permanent"));
  // CrossSubnet: only c's blocks through the tunnel; d is a note, not an error.
  CHECK(sink.routes.size() == 2);
  REQUIRE(sink.routes.count(pfx("10.244.2.0/26")));
  CHECK(sink.routes[pfx("10.244.2.0/26")].next_hops == std::vector<cnf::route_next_hop>{{ip("10.244.2.0"), "vxlan.calico", true}});
  auto st = e.status();
  CHECK(st.pending == 0);
  CHECK(st.remote_nodes == 1);
  REQUIRE(st.notes.size() == 1);
  CHECK(has(st.notes[0], "node-d has no VXLAN tunnel address yet"));
  // No kernel route was written by the part.
  CHECK_FALSE(has(sh(ns.node, "ip route show"), "vxlan.calico"));

  // Always: b's block too. The kernel entries stay as they are.
  e.set_pools({{"default", pfx("10.244.0.0/16"), cnf::encap_mode::always}});
  REQUIRE(e.apply());
  CHECK(sink.routes.size() == 3);
  CHECK(sink.routes.count(pfx("10.244.1.0/26")));

  // c leaves: its neighbour, FDB entry and routes go; b's stay.
  e.remove_node("node-c");
  REQUIRE(e.apply());
  neigh = sh(ns.node, "ip neigh show dev vxlan.calico");
  fdb = sh(ns.node, "bridge fdb show dev vxlan.calico");
  CHECK_FALSE(has(neigh, "10.244.2.0"));
  CHECK_FALSE(has(fdb, cmac));
  CHECK(has(neigh, "10.244.1.0 lladdr 66:00:00:00:00:0b PERMANENT"));
  CHECK(sink.routes.size() == 1);

  // b moves to another address: its FDB entry follows.
  b.addresses = {pfx("192.168.90.7/24")};
  e.upsert_node(b);
  REQUIRE(e.apply());
  fdb = sh(ns.node, "bridge fdb show dev vxlan.calico");
  CHECK(has(fdb, "66:00:00:00:00:0b dst 192.168.90.7 self permanent"));
  CHECK_FALSE(has(fdb, "dst 192.168.90.2"));

  // A restarted agent takes the device over: what is right stays, a stale entry goes.
  sh(ns.node, "ip neigh add 10.244.9.9 lladdr 66:00:00:00:00:99 dev vxlan.calico nud permanent");
  const auto index_before = sh(ns.node, "cat /sys/class/net/vxlan.calico/ifindex");
  {
    recording_sink sink2;
    cnf::vxlan::encapsulation again(cnf::vxlan::config{});
    again.set_pools({{"default", pfx("10.244.0.0/16"), cnf::encap_mode::always}});
    again.upsert_node(b);
    REQUIRE(again.start(self, sink2));
    REQUIRE(again.apply());
    CHECK(sh(ns.node, "cat /sys/class/net/vxlan.calico/ifindex") == index_before);  // not re-created
    neigh = sh(ns.node, "ip neigh show dev vxlan.calico");
    CHECK_FALSE(has(neigh, "10.244.9.9"));
    CHECK(has(neigh, "10.244.1.0 lladdr 66:00:00:00:00:0b PERMANENT"));
    CHECK(sink2.routes.size() == 1);
  }

  // Never: everything of the part goes, and nothing else.
  e.set_pools({{"default", pfx("10.244.0.0/16"), cnf::encap_mode::never}});
  REQUIRE(e.apply());
  CHECK(sink.routes.empty());
  CHECK_FALSE(ns.node.ip("link show vxlan.calico").ok());
  CHECK(e.status().tunnel.mtu == 0);
  // ... and back, then stop.
  e.set_pools({{"default", pfx("10.244.0.0/16"), cnf::encap_mode::always}});
  REQUIRE(e.apply());
  CHECK(ns.node.ip("link show vxlan.calico").ok());
  CHECK(has(sh(ns.node, "bridge fdb show dev vxlan.calico"), "66:00:00:00:00:0b dst 192.168.90.7"));
  CHECK(sink.routes.size() == 1);
  REQUIRE(e.stop());
  CHECK(sink.routes.empty());
  CHECK_FALSE(ns.node.ip("link show vxlan.calico").ok());
  CHECK_FALSE(has(sh(ns.node, "ip neigh show; bridge fdb show"), "66:00:00:00:00:0b"));
  CHECK(has(sh(ns.node, "ip -4 addr show dev eth0"), "192.168.90.1/24"));
  CHECK(has(sh(ns.node, "ip link show eth0"), "UP"));
}

TEST_CASE("vxlan in a namespace: the profile's MTU, and a tunnel address that arrives later", "[integration][vxlan]") {
  node_ns ns;
  cnf_test::enter_netns in(ns.node);
  recording_sink sink;
  cnf::node_info self;
  self.name = "node-a";
  self.addresses = {pfx("192.168.90.1/24")};
  cnf::vxlan::config cfg;
  cfg.mtu = 1400;
  cfg.mode = cnf::encap_mode::always;
  cnf::vxlan::encapsulation e(cfg);
  REQUIRE(e.start(self, sink));
  CHECK_FALSE(ns.node.ip("link show vxlan.calico").ok());
  auto st = e.status();
  REQUIRE_FALSE(st.notes.empty());
  CHECK(has(st.notes[0], "waiting for this node's VXLAN tunnel address"));
  self.vxlan_tunnel_address = ip("10.244.0.1");
  self.vxlan_tunnel_mac = mac("66:aa:bb:cc:dd:ee");
  REQUIRE(e.set_node(self));
  REQUIRE(e.apply());
  auto link = sh(ns.node, "ip -d link show vxlan.calico");
  CHECK(has(link, "mtu 1400"));
  CHECK(has(link, "link/ether 66:aa:bb:cc:dd:ee"));
  REQUIRE_FALSE(sink.tunnels.empty());
  CHECK(sink.tunnels.back().mtu == 1400);
  REQUIRE(e.stop());
  CHECK_FALSE(ns.node.ip("link show vxlan.calico").ok());
}

TEST_CASE("vxlan in a namespace: a VNI or port already in use is a clear error and leaves nothing", "[integration][vxlan]") {
  node_ns ns;
  cnf_test::enter_netns in(ns.node);
  recording_sink sink;
  cnf::node_info self;
  self.name = "node-a";
  self.addresses = {pfx("192.168.90.1/24")};
  self.vxlan_tunnel_address = ip("10.244.0.1");
  sh(ns.node, "ip link add other0 type vxlan id 4096 dstport 4789 local 192.168.90.1 dev eth0");
  cnf::vxlan::config cfg;
  cfg.mode = cnf::encap_mode::always;
  {
    cnf::vxlan::encapsulation e(cfg);
    auto r = e.start(self, sink);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("VNI 4096 on UDP port 4789 is already used by device other0"));
    CHECK_FALSE(ns.node.ip("link show vxlan.calico").ok());
  }
  sh(ns.node, "ip link del other0");

  // A UDP socket of another program on the port: the device cannot come up; it is removed again.
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(4790);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  cfg.port = 4790;
  {
    cnf::vxlan::encapsulation e(cfg);
    auto r = e.start(self, sink);
    ::close(fd);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("UDP port 4790 is already in use"));
    CHECK_FALSE(ns.node.ip("link show vxlan.calico").ok());
  }
  // A device of another kind holding the name is left alone.
  sh(ns.node, "ip link add vxlan.calico type veth peer name vx-peer");
  {
    cfg.mode = cnf::encap_mode::never;
    cnf::vxlan::encapsulation e(cfg);
    auto r = e.start(self, sink);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("not a vxlan device"));
    CHECK(ns.node.ip("link show vxlan.calico").ok());
  }
}

namespace {
/// Hands the part's routes to a cnf route table (owner "vxlan"), as the agent does.
struct table_sink final : cnf::encap_sink {
  cnf::route_table& rt;
  std::vector<cnf::tunnel_info> tunnels;
  explicit table_sink(cnf::route_table& t) : rt(t) {}
  void route_wanted(const cnf::route_entry& r) noexcept override { rt.set("vxlan", r); }
  void route_unwanted(const cnf::ip_prefix& p) noexcept override { rt.remove("vxlan", p); }
  void tunnel_changed(const cnf::tunnel_info& t) noexcept override { tunnels.push_back(t); }
};

/// One node: its namespace, a pod namespace behind a veth (IPv4 and IPv6 pod addresses, the
/// node's end the pod's gateway), the part and a route table opened in the node namespace.
struct dual_node {
  cnf_test::test_netns ns, pod;
  cnf::event_loop loop;  // never run: the test applies the table itself
  std::unique_ptr<cnf::route_table> rt;
  std::unique_ptr<table_sink> sink;
  cnf::vxlan::encapsulation part{cnf::vxlan::config{}};
  cnf::node_info self;

  dual_node(const std::string& name, int n) {
    const std::string i = std::to_string(n);
    cnf_test::veth_between(pod, "eth0", ns, "cali" + i);
    pod.exec_or_throw("ip addr add 10.244." + i + ".5/24 dev eth0 && ip route add default via 10.244." + i + ".1 && "
                      "ip -6 addr add fd00:244:0:" + i + "::5/64 dev eth0 nodad && ip -6 route add default via fd00:244:0:" + i + "::1");
    ns.exec_or_throw("ip addr add 10.244." + i + ".1/24 dev cali" + i + " && ip -6 addr add fd00:244:0:" + i + "::1/64 dev cali" + i + " nodad");
    cnf_test::set_ip_forward(ns);
    self.name = name;
    self.addresses = {pfx(("192.168.90." + i + "/24").c_str()), pfx(("fd00:90::" + i + "/64").c_str())};
    self.vxlan_tunnel_address = ip(("10.244." + i + ".0").c_str());
    self.vxlan_tunnel_address_v6 = ip(("fd00:244:0:" + i + "::").c_str());
    cnf_test::enter_netns in(ns);
    cnf::route_table::options o;
    o.watch_kernel = false;
    rt = std::make_unique<cnf::route_table>(loop, o);
    sink = std::make_unique<table_sink>(*rt);
  }
  cnf::remote_node as_remote(int n) const {
    const std::string i = std::to_string(n);
    cnf::remote_node r;
    r.name = self.name;
    r.addresses = self.addresses;
    r.pod_cidrs = {pfx(("10.244." + i + ".0/24").c_str()), pfx(("fd00:244:0:" + i + "::/64").c_str())};
    r.vxlan_tunnel_address = self.vxlan_tunnel_address;
    r.vxlan_tunnel_address_v6 = self.vxlan_tunnel_address_v6;
    return r;
  }
  void apply_routes() {
    auto r = rt->apply_now();
    if (!r) FAIL("route table: " << r.error().message);
  }
};

const std::vector<cnf::encap_pool> dual_pools{{"v4", pfx("10.244.0.0/16"), cnf::encap_mode::always},
                                              {"v6", pfx("fd00:244::/48"), cnf::encap_mode::always}};
}  // namespace

TEST_CASE("vxlan dual stack between two node namespaces: vxlan-v6.calico carries ping -6 between pods", "[integration][vxlan][ipv6]") {
  dual_node a("node-a", 1), b("node-b", 2);
  cnf_test::veth_between(a.ns, "eth0", b.ns, "eth0");
  a.ns.exec_or_throw("ip addr add 192.168.90.1/24 dev eth0 && ip -6 addr add fd00:90::1/64 dev eth0 nodad");
  b.ns.exec_or_throw("ip addr add 192.168.90.2/24 dev eth0 && ip -6 addr add fd00:90::2/64 dev eth0 nodad");
  const auto links_before = a.ns.ip("-o link show").output;
  const auto routes6_before = a.ns.ip("-6 route show").output;

  for (auto* n : {&a, &b}) {
    cnf_test::enter_netns in(n->ns);
    n->part.set_pools(dual_pools);
    auto t = n->part.start(n->self, *n->sink);
    REQUIRE(t);
    CHECK(t->device == "vxlan.calico");
  }
  a.part.upsert_node(b.as_remote(2));
  b.part.upsert_node(a.as_remote(1));
  for (auto* n : {&a, &b}) {
    cnf_test::enter_netns in(n->ns);
    REQUIRE(n->part.apply());
    n->apply_routes();
  }

  // The IPv6 device, as Calico makes it: VNI 4096, port 4789, over the node's IPv6 address,
  // MTU uplink - 70, its derived MAC, the IPv6 tunnel address (no DAD), up.
  auto link = sh(a.ns, "ip -d link show vxlan-v6.calico");
  CHECK(has(link, "vxlan id 4096"));
  CHECK(has(link, "local fd00:90::1 dev eth0"));
  CHECK(has(link, "dstport 4789"));
  CHECK(has(link, "nolearning"));
  CHECK(has(link, "mtu 1430"));
  CHECK(has(link, "link/ether " + cnf::vxlan::derive_mac_v6("node-a").to_string()));
  CHECK(has(link, ",UP"));
  auto addr6 = sh(a.ns, "ip -6 addr show dev vxlan-v6.calico");
  CHECK(has(addr6, "inet6 fd00:244:0:1::/128"));
  INFO(addr6);
  CHECK_FALSE(has(addr6, "fd00:244:0:1::/128 scope global tentative"));
  CHECK(has(sh(a.ns, "ip -d link show vxlan.calico"), "local 192.168.90.1 dev eth0"));  // both, same VNI and port
  auto st = a.part.status();
  CHECK(st.mode_v6 == cnf::encap_mode::always);
  CHECK(st.tunnel_v6.device == "vxlan-v6.calico");
  CHECK(st.tunnel_v6.address == ip("fd00:244:0:1::"));
  CHECK(st.tunnel_v6.mtu == 1430);
  CHECK(st.tunnel.mtu == 1450);
  CHECK(st.routes == 2);
  CHECK(st.notes.empty());
  bool told_v6 = false;
  for (auto& t : a.sink->tunnels) told_v6 = told_v6 || (t.family == cnf::ip_family::v6 && t.address == ip("fd00:244:0:1::"));
  CHECK(told_v6);

  // Node b in a's kernel: the IPv6 neighbour, the FDB entry to b's IPv6 address, the route.
  const std::string bmac6 = cnf::vxlan::derive_mac_v6("node-b").to_string();
  CHECK(has(sh(a.ns, "ip -6 neigh show dev vxlan-v6.calico"), "fd00:244:0:2:: lladdr " + bmac6 + " PERMANENT"));
  CHECK(has(sh(a.ns, "bridge fdb show dev vxlan-v6.calico"), bmac6 + " dst fd00:90::2 self permanent"));
  CHECK(has(sh(a.ns, "ip -6 route show proto 80"), "fd00:244:0:2::/64 via fd00:244:0:2:: dev vxlan-v6.calico"));
  CHECK(has(sh(a.ns, "ip -6 route show proto 80"), "onlink"));
  CHECK(has(sh(a.ns, "ip route show proto 80"), "10.244.2.0/24 via 10.244.2.0 dev vxlan.calico onlink"));

  // Pod to pod, both families; the IPv6 echo went through vxlan-v6.calico.
  CHECK(cnf_test::ping_ok(a.pod, "fd00:244:0:2::5", 2));
  CHECK(cnf_test::ping_ok(b.pod, "fd00:244:0:1::5", 2));
  CHECK(cnf_test::ping_ok(a.pod, "10.244.2.5", 2));
  CHECK(std::stoul(sh(a.ns, "cat /sys/class/net/vxlan-v6.calico/statistics/tx_packets")) >= 2);

  // The IPv6 pool goes to Never: only the IPv6 device and what it made go; IPv4 carries on.
  {
    cnf_test::enter_netns in(a.ns);
    a.part.set_pools({dual_pools[0], {"v6", pfx("fd00:244::/48"), cnf::encap_mode::never}});
    REQUIRE(a.part.apply());
    a.apply_routes();
  }
  CHECK_FALSE(a.ns.ip("link show vxlan-v6.calico").ok());
  CHECK_FALSE(has(sh(a.ns, "ip -6 route show"), "fd00:244:0:2::/64"));
  CHECK(a.part.status().tunnel_v6.mtu == 0);
  CHECK(cnf_test::ping_ok(a.pod, "10.244.2.5", 1));
  CHECK_FALSE(cnf_test::ping_ok(a.pod, "fd00:244:0:2::5", 1));

  // Teardown: stop leaves each node's kernel as it was before the part started.
  for (auto* n : {&a, &b}) {
    cnf_test::enter_netns in(n->ns);
    REQUIRE(n->part.stop());
    n->apply_routes();
    CHECK(n->rt->desired().empty());
  }
  CHECK(a.ns.ip("-o link show").output == links_before);
  CHECK(a.ns.ip("-6 route show").output == routes6_before);
  CHECK_FALSE(has(sh(b.ns, "ip -o link show"), "vxlan"));
  CHECK(sh(b.ns, "ip route show proto 80; ip -6 route show proto 80").empty());
  CHECK_FALSE(has(sh(b.ns, "ip -6 neigh show; bridge fdb show"), cnf::vxlan::derive_mac_v6("node-a").to_string()));
}

TEST_CASE("vxlan IPv6: a node without an IPv6 address gets no vxlan-v6.calico, and says why", "[integration][vxlan][ipv6]") {
  node_ns ns;
  cnf_test::enter_netns in(ns.node);
  recording_sink sink;
  cnf::node_info self;
  self.name = "node-a";
  self.addresses = {pfx("192.168.90.1/24")};
  self.vxlan_tunnel_address = ip("10.244.0.1");
  self.vxlan_tunnel_address_v6 = ip("fd00:244::1");
  cnf::vxlan::encapsulation e(cnf::vxlan::config{});
  e.set_pools(dual_pools);
  REQUIRE(e.start(self, sink));
  REQUIRE(e.apply());
  CHECK(ns.node.ip("link show vxlan.calico").ok());
  CHECK_FALSE(ns.node.ip("link show vxlan-v6.calico").ok());
  auto st = e.status();
  REQUIRE(st.notes.size() == 1);
  CHECK(has(st.notes[0], "this node has no IPv6 address: no vxlan-v6.calico"));
  // An IPv6 address arrives (and its uplink has a bigger MTU): the device follows, MTU - 70.
  sh(ns.node, "ip link set eth0 mtu 9000 && ip -6 addr add fd00:90::1/64 dev eth0 nodad");
  self.addresses.push_back(pfx("fd00:90::1/64"));
  REQUIRE(e.set_node(self));
  REQUIRE(e.apply());
  CHECK(has(sh(ns.node, "ip -d link show vxlan-v6.calico"), "mtu 8930"));
  CHECK(e.status().notes.empty());
  REQUIRE(e.stop());
  CHECK_FALSE(has(sh(ns.node, "ip -o link show"), "vxlan"));
}
