// The iptables policy part in throw-away network namespaces: Felix's chain layout read back
// with iptables-save (both backends), restart without changes, stale chains swept, drift
// repaired, a refused ruleset leaving the old one, and TCP reachability between two pods
// under default-deny and allow policies.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../integration/netns_harness.hpp"
#include "../support/root_gate.hpp"
#include "support.hpp"

#include <cnf/plugins/policy_iptables.hpp>
#include <cnf/policy/calculator.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <regex>
#include <sstream>

CNF_TEST_ROOT_GATE("network namespaces and iptables");

using namespace cnf::netpol;
using cnf_test::test_netns;
using policy_test::k8s;
using policy_test::pod;

namespace {

/// `-A <chain> ...` lines of iptables-save, the cali:<hash> replaced by cali:HASH.
std::vector<std::string> saved_chain(const test_netns& ns, const std::string& backend, const std::string& chain) {
  auto out = ns.exec_or_throw("iptables-" + backend + "-save -t filter");
  std::vector<std::string> lines;
  std::istringstream in(out);
  std::string l;
  static const std::regex hash("cali:[A-Za-z0-9_-]{16}");
  while (std::getline(in, l))
    if (l.starts_with("-A " + chain + " ")) lines.push_back(std::regex_replace(l, hash, "cali:HASH"));
  return lines;
}

bool backend_works(const test_netns& ns, const std::string& backend) {
  return ns.exec("iptables-" + backend + "-save -t filter >/dev/null && ipset list -n >/dev/null").ok();
}

}  // namespace

TEST_CASE("a pod in namespace default with no policy gets Felix's seed chain", "[integration]") {
  for (std::string backend : {"nft", "legacy"}) {
    DYNAMIC_SECTION(backend) {
      test_netns node;
      if (!backend_works(node, backend)) {
        WARN("iptables-" << backend << " or ipset does not work in a network namespace here; case skipped");
        continue;
      }
      const std::string iface = "calic9f294a6bbf";
      {
        cnf_test::enter_netns in(node);
        cnf::any_policy plugin{cnf::iptables_policy::dataplane({.backend = backend})};
        calculator calc("node1");
        calc.upsert_namespace("default", {});
        calc.upsert_endpoint(pod("default", "web", iface, "10.65.0.5", {{"app", "web"}}));
        REQUIRE(calc.flush(plugin));
      }
      const std::vector<std::string> seed{
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -m conntrack --ctstate INVALID -j DROP",
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -j MARK --set-xmark 0x0/0x30000",
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -j cali-pri-kns.default",
          "-A cali-tw-" + iface +
              " -m comment --comment \"cali:HASH\" -m mark --mark 0x10000/0x10000 -m comment --comment \"Return if profile accepted\" -j RETURN",
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -j cali-pri-ksa.default.default",
          "-A cali-tw-" + iface +
              " -m comment --comment \"cali:HASH\" -m mark --mark 0x10000/0x10000 -m comment --comment \"Return if profile accepted\" -j RETURN",
          "-A cali-tw-" + iface + " -m comment --comment \"cali:HASH\" -m comment --comment \"Drop if no profiles matched\" -j DROP",
      };
      CHECK(saved_chain(node, backend, "cali-tw-" + iface) == seed);
      // iptables -L shows the mark clear as Felix's "MARK and 0xfffcffff".
      CHECK(node.exec_or_throw("iptables-" + backend + " -n -L cali-tw-" + iface).find("MARK and 0xfffcffff") != std::string::npos);
      CHECK(saved_chain(node, backend, "FORWARD").at(0) == "-A FORWARD -m comment --comment \"cali:HASH\" -j cali-FORWARD");
      CHECK(saved_chain(node, backend, "cali-from-wl-dispatch") ==
            std::vector<std::string>{"-A cali-from-wl-dispatch -i " + iface + " -m comment --comment \"cali:HASH\" -g cali-fw-" + iface,
                                     "-A cali-from-wl-dispatch -m comment --comment \"cali:HASH\" -m comment --comment \"Unknown interface\" -j DROP"});
      CHECK(saved_chain(node, backend, "cali-pri-kns.default") ==
            std::vector<std::string>{"-A cali-pri-kns.default -m comment --comment \"cali:HASH\" -j MARK --set-xmark 0x10000/0x10000",
                                     "-A cali-pri-kns.default -m comment --comment \"cali:HASH\" -m mark --mark 0x10000/0x10000 -j RETURN"});

      // A restarted part with the same state changes nothing; one with a chain someone left
      // behind sweeps it; a rule deleted by hand comes back.
      node.exec_or_throw("iptables-" + backend + " -N cali-stale && iptables-" + backend + " -A cali-stale -j DROP");
      node.exec_or_throw("iptables-" + backend + " -D cali-tw-" + iface + " 2");
      {
        cnf_test::enter_netns in(node);
        cnf::iptables_policy::dataplane dp({.backend = backend});
        calculator calc("node1");
        calc.upsert_namespace("default", {});
        calc.upsert_endpoint(pod("default", "web", iface, "10.65.0.5", {{"app", "web"}}));
        for (auto& u : calc.take_updates()) {
          if (auto* e = std::get_if<update::endpoint_upsert>(&u)) REQUIRE(dp.upsert_endpoint(e->endpoint));
          if (auto* p = std::get_if<update::profile_upsert>(&u)) REQUIRE(dp.upsert_profile(p->profile));
        }
        REQUIRE(dp.apply());
        // Only the chain that differs is rewritten, the stale one deleted.
        const auto want = dp.desired();
        std::string tw_rules;
        for (auto& r : want.at("cali-tw-" + iface).rules) tw_rules += "-A cali-tw-" + iface + " " + r + "\n";
        CHECK(dp.last_restore() == "*filter\n:cali-tw-" + iface + " - [0:0]\n:cali-stale - [0:0]\n" + tw_rules + "-X cali-stale\nCOMMIT\n");
        CHECK(saved_chain(node, backend, "cali-tw-" + iface) == seed);
        CHECK(saved_chain(node, backend, "cali-stale").empty());
        // Again: nothing differs, nothing is written.
        node.exec_or_throw("iptables-" + backend + " -D cali-tw-" + iface + " 1");
        auto d = dp.check_drift();
        REQUIRE(d);
        CHECK(d->repaired.size() == 1);
        CHECK(saved_chain(node, backend, "cali-tw-" + iface) == seed);
        auto again = dp.check_drift();
        REQUIRE(again);
        CHECK(again->repaired.empty());

        // A ruleset the kernel refuses (multiport on a protocol without ports): a clear error,
        // and what was programmed stays.
        cnf::network_policy bad;
        bad.ns = "default";
        bad.name = "bad";
        bad.endpoints = {"default/node1-k8s-web-eth0"};
        cnf::policy_rule r;
        r.protocol = 47;
        r.destination_ports = {{80, 80}};
        bad.ingress = {r};
        REQUIRE(dp.upsert_policy(bad));
        auto refused = dp.apply();
        REQUIRE_FALSE(refused);
        CHECK(refused.error().message.find("refused the change, nothing applied") != std::string::npos);
        INFO(refused.error().message);
        CHECK(refused.error().message.find("cali-pi-default.bad") != std::string::npos);
        CHECK(saved_chain(node, backend, "cali-tw-" + iface) == seed);
        CHECK(saved_chain(node, backend, "cali-pi-default.bad").empty());
      }
    }
  }
}

TEST_CASE("two pods: default deny blocks TCP, an allow policy opens one port", "[integration]") {
  for (std::string backend : {"nft", "legacy"}) {
    DYNAMIC_SECTION(backend) {
      {
        test_netns probe;
        if (!backend_works(probe, backend)) {
          WARN("iptables-" << backend << " or ipset does not work in a network namespace here; case skipped");
          continue;
        }
      }
      policy_test::reachability_scenario([&] { return cnf::any_policy{cnf::iptables_policy::dataplane({.backend = backend})}; });
    }
  }
}

namespace iptables_drift {

bool repaired(const cnf::policy_drift& d, const std::string& object) {
  return std::any_of(d.repaired.begin(), d.repaired.end(), [&](const cnf::policy_repair& r) { return r.object == object; });
}

std::string show(const cnf::policy_drift& d) {
  std::string s;
  for (auto& r : d.repaired) s += "  " + r.object + ": " + r.detail + "\n";
  return s;
}

}  // namespace iptables_drift

TEST_CASE("iptables drift: a deleted rule, a flushed chain, a removed set member come back; no drift, no write", "[integration]") {
  using namespace iptables_drift;
  for (std::string backend : {"nft", "legacy"}) {
    DYNAMIC_SECTION(backend) {
      test_netns node;
      if (!backend_works(node, backend)) {
        WARN("iptables-" << backend << " or ipset does not work in a network namespace here; case skipped");
        continue;
      }
      // Left by an earlier run: a cali- chain, a cali40 set and a temporary set; swept at start.
      node.exec_or_throw("iptables-" + backend + " -N cali-pi-gone && ipset create cali40s:gone hash:net && ipset create cali4tgone hash:net");
      cnf_test::enter_netns in(node);
      auto model = std::make_shared<cnf::detail::policy_model<cnf::iptables_policy::dataplane>>(cnf::iptables_policy::options{.backend = backend});
      cnf::any_policy plugin(model);
      auto& dp = model->impl;
      calculator calc("node1");
      calc.upsert_namespace("default", {});
      calc.upsert_endpoint(pod("default", "web", "caliweb", "10.65.0.5", {{"app", "web"}}));
      calc.upsert_endpoint(pod("default", "cli", "calicli", "10.65.0.6", {{"app", "cli"}}));
      calc.upsert_policy(k8s("default", "allow-cli", R"({"podSelector": {"matchLabels": {"app": "web"}},
          "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "cli"}}}]}]})"));
      REQUIRE(calc.flush(plugin));
      CHECK(node.exec_or_throw("iptables-" + backend + "-save -t filter").find("cali-pi-gone") == std::string::npos);
      const auto sets = node.exec_or_throw("ipset list -n");
      CHECK(sets.find("cali40s:gone") == std::string::npos);
      CHECK(sets.find("cali4tgone") == std::string::npos);
      std::string set;  // the selector set of app=cli
      {
        std::istringstream in(sets);
        for (std::string l; std::getline(in, l);)
          if (l.starts_with("cali40s:")) set = l;
      }
      REQUIRE_FALSE(set.empty());
      const auto want = dp.desired();
      std::string pi;  // the policy's ingress chain
      for (auto& [name, c] : want)
        if (name.starts_with("cali-pi-")) pi = name;
      REQUIRE_FALSE(pi.empty());
      const auto programmed = node.exec_or_throw("iptables-" + backend + "-save -t filter | grep -v '^#' | grep -v '^:' ");

      // Nothing changed: nothing found, nothing written.
      const std::string before = dp.last_restore();
      auto none = plugin.check_drift();
      REQUIRE(none);
      INFO(show(*none));
      CHECK(none->repaired.empty());
      CHECK(none->checked >= want.size());
      CHECK(dp.last_restore() == before);

      // A rule deleted by hand, a chain flushed, a set member removed: one check puts all back.
      node.exec_or_throw("iptables-" + backend + " -D cali-tw-caliweb 2");
      node.exec_or_throw("iptables-" + backend + " -F " + pi);
      node.exec_or_throw("ipset del " + set + " 10.65.0.6");
      auto d = plugin.check_drift();
      REQUIRE(d);
      INFO(show(*d));
      CHECK(d->repaired.size() == 3);
      CHECK(repaired(*d, "chain cali-tw-caliweb"));
      CHECK(repaired(*d, "chain " + pi));
      CHECK(repaired(*d, "set " + set));
      // Only the two chains that differ were rewritten.
      CHECK(dp.last_restore().find(":cali-tw-caliweb ") != std::string::npos);
      CHECK(dp.last_restore().find(":" + pi + " ") != std::string::npos);
      CHECK(dp.last_restore().find(":cali-fw-caliweb ") == std::string::npos);
      CHECK(node.exec_or_throw("iptables-" + backend + "-save -t filter | grep -v '^#' | grep -v '^:' ") == programmed);
      CHECK(node.exec("ipset test " + set + " 10.65.0.6").ok());

      // Someone's rule in a cali- chain, and the FORWARD hook gone.
      node.exec_or_throw("iptables-" + backend + " -A cali-fw-calicli -j ACCEPT");
      node.exec_or_throw("iptables-" + backend + " -D FORWARD 1");
      auto d2 = plugin.check_drift();
      REQUIRE(d2);
      INFO(show(*d2));
      CHECK(d2->repaired.size() == 2);
      CHECK(repaired(*d2, "chain cali-fw-calicli"));
      CHECK(repaired(*d2, "hook FORWARD"));
      CHECK(node.exec_or_throw("iptables-" + backend + "-save -t filter | grep -v '^#' | grep -v '^:' ") == programmed);

      auto again = plugin.check_drift();
      REQUIRE(again);
      INFO(show(*again));
      CHECK(again->repaired.empty());
    }
  }
}

TEST_CASE("IPv6: the same chains in ip6tables, cali60 sets, v6-only rules only there, drift repaired in ip6tables", "[integration]") {
  using namespace iptables_drift;
  for (std::string backend : {"nft", "legacy"}) {
    DYNAMIC_SECTION(backend) {
      test_netns node;
      if (!backend_works(node, backend) || !node.exec("ip6tables-" + backend + "-save -t filter >/dev/null").ok()) {
        WARN("ip6tables-" << backend << " or ipset does not work in a network namespace here; case skipped");
        continue;
      }
      node.exec_or_throw("ip6tables-" + backend + " -N cali-pi-gone6 && ipset create cali60s:gone hash:net family inet6");
      cnf_test::enter_netns in(node);
      auto model = std::make_shared<cnf::detail::policy_model<cnf::iptables_policy::dataplane>>(cnf::iptables_policy::options{.backend = backend});
      cnf::any_policy plugin(model);
      calculator calc("node1");
      calc.upsert_namespace("default", {});
      auto web = pod("default", "web", "caliweb", "10.65.0.5", {{"app", "web"}});
      web.ip_networks.push_back(cnf::ip_prefix::parse("fd00:65::5/128").value());
      auto cli = pod("default", "cli", "calicli", "10.65.0.6", {{"app", "cli"}});
      cli.ip_networks.push_back(cnf::ip_prefix::parse("fd00:65::6/128").value());
      calc.upsert_endpoint(web);
      calc.upsert_endpoint(cli);
      calc.upsert_policy(k8s("default", "v6", R"({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
          {"from": [{"podSelector": {"matchLabels": {"app": "cli"}}}]},
          {"from": [{"ipBlock": {"cidr": "fd00:99::/64", "except": ["fd00:99::1/128"]}}]}]})"));
      REQUIRE(calc.flush(plugin));
      const auto save6 = node.exec_or_throw("ip6tables-" + backend + "-save -t filter");
      const auto save4 = node.exec_or_throw("iptables-" + backend + "-save -t filter");
      INFO(save6);
      CHECK(save6.find("-A FORWARD -m comment --comment \"cali:") != std::string::npos);
      CHECK(save6.find(":cali-tw-caliweb") != std::string::npos);
      CHECK(save6.find("-A cali-from-wl-dispatch -i calicli ") != std::string::npos);
      CHECK(save6.find("cali-pi-gone6") == std::string::npos);  // swept
      CHECK(save6.find("-s fd00:99::/64") != std::string::npos);  // the v6 ipBlock, here only
      CHECK(save4.find("fd00:99::") == std::string::npos);
      CHECK(save6.find("--match-set cali60s:") != std::string::npos);
      CHECK(save4.find("--match-set cali40s:") != std::string::npos);
      CHECK(save6.find("--icmpv6-type 135 -j ACCEPT") != std::string::npos);  // neighbour discovery to the host
      // The selector's IPv6 members in a cali60 set of family inet6, its IPv4 ones in cali40.
      std::string set6;
      {
        std::istringstream ls(node.exec_or_throw("ipset list -n"));
        for (std::string l; std::getline(ls, l);) {
          CHECK(l != "cali60s:gone");
          if (l.starts_with("cali60s:")) set6 = l;
        }
      }
      REQUIRE_FALSE(set6.empty());
      CHECK(node.exec_or_throw("ipset list " + set6).find("family inet6") != std::string::npos);
      CHECK(node.exec("ipset test " + set6 + " fd00:65::6").ok());
      CHECK(node.exec("ipset test cali40" + set6.substr(6) + " 10.65.0.6").ok());

      auto none = plugin.check_drift();
      REQUIRE(none);
      INFO(show(*none));
      CHECK(none->repaired.empty());
      // A rule deleted from an ip6tables chain and an IPv6 member removed come back; the IPv4
      // table is not touched.
      const auto before4 = model->impl.last_restore(cnf::ip_family::v4);
      node.exec_or_throw("ip6tables-" + backend + " -D cali-tw-caliweb 2");
      node.exec_or_throw("ipset del " + set6 + " fd00:65::6");
      auto d = plugin.check_drift();
      REQUIRE(d);
      INFO(show(*d));
      CHECK(d->repaired.size() == 2);
      CHECK(repaired(*d, "chain cali-tw-caliweb (ip6tables)"));
      CHECK(repaired(*d, "set " + set6));
      CHECK(model->impl.last_restore(cnf::ip_family::v4) == before4);
      CHECK(node.exec_or_throw("ip6tables-" + backend + "-save -t filter | grep -c '^-A cali-tw-caliweb '") ==
            node.exec_or_throw("iptables-" + backend + "-save -t filter | grep -c '^-A cali-tw-caliweb '"));
      CHECK(node.exec("ipset test " + set6 + " fd00:65::6").ok());
    }
  }
}

// Both families or neither: a change ip6tables refuses after iptables took its half leaves
// the IPv4 table as it was (the IPv4 half is put back), and a later good change applies.
TEST_CASE("a change only ip6tables refuses leaves the IPv4 chains as they were", "[integration]") {
  for (std::string backend : {"nft", "legacy"}) {
    DYNAMIC_SECTION(backend) {
      test_netns node;
      if (!backend_works(node, backend) || !node.exec("ip6tables-" + backend + "-save -t filter >/dev/null").ok()) {
        WARN("ip6tables-" << backend << " or ipset does not work in a network namespace here; case skipped");
        continue;
      }
      auto table = [&](const std::string& tool) {
        std::string out;
        std::istringstream in(node.exec_or_throw(tool + "-" + backend + "-save -t filter"));
        for (std::string l; std::getline(in, l);)
          if (!l.starts_with("#")) out += l + "\n";
        return out;
      };
      cnf_test::enter_netns in(node);
      cnf::iptables_policy::dataplane dp({.backend = backend});
      calculator calc("node1");
      calc.upsert_namespace("default", {});
      auto web = pod("default", "web", "caliweb", "10.65.0.5", {{"app", "web"}});
      web.ip_networks.push_back(cnf::ip_prefix::parse("fd00:65::5/128").value());
      calc.upsert_endpoint(web);
      for (auto& u : calc.take_updates()) {
        if (auto* e = std::get_if<update::endpoint_upsert>(&u)) REQUIRE(dp.upsert_endpoint(e->endpoint));
        if (auto* p = std::get_if<update::profile_upsert>(&u)) REQUIRE(dp.upsert_profile(p->profile));
      }
      REQUIRE(dp.apply());
      const auto before4 = table("iptables"), before6 = table("ip6tables");
      REQUIRE(before4.find(":cali-tw-caliweb") != std::string::npos);

      // ICMPv6 with a port: IPv6 only (IPv4 gets an empty policy chain and a jump to it);
      // ip6tables refuses multiport without a port protocol.
      cnf::network_policy bad;
      bad.ns = "default";
      bad.name = "bad6";
      bad.endpoints = {web.key()};
      cnf::policy_rule r;
      r.protocol = 58;
      r.destination_ports = {{80, 80}};
      bad.ingress = {r};
      REQUIRE(dp.upsert_policy(bad));
      auto refused = dp.apply();
      REQUIRE_FALSE(refused);
      INFO(refused.error().message);
      CHECK(refused.error().message.find("ip6tables-" + backend + "-restore refused the change") != std::string::npos);
      CHECK(refused.error().message.find("iptables-" + backend + "-restore change was put back") != std::string::npos);
      CHECK(dp.last_restore(cnf::ip_family::v4).find(":cali-pi-default.bad6") != std::string::npos);  // IPv4 took it first
      CHECK(table("iptables") == before4);
      CHECK(table("ip6tables") == before6);

      // The bad policy gone: the next apply succeeds and changes nothing.
      REQUIRE(dp.remove_policy(bad.key()));
      REQUIRE(dp.apply());
      CHECK(table("iptables") == before4);
      CHECK(table("ip6tables") == before6);
      auto d = dp.check_drift();
      REQUIRE(d);
      CHECK(d->repaired.empty());
    }
  }
}
