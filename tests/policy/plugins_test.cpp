// The policy plugins as the agent loads them: found by part and name, configured from a
// profile section, bad settings refused naming the key. No kernel is touched (nothing applied).
#include <cnf/loader.hpp>

#include <catch2/catch.hpp>

namespace {
const std::filesystem::path lib_dir = CNF_TEST_PLUGIN_DIR;

cnf::result<cnf::any_policy> make(std::string_view name, std::string text) {
  cnf::plugin_loader loader({lib_dir});
  cnf::plugin_config cfg{text, "test.toml", "policy"};
  return loader.make<cnf::part::policy>(name, cnf::plugin_context{}, cfg);
}
}  // namespace

TEST_CASE("the iptables and nftables policy plugins load and refuse bad settings", "[unit]") {
  for (std::string name : {"iptables", "nftables"}) {
    auto p = make(name, "[policy]\nplugin = \"" + name + "\"\ninterface_prefix = \"cali\"\n");
    REQUIRE(p);
    auto st = p->status();
    REQUIRE(st);
    CHECK(st->endpoints == 0);
    CHECK(st->dataplane == (name == "iptables" ? "iptables-nft" : "nftables"));
    auto bad = make(name, "[policy]\nplugin = \"" + name + "\"\nendpoint_to_host_action = \"maybe\"\n");
    REQUIRE_FALSE(bad);
    CHECK(bad.error().message.find("endpoint_to_host_action") != std::string::npos);
    CHECK(bad.error().message.find("'maybe' is not one of") != std::string::npos);
  }
  auto legacy = make("iptables", "[policy]\nplugin = \"iptables\"\nbackend = \"legacy\"\n");
  REQUIRE(legacy);
  CHECK(legacy->status()->dataplane == "iptables-legacy");
  auto bad = make("iptables", "[policy]\nplugin = \"iptables\"\nbackend = \"xt\"\n");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("backend") != std::string::npos);
  auto typo = make("iptables", "[policy]\nplugin = \"iptables\"\nbakend = \"nft\"\n");
  REQUIRE_FALSE(typo);
  CHECK(typo.error().message.find("bakend") != std::string::npos);
}
