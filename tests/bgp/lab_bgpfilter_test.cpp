// Calico's BGPFilter applied live to a real agent: a one-node `cnf lab` with the bgp plugin and
// BIRD 2 in the lab's router namespace (AS 64513, two static prefixes). Through `cnf apply -f` /
// `cnf delete`: a BGPPeer naming a filter that does not exist yet (no filter: both prefixes
// reach the kernel, the status says the filter is missing); the filter applied (import: BIRD's
// 10.200.1.0/24 leaves node-1's kernel, 10.200.2.0/24 stays; export: node-1's block leaves
// BIRD's table); the filter deleted (both come back). The session never flaps: BIRD's `since`
// of the protocol is unchanged and the agent logs its Established once. The BGPPeer's
// maxRestartTime is the restart time BIRD sees in node-1's graceful-restart capability.
// Root only (else "skipped", exit 77); BIRD stopped by PID and `cnf lab down` on every exit path.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/root_gate.hpp"
#include "bird_lab.hpp"

#include <string>
#include <thread>

CNF_TEST_ROOT_GATE("network namespaces");

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using namespace cnf_test::bird_lab;

TEST_CASE("BGPFilter applied live: import and export rules on one peering, no session reset", "[integration][bgp]") {
  require_cnf_and_bird();
  env L("bgpfilter");
  REQUIRE(L.lab({"up", "--nodes", "1", "--subnets", "1", "--pods-per-node", "1", "--profile",
                 std::string(CNF_TEST_SOURCE_DIR) + "/tests/bgp/lab-bgp.toml"})
              .status == 0);

  bird b(L);
  REQUIRE(b.start("route 10.200.1.0/24 blackhole; route 10.200.2.0/24 blackhole;", bird::protocol("n1", "10.100.0.10")));

  auto has = [&](const char* route) { return L.kernel_routes().find(route) != std::string::npos; };

  // 1. The BGPPeer names a filter not created yet: not applied (as Calico), said in the status.
  REQUIRE(L.apply("peer.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: bird\nspec:\n  node: node-1\n"
                               "  peerIP: 10.100.0.1\n  asNumber: 64513\n  filters: [from-bird]\n  maxRestartTime: 33s\n")
              .status == 0);
  CHECK(wait_for([&] { return b.established("n1"); }));
  CHECK(wait_for([&] { return has("10.200.1.0/24 via 10.100.0.1") && has("10.200.2.0/24 via 10.100.0.1"); }));
  CHECK(wait_for([&] { return b.has_block("n1"); }));
  CHECK_THAT(L.cnf({"node", "status", "-o", "json"}).out, Contains("BGPFilter from-bird does not exist"));
  // maxRestartTime is the graceful-restart time node-1 advertises on this peering
  CHECK_THAT(b.c("show protocols all n1"), Contains("Restart time: 33"));
  const std::string since = b.settled_line("n1");
  INFO("BIRD n1: " << since);

  // 2. The filter: import rejects BIRD's 10.200.1.0/24 only; export keeps the pool's blocks from BIRD.
  auto bad = L.apply("bad.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: bad\nspec:\n"
                                 "  importV4:\n  - action: Reject\n    matchOperator: in\n    cidr: 10.200.1.0/24\n");
  CHECK(bad.status != 0);
  CHECK_THAT(bad.err, Contains("spec.importV4[0].matchOperator: expected Equal, NotEqual, In or NotIn (got 'in')"));
  REQUIRE(L.apply("filter.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: from-bird\nspec:\n"
                                 "  importV4:\n  - action: Reject\n    matchOperator: Equal\n    cidr: 10.200.1.0/24\n"
                                 "  exportV4:\n  - action: Reject\n    matchOperator: In\n    cidr: 10.244.0.0/16\n    prefixLength:\n      min: 16\n      max: 32\n")
              .status == 0);
  CHECK_THAT(L.cnf({"get", "bgpfilters"}).out, Contains("from-bird"));
  CHECK(wait_for([&] { return !has("10.200.1.0/24"); }));
  CHECK(has("10.200.2.0/24 via 10.100.0.1"));
  CHECK(wait_for([&] { return !b.has_block("n1"); }));
  CHECK(b.c("show route protocol n1").find("10.244.") == std::string::npos);

  // 3. The filter deleted: BIRD's prefix comes back from node-1's own Adj-RIB-In, the block goes to BIRD again.
  REQUIRE(L.cnf({"delete", "bgpfilter", "from-bird"}).status == 0);
  CHECK(wait_for([&] { return has("10.200.1.0/24 via 10.100.0.1"); }));
  CHECK(wait_for([&] { return b.has_block("n1"); }));

  // Never a reset: BIRD's protocol line (state and since) unchanged, one Established in the agent's log.
  CHECK(b.line("n1") == since);
  CHECK(count(L.agent_log(), "peer bird (10.100.0.1): Established") == 1);
  CHECK_THAT(L.agent_log(), Contains("import filters changed"));
}
