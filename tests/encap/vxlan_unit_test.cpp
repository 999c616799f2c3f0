// The vxlan part without a kernel: CrossSubnet, the MAC derivation, the per-node plan and its
// kernel diff, and the netlink requests it builds (decoded back).
#include <cnf/loader.hpp>
#include <cnf/netlink/vxlan.hpp>
#include <cnf/plugins/vxlan.hpp>

#include <catch2/catch.hpp>

namespace {
cnf::ip_prefix pfx(const char* s) { return cnf::ip_prefix::parse(s, true).value(); }
cnf::ip_address ip(const char* s) { return cnf::ip_address::parse(s).value(); }
cnf::mac_address mac(const char* s) { return cnf::mac_address::parse(s).value(); }

cnf::node_info self_node() {
  cnf::node_info n;
  n.name = "node-a";
  n.addresses = {pfx("192.168.50.1/24"), pfx("fd00:50::1/64")};
  n.vxlan_tunnel_address = ip("10.244.0.1");
  return n;
}
cnf::remote_node remote(const char* name, const char* addr, std::vector<cnf::ip_prefix> blocks, const char* tunnel = nullptr) {
  cnf::remote_node r;
  r.name = name;
  if (addr) r.addresses = {pfx(addr)};
  r.pod_cidrs = std::move(blocks);
  if (tunnel) r.vxlan_tunnel_address = ip(tunnel);
  return r;
}
using op = cnf::vxlan::kernel_op;
}  // namespace

static_assert(cnf::check_encapsulation<cnf::vxlan::encapsulation>());

TEST_CASE("vxlan: CrossSubnet is decided from this node's subnets", "[unit][vxlan]") {
  auto self = self_node();
  CHECK_FALSE(cnf::vxlan::cross_subnet(self, remote("b", "192.168.50.2/24", {})));
  CHECK(cnf::vxlan::cross_subnet(self, remote("c", "192.168.51.2/24", {})));
  CHECK(cnf::vxlan::cross_subnet(self, remote("d", nullptr, {})));  // no address: elsewhere
  // The remote's own prefix length does not matter; this node's subnets do.
  CHECK_FALSE(cnf::vxlan::cross_subnet(self, remote("e", "192.168.50.9/16", {})));
  self.addresses = {pfx("192.168.50.1/16")};
  CHECK_FALSE(cnf::vxlan::cross_subnet(self, remote("c", "192.168.51.2/24", {})));
}

TEST_CASE("vxlan: a node with no MAC gets Calico's derived one", "[unit][vxlan]") {
  // 0x66 then the first five bytes of SHA-1 of the name (values from Python's hashlib).
  CHECK(cnf::vxlan::derive_mac("node-a") == mac("66:07:02:c1:cc:60"));
  CHECK(cnf::vxlan::derive_mac("k8s-w0") == mac("66:8d:da:b4:58:1a"));
  auto m = cnf::vxlan::derive_mac("anything");
  CHECK((m.bytes[0] & 0x01) == 0);  // unicast
  CHECK((m.bytes[0] & 0x02) == 2);  // locally administered
}

TEST_CASE("vxlan: modes: parse, per pool, override", "[unit][vxlan]") {
  CHECK(cnf::vxlan::parse_mode("CrossSubnet", "x").value() == cnf::encap_mode::cross_subnet);
  auto bad = cnf::vxlan::parse_mode("crosssubnet", "spec.vxlanMode");
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::Contains("spec.vxlanMode") && Catch::Contains("'crosssubnet'") && Catch::Contains("Always, CrossSubnet or Never"));
  std::vector<cnf::encap_pool> pools{{"wide", pfx("10.244.0.0/16"), cnf::encap_mode::always},
                                     {"narrow", pfx("10.244.8.0/21"), cnf::encap_mode::never}};
  CHECK(cnf::vxlan::mode_of(pfx("10.244.1.0/26"), pools, std::nullopt) == cnf::encap_mode::always);
  CHECK(cnf::vxlan::mode_of(pfx("10.244.9.0/26"), pools, std::nullopt) == cnf::encap_mode::never);     // longest pool wins
  CHECK(cnf::vxlan::mode_of(pfx("10.99.0.0/26"), pools, std::nullopt) == cnf::encap_mode::never);      // in no pool
  CHECK(cnf::vxlan::mode_of(pfx("10.244.9.0/26"), pools, cnf::encap_mode::cross_subnet) == cnf::encap_mode::cross_subnet);
}

TEST_CASE("vxlan: the plan of a remote node follows its pools' modes", "[unit][vxlan]") {
  auto self = self_node();
  std::vector<cnf::encap_pool> pools{{"p", pfx("10.244.0.0/16"), cnf::encap_mode::cross_subnet}};
  std::string note;
  auto same = cnf::vxlan::plan(self, remote("b", "192.168.50.2/24", {pfx("10.244.1.0/26")}, "10.244.1.0"), pools, std::nullopt, note);
  REQUIRE(same);
  CHECK(note.empty());
  CHECK(same->blocks.empty());  // same subnet: routed natively, VTEP still programmed
  CHECK(same->mac == cnf::vxlan::derive_mac("b"));
  CHECK(same->node_address == ip("192.168.50.2"));
  auto r = remote("c", "192.168.51.2/24", {pfx("10.244.2.64/26"), pfx("10.244.2.0/26"), pfx("fd10::/122")}, "10.244.2.0");
  r.vxlan_tunnel_mac = mac("aa:bb:cc:dd:ee:ff");
  auto other = cnf::vxlan::plan(self, r, pools, std::nullopt, note);
  REQUIRE(other);
  CHECK(other->blocks == std::vector<cnf::ip_prefix>{pfx("10.244.2.0/26"), pfx("10.244.2.64/26")});  // IPv4 only, sorted
  CHECK(other->mac == mac("aa:bb:cc:dd:ee:ff"));
  CHECK(other->tunnel == ip("10.244.2.0"));
  pools[0].mode = cnf::encap_mode::always;
  CHECK(cnf::vxlan::plan(self, remote("b", "192.168.50.2/24", {pfx("10.244.1.0/26")}, "10.244.1.0"), pools, std::nullopt, note)->blocks.size() == 1);
  pools[0].mode = cnf::encap_mode::never;
  CHECK(cnf::vxlan::plan(self, r, pools, std::nullopt, note)->blocks.empty());

  auto none = cnf::vxlan::plan(self, remote("d", "192.168.51.3/24", {pfx("10.244.3.0/26")}), pools, std::nullopt, note);
  CHECK_FALSE(none);
  CHECK(note == "node d has no VXLAN tunnel address yet (spec.ipv4VXLANTunnelAddr)");
  CHECK_FALSE(cnf::vxlan::plan(self, remote("e", nullptr, {}, "10.244.4.0"), pools, std::nullopt, note));
  CHECK_THAT(note, Catch::Contains("no IPv4 address"));
}

TEST_CASE("vxlan: the kernel diff of a node touches only what changed", "[unit][vxlan]") {
  using t = op::type;
  cnf::vxlan::remote_plan a{ip("10.244.2.0"), mac("66:00:00:00:00:01"), ip("192.168.51.2"), {pfx("10.244.2.0/26")}};
  CHECK(cnf::vxlan::diff("c", a, a).empty());
  auto more = a;
  more.blocks.push_back(pfx("10.244.2.64/26"));
  CHECK(cnf::vxlan::diff("c", a, more).empty());  // blocks are routes, not kernel entries of the part
  CHECK(cnf::vxlan::diff("c", std::nullopt, a) ==
        std::vector<op>{{t::set_neigh, a.tunnel, a.mac, "c"}, {t::set_fdb, a.node_address, a.mac, "c"}});
  CHECK(cnf::vxlan::diff("c", a, std::nullopt) ==
        std::vector<op>{{t::del_neigh, a.tunnel, a.mac, "c"}, {t::del_fdb, a.node_address, a.mac, "c"}});
  auto moved = a;
  moved.node_address = ip("192.168.52.7");  // the node moved: its FDB entry only
  CHECK(cnf::vxlan::diff("c", a, moved) ==
        std::vector<op>{{t::del_fdb, a.node_address, a.mac, "c"}, {t::set_fdb, moved.node_address, a.mac, "c"}});
  auto remac = a;
  remac.mac = mac("66:00:00:00:00:02");  // a new MAC: neighbour replaced in place, FDB re-keyed
  CHECK(cnf::vxlan::diff("c", a, remac) == std::vector<op>{{t::del_fdb, a.node_address, a.mac, "c"},
                                                          {t::set_neigh, a.tunnel, remac.mac, "c"},
                                                          {t::set_fdb, a.node_address, remac.mac, "c"}});
  auto retun = a;
  retun.tunnel = ip("10.244.2.1");
  CHECK(cnf::vxlan::diff("c", a, retun) == std::vector<op>{{t::del_neigh, a.tunnel, a.mac, "c"}, {t::set_neigh, retun.tunnel, a.mac, "c"}});
}

TEST_CASE("vxlan: routes go via the tunnel address, onlink on the device", "[unit][vxlan]") {
  auto e = cnf::vxlan::route_for(pfx("10.244.2.0/26"), ip("10.244.2.0"), "vxlan.calico");
  CHECK(e.dst == pfx("10.244.2.0/26"));
  CHECK(e.kind == cnf::route_entry::type::unicast);
  REQUIRE(e.next_hops.size() == 1);
  CHECK(e.next_hops[0].gateway == ip("10.244.2.0"));
  CHECK(e.next_hops[0].device == "vxlan.calico");
  CHECK(e.next_hops[0].onlink);
}

TEST_CASE("vxlan: the netlink requests, decoded back", "[unit][vxlan][netlink]") {
  namespace nl = cnf::netlink;
  nl::vxlan_spec v{"vxlan.calico", 4096, 4789, ip("192.168.50.1"), 7, false, 1450, mac("66:07:02:c1:cc:60")};
  auto m = nl::new_vxlan_msg(v);
  CHECK(m.nlh()->nlmsg_type == RTM_NEWLINK);
  CHECK((m.nlh()->nlmsg_flags & (NLM_F_CREATE | NLM_F_EXCL)) == (NLM_F_CREATE | NLM_F_EXCL));
  auto back = nl::parse_vxlan(*m.nlh());
  REQUIRE(back);
  CHECK(back->link.name == "vxlan.calico");
  CHECK(back->link.mtu == 1450);
  CHECK(back->link.mac == v.mac);
  CHECK(back->vni == 4096);
  CHECK(back->port == 4789);
  CHECK(back->local == ip("192.168.50.1"));
  CHECK(back->link_index == 7);
  CHECK_FALSE(back->learning);
  // The port travels in network byte order.
  std::array<const nlattr*, IFLA_MAX + 1> tb;
  nl::detail::parse_attrs(*m.nlh(), sizeof(ifinfomsg), tb);
  std::array<const nlattr*, IFLA_INFO_MAX + 1> li;
  nl::detail::parse_nested(tb[IFLA_LINKINFO], li);
  std::array<const nlattr*, IFLA_VXLAN_MAX + 1> vx;
  nl::detail::parse_nested(li[IFLA_INFO_DATA], vx);
  REQUIRE(vx[IFLA_VXLAN_PORT]);
  const auto* raw = static_cast<const unsigned char*>(mnl_attr_get_payload(vx[IFLA_VXLAN_PORT]));
  CHECK(raw[0] == 0x12);
  CHECK(raw[1] == 0xb5);  // 4789 = 0x12b5

  auto n = nl::set_neigh_msg(9, ip("10.244.2.0"), mac("aa:bb:cc:dd:ee:ff"));
  CHECK((n.nlh()->nlmsg_flags & (NLM_F_CREATE | NLM_F_REPLACE)) == (NLM_F_CREATE | NLM_F_REPLACE));
  auto nb = nl::parse_neigh(*n.nlh());
  REQUIRE(nb);
  CHECK_FALSE(nb->fdb);
  CHECK(nb->ifindex == 9);
  CHECK(nb->permanent());
  CHECK(nb->dst == ip("10.244.2.0"));
  CHECK(nb->mac == mac("aa:bb:cc:dd:ee:ff"));

  auto f = nl::set_fdb_msg(9, mac("aa:bb:cc:dd:ee:ff"), ip("192.168.51.2"));
  auto fb = nl::parse_neigh(*f.nlh());
  REQUIRE(fb);
  CHECK(fb->fdb);
  CHECK((fb->flags & NTF_SELF) != 0);
  CHECK(fb->permanent());
  CHECK(fb->dst == ip("192.168.51.2"));
  CHECK(fb->mac == mac("aa:bb:cc:dd:ee:ff"));

  auto d = nl::del_fdb_msg(9, mac("aa:bb:cc:dd:ee:ff"), ip("192.168.51.2"));
  CHECK(d.nlh()->nlmsg_type == RTM_DELNEIGH);
  auto dn = nl::del_neigh_msg(9, ip("10.244.2.0"));
  CHECK(dn.nlh()->nlmsg_type == RTM_DELNEIGH);
}

TEST_CASE("vxlan: without a kernel start, changes only wait for apply", "[unit][vxlan]") {
  cnf::vxlan::encapsulation e(cnf::vxlan::config{});
  e.upsert_node(remote("b", "192.168.50.2/24", {pfx("10.244.1.0/26")}, "10.244.1.0"));
  e.upsert_node(remote("b", "192.168.50.2/24", {pfx("10.244.1.0/26")}, "10.244.1.0"));  // unchanged: nothing more
  auto st = e.status();
  CHECK(st.pending == 3);  // the two devices (IPv4, IPv6), and node b
  CHECK(st.routes == 0);
  CHECK(st.tunnel.device == "vxlan.calico");
  CHECK(st.mode == cnf::encap_mode::never);  // no pool, no override
  e.set_pools({{"p", pfx("10.244.0.0/16"), cnf::encap_mode::cross_subnet}});
  CHECK(e.status().mode == cnf::encap_mode::cross_subnet);
  CHECK(e.status().mode_v6 == cnf::encap_mode::never);  // no IPv6 pool
  CHECK(e.status().tunnel_v6.device == "vxlan-v6.calico");
  CHECK(e.status().tunnel_v6.family == cnf::ip_family::v6);
  e.set_pools({{"p", pfx("10.244.0.0/16"), cnf::encap_mode::cross_subnet}, {"p6", pfx("fd00:244::/48"), cnf::encap_mode::always}});
  CHECK(e.status().mode_v6 == cnf::encap_mode::always);
  // The profile's override reaches IPv6 only where there is an IPv6 pool.
  cnf::vxlan::config c;
  c.mode = cnf::encap_mode::always;
  cnf::vxlan::encapsulation o(c);
  CHECK(o.status().mode == cnf::encap_mode::always);
  CHECK(o.status().mode_v6 == cnf::encap_mode::never);
  o.set_pools({{"p6", pfx("fd00:244::/48"), cnf::encap_mode::never}});
  CHECK(o.status().mode_v6 == cnf::encap_mode::always);
}

// ---- IPv6: vxlan-v6.calico -----------------------------------------------------------------

namespace {
cnf::remote_node remote6(const char* name, const char* addr, std::vector<cnf::ip_prefix> blocks, const char* tunnel6 = nullptr) {
  cnf::remote_node r;
  r.name = name;
  r.addresses = {pfx("192.168.50.9/24")};
  if (addr) r.addresses.push_back(pfx(addr));
  r.pod_cidrs = std::move(blocks);
  if (tunnel6) r.vxlan_tunnel_address_v6 = ip(tunnel6);
  return r;
}
}  // namespace

TEST_CASE("vxlan IPv6: CrossSubnet is decided from the IPv6 addresses", "[unit][vxlan][ipv6]") {
  auto self = self_node();  // 192.168.50.1/24 and fd00:50::1/64
  // Same IPv4 subnet, other IPv6 subnet: the IPv6 question is answered from IPv6 alone.
  auto r = remote6("b", "fd00:51::2/64", {});
  CHECK_FALSE(cnf::vxlan::cross_subnet(self, r));
  CHECK(cnf::vxlan::cross_subnet(self, r, cnf::ip_family::v6));
  CHECK_FALSE(cnf::vxlan::cross_subnet(self, remote6("c", "fd00:50::7/64", {}), cnf::ip_family::v6));
  CHECK(cnf::vxlan::cross_subnet(self, remote6("d", nullptr, {}), cnf::ip_family::v6));  // no IPv6 address: elsewhere
  self.addresses = {pfx("192.168.50.1/24")};  // this node has no IPv6 subnet: every node is elsewhere
  CHECK(cnf::vxlan::cross_subnet(self, remote6("c", "fd00:50::7/64", {}), cnf::ip_family::v6));
}

TEST_CASE("vxlan IPv6: the device's MAC is derived apart from the IPv4 one", "[unit][vxlan][ipv6]") {
  // 0x66 then the first five bytes of SHA-1("v6/" + name) (values from Python's hashlib).
  CHECK(cnf::vxlan::derive_mac_v6("node-a") == mac("66:54:fa:74:3a:97"));
  CHECK(cnf::vxlan::derive_mac_v6("node-b") == mac("66:e9:b7:62:14:43"));
  CHECK(cnf::vxlan::derive_mac_v6("node-a") != cnf::vxlan::derive_mac("node-a"));
}

TEST_CASE("vxlan IPv6: the plan takes the IPv6 fields and blocks only", "[unit][vxlan][ipv6]") {
  auto self = self_node();
  std::vector<cnf::encap_pool> pools{{"v4", pfx("10.244.0.0/16"), cnf::encap_mode::always},
                                     {"v6", pfx("fd00:244::/48"), cnf::encap_mode::cross_subnet}};
  std::string note;
  auto r = remote6("b", "fd00:51::2/64", {pfx("10.244.1.0/26"), pfx("fd00:244:0:1::/64")}, "fd00:244:0:1::");
  r.vxlan_tunnel_address = ip("10.244.1.0");
  auto p6 = cnf::vxlan::plan(self, r, pools, std::nullopt, note, cnf::ip_family::v6);
  REQUIRE(p6);
  CHECK(note.empty());
  CHECK(p6->tunnel == ip("fd00:244:0:1::"));
  CHECK(p6->mac == cnf::vxlan::derive_mac_v6("b"));
  CHECK(p6->node_address == ip("fd00:51::2"));
  CHECK(p6->blocks == std::vector<cnf::ip_prefix>{pfx("fd00:244:0:1::/64")});  // CrossSubnet, other IPv6 subnet
  // The IPv4 plan of the same node is untouched by the IPv6 fields.
  auto p4 = cnf::vxlan::plan(self, r, pools, std::nullopt, note);
  REQUIRE(p4);
  CHECK(p4->tunnel == ip("10.244.1.0"));
  CHECK(p4->node_address == ip("192.168.50.9"));
  CHECK(p4->blocks == std::vector<cnf::ip_prefix>{pfx("10.244.1.0/26")});
  // A MAC on the Node wins; on the same IPv6 subnet CrossSubnet sends nothing through the tunnel.
  r.vxlan_tunnel_mac_v6 = mac("66:00:00:00:06:0b");
  r.addresses = {pfx("192.168.50.9/24"), pfx("fd00:50::2/64")};
  p6 = cnf::vxlan::plan(self, r, pools, std::nullopt, note, cnf::ip_family::v6);
  REQUIRE(p6);
  CHECK(p6->mac == mac("66:00:00:00:06:0b"));
  CHECK(p6->blocks.empty());
  // No IPv6 tunnel address yet, no IPv6 address: a note naming the field.
  CHECK_FALSE(cnf::vxlan::plan(self, remote6("c", "fd00:51::3/64", {}), pools, std::nullopt, note, cnf::ip_family::v6));
  CHECK_THAT(note, Catch::Contains("node c has no IPv6 VXLAN tunnel address yet (spec.ipv6VXLANTunnelAddr)"));
  CHECK_FALSE(cnf::vxlan::plan(self, remote6("d", nullptr, {}, "fd00:244:0:2::"), pools, std::nullopt, note, cnf::ip_family::v6));
  CHECK_THAT(note, Catch::Contains("node d has no IPv6 address (spec.bgp.ipv6Address)"));
  // Its routes: via the IPv6 tunnel address, onlink on vxlan-v6.calico.
  auto e = cnf::vxlan::route_for(pfx("fd00:244:0:1::/64"), ip("fd00:244:0:1::"), "vxlan-v6.calico");
  REQUIRE(e.next_hops.size() == 1);
  CHECK(e.next_hops[0] == cnf::route_next_hop{ip("fd00:244:0:1::"), "vxlan-v6.calico", true});
}

TEST_CASE("vxlan IPv6: the netlink requests, decoded back", "[unit][vxlan][ipv6][netlink]") {
  namespace nl = cnf::netlink;
  nl::vxlan_spec v{"vxlan-v6.calico", 4096, 4789, ip("fd00:50::1"), 7, false, 1430, mac("66:54:fa:74:3a:97")};
  auto m = nl::new_vxlan_msg(v);
  auto back = nl::parse_vxlan(*m.nlh());
  REQUIRE(back);
  CHECK(back->link.name == "vxlan-v6.calico");
  CHECK(back->link.mtu == 1430);
  CHECK(back->local == ip("fd00:50::1"));
  CHECK(back->vni == 4096);
  CHECK(back->port == 4789);
  std::array<const nlattr*, IFLA_MAX + 1> tb;
  nl::detail::parse_attrs(*m.nlh(), sizeof(ifinfomsg), tb);
  std::array<const nlattr*, IFLA_INFO_MAX + 1> li;
  nl::detail::parse_nested(tb[IFLA_LINKINFO], li);
  std::array<const nlattr*, IFLA_VXLAN_MAX + 1> vx;
  nl::detail::parse_nested(li[IFLA_INFO_DATA], vx);
  CHECK(vx[IFLA_VXLAN_LOCAL6]);  // the IPv6 attribute, not IFLA_VXLAN_LOCAL
  CHECK_FALSE(vx[IFLA_VXLAN_LOCAL]);

  auto n = nl::set_neigh_msg(9, ip("fd00:244:0:1::"), mac("66:e9:b7:62:14:43"));
  CHECK(static_cast<const ndmsg*>(mnl_nlmsg_get_payload(n.nlh()))->ndm_family == AF_INET6);
  auto nb = nl::parse_neigh(*n.nlh());
  REQUIRE(nb);
  CHECK_FALSE(nb->fdb);
  CHECK(nb->permanent());
  CHECK(nb->dst == ip("fd00:244:0:1::"));
  CHECK(nb->mac == mac("66:e9:b7:62:14:43"));

  auto f = nl::set_fdb_msg(9, mac("66:e9:b7:62:14:43"), ip("fd00:51::2"));
  auto fb = nl::parse_neigh(*f.nlh());
  REQUIRE(fb);
  CHECK(fb->fdb);
  CHECK(fb->permanent());
  CHECK(fb->dst == ip("fd00:51::2"));

  // The kernel ops of a node whose IPv6 underlay address moved: the FDB entry only.
  cnf::vxlan::remote_plan a{ip("fd00:244:0:1::"), mac("66:e9:b7:62:14:43"), ip("fd00:51::2"), {}};
  auto b = a;
  b.node_address = ip("fd00:51::9");
  auto ops = cnf::vxlan::diff("b", a, b);
  REQUIRE(ops.size() == 2);
  CHECK(ops[0] == op{op::type::del_fdb, ip("fd00:51::2"), a.mac, "b"});
  CHECK(ops[1] == op{op::type::set_fdb, ip("fd00:51::9"), a.mac, "b"});
}

TEST_CASE("vxlan plugin: the [encapsulation] section, and bad values named by key", "[unit][vxlan][plugin]") {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  auto lp = loader.find(cnf::part::encapsulation, "vxlan");
  if (!lp) {
    WARN("plugin not built: " << lp.error().message);
    return;
  }
  const std::string good = "[encapsulation]\nplugin = 'vxlan'\nvni = 4097\nport = 8472\nmtu = 1400\nmode = 'CrossSubnet'\n";
  CHECK(cnf::plugin_loader::validate(*lp, {good, "p.toml", "encapsulation"}));
  const std::string bad = "[encapsulation]\nplugin = 'vxlan'\nvni = 0\nport = 70000\nmode = 'crosssubnet'\nmtuu = 1400\n";
  auto r = cnf::plugin_loader::validate(*lp, {bad, "p.toml", "encapsulation"});
  REQUIRE_FALSE(r);
  const auto& m = r.error().message;
  CHECK_THAT(m, Catch::Contains("p.toml:3:7: encapsulation.vni: must be between 1 and 16777215"));
  CHECK_THAT(m, Catch::Contains("encapsulation.port: must be a UDP port"));
  CHECK_THAT(m, Catch::Contains("encapsulation.mode: 'crosssubnet' is not a mode; expected Always, CrossSubnet or Never"));
  CHECK_THAT(m, Catch::Contains("encapsulation.mtuu: unknown key") && Catch::Contains("mtu"));
  // The IPv6 device's keys.
  CHECK(cnf::plugin_loader::validate(*lp, {"[encapsulation]\nplugin = 'vxlan'\ndevice_v6 = 'vx6'\nmtu_v6 = 1400\n", "p.toml", "encapsulation"}));
  auto bad6 = cnf::plugin_loader::validate(*lp, {"[encapsulation]\nplugin = 'vxlan'\ndevice_v6 = 'vxlan.calico'\nmtu_v6 = 1000\n", "p.toml", "encapsulation"});
  REQUIRE_FALSE(bad6);
  CHECK_THAT(bad6.error().message, Catch::Contains("encapsulation.device_v6: must differ from device"));
  CHECK_THAT(bad6.error().message, Catch::Contains("encapsulation.mtu_v6: must be 0 (the IPv6 uplink's MTU - 70) or between 1280"));
}
