// Graceful restart of a real agent as the restarting speaker (RFC 4724 §4.1): a one-node
// `cnf lab` with the bgp plugin and `[routing] graceful_stop = true`, BIRD 2 in the lab's
// router namespace as its peer with graceful restart on. The agent stops cleanly (SIGTERM):
// no Cease, so BIRD keeps the node's prefix (stale: "Neighbor graceful restart active") and the node's kernel keeps BIRD's routes.
// While it is down BIRD withdraws one prefix. The agent starts again: the route BIRD still
// announces stays in the kernel, never rewritten (polled, and no netlink notification of it),
// the withdrawn one goes after BIRD's End-of-RIB, and BIRD never loses the node's prefix.
// Root only (else "skipped", exit 77); BIRD, the monitor and the restarted agent stopped by
// PID, `cnf lab down` on every exit path.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/lab_env.hpp"
#include "../support/process.hpp"
#include "../support/root_gate.hpp"

#include <boost/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <atomic>
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

bool wait_for(const std::function<bool()>& f, std::chrono::milliseconds limit = 20s) {
  for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < limit;) {
    if (f()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return f();
}

// BIRD in the lab's router namespace, stopped by the PID it wrote.
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
  static std::string conf(bool both) {
    return std::string("router id 10.100.0.1;\nprotocol device { scan time 10; }\n"
                       "protocol static { ipv4; route 10.200.1.0/24 blackhole; ") +
           (both ? "route 10.200.2.0/24 blackhole; " : "") +
           "}\n"
           "protocol bgp n1 { local 10.100.0.1 as 64513; neighbor 10.100.0.10 as 64512; graceful restart on; graceful restart time 30;\n"
           "  ipv4 { import all; export where source = RTS_STATIC; }; connect retry time 1; connect delay time 0; error wait time 1, 2; }\n";
  }
};

}  // namespace

TEST_CASE("graceful restart of an agent: kernel routes kept and untouched, the withdrawn one swept after End-of-RIB",
          "[integration][bgp]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  if (sh("command -v bird").empty()) cnf_test::exit_77_skipped("BIRD 2 is not installed (apt-get install bird2)");
  cnf_test::lab_env L("bgpgr");
  const auto profile = L.files.path / "lab-bgp-gr.toml";
  cnf_test::write_file(profile, cnf_test::read_file(std::string(CNF_TEST_SOURCE_DIR) + "/tests/bgp/lab-bgp.toml") +
                                    "graceful_restart_time = 30\ngraceful_stop = true\n");
  REQUIRE(L.lab({"up", "--nodes", "1", "--subnets", "1", "--pods-per-node", "1", "--profile", profile.string()}).status == 0);
  auto st = bj::parse(cnf_test::read_file(L.dir / "lab.json")).as_object();
  auto& n1 = st.at("nodes").as_array().at(0).as_object();
  const std::string nns(n1.at("netns").as_string()), prof(n1.at("profile").as_string());
  const auto old_pid = static_cast<pid_t>(n1.at("agent").as_object().at("pid").to_number<long>());
  const auto agent_log = L.dir / "nodes" / "node-1" / "agent.log";

  bird b{"cnflab-" + L.id() + "-router", L.files.path / "bird"};
  std::filesystem::create_directories(b.dir);
  cnf_test::write_file(b.dir / "bird.conf", bird::conf(true));
  REQUIRE(sh("ip netns exec " + b.ns + " bird -c " + (b.dir / "bird.conf").string() + " -s " + (b.dir / "bird.ctl").string() + " -P " +
             (b.dir / "bird.pid").string() + " 2>&1; echo rc=$?")
              .find("rc=0") != std::string::npos);
  const auto peer = L.files.path / "peer.yaml";
  cnf_test::write_file(peer, "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: bird\nspec:\n  node: node-1\n"
                             "  peerIP: 10.100.0.1\n  asNumber: 64513\n");
  REQUIRE(L.lab({"exec", "node-1", "--", cnf_bin, "apply", "-f", peer.string()}).status == 0);

  auto route = [&](const char* dst) { return sh("ip -n " + nns + " route show " + dst); };
  REQUIRE(wait_for([&] { return route("10.200.1.0/24").find("via 10.100.0.1") != std::string::npos; }));
  REQUIRE(wait_for([&] { return route("10.200.2.0/24").find("via 10.100.0.1") != std::string::npos; }));
  // The node's block, as BIRD learned it.
  std::string block;
  REQUIRE(wait_for([&] {
    auto out = b.c("show route protocol n1");
    auto p = out.find("10.244.");
    if (p == std::string::npos) return false;
    block = out.substr(p, out.find_first_of(" \t", p) - p);
    return true;
  }));
  INFO("node-1's block " << block);
  const std::string kept = route("10.200.1.0/24");
  INFO("kept: " << kept);

  // From here on: the kept route is polled in the kernel, BIRD's table for the block, and a
  // netlink monitor records every change of the node's routes.
  const auto mon_file = L.files.path / "monitor.txt";
  cnf_test::pid_guard monitor;
  monitor.pid = std::stoi(sh("ip -n " + nns + " monitor route > " + mon_file.string() + " 2>&1 & echo $!"));
  std::atomic<bool> polling{true};
  std::atomic<int> polls{0}, route_changed{0}, block_lost{0};
  std::string first_change, first_loss;
  std::thread poller([&] {
    while (polling) {
      if (auto r = route("10.200.1.0/24"); r != kept && route_changed++ == 0) first_change = r;
      if (auto r = b.c("show route " + block); r.find(block) == std::string::npos && block_lost++ == 0) first_loss = r;
      ++polls;
      std::this_thread::sleep_for(20ms);
    }
  });
  struct joiner {
    std::atomic<bool>& on;
    std::thread& t;
    ~joiner() {
      on = false;
      if (t.joinable()) t.join();
    }
  } join_poller{polling, poller};

  // 1. A clean stop: no Cease; BIRD keeps the block (stale), the node's kernel BIRD's routes.
  REQUIRE(::kill(old_pid, SIGTERM) == 0);
  for (int i = 0; i < 500 && ::kill(old_pid, 0) == 0; ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(::kill(old_pid, 0) != 0);
  CHECK(wait_for([&] { return b.c("show protocols n1").find("Established") == std::string::npos; }, 5s));
  const auto helper = b.c("show route " + block + " all"), helper_proto = b.c("show protocols all n1");
  INFO("BIRD while the agent is down: " << helper << helper_proto);
  CHECK_THAT(helper, Contains(block) && Contains("via 10.100.0.10"));
  CHECK_THAT(helper_proto, Contains("Neighbor graceful restart active") && Contains("Restart timer:"));
  CHECK_THAT(helper_proto, !Contains("Administrative shutdown"));
  CHECK(route("10.200.2.0/24").find("via 10.100.0.1") != std::string::npos);

  // 2. BIRD withdraws 10.200.2.0/24 while the agent is away.
  cnf_test::write_file(b.dir / "bird.conf", bird::conf(false));
  CHECK_THAT(b.c("configure"), Contains("Reconfigured"));
  std::this_thread::sleep_for(300ms);
  CHECK(route("10.200.2.0/24").find("via 10.100.0.1") != std::string::npos);  // nobody to remove it yet

  // 3. The agent again: the session comes back with the R bit; after BIRD's End-of-RIB the
  // withdrawn route goes, the kept one was never touched.
  cnf_test::pid_guard again;
  again.pid = std::stoi(sh("ip netns exec " + nns + " " + cnf_bin + " agent --profile " + prof + " >> " + agent_log.string() + " 2>&1 & echo $!"));
  CHECK(wait_for([&] { return route("10.200.2.0/24").empty(); }, 30s));
  CHECK(wait_for([&] { return b.c("show protocols n1").find("Established") != std::string::npos; }, 5s));
  const auto log = cnf_test::read_file(agent_log);
  CHECK_THAT(log, Contains("graceful restart: the routes of the last run stay in the kernel until the routing part has its peers' End-of-RIB"));
  CHECK_THAT(log, Contains("bgp: peer bird: End-of-RIB received (1 path(s))"));
  CHECK_THAT(log, Contains("bgp: graceful restart: initial routes complete (End-of-RIB from every graceful-restart peer)"));
  CHECK_THAT(log, Contains("route(s) of the last run not relearned: removing them"));
  CHECK(wait_for([&] { return b.c("show route " + block + " all").find("10.100.0.10") != std::string::npos; }, 5s));
  std::this_thread::sleep_for(500ms);
  polling = false;
  poller.join();

  INFO("polls " << polls << ", first change: " << first_change << ", first loss: " << first_loss);
  CHECK(polls > 5);
  CHECK(route_changed == 0);
  CHECK(block_lost == 0);
  CHECK(route("10.200.1.0/24") == kept);
  const auto mon = cnf_test::read_file(mon_file);
  INFO("ip monitor route:\n" << mon);
  CHECK_THAT(mon, !Contains("10.200.1.0/24"));
  CHECK_THAT(mon, Contains("Deleted 10.200.2.0/24"));
  CHECK(::kill(again.pid, 0) == 0);
}
