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
        CHECK(*d == 1);
        CHECK(saved_chain(node, backend, "cali-tw-" + iface) == seed);
        auto again = dp.check_drift();
        REQUIRE(again);
        CHECK(*again == 0);

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
