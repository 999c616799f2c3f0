// The nftables policy part in throw-away network namespaces: the table's layout read back with
// nft, restart replacing the table in one transaction, drift repaired, and the reachability
// scenario every policy plugin passes.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../integration/netns_harness.hpp"
#include "../support/root_gate.hpp"
#include "support.hpp"

#include <cnf/plugins/policy_nftables.hpp>

#include <regex>

CNF_TEST_ROOT_GATE("network namespaces and nftables");

using namespace cnf::netpol;
using cnf_test::test_netns;
using policy_test::pod;

namespace {

/// The rules of one chain as `nft list chain` prints them, the hashes replaced by HASH.
std::vector<std::string> listed_chain(const test_netns& ns, const std::string& chain) {
  auto r = ns.exec("nft list chain ip calico " + chain);
  std::vector<std::string> lines;
  if (!r.ok()) return lines;
  std::istringstream in(r.output);
  std::string l;
  static const std::regex hash("cali:[A-Za-z0-9_-]{16}");
  while (std::getline(in, l)) {
    auto p = l.find_first_not_of(" \t");
    if (p == std::string::npos || l.find("chain ") == p || l[p] == '}' || l.find("table ") == p || l.find("type ") == p) continue;
    lines.push_back(std::regex_replace(l.substr(p), hash, "cali:HASH"));
  }
  return lines;
}

}  // namespace

TEST_CASE("nftables: a pod in namespace default with no policy, restart, drift", "[integration]") {
  test_netns node;
  const std::string iface = "calic9f294a6bbf";
  auto program = [&](cnf::nftables_policy::dataplane& dp) {
    calculator calc("node1");
    calc.upsert_namespace("default", {});
    calc.upsert_endpoint(pod("default", "web", iface, "10.65.0.5", {{"app", "web"}}));
    for (auto& u : calc.take_updates()) {
      if (auto* e = std::get_if<update::endpoint_upsert>(&u)) REQUIRE(dp.upsert_endpoint(e->endpoint));
      if (auto* p = std::get_if<update::profile_upsert>(&u)) REQUIRE(dp.upsert_profile(p->profile));
    }
    REQUIRE(dp.apply());
  };
  const std::vector<std::string> seed{
      "ct state established,related accept comment \"cali:HASH\"",
      "ct state invalid drop comment \"cali:HASH\"",
      "meta mark set meta mark & 0xfffcffff comment \"cali:HASH\"",
      "jump cali-pri-kns.default comment \"cali:HASH\"",
      "meta mark & 0x00010000 == 0x00010000 return comment \"cali:HASH\"",
      "jump cali-pri-ksa.default.default comment \"cali:HASH\"",
      "meta mark & 0x00010000 == 0x00010000 return comment \"cali:HASH\"",
      "drop comment \"cali:HASH\"",
  };
  {
    cnf_test::enter_netns in(node);
    cnf::nftables_policy::dataplane dp;
    program(dp);
  }
  CHECK(listed_chain(node, "cali-tw-" + iface) == seed);
  auto maps = node.exec_or_throw("nft list map ip calico cali-from-wl-map");
  CHECK(maps.find("\"" + iface + "\" : goto cali-fw-" + iface) != std::string::npos);

  // Someone else's leftovers in our table go with the first apply of a restarted part.
  node.exec_or_throw("nft add chain ip calico cali-stale");
  {
    cnf_test::enter_netns in(node);
    cnf::nftables_policy::dataplane dp;
    program(dp);
    CHECK(dp.last_transaction().starts_with("add table ip calico\ndelete table ip calico\nadd table ip calico\n"));
    CHECK(node.exec("nft list chain ip calico cali-stale").status != 0);
    CHECK(listed_chain(node, "cali-tw-" + iface) == seed);
    // A rule deleted by hand comes back; nothing differs afterwards.
    auto handles = node.exec_or_throw("nft -a list chain ip calico cali-tw-" + iface);
    std::smatch m;
    REQUIRE(std::regex_search(handles, m, std::regex("ct state invalid drop comment \"cali:[^\"]+\" # handle ([0-9]+)")));
    node.exec_or_throw("nft delete rule ip calico cali-tw-" + iface + " handle " + m[1].str());
    CHECK(listed_chain(node, "cali-tw-" + iface).size() == seed.size() - 1);
    auto d = dp.check_drift();
    REQUIRE(d);
    CHECK(*d == 1);
    CHECK(listed_chain(node, "cali-tw-" + iface) == seed);
    auto again = dp.check_drift();
    REQUIRE(again);
    CHECK(*again == 0);
  }
}

TEST_CASE("nftables: two pods, default deny blocks TCP, an allow policy opens one port", "[integration]") {
  policy_test::reachability_scenario([] { return cnf::any_policy{cnf::nftables_policy::dataplane()}; });
}
