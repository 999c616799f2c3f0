// The real `cnf agent` with the bgp routing plugin, in `cnf lab`: three nodes on one
// subnet, each an iBGP mesh member. Checks: every session Established, `cnf node status`
// shows the mesh as calicoctl does, blocks are routed by what BGP learned (the agent's
// route table, protocol 81), every pod pair answers, and an agent that stops takes its
// block out of the other nodes' kernels at once (Cease, no hold-timer wait).
// Root only (else "skipped: needs root", exit 77); `cnf lab down` on every exit path.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/process.hpp"
#include "../support/root_gate.hpp"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <string>
#include <thread>

CNF_TEST_ROOT_GATE("network namespaces");

using namespace std::chrono_literals;

namespace {

const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";
const std::string profile = std::string(CNF_TEST_SOURCE_DIR) + "/tests/bgp/lab-bgp.toml";
const std::vector<std::string> env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};

struct lab {
  std::filesystem::path dir;
  lab() {
    cnf_test::temp_dir parent("/tmp/cnf-bgp-lab-test-");
    dir = "/tmp/cnf-bgp-lab-test-" + std::to_string(::getpid()) + "-" + parent.path.filename().string();
  }
  ~lab() { run({"down"}); }
  cnf_test::process_result run(std::vector<std::string> args, std::chrono::seconds timeout = 120s) const {
    std::vector<std::string> argv = {cnf_bin, "lab", "--dir", dir.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return cnf_test::run_process(argv, env, {}, timeout);
  }
  std::string exec(const std::string& node, std::vector<std::string> cmd) const {
    std::vector<std::string> args = {"exec", node, "--"};
    args.insert(args.end(), cmd.begin(), cmd.end());
    return run(args, 30s).out;
  }
  std::string agent_log(const std::string& node) const {
    std::ifstream f(dir / "nodes" / node / "agent.log");
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
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

}  // namespace

TEST_CASE("bgp in cnf lab: three agents in an iBGP mesh route every pod pair", "[integration][bgp]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  lab l;
  auto up = l.run({"up", "--nodes", "3", "--pods-per-node", "1", "--profile", profile});
  INFO(up.describe());
  REQUIRE(up.status == 0);

  for (const char* n : {"node-1", "node-2", "node-3"}) {
    INFO(n << ":\n" << l.agent_log(n));
    CHECK(wait_for([&] { return count(l.agent_log(n), "): Established") >= 2; }));
  }
  auto status = l.exec("node-1", {cnf_bin, "node", "status"});
  INFO(status);
  CHECK(count(status, "node-to-node mesh") == 2);
  CHECK(count(status, "| node-to-node mesh | Established |") == 2);

  // the other nodes' blocks, via their addresses, programmed from BGP (protocol 81)
  std::string routes;
  CHECK(wait_for([&] {
    routes = l.exec("node-1", {"ip", "route", "show", "proto", "81"});
    return routes.find("via 10.100.0.11") != std::string::npos && routes.find("via 10.100.0.12") != std::string::npos;
  }));
  INFO(routes);
  auto ping = l.run({"ping"});
  INFO(ping.describe());
  CHECK(ping.status == 0);

  // node-3's agent stops: node-1 drops node-3's block at once (Cease / Administrative Shutdown)
  auto st = l.run({"status"});
  std::smatch m;
  std::regex re("node-3 +\\S+ +\\S+ +running, pid ([0-9]+)");
  REQUIRE(std::regex_search(st.out, m, re));
  const pid_t pid3 = static_cast<pid_t>(std::stol(m[1]));
  ::kill(pid3, SIGTERM);
  CHECK(wait_for([&] { return l.exec("node-1", {"ip", "route", "show", "proto", "81"}).find("via 10.100.0.12") == std::string::npos; }, 5s));
  CHECK(wait_for([&] { return l.agent_log("node-1").find("Cease / Administrative Shutdown") != std::string::npos; }, 5s));
}
