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

#include "../support/lab_env.hpp"
#include "../support/process.hpp"
#include "../support/root_gate.hpp"

#include <boost/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

CNF_TEST_ROOT_GATE("network namespaces");

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using cnf_test::sh;
namespace bj = boost::json;

namespace {

const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";

struct lab_env : cnf_test::lab_env {
  lab_env() : cnf_test::lab_env("bgpfilter") {}
  cnf_test::process_result cnf(std::vector<std::string> args) const {
    std::vector<std::string> a = {"exec", "node-1", "--", cnf_bin};
    a.insert(a.end(), args.begin(), args.end());
    return lab(a);
  }
  std::string agent_log() const { return cnf_test::read_file(dir / "nodes" / "node-1" / "agent.log"); }
  std::string kernel_routes() const { return run({"exec", "node-1", "--", "ip", "route", "show", "proto", "81"}).out; }
};

bool wait_for(const std::function<bool()>& f, std::chrono::milliseconds limit = 20s) {
  for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < limit;) {
    if (f()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return f();
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

struct bird {
  std::string ns;
  std::filesystem::path dir;
  ~bird() {
    std::ifstream f(dir / "bird.pid");
    long p = 0;
    if (!(f >> p) || p <= 0) return;
    ::kill(static_cast<pid_t>(p), SIGTERM);
    for (int i = 0; i < 100 && ::kill(static_cast<pid_t>(p), 0) == 0; ++i) std::this_thread::sleep_for(20ms);
    if (::kill(static_cast<pid_t>(p), 0) == 0) ::kill(static_cast<pid_t>(p), SIGKILL);
  }
  std::string c(const std::string& cmd) const { return sh("birdc -s " + (dir / "bird.ctl").string() + " " + cmd + " 2>&1"); }
  std::string line(const std::string& proto) const {
    auto out = c("show protocols " + proto);
    auto p = out.find("\n" + proto + " ");
    return p == std::string::npos ? std::string() : out.substr(p + 1, out.find('\n', p + 1) - p - 1);
  }
  bool established(const std::string& proto) const { return line(proto).find("Established") != std::string::npos; }
  bool has_block(const std::string& proto) const { return c("show route protocol " + proto).find("10.244.") != std::string::npos; }
};

}  // namespace

TEST_CASE("BGPFilter applied live: import and export rules on one peering, no session reset", "[integration][bgp]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  if (sh("command -v bird").empty()) cnf_test::exit_77_skipped("BIRD 2 is not installed (apt-get install bird2)");
  lab_env L;
  REQUIRE(L.lab({"up", "--nodes", "1", "--subnets", "1", "--pods-per-node", "1", "--profile",
                 std::string(CNF_TEST_SOURCE_DIR) + "/tests/bgp/lab-bgp.toml"})
              .status == 0);

  bird b{"cnflab-" + L.id() + "-router", L.files.path / "bird"};
  std::filesystem::create_directories(b.dir);
  cnf_test::write_file(b.dir / "bird.conf",
                       "router id 10.100.0.1;\nprotocol device { scan time 10; }\n"
                       "protocol static { ipv4; route 10.200.1.0/24 blackhole; route 10.200.2.0/24 blackhole; }\n"
                       "protocol bgp n1 { local 10.100.0.1 as 64513; neighbor 10.100.0.10 as 64512;\n"
                       "  ipv4 { import all; export where source = RTS_STATIC; }; connect retry time 1; connect delay time 0; error wait time 1, 2; }\n");
  REQUIRE(sh("ip netns exec " + b.ns + " bird -c " + (b.dir / "bird.conf").string() + " -s " + (b.dir / "bird.ctl").string() + " -P " +
             (b.dir / "bird.pid").string() + " 2>&1; echo rc=$?")
              .find("rc=0") != std::string::npos);

  auto apply = [&](const char* name, const std::string& yaml) {
    const auto f = (L.files.path / name).string();
    cnf_test::write_file(f, yaml);
    return L.cnf({"apply", "-f", f});
  };
  auto has = [&](const char* route) { return L.kernel_routes().find(route) != std::string::npos; };

  // 1. The BGPPeer names a filter not created yet: not applied (as Calico), said in the status.
  REQUIRE(apply("peer.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: bird\nspec:\n  node: node-1\n"
                             "  peerIP: 10.100.0.1\n  asNumber: 64513\n  filters: [from-bird]\n  maxRestartTime: 33s\n")
              .status == 0);
  CHECK(wait_for([&] { return b.established("n1"); }));
  CHECK(wait_for([&] { return has("10.200.1.0/24 via 10.100.0.1") && has("10.200.2.0/24 via 10.100.0.1"); }));
  CHECK(wait_for([&] { return b.has_block("n1"); }));
  CHECK_THAT(L.cnf({"node", "status", "-o", "json"}).out, Contains("BGPFilter from-bird does not exist"));
  // maxRestartTime is the graceful-restart time node-1 advertises on this peering
  CHECK_THAT(b.c("show protocols all n1"), Contains("Restart time: 33"));
  // BIRD's `since` settles a moment after Established (its channel comes up after the protocol).
  std::string since = b.line("n1");
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(250ms);
    auto again = b.line("n1");
    if (again == since) break;
    since = again;
  }
  INFO("BIRD n1: " << since);

  // 2. The filter: import rejects BIRD's 10.200.1.0/24 only; export keeps the pool's blocks from BIRD.
  auto bad = apply("bad.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: bad\nspec:\n"
                               "  importV4:\n  - action: Reject\n    matchOperator: in\n    cidr: 10.200.1.0/24\n");
  CHECK(bad.status != 0);
  CHECK_THAT(bad.err, Contains("spec.importV4[0].matchOperator: expected Equal, NotEqual, In or NotIn (got 'in')"));
  REQUIRE(apply("filter.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: from-bird\nspec:\n"
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
