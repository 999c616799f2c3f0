// `cnf lab`, driven as a person (or another test) drives it: the built `cnf` binary run as
// a process with a state directory of the test's own (--dir), so the lab's id, and with
// it every namespace name, is unique to this run. Each test checks the kernel (ip -n),
// the processes (/proc) and the files, and that `cnf lab down` leaves none of them; a
// guard runs `down` on every exit path, and checks again.
//
// Cross-node pings need the node agents to route (the `direct` routing plugin): when
// `cnf plugins` lists no routing plugin "direct", the full matrix is replaced by
// `ping --same-node` and the test says so in one line.
//
// Root only: otherwise "skipped: needs root" and exit 77 before any test runs.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/process.hpp"
#include "../support/root_gate.hpp"

#include <boost/json.hpp>

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

CNF_TEST_ROOT_GATE("network namespaces");

namespace fs = std::filesystem;
namespace bj = boost::json;
using Catch::Matchers::Contains;

namespace {

const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";
const std::vector<std::string> env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};

struct lab_dir {
  fs::path path;
  lab_dir() {
    // A fresh name that does not exist yet: `up` makes it, `down` removes it.
    cnf_test::temp_dir parent("/tmp/cnf-lab-test-");
    path = "/tmp/cnf-lab-test-" + std::to_string(::getpid()) + "-" + parent.path.filename().string();
  }
};

cnf_test::process_result lab(const lab_dir& d, std::vector<std::string> args, std::chrono::seconds timeout = std::chrono::seconds(120)) {
  std::vector<std::string> argv = {cnf_bin, "lab", "--dir", d.path.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = cnf_test::run_process(argv, env, {}, timeout);
  std::string line;
  for (auto& a : args) line += " " + a;
  UNSCOPED_INFO("cnf lab" << line << ": " << r.describe());
  return r;
}

std::string sh(const std::string& cmd) {
  auto r = cnf_test::run_process({"/bin/sh", "-c", cmd}, env, {}, std::chrono::seconds(30));
  return r.out;
}

/// The lab id as the lab computes it, but by sha1sum(1).
std::string id_of(const lab_dir& d) { return sh("printf %s '" + d.path.string() + "' | sha1sum").substr(0, 6); }

std::vector<std::string> namespaces_of(const std::string& id) {
  std::vector<std::string> out;
  if (DIR* dir = ::opendir("/var/run/netns")) {
    while (dirent* e = ::readdir(dir))
      if (std::string(e->d_name).rfind("cnflab-" + id + "-", 0) == 0) out.push_back(e->d_name);
    ::closedir(dir);
  }
  return out;
}

/// Processes whose command line names the lab's directory (its agents and etcd).
std::vector<pid_t> processes_of(const lab_dir& d) {
  std::vector<pid_t> out;
  if (DIR* dir = ::opendir("/proc")) {
    while (dirent* e = ::readdir(dir)) {
      char* end = nullptr;
      long pid = std::strtol(e->d_name, &end, 10);
      if (pid <= 0 || *end) continue;
      auto cmd = cnf_test::read_file(std::string("/proc/") + e->d_name + "/cmdline");
      if (cmd.find(d.path.string() + "/") != std::string::npos) out.push_back(static_cast<pid_t>(pid));
    }
    ::closedir(dir);
  }
  return out;
}

void require_nothing_left(const lab_dir& d, const std::string& id) {
  CHECK(namespaces_of(id).empty());
  // Processes may take a moment to be reaped after SIGKILL.
  for (int i = 0; i < 100 && !processes_of(d).empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(processes_of(d).empty());
  CHECK_FALSE(fs::exists(d.path));
}

/// `cnf lab down` on every exit path; then whatever still carries the lab's id is removed
/// by the test itself (and the test fails on it through the checks above).
struct down_guard {
  const lab_dir& d;
  ~down_guard() {
    std::vector<std::string> argv = {cnf_bin, "lab", "--dir", d.path.string(), "down"};
    (void)cnf_test::run_process(argv, env, {}, std::chrono::seconds(60));
    for (pid_t p : processes_of(d)) ::kill(p, SIGKILL);
    for (auto& n : namespaces_of(id_of(d))) sh("ip netns del " + n);
    std::error_code ec;
    fs::remove_all(d.path, ec);
  }
};

bj::object state_of(const lab_dir& d) { return bj::parse(cnf_test::read_file(d.path / "lab.json")).as_object(); }

bool have_direct_routing() {
  auto r = cnf_test::run_process({cnf_bin, "plugins"}, env, {}, std::chrono::seconds(30));
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("routing", 0) == 0 && line.find(" direct ") != std::string::npos) return true;
  return false;
}

std::string ipj(const std::string& netns, const std::string& args) { return sh("ip -n " + netns + " -j " + args); }

}  // namespace

TEST_CASE("cnf lab: up, pods, ping, status, exec, a crashed agent, down leaves nothing", "[lab]") {
  lab_dir d;
  down_guard guard{d};
  const std::string id = id_of(d);

  // The classic topology on one subnet (direct routing reaches only nodes on one subnet).
  auto up = lab(d, {"up", "--subnets", "1", "--pods-per-node", "2"});
  REQUIRE(up.status == 0);
  auto st = state_of(d);
  REQUIRE(std::string(st.at("id").as_string()) == id);
  const std::string pre = "cnflab-" + id + "-";

  // Namespaces: the router, four nodes, eight pods.
  auto ns = namespaces_of(id);
  std::set<std::string> names(ns.begin(), ns.end());
  for (auto n : {"router", "k8s-m", "k8s-w1", "k8s-w2", "k8s-w0"}) CHECK(names.count(pre + n) == 1);
  CHECK(ns.size() == 1 + 4 + 8);

  // The fabric in the kernel: the router's bridge and address, each node's address and
  // default route via the router, forwarding on.
  CHECK_THAT(ipj(pre + "router", "addr show dev br0"), Contains("\"local\":\"10.100.0.1\""));
  CHECK(sh("ip netns exec " + pre + "router sysctl -n net.ipv4.ip_forward") == "1\n");
  for (auto& n : st.at("nodes").as_array()) {
    auto& no = n.as_object();
    const std::string nns = std::string(no.at("netns").as_string());
    CHECK_THAT(ipj(nns, "addr show dev eth0"), Contains("\"local\":\"" + std::string(no.at("address").as_string()) + "\""));
    CHECK_THAT(ipj(nns, "route show default"), Contains("\"gateway\":\"10.100.0.1\""));
    // The agent runs, inside its node's namespace.
    const auto pid = no.at("agent").as_object().at("pid").to_number<long>();
    struct stat a {}, b {};
    REQUIRE(::stat(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), &a) == 0);
    REQUIRE(::stat(("/var/run/netns/" + nns).c_str(), &b) == 0);
    CHECK(a.st_ino == b.st_ino);
  }
  // Pods: an address from the pool, each on its own node's veth.
  REQUIRE(st.at("pods").as_array().size() == 8);
  for (auto& p : st.at("pods").as_array()) CHECK_THAT(std::string(p.as_object().at("ip").as_string()), Contains("10.244."));

  // A pod added and deleted by name.
  auto add = lab(d, {"pod", "add", "web/extra", "--node", "k8s-w1", "--labels", "app=web,tier=front"});
  REQUIRE(add.status == 0);
  CHECK_THAT(add.out, Contains("web/extra on k8s-w1: 10.244."));
  auto status = lab(d, {"status"});
  CHECK(status.status == 0);
  CHECK_THAT(status.out, Contains("web/extra"));
  CHECK_THAT(status.out, Contains("app=web,tier=front"));
  // The labels are on the pod's WorkloadEndpoint in the lab's (local) datastore, beside the
  // CNI's own, where policy selectors find them.
  CHECK_THAT(sh("grep -rah 'k8s--w1-k8s-extra-eth0' " + (d.path / "datastore").string() + " | tail -n 1"),
             Contains("\"tier\":\"front\"") && Contains("\"projectcalico.org/namespace\":\"web\""));
  CHECK(namespaces_of(id).size() == 14);
  auto again = lab(d, {"pod", "add", "web/extra"});
  CHECK(again.status == 1);
  CHECK_THAT(again.err, Contains("already exists"));
  auto badname = lab(d, {"pod", "add", "Web/x_y"});
  CHECK(badname.status == 1);
  CHECK_THAT(badname.err, Contains("namespace 'Web'"));
  auto nonode = lab(d, {"pod", "add", "web/other", "--node", "k8s-w9"});
  CHECK(nonode.status == 1);
  CHECK_THAT(nonode.err, Contains("no such node"));
  REQUIRE(lab(d, {"pod", "del", "web/extra"}).status == 0);
  CHECK(namespaces_of(id).size() == 13);
  CHECK_THAT(lab(d, {"status"}).out, !Contains("web/extra"));
  CHECK(lab(d, {"pod", "del", "web/extra"}).status == 1);

  // Each node routes to its own pods over their host veths (the CNI's /32 routes, which the
  // node's agent must leave in place).
  for (auto& p : st.at("pods").as_array()) {
    auto& po = p.as_object();
    const std::string node = std::string(po.at("node").as_string()), ip = std::string(po.at("ip").as_string());
    INFO("node " << node << " -> its pod " << std::string(po.at("name").as_string()) << " " << ip);
    CHECK_THAT(sh("ip -n " + pre + node + " route get " + ip), Contains("dev cali"));
  }

  // Ping: every pair when the agents route, else the pairs on one node and pod -> node.
  const bool routed = have_direct_routing();
  if (!routed) std::printf("note: no routing plugin \"direct\" built: ping --same-node instead of the full matrix\n");
  std::vector<std::string> ping = {"ping"};
  if (!routed) ping.push_back("--same-node");
  auto pr = lab(d, ping);
  CHECK(pr.status == 0);
  CHECK_THAT(pr.out, Contains(routed ? "56 pair(s) probed" : "16 pair(s) probed"));
  CHECK_THAT(pr.out, Contains(" 0 failed"));
  auto sample = lab(d, {"ping", "--sample", "3", "--same-node"});
  CHECK(sample.status == 0);
  CHECK_THAT(sample.out, Contains("3 pair(s) probed"));

  // exec: in a node (with its profile), in a pod; the command's status is cnf's.
  auto en = lab(d, {"exec", "k8s-m", "--", "sh", "-c", "ip -o addr show dev eth0; echo profile=$CNF_PROFILE"});
  CHECK(en.status == 0);
  CHECK_THAT(en.out, Contains("10.100.0.10/16"));
  CHECK_THAT(en.out, Contains("profile=" + d.path.string() + "/nodes/k8s-m/profile.toml"));
  CHECK(lab(d, {"exec", "k8s-m", "--", "sh", "-c", "exit 3"}).status == 3);
  // A pod whose link is down fails the ping, by name.
  REQUIRE(lab(d, {"exec", "default/pod-k8s-w2-0", "--", "ip", "link", "set", "eth0", "down"}).status == 0);
  auto bad = lab(d, {"ping", "--same-node", "--timeout-ms", "600"});
  CHECK(bad.status == 1);
  CHECK_THAT(bad.out, Contains("FAILED default/pod-k8s-w2-0 (k8s-w2) -> "));

  // A crashed agent: status says so; down still removes everything.
  const auto victim = st.at("nodes").as_array()[1].as_object().at("agent").as_object().at("pid").to_number<long>();
  REQUIRE(::kill(static_cast<pid_t>(victim), SIGKILL) == 0);
  for (int i = 0; i < 100 && ::kill(static_cast<pid_t>(victim), 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto crashed = lab(d, {"status"});
  CHECK(crashed.status == 1);
  CHECK_THAT(crashed.out, Contains("NOT RUNNING"));

  auto down = lab(d, {"down"});
  CHECK(down.status == 0);
  require_nothing_left(d, id);
  auto twice = lab(d, {"down"});
  CHECK(twice.status == 0);
  CHECK_THAT(twice.out, Contains("nothing to do"));
  CHECK(lab(d, {"status"}).status == 1);
}

TEST_CASE("cnf lab up: bad options and profiles are refused by name; a failed up leaves nothing", "[lab]") {
  lab_dir d;
  down_guard guard{d};
  const std::string id = id_of(d);
  cnf_test::temp_dir files("/tmp/cnf-lab-test-files-");

  struct bad_case {
    std::vector<std::string> args;
    std::vector<std::string> says;
  };
  const auto typo = files.path / "typo.toml", hostlocal = files.path / "hostlocal.toml", small = files.path / "small.toml";
  cnf_test::write_file(typo, "[datastore]\nplugin = \"local\"\n[ipam]\nplugin = \"calico-ipam\"\nblok_size = 26\n");
  cnf_test::write_file(hostlocal, "[ipam]\nplugin = \"host-local\"\nranges = [[{ subnet = \"10.244.0.0/24\" }]]\n");
  // Four addresses for eight pods: the ADDs run out after the agents are up, and up rolls back.
  cnf_test::write_file(small, "[datastore]\nplugin = \"local\"\nfsync = false\n[ipam]\nplugin = \"calico-ipam\"\n"
                              "[[ipam.pools]]\ncidr = \"10.244.0.0/30\"\nblock_size = 30\n");
  const std::vector<bad_case> cases = {
      {{"up", "--nodes", "0"}, {"--nodes"}},
      {{"up", "--datastore", "zookeeper"}, {"--datastore", "zookeeper"}},
      {{"up", "--nodes", "2", "--subnets", "3"}, {"--subnets 3", "2 node(s)"}},
      {{"up", "--profile", (files.path / "missing.toml").string()}, {"missing.toml", "no such file"}},
      {{"up", "--profile", typo.string()}, {"typo.toml", "blok_size"}},
      {{"up", "--profile", hostlocal.string()}, {"host-local", "calico-ipam"}},
      {{"up", "--nodes", "4", "--profile", small.string()}, {"ADD failed"}},
  };
  for (auto& c : cases) {
    std::string line;
    for (auto& a : c.args) line += " " + a;
    INFO("cnf lab" << line);
    auto r = lab(d, c.args);
    CHECK(r.status != 0);
    for (auto& s : c.says) CHECK_THAT(r.err, Contains(s));
    require_nothing_left(d, id);
  }
  // A directory holding something else is not taken for a lab's.
  fs::create_directories(d.path);
  cnf_test::write_file(d.path / "mine.txt", "not the lab's");
  auto r = lab(d, {"up"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("not empty"));
  CHECK(namespaces_of(id).empty());
  CHECK(fs::exists(d.path / "mine.txt"));
  fs::remove_all(d.path);
}
