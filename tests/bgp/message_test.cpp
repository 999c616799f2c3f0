// The BGP codec: round trips of every message, and every decoding error with the
// NOTIFICATION it calls for (RFC 4271 §6) or the RFC 7606 treatment.
#include <cnf/bgp/message.hpp>

#include <catch2/catch.hpp>

#include <algorithm>

namespace bgp = cnf::bgp;
using bgp::bytes;

namespace {
cnf::ip_prefix pfx(const char* s) { return cnf::ip_prefix::parse(s).value(); }
cnf::ip_address ip(const char* s) { return cnf::ip_address::parse(s).value(); }

bgp::message roundtrip(const bgp::message& m, bgp::codec_options o = {}) {
  auto b = bgp::encode(m, o);
  auto f = bgp::frame(b);
  REQUIRE(std::holds_alternative<std::size_t>(f));
  REQUIRE(std::get<std::size_t>(f) == b.size());
  auto d = bgp::decode(b, o);
  if (auto* e = std::get_if<bgp::decode_error>(&d)) FAIL(e->to_string());
  return std::get<bgp::message>(d);
}

bytes with_header(std::uint8_t type, const bytes& body) {
  bytes b(16, 0xff);
  const std::size_t len = 19 + body.size();
  b.push_back(static_cast<std::uint8_t>(len >> 8));
  b.push_back(static_cast<std::uint8_t>(len));
  b.push_back(type);
  b.insert(b.end(), body.begin(), body.end());
  return b;
}

// An UPDATE from its three raw fields.
bytes raw_update(const bytes& withdrawn, const bytes& attrs, const bytes& nlri) {
  bytes body;
  body.push_back(static_cast<std::uint8_t>(withdrawn.size() >> 8));
  body.push_back(static_cast<std::uint8_t>(withdrawn.size()));
  body.insert(body.end(), withdrawn.begin(), withdrawn.end());
  body.push_back(static_cast<std::uint8_t>(attrs.size() >> 8));
  body.push_back(static_cast<std::uint8_t>(attrs.size()));
  body.insert(body.end(), attrs.begin(), attrs.end());
  body.insert(body.end(), nlri.begin(), nlri.end());
  return with_header(2, body);
}

const bytes origin_igp{0x40, 1, 1, 0};
const bytes as_path_65001{0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9};
const bytes next_hop_10_0_0_1{0x40, 3, 4, 10, 0, 0, 1};
const bytes nlri_10_1{16, 10, 1};  // 10.1.0.0/16

bytes cat(std::initializer_list<bytes> parts) {
  bytes b;
  for (auto& p : parts) b.insert(b.end(), p.begin(), p.end());
  return b;
}

bgp::decode_error error_of(const bytes& b, bgp::codec_options o = {}) {
  auto d = bgp::decode(b, o);
  REQUIRE(std::holds_alternative<bgp::decode_error>(d));
  return std::get<bgp::decode_error>(d);
}

bgp::update_message update_of(const bytes& b) {
  auto d = bgp::decode(b);
  if (auto* e = std::get_if<bgp::decode_error>(&d)) FAIL(e->to_string());
  REQUIRE(std::holds_alternative<bgp::update_message>(std::get<bgp::message>(d)));
  return std::get<bgp::update_message>(std::get<bgp::message>(d));
}
}  // namespace

TEST_CASE("bgp codec: OPEN with every capability round-trips", "[unit][bgp]") {
  bgp::open_message o;
  o.asn = 4200000001u;  // needs 4 octets: AS_TRANS in the fixed field
  o.hold_time = 90;
  o.router_id = ip("10.0.0.1").v4_host_order();
  o.multiprotocol = {bgp::ipv4_unicast, bgp::ipv6_unicast};
  o.four_octet_as = true;
  o.route_refresh = true;
  o.restart = bgp::graceful_restart{true, 120, {{bgp::ipv4_unicast, true}, {bgp::ipv6_unicast, false}}};
  auto m = roundtrip(o);
  CHECK(std::get<bgp::open_message>(m) == o);
  auto b = bgp::encode(o);
  CHECK(b[20] == 0x5b);  // 23456 = 0x5ba0 in the 2-octet field
  CHECK(b[21] == 0xa0);
}

TEST_CASE("bgp codec: UPDATE with every attribute round-trips, 4-octet and 2-octet AS", "[unit][bgp]") {
  bgp::update_message u;
  u.withdrawn = {pfx("10.9.0.0/16"), pfx("0.0.0.0/0")};
  u.has_attributes = true;
  u.attrs.origin = bgp::origin_type::incomplete;
  u.attrs.as_path = {{bgp::as_segment::kind::sequence, {65001, 65002}}, {bgp::as_segment::kind::set, {65010, 65011}}};
  u.attrs.next_hop = ip("192.0.2.1");
  u.attrs.med = 50;
  u.attrs.local_pref = 200;
  u.attrs.atomic_aggregate = true;
  u.attrs.communities = {0xfde90064, 0xffffff01};
  u.attrs.originator_id = 0x0a000005;
  u.attrs.cluster_list = {1, 2};
  u.nlri = {pfx("10.244.1.0/26"), pfx("10.244.2.0/24"), pfx("192.168.0.0/32")};
  CHECK(std::get<bgp::update_message>(roundtrip(u)) == u);
  CHECK(std::get<bgp::update_message>(roundtrip(u, {false})) == u);
  CHECK(u.attrs.as_path_length() == 3);

  bgp::update_message v6;
  v6.has_attributes = true;
  v6.attrs.as_path = {};
  v6.reach = bgp::mp_reach{bgp::ipv6_unicast, {ip("fd00::1"), ip("fe80::1")}, {pfx("fd00:244::/64"), pfx("2001:db8::/32")}};
  v6.unreach = bgp::mp_unreach{bgp::ipv6_unicast, {pfx("fd00:9::/48")}};
  CHECK(std::get<bgp::update_message>(roundtrip(v6)) == v6);
}

TEST_CASE("bgp codec: KEEPALIVE, NOTIFICATION, ROUTE-REFRESH and End-of-RIB", "[unit][bgp]") {
  CHECK(bgp::encode(bgp::keepalive_message{}).size() == 19);
  CHECK(std::holds_alternative<bgp::keepalive_message>(roundtrip(bgp::keepalive_message{})));
  bgp::notification_message n{6, 2, {5, 'b', 'y', 'e', '!', '!'}};
  CHECK(std::get<bgp::notification_message>(roundtrip(n)) == n);
  CHECK(n.to_string() == "Cease / Administrative Shutdown: \"bye!!\"");
  CHECK(std::get<bgp::route_refresh_message>(roundtrip(bgp::route_refresh_message{bgp::ipv6_unicast})).af == bgp::ipv6_unicast);
  CHECK(std::get<bgp::update_message>(roundtrip(bgp::update_message{})).end_of_rib() == bgp::ipv4_unicast);
  bgp::update_message eor6;
  eor6.unreach = bgp::mp_unreach{bgp::ipv6_unicast, {}};
  CHECK(std::get<bgp::update_message>(roundtrip(eor6)).end_of_rib() == bgp::ipv6_unicast);
}

TEST_CASE("bgp codec: header errors (truncated, marker, length, type)", "[unit][bgp]") {
  auto ka = bgp::encode(bgp::keepalive_message{});
  SECTION("a truncated message is not an error for frame(), only 'more bytes'") {
    CHECK(std::get<std::size_t>(bgp::frame(std::span(ka).first(10))) == 0);
    auto open = bgp::encode(bgp::open_message{.asn = 1, .router_id = 1});
    CHECK(std::get<std::size_t>(bgp::frame(std::span(open).first(open.size() - 1))) == 0);
    auto e = error_of(bytes(open.begin(), open.end() - 1));
    CHECK(e.code == 1);
    CHECK(e.subcode == 2);
    CHECK(e.field == "header.length");
  }
  SECTION("bad marker: Connection Not Synchronized") {
    ka[3] = 0;
    auto e = error_of(ka);
    CHECK((e.code == 1 && e.subcode == 1));
    CHECK(e.field == "header.marker");
    CHECK_THAT(e.to_string(), Catch::Contains("Message Header Error / Connection Not Synchronized"));
  }
  SECTION("bad length: below 19, above 4096, wrong for the type") {
    ka[17] = 18;
    auto e = error_of(ka);
    CHECK((e.code == 1 && e.subcode == 2));
    CHECK(e.data == bytes{0, 18});
    auto big = with_header(2, bytes(4100, 0));
    CHECK(error_of(big).subcode == 2);
    auto ka20 = with_header(4, {0});
    auto e2 = error_of(ka20);
    CHECK(e2.subcode == 2);
    CHECK_THAT(e2.message, Catch::Contains("KEEPALIVE"));
    CHECK(error_of(with_header(5, {0, 1, 0})).subcode == 2);  // ROUTE-REFRESH is exactly 23
  }
  SECTION("bad type") {
    auto e = error_of(with_header(9, {}));
    CHECK((e.code == 1 && e.subcode == 3));
    CHECK(e.data == bytes{9});
    CHECK(e.field == "header.type");
  }
}

TEST_CASE("bgp codec: OPEN errors", "[unit][bgp]") {
  auto open = [](std::uint8_t version, std::uint16_t hold, std::uint32_t id, bytes params) {
    bytes b{version, 0xfd, 0xe8, static_cast<std::uint8_t>(hold >> 8), static_cast<std::uint8_t>(hold),
            static_cast<std::uint8_t>(id >> 24), static_cast<std::uint8_t>(id >> 16), static_cast<std::uint8_t>(id >> 8), static_cast<std::uint8_t>(id),
            static_cast<std::uint8_t>(params.size())};
    b.insert(b.end(), params.begin(), params.end());
    return with_header(1, b);
  };
  auto e = error_of(open(3, 90, 1, {}));
  CHECK((e.code == 2 && e.subcode == 1));
  CHECK(e.data == bytes{0, 4});
  CHECK(e.field == "OPEN.version");
  e = error_of(open(4, 2, 1, {}));
  CHECK((e.code == 2 && e.subcode == 6));
  CHECK(e.field == "OPEN.hold_time");
  e = error_of(open(4, 90, 0, {}));
  CHECK((e.code == 2 && e.subcode == 3));
  e = error_of(open(4, 90, 1, {1, 2, 0, 0}));  // parameter type 1 (authentication, deprecated)
  CHECK((e.code == 2 && e.subcode == 4));
  e = error_of(open(4, 90, 1, {2, 4, 65, 4, 0, 0}));  // capability overruns its parameter
  CHECK(e.code == 2);
  CHECK(e.field == "OPEN.capabilities");
  // A 2-octet speaker: no capabilities at all is fine, and AS comes from the fixed field.
  auto d = bgp::decode(open(4, 90, 1, {}));
  REQUIRE(std::holds_alternative<bgp::message>(d));
  auto o = std::get<bgp::open_message>(std::get<bgp::message>(d));
  CHECK(o.asn == 65000);
  CHECK(!o.four_octet_as);
}

TEST_CASE("bgp codec: UPDATE errors that reset the session", "[unit][bgp]") {
  SECTION("withdrawn routes length overruns") {
    bytes body{0, 50, 0, 0};
    auto e = error_of(with_header(2, body));
    CHECK((e.code == 3 && e.subcode == 1));
    CHECK(e.field == "UPDATE.withdrawn_routes_length");
  }
  SECTION("total path attribute length overruns") {
    auto b = raw_update({}, origin_igp, {});
    b[21] = 200;
    auto e = error_of(b);
    CHECK((e.code == 3 && e.subcode == 1));
    CHECK(e.field == "UPDATE.total_path_attribute_length");
  }
  SECTION("malformed NLRI: prefix length above 32, prefix overruns") {
    auto e = error_of(raw_update({}, cat({origin_igp, as_path_65001, next_hop_10_0_0_1}), {33, 10, 0, 0, 0, 0}));
    CHECK((e.code == 3 && e.subcode == 10));
    CHECK(e.field == "UPDATE.nlri");
    CHECK_THAT(e.message, Catch::Contains("33"));
    e = error_of(raw_update({24, 10}, {}, {}));
    CHECK((e.code == 3 && e.subcode == 10));
    CHECK(e.field == "UPDATE.withdrawn_routes");
  }
  SECTION("unrecognized well-known attribute") {
    auto e = error_of(raw_update({}, cat({origin_igp, as_path_65001, next_hop_10_0_0_1, {0x40, 99, 1, 7}}), nlri_10_1));
    CHECK((e.code == 3 && e.subcode == 2));
    CHECK(e.data == bytes{0x40, 99, 1, 7});
    CHECK(e.field == "UPDATE.attribute_type");
  }
  SECTION("malformed MP_REACH_NLRI and a repeated MP attribute") {
    bytes bad_nh{0x80, 14, 8, 0, 2, 1, 3, 1, 2, 3, 0};  // IPv6 next hop of 3 octets
    auto e = error_of(raw_update({}, cat({origin_igp, as_path_65001, bad_nh}), {}));
    CHECK((e.code == 3 && e.subcode == 9));
    CHECK(e.field == "UPDATE.MP_REACH_NLRI");
    bytes unreach{0x80, 15, 3, 0, 2, 1};
    e = error_of(raw_update({}, cat({unreach, unreach}), {}));
    CHECK((e.code == 3 && e.subcode == 1));
    CHECK_THAT(e.message, Catch::Contains("twice"));
  }
}

TEST_CASE("bgp codec: UPDATE errors treated as withdraw (RFC 7606)", "[unit][bgp]") {
  auto check = [](const bytes& attrs, std::uint8_t sub, const char* field) {
    auto u = update_of(raw_update({}, attrs, nlri_10_1));
    REQUIRE(u.withdraw_reason);
    CHECK(u.withdraw_reason->code == 3);
    CHECK(u.withdraw_reason->subcode == sub);
    CHECK(u.withdraw_reason->field == field);
    CHECK(u.nlri.empty());
    CHECK(u.withdrawn == std::vector{pfx("10.1.0.0/16")});
  };
  SECTION("attribute flags error") { check(cat({{0xc0, 1, 1, 0}, as_path_65001, next_hop_10_0_0_1}), 4, "UPDATE.ORIGIN.flags"); }
  SECTION("attribute length error") { check(cat({origin_igp, as_path_65001, {0x40, 3, 5, 10, 0, 0, 1, 1}}), 5, "UPDATE.NEXT_HOP"); }
  SECTION("invalid ORIGIN") { check(cat({{0x40, 1, 1, 3}, as_path_65001, next_hop_10_0_0_1}), 6, "UPDATE.ORIGIN"); }
  SECTION("malformed AS_PATH") { check(cat({origin_igp, {0x40, 2, 6, 2, 3, 0, 0, 0xfd, 0xe9}, next_hop_10_0_0_1}), 11, "UPDATE.AS_PATH"); }
  SECTION("AS_PATH segment type") { check(cat({origin_igp, {0x40, 2, 6, 7, 1, 0, 0, 0xfd, 0xe9}, next_hop_10_0_0_1}), 11, "UPDATE.AS_PATH"); }
  SECTION("invalid NEXT_HOP") { check(cat({origin_igp, as_path_65001, {0x40, 3, 4, 0, 0, 0, 0}}), 8, "UPDATE.NEXT_HOP"); }
  SECTION("missing well-known attribute") { check(cat({origin_igp, next_hop_10_0_0_1}), 3, "UPDATE.AS_PATH"); }
  SECTION("wrong length of an optional attribute") { check(cat({origin_igp, as_path_65001, next_hop_10_0_0_1, {0x80, 4, 2, 0, 1}}), 5, "UPDATE.MULTI_EXIT_DISC"); }
  SECTION("COMMUNITIES not a multiple of 4") { check(cat({origin_igp, as_path_65001, next_hop_10_0_0_1, {0xc0, 8, 3, 0, 1, 2}}), 5, "UPDATE.COMMUNITIES"); }
  SECTION("attribute length overruns the attribute list") { check(cat({origin_igp, as_path_65001, next_hop_10_0_0_1, {0x80, 4, 9, 0, 1}}), 1, "UPDATE.MULTI_EXIT_DISC"); }
  SECTION("MP_REACH NLRI are withdrawn too") {
    bgp::update_message m;
    m.has_attributes = true;
    m.attrs.as_path = {{bgp::as_segment::kind::sequence, {65001}}};
    m.reach = bgp::mp_reach{bgp::ipv6_unicast, {ip("fd00::1")}, {pfx("fd00::/16")}};
    auto b = bgp::encode(m);
    const bytes origin{0x40, 1, 1, 0};
    auto at = std::search(b.begin(), b.end(), origin.begin(), origin.end());
    REQUIRE(at != b.end());
    at[3] = 9;  // ORIGIN 9
    auto u = update_of(b);
    REQUIRE(u.withdraw_reason);
    CHECK(!u.reach);
    REQUIRE(u.unreach);
    CHECK(u.unreach->withdrawn == std::vector{pfx("fd00::/16")});
  }
}

namespace {
// The attribute type codes of an encoded UPDATE, in order.
std::vector<std::uint8_t> attribute_types(const bytes& msg) {
  std::size_t at = 19;
  const std::size_t wl = std::size_t(msg[at]) << 8 | msg[at + 1];
  at += 2 + wl;
  const std::size_t al = std::size_t(msg[at]) << 8 | msg[at + 1];
  at += 2;
  std::vector<std::uint8_t> types;
  for (const std::size_t end = at + al; at < end;) {
    const std::uint8_t flags = msg[at], type = msg[at + 1];
    const std::size_t len = (flags & bgp::attr::extended_length) ? (std::size_t(msg[at + 2]) << 8 | msg[at + 3]) : msg[at + 2];
    types.push_back(type);
    at += ((flags & bgp::attr::extended_length) ? 4 : 3) + len;
  }
  return types;
}
bgp::update_message update_of(const bytes& b, bgp::codec_options o) {
  auto d = bgp::decode(b, o);
  if (auto* e = std::get_if<bgp::decode_error>(&d)) FAIL(e->to_string());
  return std::get<bgp::update_message>(std::get<bgp::message>(d));
}
bool has_type(const std::vector<std::uint8_t>& v, std::uint8_t t) { return std::find(v.begin(), v.end(), t) != v.end(); }
using seq = std::vector<std::uint32_t>;
constexpr auto sequence = bgp::as_segment::kind::sequence;
}  // namespace

TEST_CASE("bgp codec: AS4_PATH and AS4_AGGREGATOR towards a 2-octet peer (RFC 6793 §4.2.2)", "[unit][bgp]") {
  bgp::update_message u;
  u.has_attributes = true;
  u.attrs.as_path = {{sequence, {4200000001u, 65001}}, {bgp::as_segment::kind::set, {65010, 4200000002u}}};
  u.attrs.next_hop = ip("192.0.2.1");
  u.attrs.unknown = {{bgp::attr::optional | bgp::attr::transitive, bgp::attr::aggregator, {0xfa, 0x56, 0xea, 0x01, 10, 0, 0, 9}}};
  u.nlri = {pfx("10.244.1.0/26")};
  const auto two = bgp::encode(u, {false});
  const auto types = attribute_types(two);
  CHECK(has_type(types, bgp::attr::as4_path));
  CHECK(has_type(types, bgp::attr::as4_aggregator));
  // What an old speaker reads: AS_TRANS in AS_PATH and AGGREGATOR
  auto old = std::get<bgp::update_message>(std::get<bgp::message>(bgp::decode(two, {false})));
  CHECK(old == u);  // a NEW receiver merges them back into the real path
  // The AS_PATH octets themselves: 23456 65001 {65010 23456}
  const bytes two_octet_path{0x40, 2, 12, 2, 2, 0x5b, 0xa0, 0xfd, 0xe9, 1, 2, 0xfd, 0xf2, 0x5b, 0xa0};
  CHECK(std::search(two.begin(), two.end(), two_octet_path.begin(), two_octet_path.end()) != two.end());
  const bytes aggregator{0xc0, 7, 6, 0x5b, 0xa0, 10, 0, 0, 9};
  CHECK(std::search(two.begin(), two.end(), aggregator.begin(), aggregator.end()) != two.end());
  // To a 4-octet peer: no AS4 attributes; a path of small AS numbers needs none either
  CHECK(!has_type(attribute_types(bgp::encode(u, {true})), bgp::attr::as4_path));
  u.attrs.as_path = {{sequence, {65001, 65002}}};
  u.attrs.unknown.clear();
  const auto small = attribute_types(bgp::encode(u, {false}));
  CHECK(!has_type(small, bgp::attr::as4_path));
  CHECK(!has_type(small, bgp::attr::as4_aggregator));
  // Confederation segments stay out of AS4_PATH
  u.attrs.as_path = {{bgp::as_segment::kind::confed_sequence, {65100}}, {sequence, {4200000001u}}};
  auto back = update_of(bgp::encode(u, {false}), {false});
  CHECK(back.attrs.as_path == u.attrs.as_path);
}

TEST_CASE("bgp codec: AS4_PATH from a 2-octet peer is merged into AS_PATH (RFC 6793 §4.2.3)", "[unit][bgp]") {
  // AS_PATH 65010 23456 23456 65002 (2-octet), AS4_PATH 4200000001 4200000002 65002
  const bytes as_path{0x40, 2, 10, 2, 4, 0xfd, 0xf2, 0x5b, 0xa0, 0x5b, 0xa0, 0xfd, 0xea};
  const bytes as4_path{0xc0, 17, 14, 2, 3, 0xfa, 0x56, 0xea, 0x01, 0xfa, 0x56, 0xea, 0x02, 0, 0, 0xfd, 0xea};
  auto u = update_of(raw_update({}, cat({origin_igp, as_path, next_hop_10_0_0_1, as4_path}), nlri_10_1), {false});
  CHECK(u.discarded.empty());
  REQUIRE(u.attrs.as_path.size() == 1);
  CHECK(u.attrs.as_path[0].asns == seq{65010, 4200000001u, 4200000002u, 65002});
  CHECK(u.attrs.as_path_length() == 4);

  SECTION("from a 4-octet peer AS4_PATH is ignored") {
    const bytes as_path4{0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xf2};
    auto n = update_of(raw_update({}, cat({origin_igp, as_path4, next_hop_10_0_0_1, as4_path}), nlri_10_1), {true});
    CHECK(n.attrs.as_path == std::vector<bgp::as_segment>{{sequence, {65010}}});
    CHECK(n.discarded.empty());
  }
  SECTION("an AS4_PATH longer than AS_PATH is ignored") {
    const bytes short_path{0x40, 2, 4, 2, 1, 0x5b, 0xa0};
    auto n = update_of(raw_update({}, cat({origin_igp, short_path, next_hop_10_0_0_1, as4_path}), nlri_10_1), {false});
    CHECK(n.attrs.as_path == std::vector<bgp::as_segment>{{sequence, {23456}}});
  }
  SECTION("an AGGREGATOR of a 2-octet AS other than AS_TRANS makes both AS4 attributes stale") {
    const bytes agg{0xc0, 7, 6, 0xfd, 0xea, 10, 0, 0, 9};
    const bytes as4_agg{0xc0, 18, 8, 0xfa, 0x56, 0xea, 0x01, 10, 0, 0, 8};
    auto n = update_of(raw_update({}, cat({origin_igp, as_path, next_hop_10_0_0_1, agg, as4_path, as4_agg}), nlri_10_1), {false});
    CHECK(n.attrs.as_path[0].asns == seq{65010, 23456, 23456, 65002});
    REQUIRE(n.attrs.unknown.size() == 1);
    CHECK(n.attrs.unknown[0].value == bytes{0, 0, 0xfd, 0xea, 10, 0, 0, 9});
  }
  SECTION("AGGREGATOR AS_TRANS takes AS4_AGGREGATOR's AS and address") {
    const bytes agg{0xc0, 7, 6, 0x5b, 0xa0, 10, 0, 0, 9};
    const bytes as4_agg{0xc0, 18, 8, 0xfa, 0x56, 0xea, 0x01, 10, 0, 0, 8};
    auto n = update_of(raw_update({}, cat({origin_igp, as_path, next_hop_10_0_0_1, as4_agg, agg, as4_path}), nlri_10_1), {false});
    CHECK(n.attrs.as_path[0].asns == seq{65010, 4200000001u, 4200000002u, 65002});
    REQUIRE(n.attrs.unknown.size() == 1);
    CHECK(n.attrs.unknown[0].value == bytes{0xfa, 0x56, 0xea, 0x01, 10, 0, 0, 8});
  }
  SECTION("a malformed AS4_PATH or AS4_AGGREGATOR is discarded; the route stays (RFC 7606)") {
    const bytes overrun{0xc0, 17, 6, 2, 3, 0xfa, 0x56, 0xea, 0x01};
    const bytes bad_agg{0xc0, 18, 6, 0xfa, 0x56, 0xea, 0x01, 10, 0};
    auto n = update_of(raw_update({}, cat({origin_igp, as_path, next_hop_10_0_0_1, overrun, bad_agg}), nlri_10_1), {false});
    CHECK(!n.withdraw_reason);
    CHECK(n.nlri == std::vector{pfx("10.1.0.0/16")});
    CHECK(n.attrs.as_path[0].asns == seq{65010, 23456, 23456, 65002});
    REQUIRE(n.discarded.size() == 2);
    CHECK_THAT(n.discarded[0], Catch::Contains("AS4_PATH") && Catch::Contains("overruns"));
    CHECK_THAT(n.discarded[1], Catch::Contains("AS4_AGGREGATOR") && Catch::Contains("expected 8"));
    const bytes wrong_flags{0x40, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x01};
    auto f = update_of(raw_update({}, cat({origin_igp, as_path, next_hop_10_0_0_1, wrong_flags}), nlri_10_1), {false});
    REQUIRE(f.discarded.size() == 1);
    CHECK_THAT(f.discarded[0], Catch::Contains("AS4_PATH.flags"));
  }
  SECTION("confederation segments in AS4_PATH are dropped, the rest merged") {
    const bytes with_confed{0xc0, 17, 20, 3, 1, 0, 0, 0xfe, 0x4c, 2, 3, 0xfa, 0x56, 0xea, 0x01, 0xfa, 0x56, 0xea, 0x02, 0, 0, 0xfd, 0xea};
    auto n = update_of(raw_update({}, cat({origin_igp, as_path, next_hop_10_0_0_1, with_confed}), nlri_10_1), {false});
    CHECK(n.attrs.as_path[0].asns == seq{65010, 4200000001u, 4200000002u, 65002});
    REQUIRE(n.discarded.size() == 1);
    CHECK_THAT(n.discarded[0], Catch::Contains("confederation"));
  }
}

TEST_CASE("bgp codec: attribute discard and unknown attributes", "[unit][bgp]") {
  auto u = update_of(raw_update({}, cat({origin_igp, as_path_65001, next_hop_10_0_0_1, {0x40, 6, 1, 0}, {0xc0, 200, 2, 1, 2}, {0x80, 201, 1, 1}}), nlri_10_1));
  CHECK(!u.withdraw_reason);
  CHECK(u.nlri == std::vector{pfx("10.1.0.0/16")});
  REQUIRE(u.discarded.size() == 1);
  CHECK_THAT(u.discarded[0], Catch::Contains("ATOMIC_AGGREGATE"));
  REQUIRE(u.attrs.unknown.size() == 1);  // optional transitive kept, marked partial; non-transitive dropped
  CHECK(u.attrs.unknown[0].type == 200);
  CHECK((u.attrs.unknown[0].flags & bgp::attr::partial));
  // A repeated attribute: the first one counts.
  auto r = update_of(raw_update({}, cat({origin_igp, as_path_65001, next_hop_10_0_0_1, {0x40, 1, 1, 2}}), nlri_10_1));
  CHECK(r.attrs.origin == bgp::origin_type::igp);
  CHECK(r.discarded.size() == 1);
}

TEST_CASE("bgp codec: LARGE_COMMUNITY (RFC 8092) round-trips, duplicates sent once and dropped on receipt", "[unit][bgp]") {
  bgp::update_message u;
  u.has_attributes = true;
  u.attrs.as_path = {{bgp::as_segment::kind::sequence, {65001}}};
  u.attrs.next_hop = ip("192.0.2.1");
  u.attrs.communities = {0xfde80064};  // 65000:100
  u.attrs.large_communities = {{65000, 300, 100}, {4200000000u, 1, 2}};
  u.nlri = {pfx("10.244.1.0/26")};
  CHECK(std::get<bgp::update_message>(roundtrip(u)) == u);
  CHECK(std::get<bgp::update_message>(roundtrip(u, {false})) == u);
  CHECK(u.attrs.large_communities[0].to_string() == "65000:300:100");
  // on the wire: optional transitive, type 32, 24 octets, in ascending type order (after COMMUNITIES)
  auto b = bgp::encode(u);
  const bytes head{0xc0, 32, 24, 0, 0, 0xfd, 0xe8, 0, 0, 1, 0x2c, 0, 0, 0, 0x64};
  auto at = std::search(b.begin(), b.end(), head.begin(), head.end());
  REQUIRE(at != b.end());
  const bytes comm{0xc0, 8, 4, 0xfd, 0xe8, 0, 0x64};
  CHECK(std::search(b.begin(), b.end(), comm.begin(), comm.end()) < at);

  // A duplicate is never sent; one received is dropped silently (not an error).
  auto dup = u;
  dup.attrs.large_communities.push_back({65000, 300, 100});
  CHECK(bgp::encode(dup) == b);
  const bytes twice{0xc0, 32, 24, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3};
  auto r = update_of(raw_update({}, cat({origin_igp, as_path_65001, next_hop_10_0_0_1, twice}), nlri_10_1));
  CHECK(!r.withdraw_reason);
  CHECK(r.attrs.large_communities == std::vector<bgp::large_community>{{1, 2, 3}});

  // Many: the attribute takes the extended length (30 x 12 = 360 octets) and still round-trips.
  auto many = u;
  many.attrs.large_communities.clear();
  for (std::uint32_t i = 0; i < 30; ++i) many.attrs.large_communities.push_back({64512, i, i * 7});
  CHECK(std::get<bgp::update_message>(roundtrip(many)) == many);
  const bytes ext{0xd0, 32, 0x01, 0x68};
  auto eb = bgp::encode(many);
  CHECK(std::search(eb.begin(), eb.end(), ext.begin(), ext.end()) != eb.end());
}

TEST_CASE("bgp codec: a malformed LARGE_COMMUNITY is treat-as-withdraw (RFC 8092 §5, RFC 7606)", "[unit][bgp]") {
  auto check = [](const bytes& lc, std::uint8_t sub, const char* field) {
    auto u = update_of(raw_update({}, cat({origin_igp, as_path_65001, next_hop_10_0_0_1, lc}), nlri_10_1));
    REQUIRE(u.withdraw_reason);
    CHECK(u.withdraw_reason->code == 3);
    CHECK(u.withdraw_reason->subcode == sub);
    CHECK(u.withdraw_reason->field == field);
    CHECK(u.nlri.empty());
    CHECK(u.withdrawn == std::vector{pfx("10.1.0.0/16")});
    CHECK(u.attrs.large_communities.empty());
  };
  SECTION("length not a multiple of 12") { check({0xc0, 32, 11, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0}, 5, "UPDATE.LARGE_COMMUNITY"); }
  SECTION("length 13") { check({0xc0, 32, 13, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 9}, 5, "UPDATE.LARGE_COMMUNITY"); }
  SECTION("empty") { check({0xc0, 32, 0}, 5, "UPDATE.LARGE_COMMUNITY"); }
  SECTION("not transitive") { check({0x80, 32, 12, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}, 4, "UPDATE.LARGE_COMMUNITY.flags"); }
  SECTION("the error names the attribute") {
    auto u = update_of(raw_update({}, cat({origin_igp, as_path_65001, next_hop_10_0_0_1, {0xc0, 32, 5, 1, 2, 3, 4, 5}}), nlri_10_1));
    REQUIRE(u.withdraw_reason);
    CHECK_THAT(u.withdraw_reason->to_string(), Catch::Contains("UPDATE.LARGE_COMMUNITY: length 5, expected a non-zero multiple of 12"));
  }
}
