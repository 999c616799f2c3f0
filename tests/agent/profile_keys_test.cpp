// The profile keys of the node agent: [node] addresses, as_number, labels; [agent] health_port.
#include <cnf/profile.hpp>

#include <catch2/catch.hpp>

TEST_CASE("profile: [node] and [agent] keys of the node agent", "[unit][profile]") {
  auto p = cnf::parse_profile(R"([node]
name = "n1"
ipv4_address = "192.168.1.10/24"
ipv6_address = "autodetect"
as_number = 64512
labels = { rack = "r1", zone = "z" }
[agent]
health_port = 0
)", "p.toml");
  REQUIRE(p);
  CHECK(p->node.ipv4_address == "192.168.1.10/24");
  CHECK(p->node.ipv6_address == "autodetect");
  CHECK(p->node.as_number == 64512u);
  CHECK(p->node.labels.at("rack") == "r1");
  CHECK(p->agent.health_port == 0u);
  auto d = cnf::parse_profile("", "p.toml");
  REQUIRE(d);
  CHECK(d->node.ipv4_address == "autodetect");
  CHECK(d->node.ipv6_address == "none");
  CHECK(d->agent.health_port == 9099u);
}

TEST_CASE("profile: bad node agent keys name file, line and key", "[unit][profile]") {
  auto err = [](const std::string& text) {
    auto p = cnf::parse_profile(text, "p.toml");
    REQUIRE_FALSE(p);
    return p.error().message;
  };
  CHECK(err("[node]\nipv4_address = \"192.168.1.300/24\"\n") ==
        "p.toml:2:16: node.ipv4_address: must be \"autodetect\", \"none\" or an IPv4 address with its subnet length (got '192.168.1.300/24')");
  CHECK(err("[node]\nipv4_address = \"192.168.1.3\"\n").find("IPv4 address with its subnet length") != std::string::npos);
  CHECK(err("[node]\nipv6_address = \"10.0.0.1/24\"\n").find("node.ipv6_address: must be") != std::string::npos);
  CHECK(err("[node]\nas_number = 0\n") == "p.toml:2:13: node.as_number: must be between 1 and 4294967295 (got 0)");
  CHECK(err("[node]\nlabels = { a = 1 }\n") == "p.toml:2:16: node.labels.a: expected a string");
  CHECK(err("[agent]\nhealth_port = 70000\n") == "p.toml:2:15: agent.health_port: must be between 0 (off) and 65535 (got 70000)");
  CHECK(err("[agent]\nhealth_prot = 1\n") == "p.toml:2:1: agent.health_prot: unknown key; did you mean 'health_port'?");
  CHECK(err("[agnet]\n").find("unknown section; did you mean 'agent'?") != std::string::npos);
}
