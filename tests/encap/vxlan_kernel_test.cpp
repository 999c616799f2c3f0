// The vxlan part in a network namespace (root): the device, neighbour and FDB entries it
// makes are read back from the kernel (`ip -d link`, `ip neigh`, `bridge fdb`); the routes it
// wants reach the sink, never the kernel; stop leaves nothing of it and touches nothing else.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../integration/netns_harness.hpp"
#include "../support/root_gate.hpp"

#include <cnf/plugins/vxlan.hpp>

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
