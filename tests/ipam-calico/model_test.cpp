// calico-ipam's resource model: parsing, validation messages, names, selectors, settings.
#include <cnf/plugins/calico_ipam.hpp>

#include <catch2/catch.hpp>

namespace ci = cnf::calico_ipam;
using Catch::Matchers::Contains;

namespace {
cnf::resource res(std::string kind, std::string name, std::string spec) {
  cnf::resource r;
  r.kind = std::move(kind);
  r.name = std::move(name);
  r.spec = std::move(spec);
  return r;
}
cnf::resource pool(std::string name, std::string spec) { return res("IPPool", std::move(name), std::move(spec)); }
}  // namespace

TEST_CASE("IPPool: defaults and fields") {
  auto p = ci::parse_pool(pool("p4", R"({"cidr":"10.244.0.0/16","natOutgoing":true,"ipipMode":"Always"})"));
  REQUIRE(p);
  CHECK(p->block_size == 26);
  CHECK(p->node_selector == "all()");
  CHECK(p->nat_outgoing);
  CHECK(p->ipip_mode == "Always");
  CHECK(p->vxlan_mode == "Never");
  auto q = ci::parse_pool(pool("p6", R"({"cidr":"fd00:10::/64"})"));
  REQUIRE(q);
  CHECK(q->block_size == 122);
  auto back = ci::parse_pool(ci::to_resource(*p));
  REQUIRE(back);
  CHECK(*back == *p);
}

TEST_CASE("IPPool: bad input names the resource and the field") {
  auto e = ci::parse_pool(pool("big", R"({"cidr":"10.0.0.0/16","blockSize":33})"));
  REQUIRE_FALSE(e);
  CHECK(e.error().code == cnf::errc::invalid);
  CHECK_THAT(e.error().message, Contains("IPPool/big") && Contains("spec.blockSize") && Contains("20-32"));

  e = ci::parse_pool(pool("small", R"({"cidr":"10.0.0.0/16","blockSize":19})"));
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("spec.blockSize"));

  e = ci::parse_pool(pool("v6", R"({"cidr":"fd00::/64","blockSize":115})"));
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("IPPool/v6") && Contains("116-128"));

  e = ci::parse_pool(pool("host", R"({"cidr":"10.0.0.1/16"})"));
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("IPPool/host") && Contains("spec.cidr") && Contains("not a network address") && Contains("10.0.0.0/16"));

  e = ci::parse_pool(pool("nocidr", R"({"blockSize":26})"));
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("spec.cidr") && Contains("required"));

  e = ci::parse_pool(pool("json", R"({"cidr":)"));
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("IPPool/json") && Contains("not valid JSON"));

  e = ci::parse_pool(pool("sel", R"({"cidr":"10.0.0.0/16","nodeSelector":"zone in {'a'}"})"));
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("spec.nodeSelector"));

  e = ci::parse_pool(pool("mode", R"({"cidr":"10.0.0.0/16","vxlanMode":"Sometimes"})"));
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("spec.vxlanMode") && Contains("Sometimes"));

  e = ci::parse_pool(pool("tiny", R"({"cidr":"10.0.0.0/28","blockSize":26})"));
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("spec.blockSize") && Contains("do not fit"));
}

TEST_CASE("IPPool: overlapping pools are both refused, naming each other") {
  std::vector<cnf::resource> rs = {pool("a", R"({"cidr":"10.0.0.0/16"})"), pool("b", R"({"cidr":"10.0.128.0/20"})"),
                                   pool("c", R"({"cidr":"10.1.0.0/16"})"), pool("d", R"({"cidr":"10.2.0.0/16","blockSize":40})")};
  std::vector<ci::pool> valid;
  auto problems = ci::validate_pools(rs, &valid);
  REQUIRE(problems.size() == 2);
  std::string all = problems[0].message + "\n" + problems[1].message;
  CHECK_THAT(all, Contains("IPPool/a") && Contains("IPPool/b") && Contains("overlaps") && Contains("spec.cidr"));
  CHECK_THAT(all, Contains("IPPool/d") && Contains("spec.blockSize"));
  REQUIRE(valid.size() == 1);
  CHECK(valid[0].name == "c");
}

TEST_CASE("IPReservation: outside every pool is reported") {
  auto r = ci::parse_reservation(res("IPReservation", "r1", R"({"reservedCIDRs":["10.0.0.5","10.0.1.0/24","192.168.0.0/24"]})"));
  REQUIRE(r);
  REQUIRE(r->cidrs.size() == 3);
  CHECK(r->cidrs[0].length() == 32);
  std::vector<ci::pool> pools = {*ci::parse_pool(pool("a", R"({"cidr":"10.0.0.0/16"})"))};
  auto problems = ci::validate_reservations({*r}, pools);
  REQUIRE(problems.size() == 1);
  CHECK_THAT(problems[0].message, Contains("IPReservation/r1") && Contains("spec.reservedCIDRs[2]") && Contains("192.168.0.0/24"));
  auto bad = ci::parse_reservation(res("IPReservation", "r2", R"({"reservedCIDRs":["nonsense"]})"));
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Contains("IPReservation/r2") && Contains("spec.reservedCIDRs[0]"));
}

TEST_CASE("IPAMBlock: round trip and consistency checks") {
  auto b = ci::block::make(cnf::ip_prefix::parse("10.0.0.0/30").value(), "host:n1");
  CHECK(b.size() == 4);
  CHECK(b.unallocated == std::vector<std::uint32_t>{0, 1, 2, 3});
  auto r = ci::to_resource(b);
  CHECK(r.name == "10-0-0-0-30");
  auto back = ci::parse_block(r);
  REQUIRE(back);
  CHECK(back->cidr == b.cidr);
  CHECK(back->affinity_node() == "n1");
  CHECK(back->unallocated == b.unallocated);

  auto broken = [&](std::string spec, std::string name = "10-0-0-0-30") { return ci::parse_block(res("IPAMBlock", name, spec)); };
  auto e = broken("not json");
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("IPAMBlock/10-0-0-0-30") && Contains("not valid JSON"));
  e = broken(R"({"cidr":"10.0.0.0/30","allocations":[null,null,null,null,null,null,null,null],"unallocated":[0,1,2,3,4,5,6,7],"attributes":[]})");
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("spec.allocations") && Contains("8 entries") && Contains("4 addresses"));
  e = broken(R"({"cidr":"10.0.0.0/30","allocations":[0,null,null,null],"unallocated":[0,1,2,3],"attributes":[{"handle_id":"h"}]})");
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("spec.unallocated[0]") && Contains("allocated"));
  e = broken(R"({"cidr":"10.0.0.0/30","allocations":[3,null,null,null],"unallocated":[1,2,3],"attributes":[]})");
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("spec.allocations[0]"));
  e = broken(R"({"cidr":"10.0.0.0/30","allocations":[null,null,null,null],"unallocated":[0,1,2],"attributes":[]})");
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("spec.unallocated") && Contains("neither allocated nor listed"));
  e = broken(R"({"cidr":"10.0.0.4/30","allocations":[null,null,null,null],"unallocated":[0,1,2,3],"attributes":[]})");
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Contains("does not match the resource name"));
}

TEST_CASE("IPAMBlock: the JSON writer escapes and round-trips everything") {
  auto b = ci::block::make(cnf::ip_prefix::parse("10.0.0.0/29").value(), "host:odd \"node\"");
  b.allocations[1] = 0;
  b.allocations[5] = 1;
  b.unallocated = {0, 2, 3, 4, 6, 7};
  b.attributes = {{std::string("h\\1\n\"x\""), {{"pod", "p\t1"}, {"node", "n\x01"}}}, {std::nullopt, {}}};
  b.sequence_number_for_allocation = {{1, 7}, {5, 9}};
  b.sequence_number = 10;
  b.empty_since = "2026-01-01T00:00:00Z";
  auto r = ci::to_resource(b);
  auto back = ci::parse_block(r);
  REQUIRE(back);
  CHECK(back->affinity == b.affinity);
  CHECK(back->allocations == b.allocations);
  CHECK(back->unallocated == b.unallocated);
  CHECK(back->attributes == b.attributes);
  CHECK(back->sequence_number_for_allocation == b.sequence_number_for_allocation);
  CHECK(back->sequence_number == 10);
  CHECK(back->empty_since == b.empty_since);
  CHECK(back->handle_of(1) == "h\\1\n\"x\"");
  CHECK(back->handle_of(5).empty());
  CHECK(back->in_use() == 2);
}

TEST_CASE("block operations keep FIFO order and attributes consistent") {
  auto b = ci::block::make(cnf::ip_prefix::parse("fd00::/126").value(), "host:n1");
  CHECK(b.address(3).to_string() == "fd00::3");
  CHECK(b.ordinal(cnf::ip_address::parse("fd00::2").value()) == 2u);
  CHECK_FALSE(b.ordinal(cnf::ip_address::parse("fd00::4").value()));
}

TEST_CASE("names follow Calico's Kubernetes backend") {
  CHECK(ci::block_name(cnf::ip_prefix::parse("10.244.1.64/26").value()) == "10-244-1-64-26");
  CHECK(ci::block_name(cnf::ip_prefix::parse("fd00:1::/122").value()) == "fd00-1---122");
  CHECK(ci::affinity_name("node-1", cnf::ip_prefix::parse("10.0.0.0/26").value()) == "node-1-10-0-0-0-26");
  CHECK(ci::handle_name("k8s-pod-network.4c2f") == "k8s-pod-network.4c2f");
  auto odd = ci::handle_name("Net_A.ABC");
  CHECK(odd != ci::handle_name("net-a.abc"));
  CHECK(odd.find('_') == std::string::npos);
  CHECK(ci::tunnel_handle(ci::tunnel_kind::ipip, "n1") == "ipip-tunnel-addr-n1");
  CHECK(ci::tunnel_handle(ci::tunnel_kind::vxlan, "n1") == "vxlan-tunnel-addr-n1");
  CHECK(ci::is_tunnel_handle("vxlan-tunnel-addr-n1"));
  CHECK_FALSE(ci::is_tunnel_handle("k8s-pod-network.x"));
}

TEST_CASE("node selectors") {
  std::map<std::string, std::string> l = {{"zone", "a"}, {"rack", "r1"}};
  CHECK(*ci::selector_matches("all()", l));
  CHECK(*ci::selector_matches("", l));
  CHECK(*ci::selector_matches("zone == 'a'", l));
  CHECK_FALSE(*ci::selector_matches("zone == 'b'", l));
  CHECK(*ci::selector_matches("zone != 'b'", l));
  CHECK(*ci::selector_matches("has(rack) && zone == \"a\"", l));
  CHECK_FALSE(*ci::selector_matches("!has(rack)", l));
  CHECK(*ci::selector_matches("zone == 'b' || rack == 'r1'", l));
  CHECK_FALSE(ci::selector_matches("zone == a", l));
  CHECK_FALSE(ci::selector_matches("zone in {'a'}", l));
}

TEST_CASE("settings: pools, limits, typos") {
  auto parse = [](std::string text) -> cnf::result<ci::options> {
    auto s = cnf::settings::parse(text, "profile.toml", "ipam");
    if (!s) return s.error();
    auto o = ci::configure(*s);
    if (auto f = s->finish(); !f) return f.error();
    return o;
  };
  auto ok = parse(R"([ipam]
plugin = "calico-ipam"
max_retries = 50
[[ipam.pools]]
cidr = "10.244.0.0/16"
[[ipam.pools]]
cidr = "fd00:244::/64"
block_size = 120
)");
  REQUIRE(ok);
  REQUIRE(ok->default_pools.size() == 2);
  CHECK(ok->default_pools[0].name == "default-ipv4-ippool");
  CHECK(ok->default_pools[1].block_size == 120);
  CHECK(ok->max_retries == 50);

  auto typo = parse("[ipam]\n[[ipam.pools]]\ncidr = \"10.0.0.0/16\"\nblok_size = 24\n");
  REQUIRE_FALSE(typo);
  CHECK_THAT(typo.error().message, Contains("profile.toml:4") && Contains("ipam.pools[0].blok_size") && Contains("did you mean 'block_size'"));

  auto bad = parse("[ipam]\n[[ipam.pools]]\ncidr = \"10.0.0.1/16\"\n");
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Contains("profile.toml:2") && Contains("not a network address"));

  auto overlap = parse("[ipam]\n[[ipam.pools]]\ncidr = \"10.0.0.0/16\"\n[[ipam.pools]]\ncidr = \"10.0.1.0/24\"\n");
  REQUIRE_FALSE(overlap);
  CHECK_THAT(overlap.error().message, Contains("overlaps"));

  auto retries = parse("[ipam]\nmax_retries = 0\n");
  REQUIRE_FALSE(retries);
  CHECK_THAT(retries.error().message, Contains("ipam.max_retries"));
}
