// host-local configuration: defaults, every error path (each names its key), the CNI
// JSON form and its precedence, and the TOML round trip.
#include <cnf/plugins/host-local.hpp>
#include <cnf/settings.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <string>

namespace hl = cnf::host_local;

namespace {

cnf::ip_address ip(const char* s) { return cnf::ip_address::parse(s).value(); }
cnf::ip_prefix net(const char* s) { return cnf::ip_prefix::parse(s).value(); }

cnf::result<hl::config> from_toml(const std::string& body) {
  return hl::parse_config("[ipam]\nplugin = \"host-local\"\n" + body, "profile.toml", "ipam");
}

// The error message of a config that must not parse.
std::string toml_error(const std::string& body) {
  auto c = from_toml(body);
  REQUIRE(!c);
  CHECK(c.error().code == cnf::errc::invalid);
  return c.error().message;
}

cnf::result<hl::config> from_json(const std::string& text, const hl::config& base = {}) {
  auto v = boost::json::parse(text);
  return hl::config_from_json(v.as_object(), base, "ipam");
}

std::string json_error(const std::string& text, const hl::config& base = {}) {
  auto c = from_json(text, base);
  REQUIRE(!c);
  CHECK(c.error().code == cnf::errc::invalid);
  return c.error().message;
}

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

}  // namespace

TEST_CASE("host-local config: defaults per range") {
  auto c = from_toml(R"(ranges = [[{ subnet = "10.22.0.0/24" }], [{ subnet = "fd00:22::/64" }]])").value();
  REQUIRE(c.ranges.size() == 2);
  auto& v4 = c.ranges[0].ranges.at(0);
  CHECK(v4.subnet == net("10.22.0.0/24"));
  CHECK(v4.range_start == ip("10.22.0.1"));
  CHECK(v4.range_end == ip("10.22.0.254"));
  CHECK(v4.gateway == ip("10.22.0.1"));
  auto& v6 = c.ranges[1].ranges.at(0);
  CHECK(v6.range_start == ip("fd00:22::1"));
  CHECK(v6.range_end == ip("fd00:22::ffff:ffff:ffff:ffff"));
  CHECK(v6.gateway == ip("fd00:22::1"));
  CHECK(c.range_sets(cnf::ip_family::v4) == 1);
  CHECK(c.range_sets(cnf::ip_family::v6) == 1);
  CHECK(c.scope == "default");
  CHECK(c.orphan_grace == std::chrono::seconds(60));
  CHECK(!c.parallel_writes);  // unset: decided by the datastore
  CHECK(c.reserved.empty());
}

TEST_CASE("host-local config: explicit values, several ranges per set, [[ipam.ranges]] tables") {
  auto c = from_toml(R"(
ranges = [
  [ { subnet = "10.22.0.0/24", rangeStart = "10.22.0.10", rangeEnd = "10.22.0.20", gateway = "10.22.0.254" },
    { subnet = "10.23.0.0/24" } ],
]
reserved = ["10.22.0.15", "10.23.0.128/28"]
scope = "net-a"
orphan_grace_seconds = 5
)").value();
  REQUIRE(c.ranges.size() == 1);
  REQUIRE(c.ranges[0].ranges.size() == 2);
  CHECK(c.ranges[0].ranges[0].range_start == ip("10.22.0.10"));
  CHECK(c.ranges[0].ranges[0].range_end == ip("10.22.0.20"));
  CHECK(c.ranges[0].ranges[0].gateway == ip("10.22.0.254"));
  REQUIRE(c.reserved.size() == 2);
  CHECK(c.reserved[0] == cnf::ip_prefix(ip("10.22.0.15"), 32));
  CHECK(c.is_reserved(ip("10.23.0.140")));
  CHECK(!c.is_reserved(ip("10.23.0.144")));
  CHECK(c.scope == "net-a");
  CHECK(c.orphan_grace == std::chrono::seconds(5));

  auto t = hl::parse_config(R"(
[[ipam.ranges]]
subnet = "10.30.0.0/24"
[[ipam.ranges]]
subnet = "fd00:30::/120"
)", "p.toml", "ipam").value();
  REQUIRE(t.ranges.size() == 2);
  CHECK(t.ranges[1].family() == cnf::ip_family::v6);
  CHECK(t.ranges[1].ranges[0].range_end == ip("fd00:30::ff"));
}

TEST_CASE("host-local config: every error names its key path") {
  struct bad_case {
    const char* body;
    const char* key;
    const char* what;
  };
  const bad_case cases[] = {
      {"", "ipam.ranges", "is required"},
      {"ranges = 5", "ipam.ranges", "expected an array"},
      {"ranges = []", "ipam.ranges", "at least one range set"},
      {"ranges = [5]", "ipam.ranges[0]", "expected a range set"},
      {"ranges = [[]]", "ipam.ranges[0]", "at least one range"},
      {"ranges = [[\"10.0.0.0/24\"]]", "ipam.ranges[0][0]", "expected a table"},
      {"ranges = [[{ rangeStart = \"10.0.0.5\" }]]", "ipam.ranges[0][0].subnet", "is required"},
      {"ranges = [[{ subnet = 10 }]]", "ipam.ranges[0][0].subnet", "expected a string"},
      {"ranges = [[{ subnet = \"10.0.0.0\" }]]", "ipam.ranges[0][0].subnet", "missing /length"},
      {"ranges = [[{ subnet = \"10.0.0.5/24\" }]]", "ipam.ranges[0][0].subnet", "host bits set"},
      {"ranges = [[{ subnet = \"10.0.0.0/31\" }]]", "ipam.ranges[0][0].subnet", "too small"},
      {"ranges = [[{ subnet = \"fd00::/127\" }]]", "ipam.ranges[0][0].subnet", "too small"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }, { subnet = \"10.1.0.0/24\", rangeStart = \"10.0.0.5\" }]]",
       "ipam.ranges[0][1].rangeStart", "outside subnet 10.1.0.0/24"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\", rangeStart = \"fd00::1\" }]]", "ipam.ranges[0][0].rangeStart", "IPv6 address"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\", rangeStart = \"10.0.0.0\" }]]", "ipam.ranges[0][0].rangeStart", "network address"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\", rangeEnd = \"10.0.0.255\" }]]", "ipam.ranges[0][0].rangeEnd", "broadcast address"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\", rangeEnd = \"10.0.1.1\" }]]", "ipam.ranges[0][0].rangeEnd", "outside subnet"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\", rangeStart = \"nope\" }]]", "ipam.ranges[0][0].rangeStart", "not an IP address"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\", rangeStart = \"10.0.0.50\", rangeEnd = \"10.0.0.40\" }]]",
       "ipam.ranges[0][0].rangeStart", "after rangeEnd 10.0.0.40"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\", gateway = \"10.9.0.1\" }]]", "ipam.ranges[0][0].gateway", "outside subnet"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\", gateway = 1 }]]", "ipam.ranges[0][0].gateway", "expected a string"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\", rnageStart = \"10.0.0.9\" }]]", "ipam.ranges[0][0].rnageStart",
       "did you mean 'rangeStart'"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }, { subnet = \"fd00::/64\" }]]", "ipam.ranges[0][1].subnet", "one family"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }], [{ subnet = \"10.0.0.0/25\" }]]", "ipam.ranges[1][0]", "overlaps ipam.ranges[0][0]"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\", rangeEnd = \"10.0.0.100\" }, { subnet = \"10.0.0.0/24\", rangeStart = \"10.0.0.100\" }]]",
       "ipam.ranges[0][1]", "overlaps ipam.ranges[0][0]"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }]]\nreserved = [\"10.0.0.1\", \"x\"]", "ipam.reserved[1]", "not an IP address or CIDR"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }]]\nreserved = [\"10.0.0.1\", 7]", "ipam.reserved[1]", "expected a string"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }]]\nreserved = [\"10.0.0.9/24\"]", "ipam.reserved[0]", "host bits set"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }]]\nreserved = [\"10.5.0.1\"]", "ipam.reserved[0]", "none of the ranges"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }]]\nreserved = 5", "ipam.reserved", "expected an array"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }]]\nscope = \"Net_A\"", "ipam.scope", "lowercase letters"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }]]\nscope = 3", "ipam.scope", "expected a string"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }]]\norphan_grace_seconds = -1", "ipam.orphan_grace_seconds", "negative"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }]]\nrange = 1", "ipam.range", "did you mean 'ranges'"},
      {"ranges = [[{ subnet = \"10.0.0.0/24\" }]]\nparallel_writes = 1", "ipam.parallel_writes", "expected true or false"},
  };
  for (auto& bc : cases) {
    INFO("config: " << bc.body);
    auto msg = toml_error(bc.body);
    INFO("message: " << msg);
    CHECK(has(msg, std::string(bc.key) + ": "));
    CHECK(has(msg, bc.what));
    CHECK(has(msg, "profile.toml:"));
  }
}

TEST_CASE("host-local config: errors carry the line of the offending value") {
  auto msg = toml_error("ranges = [\n  [{ subnet = \"10.0.0.0/24\" }],\n  [{ subnet = \"10.1.0.0/24\", rangeEnd = \"10.2.0.9\" }],\n]\n");
  // The [ipam] header and plugin line come first: the bad value is on line 5.
  CHECK(has(msg, "profile.toml:5:"));
  CHECK(has(msg, "ipam.ranges[1][0].rangeEnd"));
}

TEST_CASE("host-local config: several problems are all reported") {
  auto msg = toml_error(R"(ranges = [[{ subnet = "10.0.0.0/24", rangeStart = "10.9.9.9", gateway = "10.8.8.8" }]]
scope = "")");
  CHECK(has(msg, "ipam.ranges[0][0].rangeStart"));
  CHECK(has(msg, "ipam.ranges[0][0].gateway"));
  CHECK(has(msg, "ipam.scope"));
}

TEST_CASE("host-local config: CNI ipam object (ranges form and reference single-range form)") {
  auto c = from_json(R"({"type":"cnf","ranges":[[{"subnet":"10.40.0.0/24","rangeStart":"10.40.0.10","gateway":"10.40.0.1"}],
                         [{"subnet":"fd00:40::/64"}]],"reserved":["10.40.0.11"],"scope":"pods","orphanGraceSeconds":9,
                         "routes":[{"dst":"0.0.0.0/0"}]})").value();
  REQUIRE(c.ranges.size() == 2);
  CHECK(c.ranges[0].ranges[0].range_start == ip("10.40.0.10"));
  CHECK(c.ranges[1].family() == cnf::ip_family::v6);
  CHECK(c.is_reserved(ip("10.40.0.11")));
  CHECK(c.scope == "pods");
  CHECK(c.orphan_grace == std::chrono::seconds(9));

  auto legacy = from_json(R"({"type":"cnf","subnet":"10.41.0.0/16","rangeStart":"10.41.1.0","rangeEnd":"10.41.1.255"})").value();
  REQUIRE(legacy.ranges.size() == 1);
  CHECK(legacy.ranges[0].ranges[0].range_start == ip("10.41.1.0"));
  CHECK(legacy.ranges[0].ranges[0].range_end == ip("10.41.1.255"));
  CHECK(legacy.ranges[0].ranges[0].gateway == ip("10.41.0.1"));
}

TEST_CASE("host-local config: CNI ipam object precedence over the profile") {
  auto profile = from_toml(R"(ranges = [[{ subnet = "10.50.0.0/24" }]]
reserved = ["10.50.0.9"]
scope = "from-profile")").value();

  // Ranges in the object: the whole plan (ranges + reserved) comes from it.
  auto c = from_json(R"({"type":"cnf","ranges":[[{"subnet":"10.60.0.0/24"}]]})", profile).value();
  REQUIRE(c.ranges.size() == 1);
  CHECK(c.ranges[0].ranges[0].subnet == net("10.60.0.0/24"));
  CHECK(c.reserved.empty());
  CHECK(c.scope == "from-profile");

  // No ranges in the object: the profile's plan; scope may still come from the object.
  auto d = from_json(R"({"type":"cnf","scope":"from-cni"})", profile).value();
  CHECK(d.ranges == profile.ranges);
  CHECK(d.reserved == profile.reserved);
  CHECK(d.scope == "from-cni");

  auto e = json_error(R"({"type":"cnf","reserved":["10.50.0.7"]})", profile);
  CHECK(has(e, "ipam.reserved: "));
  auto f = json_error(R"({"type":"cnf"})");
  CHECK(has(f, "ipam.ranges: is required"));
}

TEST_CASE("host-local config: CNI ipam object errors name the JSON path") {
  struct bad_case {
    const char* json;
    const char* key;
    const char* what;
  };
  const bad_case cases[] = {
      {R"({"ranges":5})", "ipam.ranges", "expected an array"},
      {R"({"ranges":[{"subnet":"10.0.0.0/24"}]})", "ipam.ranges[0]", "expected a range set"},
      {R"({"ranges":[[5]]})", "ipam.ranges[0][0]", "expected a range object"},
      {R"({"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.1.0.0/24","rangeStart":"10.0.0.5"}]]})",
       "ipam.ranges[0][1].rangeStart", "outside subnet"},
      {R"({"ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":7}]]})", "ipam.ranges[0][0].rangeEnd", "expected a string, got number"},
      {R"({"ranges":[[{"subnet":"10.0.0.0/24","gatway":"10.0.0.1"}]]})", "ipam.ranges[0][0].gatway", "did you mean 'gateway'"},
      {R"({"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.128/25"}]]})", "ipam.ranges[1][0]", "overlaps ipam.ranges[0][0]"},
      {R"({"subnet":"10.0.0.0/24","rangeStart":"10.0.1.0"})", "ipam.rangeStart", "outside subnet"},
      {R"({"subnet":"10.0.0.3/24"})", "ipam.subnet", "host bits set"},
      {R"({"subnet":"10.0.0.0/24","ranges":[[{"subnet":"10.1.0.0/24"}]]})", "ipam.subnet", "not both"},
      {R"({"ranges":[[{"subnet":"10.0.0.0/24"}]],"reserved":["10.0.0.1","q"]})", "ipam.reserved[1]", "not an IP address"},
      {R"({"ranges":[[{"subnet":"10.0.0.0/24"}]],"scope":"a.b"})", "ipam.scope", "lowercase"},
      {R"({"ranges":[[{"subnet":"10.0.0.0/24"}]],"orphanGraceSeconds":-3})", "ipam.orphanGraceSeconds", "non-negative"},
  };
  for (auto& bc : cases) {
    INFO("json: " << bc.json);
    auto msg = json_error(bc.json);
    INFO("message: " << msg);
    CHECK(has(msg, std::string(bc.key) + ": "));
    CHECK(has(msg, bc.what));
  }
}

TEST_CASE("host-local config: to_toml reads back to the same configuration") {
  auto c = from_toml(R"(
ranges = [
  [ { subnet = "10.22.0.0/24", rangeStart = "10.22.0.10", rangeEnd = "10.22.0.20", gateway = "10.22.0.254" },
    { subnet = "10.23.0.0/24" } ],
  [ { subnet = "fd00:22::/64" } ],
]
reserved = ["10.22.0.15", "10.23.0.128/28"]
scope = "x-1"
orphan_grace_seconds = 7
parallel_writes = false
)").value();
  CHECK(c.parallel_writes == false);
  auto text = "[ipam]\n" + hl::to_toml(c);
  INFO(text);
  auto back = hl::parse_config(text, "generated", "ipam");
  REQUIRE(back);
  CHECK(*back == c);
}

TEST_CASE("host-local names: allocations and handles map to datastore-safe names") {
  CHECK(hl::allocation_name("default", ip("10.0.0.5")) == "default.10.0.0.5");
  CHECK(hl::allocation_name("s", ip("fd00::5")) == "s.fd00--5");
  CHECK(hl::handle_name("s", "k8s-pod-network.4c2f") == "s.k8s-pod-network.4c2f");
  CHECK(hl::handle_name("s", "Net/A b") == "s._4eet_2f_41_20b");
  // Distinct handles never share a name, long ones included.
  std::string a(400, 'a'), b(400, 'a');
  b.back() = 'b';
  auto na = hl::handle_name("s", a), nb = hl::handle_name("s", b);
  CHECK(na != nb);
  CHECK(na.size() < 220);
}
