// The ipip part without a kernel: the shared mode decisions (cnf/encap_decision.hpp), the
// per-node plan, the kernel datapath's requests (decoded back: this machine cannot make an
// ipip device), the eBPF map keys, the routes of both datapaths, and the plugin's settings.
#include <cnf/encap_decision.hpp>
#include <cnf/loader.hpp>
#include <cnf/netlink/vxlan.hpp>
#include <cnf/plugins/ipip.hpp>

#include <catch2/catch.hpp>

#include <linux/if_tunnel.h>

namespace {
cnf::ip_prefix pfx(const char* s) { return cnf::ip_prefix::parse(s, true).value(); }
cnf::ip_address ip(const char* s) { return cnf::ip_address::parse(s).value(); }

cnf::node_info self_node() {
  cnf::node_info n;
  n.name = "node-a";
  n.addresses = {pfx("192.168.50.1/24")};
  return n;
}
cnf::remote_node remote(const char* name, const char* addr, std::vector<cnf::ip_prefix> blocks) {
  cnf::remote_node r;
  r.name = name;
  if (addr) r.addresses = {pfx(addr)};
  r.pod_cidrs = std::move(blocks);
  return r;
}
}  // namespace

static_assert(cnf::check_encapsulation<cnf::ipip::encapsulation>());

TEST_CASE("encap decisions: one CrossSubnet rule for every part", "[unit][ipip]") {
  auto self = self_node();
  CHECK_FALSE(cnf::crosses_subnet(self, remote("b", "192.168.50.2/24", {})));
  CHECK(cnf::crosses_subnet(self, remote("c", "192.168.51.2/24", {})));
  CHECK(cnf::crosses_subnet(self, remote("d", nullptr, {})));
  CHECK(cnf::encap_needed(cnf::encap_mode::always, false));
  CHECK(cnf::encap_needed(cnf::encap_mode::cross_subnet, true));
  CHECK_FALSE(cnf::encap_needed(cnf::encap_mode::cross_subnet, false));
  CHECK_FALSE(cnf::encap_needed(cnf::encap_mode::never, true));
  std::vector<cnf::encap_pool> pools{{"wide", pfx("10.244.0.0/16"), cnf::encap_mode::always},
                                     {"narrow", pfx("10.244.8.0/21"), cnf::encap_mode::never}};
  CHECK(cnf::encap_mode_of(pfx("10.244.1.0/26"), pools, std::nullopt) == cnf::encap_mode::always);
  CHECK(cnf::encap_mode_of(pfx("10.244.9.0/26"), pools, std::nullopt) == cnf::encap_mode::never);
  CHECK(cnf::encap_mode_of(pfx("10.9.0.0/26"), pools, std::nullopt) == cnf::encap_mode::never);
  CHECK(cnf::encap_mode_of(pfx("10.244.9.0/26"), pools, cnf::encap_mode::cross_subnet) == cnf::encap_mode::cross_subnet);
  auto bad = cnf::parse_encap_mode("always", "IPPool/p: spec.ipipMode");
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::Contains("spec.ipipMode: 'always' is not a mode"));
}

TEST_CASE("ipip: the plan per node follows the pools' ipipMode", "[unit][ipip]") {
  auto self = self_node();
  std::vector<cnf::encap_pool> pools{{"p", pfx("10.244.0.0/16"), cnf::encap_mode::cross_subnet}};
  std::string note;
  auto near = cnf::ipip::plan(self, remote("b", "192.168.50.2/24", {pfx("10.244.1.0/26")}), pools, std::nullopt, note);
  REQUIRE(near);
  CHECK(near->blocks.empty());  // same subnet: no tunnel in CrossSubnet
  auto far = cnf::ipip::plan(self, remote("c", "192.168.51.2/24", {pfx("10.244.2.64/26"), pfx("10.244.2.0/26"), pfx("fd00::/122")}),
                             pools, std::nullopt, note);
  REQUIRE(far);
  CHECK(far->node_address == ip("192.168.51.2"));
  CHECK(far->blocks == std::vector<cnf::ip_prefix>{pfx("10.244.2.0/26"), pfx("10.244.2.64/26")});  // sorted, IPv4 only
  auto always = cnf::ipip::plan(self, remote("b", "192.168.50.2/24", {pfx("10.244.1.0/26")}), pools, cnf::encap_mode::always, note);
  CHECK(always->blocks.size() == 1);
  CHECK_FALSE(cnf::ipip::plan(self, remote("d", nullptr, {pfx("10.244.3.0/26")}), pools, std::nullopt, note));
  CHECK_THAT(note, Catch::Contains("node d has no IPv4 address"));
}

TEST_CASE("ipip: the kernel datapath's requests, decoded back", "[unit][ipip][netlink]") {
  namespace nl = cnf::netlink;
  auto m = cnf::ipip::new_ipip_msg("tunl0", 1480);
  CHECK(m.nlh()->nlmsg_type == RTM_NEWLINK);
  CHECK((m.nlh()->nlmsg_flags & (NLM_F_CREATE | NLM_F_EXCL)) == (NLM_F_CREATE | NLM_F_EXCL));
  auto link = nl::parse_link(*m.nlh());
  REQUIRE(link);
  CHECK(link->name == "tunl0");
  CHECK(link->mtu == 1480);
  CHECK(link->kind == "ipip");
  std::array<const nlattr*, IFLA_MAX + 1> tb;
  nl::detail::parse_attrs(*m.nlh(), sizeof(ifinfomsg), tb);
  std::array<const nlattr*, IFLA_INFO_MAX + 1> li;
  nl::detail::parse_nested(tb[IFLA_LINKINFO], li);
  std::array<const nlattr*, IFLA_IPTUN_MAX + 1> tun;
  nl::detail::parse_nested(li[IFLA_INFO_DATA], tun);
  REQUIRE(tun[IFLA_IPTUN_PMTUDISC]);
  CHECK(mnl_attr_get_u8(tun[IFLA_IPTUN_PMTUDISC]) == 1);
  REQUIRE(tun[IFLA_IPTUN_PROTO]);
  CHECK(mnl_attr_get_u8(tun[IFLA_IPTUN_PROTO]) == IPPROTO_IPIP);
  CHECK_FALSE(tun[IFLA_IPTUN_LOCAL]);  // Calico's tunl0: any local, any remote
  CHECK_FALSE(tun[IFLA_IPTUN_REMOTE]);

  CHECK(cnf::ipip::kernel_lacks_ipip(EOPNOTSUPP));
  CHECK_FALSE(cnf::ipip::kernel_lacks_ipip(EEXIST));
  CHECK_FALSE(cnf::ipip::kernel_lacks_ipip(EPERM));
}

TEST_CASE("ipip: routes of both datapaths, and the eBPF map keys", "[unit][ipip]") {
  auto k = cnf::ipip::kernel_route(pfx("10.244.2.5/26"), ip("192.168.51.2"), "tunl0");
  CHECK(k.dst == pfx("10.244.2.0/26"));
  CHECK(k.next_hops == std::vector<cnf::route_next_hop>{{ip("192.168.51.2"), "tunl0", true}});
  CHECK(k.mtu == 0);  // tunl0's own MTU applies
  auto e = cnf::ipip::ebpf_route(pfx("10.244.2.0/26"), ip("192.168.50.254"), "eth0", 1480);
  CHECK(e.next_hops == std::vector<cnf::route_next_hop>{{ip("192.168.50.254"), "eth0", false}});
  CHECK(e.mtu == 1480);
  auto key = cnf::ipip::lpm_key_of(pfx("10.244.2.77/26"));
  CHECK(key.prefixlen == 26);
  const auto* b = reinterpret_cast<const unsigned char*>(&key.addr);
  CHECK((b[0] == 10 && b[1] == 244 && b[2] == 2 && b[3] == 64));  // network order, host bits cleared
  const auto v = cnf::ipip::be32_of(ip("192.168.51.2"));
  const auto* vb = reinterpret_cast<const unsigned char*>(&v);
  CHECK((vb[0] == 192 && vb[1] == 168 && vb[2] == 51 && vb[3] == 2));
}

TEST_CASE("ipip: without a kernel start, changes only wait for apply", "[unit][ipip]") {
  cnf::ipip::encapsulation e;
  e.upsert_node(remote("b", "192.168.50.2/24", {pfx("10.244.1.0/26")}));
  e.upsert_node(remote("b", "192.168.50.2/24", {pfx("10.244.1.0/26")}));
  auto st = e.status();
  CHECK(st.pending == 2);  // the datapath, and node b
  CHECK(st.mode == cnf::encap_mode::never);
  CHECK(e.in_use() == cnf::ipip::datapath::automatic);
  e.set_pools({{"p", pfx("10.244.0.0/16"), cnf::encap_mode::always}});
  CHECK(e.status().mode == cnf::encap_mode::always);
  CHECK(cnf::ipip::parse_datapath("ebpf", "datapath").value() == cnf::ipip::datapath::ebpf);
  CHECK_THAT(cnf::ipip::parse_datapath("bpf", "datapath").error().message, Catch::Contains("expected auto, kernel or ebpf"));
}

TEST_CASE("ipip plugin: the [encapsulation] section, and bad values named by key", "[unit][ipip][plugin]") {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  auto lp = loader.find(cnf::part::encapsulation, "ipip");
  if (!lp) {
    WARN("plugin not built: " << lp.error().message);
    return;
  }
  const std::string good = "[encapsulation]\nplugin = 'ipip'\ndatapath = 'ebpf'\nmtu = 1400\nmode = 'CrossSubnet'\n";
  CHECK(cnf::plugin_loader::validate(*lp, {good, "p.toml", "encapsulation"}));
  const std::string bad = "[encapsulation]\nplugin = 'ipip'\ndatapath = 'xdp'\nmtu = 70000\nmode = 'crosssubnet'\n";
  auto r = cnf::plugin_loader::validate(*lp, {bad, "p.toml", "encapsulation"});
  REQUIRE_FALSE(r);
  const auto& m = r.error().message;
  CHECK_THAT(m, Catch::Contains("encapsulation.datapath: 'xdp' is not a datapath; expected auto, kernel or ebpf"));
  CHECK_THAT(m, Catch::Contains("encapsulation.mtu: must be 0"));
  CHECK_THAT(m, Catch::Contains("encapsulation.mode: 'crosssubnet' is not a mode"));
}
