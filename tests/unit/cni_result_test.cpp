// Tests for cnf/cni/result.hpp: output per version, parsing from every version,
// conversion, VERSION output.
#include <cnf/cni/result.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <string>

using namespace cnf::cni;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {
cnf::ip_prefix cidr(const char* s) { return cnf::ip_prefix::parse(s, true).value(); }
cnf::ip_address ip(const char* s) { return cnf::ip_address::parse(s).value(); }

add_result full_result() {
  add_result r;
  r.interfaces.push_back({"cali1234567890a", "ee:ee:ee:ee:ee:ee", 1450, "", "", ""});
  r.interfaces.push_back({"eth0", "0a:58:0a:01:00:05", 1450, "/var/run/netns/cni-1", "/run/vhost.sock", "0000:04:00.5"});
  r.ips.push_back({cidr("10.1.0.5/16"), ip("10.1.0.1"), 1});
  r.ips.push_back({cidr("fd00::5/64"), std::nullopt, 1});
  route def;
  def.dst = cidr("0.0.0.0/0");
  def.gw = ip("10.1.0.1");
  def.mtu = 1400;
  def.advmss = 1360;
  def.priority = 10;
  def.table = 100;
  def.scope = 0;
  r.routes.push_back(def);
  route v6;
  v6.dst = cidr("::/0");
  r.routes.push_back(v6);
  r.dns.nameservers = {"10.96.0.10"};
  r.dns.domain = "cluster.local";
  r.dns.search = {"default.svc.cluster.local", "svc.cluster.local"};
  r.dns.options = {"ndots:5"};
  return r;
}

/// What `r` becomes after a trip through version `v`.
add_result as_seen_in(add_result r, version v) {
  r.cni_version = v;
  if (!has_1_1_fields(v)) {
    for (auto& i : r.interfaces) {
      i.mtu = 0;
      i.socket_path.clear();
      i.pci_id.clear();
    }
    for (auto& rt : r.routes) {
      rt.mtu = rt.advmss = rt.priority = 0;
      rt.table.reset();
      rt.scope.reset();
    }
  }
  return r;
}

cnf::cni::error parse_error(std::string_view text, std::optional<version> assumed = std::nullopt) {
  auto r = parse_result(text, assumed);
  REQUIRE_FALSE(r);
  return r.error();
}
}  // namespace

TEST_CASE("1.1.0 output: exact JSON with every 1.1 field", "[cni][result]") {
  CHECK(to_json(full_result(), version::v1_1_0) ==
        R"({"cniVersion":"1.1.0","interfaces":[{"name":"cali1234567890a","mac":"ee:ee:ee:ee:ee:ee","mtu":1450},)"
        R"({"name":"eth0","mac":"0a:58:0a:01:00:05","mtu":1450,"sandbox":"/var/run/netns/cni-1","socketPath":"/run/vhost.sock","pciID":"0000:04:00.5"}],)"
        R"("ips":[{"interface":1,"address":"10.1.0.5/16","gateway":"10.1.0.1"},{"interface":1,"address":"fd00::5/64"}],)"
        R"("routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1","mtu":1400,"advmss":1360,"priority":10,"table":100,"scope":0},{"dst":"::/0"}],)"
        R"("dns":{"nameservers":["10.96.0.10"],"domain":"cluster.local","search":["default.svc.cluster.local","svc.cluster.local"],"options":["ndots:5"]}})");
}

TEST_CASE("1.0.0 output: no ips[].version and no 1.1-only fields", "[cni][result]") {
  CHECK(to_json(full_result(), version::v1_0_0) ==
        R"({"cniVersion":"1.0.0","interfaces":[{"name":"cali1234567890a","mac":"ee:ee:ee:ee:ee:ee"},)"
        R"({"name":"eth0","mac":"0a:58:0a:01:00:05","sandbox":"/var/run/netns/cni-1"}],)"
        R"("ips":[{"interface":1,"address":"10.1.0.5/16","gateway":"10.1.0.1"},{"interface":1,"address":"fd00::5/64"}],)"
        R"("routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"::/0"}],)"
        R"("dns":{"nameservers":["10.96.0.10"],"domain":"cluster.local","search":["default.svc.cluster.local","svc.cluster.local"],"options":["ndots:5"]}})");
}

TEST_CASE("0.x output: ips[].version from the address family", "[cni][result]") {
  for (auto v : {version::v0_3_0, version::v0_3_1, version::v0_4_0}) {
    INFO(to_string(v));
    std::string j = to_json(full_result(), v);
    CHECK_THAT(j, StartsWith(R"({"cniVersion":")" + std::string(to_string(v)) + "\""));
    CHECK_THAT(j, Contains(R"({"version":"4","interface":1,"address":"10.1.0.5/16","gateway":"10.1.0.1"})"));
    CHECK_THAT(j, Contains(R"({"version":"6","interface":1,"address":"fd00::5/64"})"));
    CHECK_THAT(j, Contains(R"("routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"::/0"}])"));
    CHECK_THAT(j, !Contains("socketPath"));
    CHECK_THAT(j, !Contains("pciID"));
    CHECK_THAT(j, !Contains("\"mtu\""));
    CHECK_THAT(j, !Contains("advmss"));
    auto doc = boost::json::parse(j);  // valid JSON
    CHECK(doc.at("ips").as_array().size() == 2);
  }
  for (auto v : {version::v1_0_0, version::v1_1_0}) CHECK_THAT(to_json(full_result(), v), !Contains("\"version\""));
}

TEST_CASE("results round-trip through every version", "[cni][result]") {
  for (auto v : supported_versions) {
    INFO(to_string(v));
    auto text = to_json(full_result(), v);
    auto back = parse_result(text);
    REQUIRE(back);
    CHECK(back->cni_version == v);
    CHECK(*back == as_seen_in(full_result(), v));
    CHECK(to_json(*back) == text);  // stable
  }
}

TEST_CASE("empty parts are omitted; unset optional fields too", "[cni][result]") {
  add_result r;
  CHECK(to_json(r, version::v1_1_0) == R"({"cniVersion":"1.1.0"})");
  r.ips.push_back({cidr("192.168.1.3/24"), std::nullopt, 0});  // interface 0 is a real index
  r.interfaces.push_back({"eth0", "", 0, "", "", ""});
  CHECK(to_json(r, version::v1_0_0) ==
        R"({"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"interface":0,"address":"192.168.1.3/24"}]})");
  r.dns.domain = "example";
  CHECK_THAT(to_json(r, version::v1_0_0), Contains(R"("dns":{"domain":"example"})"));
  // to_json(r) writes the result's own version
  r.cni_version = version::v0_4_0;
  CHECK_THAT(to_json(r), StartsWith(R"({"cniVersion":"0.4.0")"));
}

TEST_CASE("strings are escaped and survive a round trip", "[cni][result]") {
  add_result r;
  r.interfaces.push_back({"we\"ird\\", "", 0, "/run/netns/a b\n", "", ""});
  auto j = to_json(r, version::v1_1_0);
  CHECK_THAT(j, Contains(R"("name":"we\"ird\\")"));
  CHECK_THAT(j, Contains(R"("sandbox":"/run/netns/a b\n")"));
  auto back = parse_result(j);
  REQUIRE(back);
  CHECK(back->interfaces.at(0).name == "we\"ird\\");
  CHECK(back->interfaces.at(0).sandbox == "/run/netns/a b\n");
}

TEST_CASE("0.3.1 result converts to 1.1.0 and back down", "[cni][result]") {
  const char* in = R"({
    "cniVersion": "0.3.1",
    "interfaces": [{"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}],
    "ips": [{"version": "4", "interface": 0, "address": "10.1.0.5/16", "gateway": "10.1.0.1"},
            {"version": "6", "address": "2001:db8::5/64"}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {"nameservers": ["10.1.0.1"]}
  })";
  auto r = parse_result(std::string_view(in));
  REQUIRE(r);
  CHECK(r->cni_version == version::v0_3_1);
  REQUIRE(r->ips.size() == 2);
  CHECK(r->ips[0].address == cidr("10.1.0.5/16"));  // host bits kept
  CHECK(r->ips[0].interface_index == 0u);
  CHECK_FALSE(r->ips[1].interface_index.has_value());
  CHECK(to_json(*r, version::v1_1_0) ==
        R"({"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"99:88:77:66:55:44","sandbox":"/var/run/netns/blue"}],)"
        R"("ips":[{"interface":0,"address":"10.1.0.5/16","gateway":"10.1.0.1"},{"address":"2001:db8::5/64"}],)"
        R"("routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.1.0.1"]}})");
  // 1.1.0 down to 0.4.0: version fields come back from the addresses
  auto up = parse_result(to_json(*r, version::v1_1_0));
  REQUIRE(up);
  CHECK_THAT(to_json(*up, version::v0_4_0), Contains(R"({"version":"6","address":"2001:db8::5/64"})"));
}

TEST_CASE("delegated IPAM output (abbreviated result) parses", "[cni][result]") {
  // SPEC appendix: host-local's answer, which has no cniVersion of its own here
  const char* in = R"({"ips":[{"address":"10.1.0.5/16","gateway":"10.1.0.1"}],
                       "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.1.0.1"]}})";
  auto r = parse_result(std::string_view(in), version::v1_1_0);
  REQUIRE(r);
  CHECK(r->cni_version == version::v1_1_0);
  CHECK(r->interfaces.empty());
  REQUIRE(r->ips.size() == 1);
  CHECK(r->ips[0].gateway == ip("10.1.0.1"));
  CHECK(r->routes.at(0).dst == cidr("0.0.0.0/0"));
  CHECK(r->dns.nameservers == std::vector<std::string>{"10.1.0.1"});
  // without an assumed version a version-less result is refused
  auto e = parse_error(in);
  CHECK(e.code == error_code::incompatible_version);
  CHECK_THAT(e.msg, StartsWith("result.cniVersion: required field missing"));
}

TEST_CASE("1.1 fields are read from 1.1.0 input", "[cni][result]") {
  auto r = parse_result(std::string_view(
      R"({"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mtu":9000,"socketPath":"/s","pciID":"0000:00:01.0"}],)"
      R"("routes":[{"dst":"10.0.0.0/8","gw":"10.1.0.1","mtu":1400,"advmss":1360,"priority":5,"table":0,"scope":253}]})"));
  REQUIRE(r);
  CHECK(r->interfaces.at(0).mtu == 9000);
  CHECK(r->interfaces.at(0).socket_path == "/s");
  CHECK(r->interfaces.at(0).pci_id == "0000:00:01.0");
  const auto& rt = r->routes.at(0);
  CHECK(rt.mtu == 1400);
  CHECK(rt.advmss == 1360);
  CHECK(rt.priority == 5);
  CHECK(rt.table == 0u);  // table 0 is set, not absent
  CHECK(rt.scope == std::optional<std::uint8_t>(253));
}

TEST_CASE("result parse errors name the path", "[cni][result]") {
  struct bad_case {
    const char* json;
    error_code code;
    const char* msg;
  };
  const bad_case cases[] = {
      {R"({"cniVersion":"1.0.0","ips":[{"gateway":"10.0.0.1"}]})", error_code::invalid_config,
       "result.ips[0].address: required field missing"},
      {R"({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5"}]})", error_code::invalid_config,
       "result.ips[0].address: invalid CIDR '10.0.0.5': missing /length"},
      {R"({"cniVersion":"1.0.0","ips":[{"address":5}]})", error_code::invalid_config,
       "result.ips[0].address: expected string, got number"},
      {R"({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/24","gateway":"nope"}]})", error_code::invalid_config,
       "result.ips[0].gateway: invalid IP address 'nope'"},
      {R"({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/24","gateway":"fd00::1"}]})", error_code::invalid_config,
       "result.ips[0].gateway: gateway fd00::1 is not of the family of address 10.0.0.5/24"},
      {R"({"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.5/24","interface":1}]})",
       error_code::invalid_config, "result.ips[0].interface: index 1 out of range (1 interfaces)"},
      {R"({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/24","interface":-1}]})", error_code::invalid_config,
       "result.ips[0].interface: expected non-negative integer, got -1"},
      {R"({"cniVersion":"0.4.0","ips":[{"version":"6","address":"10.0.0.5/24"}]})", error_code::invalid_config,
       "result.ips[0].version: \"6\" does not match address 10.0.0.5/24"},
      {R"({"cniVersion":"0.3.0","ips":[{"version":"5","address":"10.0.0.5/24"}]})", error_code::invalid_config,
       "result.ips[0].version: expected \"4\" or \"6\", got \"5\""},
      {R"({"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.5/24"}})", error_code::incompatible_version,
       "result.cniVersion: unsupported result version \"0.2.0\" (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)"},
      {R"({"cniVersion":1})", error_code::invalid_config, "result.cniVersion: expected string, got number"},
      {R"({"cniVersion":"1.0.0","interfaces":[{"mac":"aa"}]})", error_code::invalid_config,
       "result.interfaces[0].name: required field missing"},
      {R"({"cniVersion":"1.0.0","interfaces":{"name":"eth0"}})", error_code::invalid_config,
       "result.interfaces: expected array, got object"},
      {R"({"cniVersion":"1.0.0","interfaces":["eth0"]})", error_code::invalid_config,
       "result.interfaces[0]: expected object, got string"},
      {R"({"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mtu":"1500"}]})", error_code::invalid_config,
       "result.interfaces[0].mtu: expected non-negative integer, got string"},
      {R"({"cniVersion":"1.1.0","routes":[{"gw":"10.0.0.1"}]})", error_code::invalid_config,
       "result.routes[0].dst: required field missing"},
      {R"({"cniVersion":"1.1.0","routes":[{"dst":"0.0.0.0/0","scope":300}]})", error_code::invalid_config,
       "result.routes[0].scope: 300 out of range (max 255)"},
      {R"({"cniVersion":"1.1.0","routes":[{"dst":"0.0.0.0/0","table":1.5}]})", error_code::invalid_config,
       "result.routes[0].table: expected non-negative integer, got number"},
      {R"({"cniVersion":"1.1.0","dns":{"nameservers":["10.0.0.1",7]}})", error_code::invalid_config,
       "result.dns.nameservers[1]: expected string, got number"},
      {R"({"cniVersion":"1.1.0","dns":"10.0.0.1"})", error_code::invalid_config,
       "result.dns: expected object, got string"},
      {R"([1,2])", error_code::invalid_config, "result: expected object, got array"},
      {R"({"cniVersion":"1.0.0",)", error_code::decoding_failure, "result: not valid JSON"},
      {"", error_code::decoding_failure, "result: not valid JSON"},
  };
  for (const auto& c : cases) {
    INFO(c.json);
    auto e = parse_error(c.json);
    CHECK(e.code == c.code);
    CHECK_THAT(e.msg, StartsWith(c.msg));
  }
}

TEST_CASE("1.x input tolerates a stray ips[].version; nulls read as absent", "[cni][result]") {
  auto r = parse_result(std::string_view(
      R"({"cniVersion":"1.0.0","ips":[{"version":"4","address":"10.0.0.5/24","gateway":null}],"dns":null})"));
  REQUIRE(r);
  CHECK_FALSE(r->ips.at(0).gateway.has_value());
  CHECK(r->dns.empty());
}

TEST_CASE("VERSION output", "[cni][result][version]") {
  CHECK(version_output("1.1.0") ==
        R"({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})");
  CHECK(version_output("0.4.0") ==
        R"({"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})");
  CHECK(version_output() == version_output("1.1.0"));
  CHECK(version_output("") == version_output("1.1.0"));
  CHECK(version_request_version(R"({"cniVersion":"1.0.0"})") == "1.0.0");
  CHECK(version_request_version(R"({"cniVersion":"0.2.0"})") == "0.2.0");  // echoed, as the spec says
  CHECK(version_request_version("") == "1.1.0");
  CHECK(version_request_version("not json") == "1.1.0");
  CHECK(version_request_version(R"({"cniVersion":5})") == "1.1.0");
  CHECK(version_request_version(R"({"cniVersion":""})") == "1.1.0");
  // the echoed value is escaped
  auto weird = version_output("1\"0");
  CHECK(boost::json::parse(weird).at("cniVersion").as_string() == "1\"0");
}
