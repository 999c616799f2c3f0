// `cnf agent` with the vxlan part on a dual-stack cluster (root): two node namespaces joined by
// a veth with an IPv4 and an IPv6 address each, calico-ipam with an IPv4 and an IPv6 pool
// whose vxlanMode is Always, no routing plugin. Each agent gets its IPv6 tunnel address from
// the IPv6 pool (handle vxlan-v6-tunnel-addr-<node>), writes it on its Node with the MAC of
// vxlan-v6.calico, and programs the other node (neighbour, FDB entry to its IPv6 address,
// route to its IPv6 block via its IPv6 tunnel address); the tunnel addresses answer ping -6.
// The IPv6 pool set to Never takes all of it away again, and leaves IPv4 alone.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/root_gate.hpp"
#include "../agent/agent_support.hpp"  // after root_gate.hpp (it uses cnf_test's process helpers)

#include <boost/json.hpp>

#include <signal.h>
#include <unistd.h>

CNF_TEST_ROOT_GATE("network namespaces and routes");

using namespace agent_test;

namespace {
std::string dual_profile(const std::string& name, int i, const std::filesystem::path& store, const std::string& log) {
  const std::string n = std::to_string(i);
  return "[node]\nname = \"" + name + "\"\nipv4_address = \"192.168.78." + n + "/24\"\nipv6_address = \"fd00:78::" + n + "/64\"\n\n" +
         "[datastore]\nplugin = \"local\"\ndir = \"" + store.string() + "\"\nfsync = false\n\n" +
         "[ipam]\nplugin = \"calico-ipam\"\n"
         "[[ipam.pools]]\ncidr = \"10.244.0.0/16\"\nblock_size = 26\nvxlan_mode = \"Always\"\n"
         "[[ipam.pools]]\ncidr = \"fd00:244::/48\"\nblock_size = 122\nvxlan_mode = \"Always\"\n\n"
         "[encapsulation]\nplugin = \"vxlan\"\n\n"
         "[agent]\nhealth_port = " + std::to_string(health_port) + "\n\n[cni]\nlog_file = \"" + log + "\"\nlog_level = \"debug\"\n";
}
std::string spec_field(cnf::any_datastore& ds, const std::string& node, const char* field) {
  auto r = ds.get({"Node", "", node});
  if (!r) return {};
  auto v = boost::json::parse(r->spec).as_object();
  auto* f = v.if_contains(field);
  return f && f->is_string() ? std::string(f->as_string()) : std::string();
}
}  // namespace

TEST_CASE("agents with vxlan on a dual-stack cluster: vxlan-v6.calico, IPv6 tunnel addresses on the Nodes, ping -6 across",
          "[integration][agent][vxlan][ipv6]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  cnf_test::temp_dir dir("/tmp/cnf-vxlan6-agent-");
  test_netns a, b;
  cnf_test::veth_between(a, "eth0", b, "eth0");
  a.exec_or_throw("ip addr add 192.168.78.1/24 dev eth0 && ip -6 addr add fd00:78::1/64 dev eth0 nodad");
  b.exec_or_throw("ip addr add 192.168.78.2/24 dev eth0 && ip -6 addr add fd00:78::2/64 dev eth0 nodad");
  const auto store = dir.path / "store";
  node_setup na{a, "node-a", "", (dir.path / "a.toml").string(), (dir.path / "a.log").string()};
  node_setup nb{b, "node-b", "", (dir.path / "b.toml").string(), (dir.path / "b.log").string()};
  cnf_test::write_file(na.profile, dual_profile("node-a", 1, store, na.log));
  cnf_test::write_file(nb.profile, dual_profile("node-b", 2, store, nb.log));
  // The pools as `cnf apply -f` writes them (the IPAM writes its profile's pools only at its
  // first assignment).
  auto ds = open_store(na.profile);
  REQUIRE(ds.create({"IPPool", "", "default-ipv4-ippool", {},
                     R"j({"cidr":"10.244.0.0/16","blockSize":26,"nodeSelector":"all()","ipipMode":"Never","vxlanMode":"Always"})j", ""}));
  REQUIRE(ds.create({"IPPool", "", "default-ipv6-ippool", {},
                     R"j({"cidr":"fd00:244::/48","blockSize":122,"nodeSelector":"all()","ipipMode":"Never","vxlanMode":"Always"})j", ""}));
  auto agent_a = start_agent(na);
  auto agent_b = start_agent(nb);

  // Each Node gets both tunnel addresses and both MACs (the IPv6 one from the IPv6 pool).
  std::string a6, b6;
  CHECK(wait_for([&] {
    a6 = spec_field(ds, "node-a", "ipv6VXLANTunnelAddr");
    b6 = spec_field(ds, "node-b", "ipv6VXLANTunnelAddr");
    return !a6.empty() && !b6.empty() && !spec_field(ds, "node-b", "vxlanTunnelMACAddrV6").empty();
  }));
  INFO("node-a log:\n" << read_file(na.log).substr(0, 6000));
  REQUIRE_FALSE(a6.empty());
  REQUIRE_FALSE(b6.empty());
  CHECK(cnf::ip_prefix::parse("fd00:244::/48", true).value().contains(cnf::ip_address::parse(a6).value()));
  CHECK_FALSE(spec_field(ds, "node-a", "ipv4VXLANTunnelAddr").empty());
  const std::string amac6 = spec_field(ds, "node-a", "vxlanTunnelMACAddrV6");
  CHECK(amac6 != spec_field(ds, "node-a", "vxlanTunnelMACAddr"));

  // B's kernel: vxlan-v6.calico over B's IPv6 address, A as neighbour and FDB entry, A's
  // IPv6 block via A's IPv6 tunnel address, onlink.
  const std::string a_block = cnf::ip_prefix(cnf::ip_address::parse(a6).value(), 122).canonical().to_string();
  CHECK(wait_for([&] { return b.ip("-6 route show proto 81").output.find(a_block + " via " + a6 + " dev vxlan-v6.calico") != std::string::npos; }));
  INFO("B's IPv6 routes:\n" << b.ip("-6 route show").output);
  CHECK(b.ip("-d link show vxlan-v6.calico").output.find("local fd00:78::2 dev eth0") != std::string::npos);
  CHECK(b.ip("-6 neigh show dev vxlan-v6.calico").output.find(a6 + " lladdr " + amac6 + " PERMANENT") != std::string::npos);
  CHECK(b.exec_or_throw("bridge fdb show dev vxlan-v6.calico").find(amac6 + " dst fd00:78::1 self permanent") != std::string::npos);
  CHECK(b.ip("-d link show vxlan.calico").output.find("local 192.168.78.2 dev eth0") != std::string::npos);

  // Tunnel address to tunnel address, through vxlan-v6.calico both ways.
  CHECK(cnf_test::ping_ok(b, a6, 2));
  CHECK(cnf_test::ping_ok(a, b6, 2));

  // cnf node status shows the IPv6 tunnel.
  auto js = b.exec(cnf_bin + " node status -o json --profile " + nb.profile);
  INFO(js.output);
  REQUIRE(js.ok());
  auto en = boost::json::parse(js.output).as_object().at("encapsulation").as_object();
  REQUIRE(en.contains("ipv6"));
  CHECK(en.at("ipv6").as_object().at("device").as_string() == "vxlan-v6.calico");
  CHECK(en.at("ipv6").as_object().at("address").as_string() == b6);
  CHECK(en.at("ipv6").as_object().at("mtu").as_int64() == 1430);

  // The IPv6 pool to Never, live: vxlan-v6.calico and what it made go on both nodes, the IPv6
  // tunnel addresses leave the Nodes and go back to the pool; IPv4's tunnel stays.
  auto pool = ds.get({"IPPool", "", "default-ipv6-ippool"});
  REQUIRE(pool);
  pool->spec = R"j({"cidr":"fd00:244::/48","blockSize":122,"nodeSelector":"all()","ipipMode":"Never","vxlanMode":"Never"})j";
  REQUIRE(ds.update(*pool));
  CHECK(wait_for([&] {
    return spec_field(ds, "node-a", "ipv6VXLANTunnelAddr").empty() && spec_field(ds, "node-b", "ipv6VXLANTunnelAddr").empty() &&
           !a.ip("link show vxlan-v6.calico").ok() && !b.ip("link show vxlan-v6.calico").ok();
  }));
  CHECK(b.ip("-6 route show proto 81").output.find(a_block) == std::string::npos);
  CHECK(spec_field(ds, "node-a", "vxlanTunnelMACAddrV6").empty());
  CHECK_FALSE(spec_field(ds, "node-a", "ipv4VXLANTunnelAddr").empty());
  CHECK(b.ip("link show vxlan.calico").ok());
  CHECK(wait_for([&] { return read_file(na.log).find("released this node's tunnel address " + a6 + " (vxlan-v6-tunnel-addr-node-a)") != std::string::npos; }));

  CHECK(agent_a->stop(SIGTERM) == 0);
  CHECK(agent_b->stop(SIGTERM) == 0);
}
