// The nftables policy part in throw-away network namespaces: the table's layout read back with
// nft, restart replacing the table in one transaction, drift repaired, and the reachability
// scenario every policy plugin passes.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../integration/netns_harness.hpp"
#include "../support/root_gate.hpp"
#include "support.hpp"

#include <cnf/plugins/policy_nftables.hpp>

#include <algorithm>
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
    CHECK(d->repaired.size() == 1);
    CHECK(listed_chain(node, "cali-tw-" + iface) == seed);
    auto again = dp.check_drift();
    REQUIRE(again);
    CHECK(again->repaired.empty());
  }
}

TEST_CASE("nftables: two pods, default deny blocks TCP, an allow policy opens one port", "[integration]") {
  policy_test::reachability_scenario([] { return cnf::any_policy{cnf::nftables_policy::dataplane()}; });
}

namespace nftables_drift {

bool repaired(const cnf::policy_drift& d, const std::string& object) {
  return std::any_of(d.repaired.begin(), d.repaired.end(), [&](const cnf::policy_repair& r) { return r.object == object; });
}

std::string show(const cnf::policy_drift& d) {
  std::string s;
  for (auto& r : d.repaired) s += "  " + r.object + ": " + r.detail + "\n";
  return s;
}

/// The table as nft lists it, without handles or counters: what a repair must restore.
std::string table(const test_netns& ns) { return ns.exec_or_throw("nft list table ip calico"); }

}  // namespace nftables_drift

TEST_CASE("nftables drift: a deleted rule, a flushed chain, a removed set element and map entry come back; no drift, no write",
          "[integration]") {
  using namespace nftables_drift;
  test_netns node;
  cnf_test::enter_netns in(node);
  auto model = std::make_shared<cnf::detail::policy_model<cnf::nftables_policy::dataplane>>();
  cnf::any_policy plugin(model);
  auto& dp = model->impl;
  calculator calc("node1");
  calc.upsert_namespace("default", {});
  calc.upsert_endpoint(pod("default", "web", "caliweb", "10.65.0.5", {{"app", "web"}}));
  calc.upsert_endpoint(pod("default", "cli", "calicli", "10.65.0.6", {{"app", "cli"}}));
  calc.upsert_policy(policy_test::k8s("default", "allow-cli", R"({"podSelector": {"matchLabels": {"app": "web"}},
      "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "cli"}}}]}]})"));
  REQUIRE(calc.flush(plugin));
  const auto programmed = table(node);
  std::string pi, set;
  for (auto& [name, c] : dp.desired())
    if (name.starts_with("cali-pi-")) pi = name;
  REQUIRE_FALSE(pi.empty());
  {
    std::smatch m;
    REQUIRE(std::regex_search(programmed, m, std::regex("set (cali40s-[A-Za-z0-9_-]+) \\{")));
    set = m[1].str();
  }
  REQUIRE(programmed.find("10.65.0.6") != std::string::npos);

  const std::string before = dp.last_transaction();
  auto none = plugin.check_drift();
  REQUIRE(none);
  INFO(show(*none));
  CHECK(none->repaired.empty());
  CHECK(none->checked > 0);
  CHECK(dp.last_transaction() == before);

  auto handles = node.exec_or_throw("nft -a list chain ip calico cali-tw-caliweb");
  std::smatch m;
  REQUIRE(std::regex_search(handles, m, std::regex("ct state invalid drop comment \"cali:[^\"]+\" # handle ([0-9]+)")));
  node.exec_or_throw("nft delete rule ip calico cali-tw-caliweb handle " + m[1].str());
  node.exec_or_throw("nft flush chain ip calico " + pi);
  node.exec_or_throw("nft delete element ip calico " + set + " '{ 10.65.0.6 }'");
  node.exec_or_throw("nft delete element ip calico cali-to-wl-map '{ \"calicli\" }'");
  auto d = plugin.check_drift();
  REQUIRE(d);
  INFO(show(*d));
  CHECK(d->repaired.size() == 4);
  CHECK(repaired(*d, "chain cali-tw-caliweb"));
  CHECK(repaired(*d, "chain " + pi));
  CHECK(repaired(*d, "set " + set));
  CHECK(repaired(*d, "map cali-to-wl-map"));
  // Only what differed is in the transaction.
  CHECK(dp.last_transaction().find("flush chain ip calico cali-tw-caliweb\n") != std::string::npos);
  CHECK(dp.last_transaction().find("cali-fw-caliweb") == std::string::npos);
  CHECK(table(node) == programmed);

  auto again = plugin.check_drift();
  REQUIRE(again);
  INFO(show(*again));
  CHECK(again->repaired.empty());

  // The whole table gone: made again.
  node.exec_or_throw("nft delete table ip calico");
  auto gone = plugin.check_drift();
  REQUIRE(gone);
  CHECK(repaired(*gone, "table ip calico"));
  CHECK(table(node) == programmed);
}

TEST_CASE("nftables IPv6: table ip6 calico beside table ip calico, v6-only rules only there, drift repaired in it", "[integration]") {
  using namespace nftables_drift;
  test_netns node;
  cnf_test::enter_netns in(node);
  auto model = std::make_shared<cnf::detail::policy_model<cnf::nftables_policy::dataplane>>();
  cnf::any_policy plugin(model);
  auto& dp = model->impl;
  calculator calc("node1");
  calc.upsert_namespace("default", {});
  auto web = pod("default", "web", "caliweb", "10.65.0.5", {{"app", "web"}});
  web.ip_networks.push_back(cnf::ip_prefix::parse("fd00:65::5/128").value());
  auto cli = pod("default", "cli", "calicli", "10.65.0.6", {{"app", "cli"}});
  cli.ip_networks.push_back(cnf::ip_prefix::parse("fd00:65::6/128").value());
  calc.upsert_endpoint(web);
  calc.upsert_endpoint(cli);
  calc.upsert_policy(policy_test::k8s("default", "v6", R"({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
      {"from": [{"podSelector": {"matchLabels": {"app": "cli"}}}]},
      {"from": [{"ipBlock": {"cidr": "fd00:99::/64", "except": ["fd00:99::1/128"]}}]}]})"));
  REQUIRE(calc.flush(plugin));
  const auto t6 = node.exec_or_throw("nft list table ip6 calico");
  const auto t4 = table(node);
  INFO(t6);
  CHECK(t6.find("chain cali-tw-caliweb {") != std::string::npos);
  CHECK(t6.find("type filter hook forward priority filter; policy accept;") != std::string::npos);
  CHECK(t6.find("ip6 saddr fd00:99::/64 ip6 saddr != fd00:99::1") != std::string::npos);  // the v6 ipBlock, here only
  CHECK(t4.find("fd00:99::") == std::string::npos);
  CHECK(t6.find("\"calicli\" : goto cali-fw-calicli") != std::string::npos);
  std::string set6;
  {
    std::smatch m;
    REQUIRE(std::regex_search(t6, m, std::regex("set (cali60s-[A-Za-z0-9_-]+) \\{")));
    set6 = m[1].str();
  }
  CHECK(t6.find("type ipv6_addr") != std::string::npos);
  CHECK(t6.find("fd00:65::6") != std::string::npos);      // cli's IPv6 address in the selector's set
  CHECK(t6.find("10.65.0.6") == std::string::npos);       // its IPv4 one is in the ip table's
  CHECK(t4.find("10.65.0.6") != std::string::npos);

  auto none = plugin.check_drift();
  REQUIRE(none);
  INFO(show(*none));
  CHECK(none->repaired.empty());
  node.exec_or_throw("nft flush chain ip6 calico cali-tw-caliweb");
  node.exec_or_throw("nft delete element ip6 calico " + set6 + " '{ fd00:65::6 }'");
  auto d = plugin.check_drift();
  REQUIRE(d);
  INFO(show(*d));
  CHECK(d->repaired.size() == 2);
  CHECK(repaired(*d, "chain cali-tw-caliweb (ip6)"));
  CHECK(repaired(*d, "set " + set6));
  CHECK(dp.last_transaction().find("ip calico") == std::string::npos);  // the IPv4 table untouched
  CHECK(node.exec_or_throw("nft list table ip6 calico") == t6);
  // The whole ip6 table gone: made again, the ip one stays.
  node.exec_or_throw("nft delete table ip6 calico");
  auto gone = plugin.check_drift();
  REQUIRE(gone);
  CHECK(repaired(*gone, "table ip6 calico"));
  CHECK(node.exec_or_throw("nft list table ip6 calico") == t6);
  CHECK(table(node) == t4);
}
