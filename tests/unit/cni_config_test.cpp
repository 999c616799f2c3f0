// Tests for cnf/cni/config.hpp: the stdin network config, every error path, version
// negotiation and gates, prevResult conversion, GC attachments, cnf's own keys.
#include <cnf/cni/config.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <string>

using namespace cnf::cni;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

const std::string full_config = R"({
  "cniVersion": "1.1.0",
  "cniVersions": ["0.4.0", "1.0.0", "1.1.0"],
  "name": "k8s-pod-network",
  "type": "cnf",
  "disableCheck": false,
  "disableGC": "true",
  "profile": "/etc/cnf/profile.toml",
  "mtu": 1450,
  "vethPrefix": "cnf",
  "ipam": {
    "type": "cnf-ipam",
    "ranges": [[{"subnet": "10.244.0.0/16"}, {"subnet": "10.245.0.0/16"}]],
    "routes": [{"dst": "0.0.0.0/0"}]
  },
  "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local", "search": ["svc.cluster.local"], "options": ["ndots:5"]},
  "args": {"cni": {"ips": ["10.244.1.7", "fd00::7/64"], "labels": [{"key": "app", "value": "web"}]}},
  "runtimeConfig": {
    "ips": ["10.244.1.8/24"],
    "mac": "c2:11:22:33:44:55",
    "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    "bandwidth": {"ingressRate": 2048}
  },
  "someVendorKey": {"x": 1}
})";

std::string with(std::string_view extra_members, std::string_view version = "1.1.0") {
  std::string s = R"({"cniVersion":")" + std::string(version) + R"(","name":"net","type":"cnf")";
  if (!extra_members.empty()) s += "," + std::string(extra_members);
  return s + "}";
}

cnf::cni::error config_error(const std::string& text, command cmd = command::add) {
  auto r = parse_config(text, cmd);
  REQUIRE_FALSE(r);
  return r.error();
}

}  // namespace

TEST_CASE("a full config parses into every field", "[cni][config]") {
  auto r = parse_config(full_config);
  REQUIRE(r);
  const net_config& c = *r;
  CHECK(c.cni_version == "1.1.0");
  CHECK(c.cni_versions == std::vector<std::string>{"0.4.0", "1.0.0", "1.1.0"});
  CHECK(c.version == version::v1_1_0);
  CHECK(c.name == "k8s-pod-network");
  CHECK(c.type == "cnf");
  CHECK_FALSE(c.disable_check);
  CHECK(c.disable_gc);  // the string "true" is accepted, as libcni does
  CHECK(c.profile == "/etc/cnf/profile.toml");
  CHECK(c.mtu == 1450u);
  CHECK(c.veth_prefix == "cnf");
  REQUIRE(c.ipam);
  CHECK(c.ipam->type == "cnf-ipam");
  CHECK(c.ipam->json.at("type").as_string() == "cnf-ipam");
  CHECK(c.ipam->json.at("ranges").as_array().size() == 1);
  CHECK(c.dns.nameservers == std::vector<std::string>{"10.96.0.10"});
  CHECK(c.dns.domain == "cluster.local");
  CHECK(c.dns.search == std::vector<std::string>{"svc.cluster.local"});
  CHECK(c.dns.options == std::vector<std::string>{"ndots:5"});
  REQUIRE(c.args_ips.size() == 2);
  CHECK(c.args_ips[0].to_string() == "10.244.1.7");
  CHECK_FALSE(c.args_ips[0].prefix_length.has_value());
  CHECK(c.args_ips[1].to_string() == "fd00::7/64");
  CHECK(c.args_ips[1].prefix() == cnf::ip_prefix::parse("fd00::7/64", true).value());
  CHECK(c.args.at("cni").as_object().contains("labels"));
  REQUIRE(c.runtime.ips.size() == 1);
  CHECK(c.runtime.ips[0].to_string() == "10.244.1.8/24");
  REQUIRE(c.runtime.mac);
  CHECK(c.runtime.mac->to_string() == "c2:11:22:33:44:55");
  REQUIRE(c.runtime.port_mappings.size() == 1);
  CHECK(c.runtime.port_mappings[0].at("hostPort").to_number<int>() == 8080);
  CHECK(c.runtime.json.contains("bandwidth"));
  CHECK_FALSE(c.prev_result.has_value());
  CHECK_FALSE(c.valid_attachments.has_value());
  // raw kept byte for byte for delegation; unknown keys kept in json
  CHECK(c.raw == full_config);
  CHECK(c.json.at("someVendorKey").at("x").to_number<int>() == 1);
}

TEST_CASE("a minimal config parses with defaults", "[cni][config]") {
  auto r = parse_config(with(""));
  REQUIRE(r);
  CHECK(r->name == "net");
  CHECK_FALSE(r->ipam.has_value());
  CHECK(r->dns.empty());
  CHECK_FALSE(r->mtu.has_value());
  CHECK(r->profile.empty());
  CHECK(r->veth_prefix.empty());
  CHECK_FALSE(r->disable_check);
  CHECK_FALSE(r->runtime.mac.has_value());
  // ipam {} is "no IPAM", as libcni treats an ipam without type
  auto e = parse_config(with(R"("ipam":{})"));
  REQUIRE(e);
  CHECK_FALSE(e->ipam.has_value());
}

TEST_CASE("not JSON or not an object: code 6", "[cni][config]") {
  for (const char* bad : {"", "{", "name: net", R"({"name":"net",})", "{\"a\":1} trailing", "// c\n{}"}) {
    INFO(bad);
    auto e = config_error(bad);
    CHECK(e.code == error_code::decoding_failure);
    CHECK_THAT(e.msg, StartsWith("network config: not valid JSON"));
  }
  auto e = config_error(R"(["cniVersion"])");
  CHECK(e.code == error_code::decoding_failure);
  CHECK(e.msg == "network config: expected a JSON object, got array");
}

TEST_CASE("unsupported cniVersion: code 1 listing the supported ones", "[cni][config][version]") {
  for (const char* v : {"0.2.0", "0.1.0", "2.0.0", "1.2.0"}) {
    INFO(v);
    auto e = config_error(with("", v));
    CHECK(e.code == error_code::incompatible_version);
    CHECK_THAT(e.msg, Contains(std::string("\"") + v + "\""));
    CHECK_THAT(e.msg, Contains("supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"));
  }
  auto bad = config_error(with("", "one.two"));
  CHECK(bad.code == error_code::incompatible_version);
  CHECK_THAT(bad.msg, StartsWith("cniVersion: invalid version \"one.two\""));
  CHECK_THAT(bad.msg, Contains("1.1.0"));
  auto missing = config_error(R"({"name":"net","type":"cnf"})");
  CHECK(missing.code == error_code::incompatible_version);
  CHECK_THAT(missing.msg, Contains("cniVersion is missing"));
  CHECK_THAT(missing.msg, Contains("supported: 0.3.0"));
  auto wrong_type = config_error(R"({"cniVersion":1.1,"name":"net","type":"cnf"})");
  CHECK(wrong_type.code == error_code::invalid_config);
  CHECK(wrong_type.msg == "cniVersion: expected string, got number");
}

TEST_CASE("cniVersions negotiates the highest supported version", "[cni][config][version]") {
  auto a = parse_config(with(R"("cniVersions":["0.3.1","1.0.0","2.0.0"])", "0.4.0"));
  REQUIRE(a);
  CHECK(a->version == version::v1_0_0);
  CHECK(a->cni_version == "0.4.0");
  // cniVersion absent: the list alone decides
  auto b = parse_config(R"({"cniVersions":["0.3.0","0.4.0"],"name":"net","type":"cnf"})");
  REQUIRE(b);
  CHECK(b->version == version::v0_4_0);
  // unsupported cniVersion rescued by the list
  auto c = parse_config(with(R"("cniVersions":["1.0.0"])", "3.0.0"));
  REQUIRE(c);
  CHECK(c->version == version::v1_0_0);
  // nothing supported
  auto e = config_error(with(R"("cniVersions":["0.2.0","2.0.0"])", "0.1.0"));
  CHECK(e.code == error_code::incompatible_version);
  CHECK_THAT(e.msg, Contains("cniVersions [0.2.0, 2.0.0]"));
  // malformed list
  auto t = config_error(with(R"("cniVersions":"1.0.0")"));
  CHECK(t.code == error_code::invalid_config);
  CHECK(t.msg == "cniVersions: expected array, got string");
  auto i = config_error(with(R"("cniVersions":["1.0.0",100])"));
  CHECK(i.msg == "cniVersions[1]: expected string, got number");
  auto g = config_error(with(R"("cniVersions":["1.0.0","x.y"])"));
  CHECK(g.code == error_code::invalid_config);
  CHECK(g.msg == "cniVersions[1]: invalid version \"x.y\"");
}

TEST_CASE("commands need a recent enough version", "[cni][config][version]") {
  auto chk = config_error(with("", "0.3.1"), command::check);
  CHECK(chk.code == error_code::incompatible_version);
  CHECK(chk.msg == "CHECK requires cniVersion 0.4.0 or later, config is 0.3.1");
  CHECK(parse_config(with("", "0.4.0"), command::check));
  auto st = config_error(with("", "1.0.0"), command::status);
  CHECK(st.code == error_code::incompatible_version);
  CHECK_THAT(st.msg, StartsWith("STATUS requires cniVersion 1.1.0"));
  CHECK(parse_config(with("", "1.1.0"), command::status));
  auto gc = config_error(with(R"("cni.dev/valid-attachments":[])", "1.0.0"), command::gc);
  CHECK(gc.code == error_code::incompatible_version);
  CHECK_THAT(gc.msg, StartsWith("GC requires cniVersion 1.1.0"));
  CHECK(parse_config(with("", "0.3.0"), command::del));
  CHECK(check_command_version(command::add, version::v0_3_0));
  CHECK_FALSE(check_command_version(command::gc, version::v1_0_0));
}

TEST_CASE("name and type are required and validated", "[cni][config]") {
  struct bad_case {
    std::string json;
    std::string msg;
  };
  const bad_case cases[] = {
      {R"({"cniVersion":"1.1.0","type":"cnf"})", "name: required field missing"},
      {R"({"cniVersion":"1.1.0","name":7,"type":"cnf"})", "name: expected string, got number"},
      {R"({"cniVersion":"1.1.0","name":"","type":"cnf"})", "name: \"\" must not be empty"},
      {R"({"cniVersion":"1.1.0","name":"-net","type":"cnf"})", "name: \"-net\" must start with a letter or digit"},
      {R"({"cniVersion":"1.1.0","name":"my/net","type":"cnf"})", "name: \"my/net\" invalid character '/' at offset 2"},
      {R"({"cniVersion":"1.1.0","name":"my net","type":"cnf"})", "name: \"my net\" invalid character space"},
      {R"({"cniVersion":"1.1.0","name":"net"})", "type: required field missing"},
      {R"({"cniVersion":"1.1.0","name":"net","type":null})", "type: required field missing"},
      {R"({"cniVersion":"1.1.0","name":"net","type":["cnf"]})", "type: expected string, got array"},
      {R"({"cniVersion":"1.1.0","name":"net","type":"../bin/sh"})", "type: \"../bin/sh\" invalid character '/'"},
      {R"({"cniVersion":"1.1.0","name":"net","type":"a\\b"})", "type: \"a\\b\" invalid character '\\'"},
      {R"({"cniVersion":"1.1.0","name":"net","type":".."})", "type: \"..\" must not be"},
  };
  for (const auto& c : cases) {
    INFO(c.json);
    auto e = config_error(c.json);
    CHECK(e.code == error_code::invalid_config);
    CHECK_THAT(e.msg, StartsWith(c.msg));
  }
  CHECK(parse_config(R"({"cniVersion":"1.1.0","name":"Net_1.a-b","type":"cnf"})"));
}

TEST_CASE("flags: booleans or the strings true/false", "[cni][config]") {
  auto a = parse_config(with(R"("disableCheck":"TRUE","disableGC":true)"));
  REQUIRE(a);
  CHECK(a->disable_check);
  CHECK(a->disable_gc);
  auto e = config_error(with(R"("disableCheck":"yes")"));
  CHECK(e.code == error_code::invalid_config);
  CHECK(e.msg == "disableCheck: expected true or false, got \"yes\"");
  auto e2 = config_error(with(R"("disableGC":1)"));
  CHECK(e2.msg == "disableGC: expected boolean, got number");
}

TEST_CASE("ipam: object with a type, kept whole", "[cni][config][ipam]") {
  auto e = config_error(with(R"("ipam":"host-local")"));
  CHECK(e.code == error_code::invalid_config);
  CHECK(e.msg == "ipam: expected object, got string");
  auto e2 = config_error(with(R"("ipam":{"subnet":"10.0.0.0/8"})"));
  CHECK(e2.msg == "ipam.type: required field missing");
  auto e3 = config_error(with(R"("ipam":{"type":5})"));
  CHECK(e3.msg == "ipam.type: expected string, got number");
  auto e4 = config_error(with(R"("ipam":{"type":"/usr/bin/evil"})"));
  CHECK_THAT(e4.msg, StartsWith("ipam.type: \"/usr/bin/evil\" invalid character '/'"));
}

TEST_CASE("json_node names deep paths for plugin-specific sections", "[cni][config][json]") {
  auto r = parse_config(with(R"("ipam":{"type":"cnf-ipam","ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":42}]]})"));
  REQUIRE(r);
  boost::json::value ipam = r->ipam->json;
  json_node root(ipam, "ipam");
  auto ok = root["ranges"][0][0]["subnet"].as_string();
  REQUIRE(ok);
  CHECK(*ok == "10.0.0.0/24");
  auto bad = root["ranges"][0][1]["subnet"].as_string();
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == error_code::invalid_config);
  CHECK(bad.error().msg == "ipam.ranges[0][1].subnet: expected string, got number");
  auto gone = root["ranges"][0][5]["subnet"].as_string();
  REQUIRE_FALSE(gone);
  CHECK(gone.error().msg == "ipam.ranges[0][5].subnet: required field missing");
  auto opt = root["ranges"][0][0]["gateway"].opt_string();
  REQUIRE(opt);
  CHECK_FALSE(opt->has_value());
  auto n = root["ranges"][0][0]["subnet"].as_uint();
  REQUIRE_FALSE(n);
  CHECK(n.error().msg == "ipam.ranges[0][0].subnet: expected non-negative integer, got string");
}

TEST_CASE("dns, args and runtimeConfig errors name the field", "[cni][config]") {
  struct bad_case {
    std::string members;
    std::string msg;
  };
  const bad_case cases[] = {
      {R"("dns":["10.0.0.1"])", "dns: expected object, got array"},
      {R"("dns":{"nameservers":["10.0.0.1",{}]})", "dns.nameservers[1]: expected string, got object"},
      {R"("dns":{"domain":false})", "dns.domain: expected string, got boolean"},
      {R"("dns":{"search":"a.b"})", "dns.search: expected array, got string"},
      {R"("args":"x")", "args: expected object, got string"},
      {R"("args":{"cni":[]})", "args.cni: expected object, got array"},
      {R"("args":{"cni":{"ips":["10.0.0.300"]}})", "args.cni.ips[0]: expected <ip>[/<prefix>], got \"10.0.0.300\""},
      {R"("args":{"cni":{"ips":["10.0.0.3/33"]}})", "args.cni.ips[0]: expected <ip>[/<prefix>]"},
      {R"("runtimeConfig":[])", "runtimeConfig: expected object, got array"},
      {R"("runtimeConfig":{"ips":"10.0.0.3"})", "runtimeConfig.ips: expected array, got string"},
      {R"("runtimeConfig":{"mac":"zz:11:22:33:44:55"})", "runtimeConfig.mac: invalid MAC address \"zz:11:22:33:44:55\""},
      {R"("runtimeConfig":{"mac":7})", "runtimeConfig.mac: expected string, got number"},
      {R"("runtimeConfig":{"portMappings":{"hostPort":80}})", "runtimeConfig.portMappings: expected array, got object"},
  };
  for (const auto& c : cases) {
    INFO(c.members);
    auto e = config_error(with(c.members));
    CHECK(e.code == error_code::invalid_config);
    CHECK_THAT(e.msg, StartsWith(c.msg));
  }
  // other args are not ours to judge
  CHECK(parse_config(with(R"("args":{"other":[1,2],"cni":{"labels":"anything"}})")));
}

TEST_CASE("prevResult from 0.3.1 is converted to the config's 1.1.0", "[cni][config][prevResult]") {
  const std::string text = with(R"("prevResult":{
      "cniVersion":"0.3.1",
      "interfaces":[{"name":"cni0","mac":"00:11:22:33:44:55"},{"name":"eth0","mac":"99:88:77:66:55:44","sandbox":"/var/run/netns/blue"}],
      "ips":[{"version":"4","interface":1,"address":"10.1.0.5/16","gateway":"10.1.0.1"}],
      "routes":[{"dst":"0.0.0.0/0"}],
      "dns":{"nameservers":["10.1.0.1"]}})");
  auto r = parse_config(text, command::del);
  REQUIRE(r);
  REQUIRE(r->prev_result);
  CHECK(r->prev_result->cni_version == version::v0_3_1);
  CHECK(r->prev_result->interfaces.size() == 2);
  CHECK(to_json(*r->prev_result, r->version) ==
        R"({"cniVersion":"1.1.0","interfaces":[{"name":"cni0","mac":"00:11:22:33:44:55"},)"
        R"({"name":"eth0","mac":"99:88:77:66:55:44","sandbox":"/var/run/netns/blue"}],)"
        R"("ips":[{"interface":1,"address":"10.1.0.5/16","gateway":"10.1.0.1"}],)"
        R"("routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.1.0.1"]}})");
}

TEST_CASE("prevResult without cniVersion takes the config's", "[cni][config][prevResult]") {
  auto r = parse_config(with(R"("prevResult":{"ips":[{"version":"4","address":"10.1.0.5/16"}]})", "0.4.0"));
  REQUIRE(r);
  REQUIRE(r->prev_result);
  CHECK(r->prev_result->cni_version == version::v0_4_0);
  // an empty prevResult (allowed on DEL) and a null one
  auto e = parse_config(with(R"("prevResult":{})"), command::del);
  REQUIRE(e);
  REQUIRE(e->prev_result);
  CHECK(e->prev_result->ips.empty());
  auto n = parse_config(with(R"("prevResult":null)"), command::del);
  REQUIRE(n);
  CHECK_FALSE(n->prev_result.has_value());
}

TEST_CASE("prevResult errors carry the prevResult path", "[cni][config][prevResult]") {
  auto e = config_error(with(R"("prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5"}]})"));
  CHECK(e.code == error_code::invalid_config);
  CHECK_THAT(e.msg, StartsWith("prevResult.ips[0].address: invalid CIDR '10.1.0.5'"));
  auto v = config_error(with(R"("prevResult":{"cniVersion":"0.2.0","ip4":{}})"));
  CHECK(v.code == error_code::incompatible_version);
  CHECK_THAT(v.msg, StartsWith("prevResult.cniVersion: unsupported result version \"0.2.0\""));
  auto t = config_error(with(R"("prevResult":"x")"));
  CHECK(t.msg == "prevResult: expected object, got string");
}

TEST_CASE("GC: valid attachments are read and required", "[cni][config][gc]") {
  auto r = parse_config(
      with(R"("cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"},{"containerID":"def","ifname":"net1"}])"),
      command::gc);
  REQUIRE(r);
  REQUIRE(r->valid_attachments);
  REQUIRE(r->valid_attachments->size() == 2);
  CHECK((*r->valid_attachments)[1] == attachment{"def", "net1"});
  // the misspelt key libcni also sends
  auto alias = parse_config(with(R"("cni.dev/attachments":[{"containerID":"abc","ifname":"eth0"}])"), command::gc);
  REQUIRE(alias);
  REQUIRE(alias->valid_attachments);
  CHECK(alias->valid_attachments->at(0).container_id == "abc");
  // both present: the spec's key wins
  auto both = parse_config(with(R"("cni.dev/valid-attachments":[],"cni.dev/attachments":[{"containerID":"x","ifname":"y"}])"),
                           command::gc);
  REQUIRE(both);
  CHECK(both->valid_attachments->empty());
  // an empty list is valid: nothing is attached any more
  auto none = parse_config(with(R"("cni.dev/valid-attachments":[])"), command::gc);
  REQUIRE(none);
  CHECK(none->valid_attachments->empty());

  auto missing = config_error(with(""), command::gc);
  CHECK(missing.code == error_code::invalid_config);
  CHECK_THAT(missing.msg, StartsWith("cni.dev/valid-attachments: required field missing"));
  auto bad = config_error(with(R"("cni.dev/valid-attachments":[{"containerID":"abc"}])"), command::gc);
  CHECK(bad.msg == "cni.dev/valid-attachments[0].ifname: required field missing");
  auto bad2 = config_error(with(R"("cni.dev/valid-attachments":{"containerID":"abc"})"), command::gc);
  CHECK(bad2.msg == "cni.dev/valid-attachments: expected array, got object");
  auto bad3 = config_error(with(R"("cni.dev/attachments":[{"containerID":1,"ifname":"eth0"}])"), command::gc);
  CHECK(bad3.msg == "cni.dev/attachments[0].containerID: expected string, got number");
}

TEST_CASE("cnf keys: profile, mtu, vethPrefix", "[cni][config][cnf]") {
  struct bad_case {
    std::string members;
    std::string msg;
  };
  const bad_case cases[] = {
      {R"("profile":"etc/cnf.toml")", "profile: must be an absolute path, got \"etc/cnf.toml\""},
      {R"("profile":"")", "profile: must be an absolute path, got \"\""},
      {R"("profile":{"path":"/x"})", "profile: expected string, got object"},
      {R"("mtu":"1500")", "mtu: expected non-negative integer, got string"},
      {R"("mtu":1500.0)", "mtu: expected non-negative integer, got number"},
      {R"("mtu":-1)", "mtu: expected non-negative integer, got -1"},
      {R"("mtu":67)", "mtu: 67 out of range 68..65535"},
      {R"("mtu":65536)", "mtu: 65536 out of range 68..65535"},
      {R"("mtu":18446744073709551615)", "mtu: 18446744073709551615 out of range 68..65535"},
      {R"("vethPrefix":"")", "vethPrefix: \"\" must be 1..11 bytes long"},
      {R"("vethPrefix":"abcdefghijkl")", "vethPrefix: \"abcdefghijkl\" must be 1..11 bytes long"},
      {R"("vethPrefix":"ca/li")", "vethPrefix: invalid character '/' at offset 2"},
      {R"("vethPrefix":"ca li")", "vethPrefix: invalid character space at offset 2"},
      {R"("vethPrefix":3)", "vethPrefix: expected string, got number"},
  };
  for (const auto& c : cases) {
    INFO(c.members);
    auto e = config_error(with(c.members));
    CHECK(e.code == error_code::invalid_config);
    CHECK_THAT(e.msg, StartsWith(c.msg));
  }
  auto ok = parse_config(with(R"("mtu":68,"vethPrefix":"abcdefghijk","profile":"/p")"));
  REQUIRE(ok);
  CHECK(ok->mtu == 68u);
  CHECK(ok->veth_prefix == "abcdefghijk");
  auto hi = parse_config(with(R"("mtu":65535)"));
  REQUIRE(hi);
  CHECK(hi->mtu == 65535u);
}

TEST_CASE("requested_ip parses <ip>[/<prefix>]", "[cni][config]") {
  auto a = requested_ip::parse("192.168.0.1");
  REQUIRE(a);
  CHECK_FALSE(a->prefix_length.has_value());
  CHECK_FALSE(a->prefix().has_value());
  auto b = requested_ip::parse("3ffe:ffff:0:01ff::1/64");
  REQUIRE(b);
  CHECK(b->prefix_length == std::optional<std::uint8_t>(64));
  CHECK(b->to_string() == "3ffe:ffff:0:1ff::1/64");
  CHECK_FALSE(requested_ip::parse("10.0.0.1/"));
  CHECK_FALSE(requested_ip::parse("host"));
  CHECK_FALSE(requested_ip::parse(""));
}
