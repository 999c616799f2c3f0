// IPIP across subnets in `cnf lab` (root): the default topology (k8s-m, k8s-w1, k8s-w2 on one
// subnet, k8s-w0 on a second one behind the router) with examples/profiles/ipip.toml (direct
// routing + ipip, the pool CrossSubnet; this kernel has no ipip device, so the part runs its
// eBPF datapath). Every pod pair answers, and a capture in the router namespace shows IP
// protocol 4 exactly for the pairs across subnets and plain ICMP for the others. Then the
// pool's mode changes live with `cnf apply -f`: Always encapsulates every pair, Never takes
// the programs off every node. On the way, k8s-w0's agent is restarted and takes the datapath over.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/lab_env.hpp"
#include "../support/process.hpp"
#include "../support/root_gate.hpp"

#include <boost/json.hpp>

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

CNF_TEST_ROOT_GATE("network namespaces");

namespace fs = std::filesystem;
namespace bj = boost::json;
using Catch::Matchers::Contains;

namespace {

const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";
const std::string profile = std::string(CNF_TEST_SOURCE_DIR) + "/examples/profiles/ipip.toml";
const std::vector<std::string>& env = cnf_test::lab_process_env();
using cnf_test::capture;
using cnf_test::lab_env;
using cnf_test::sh;
using agent_guard = cnf_test::pid_guard;

struct seen {
  std::set<std::pair<std::string, std::string>> ipip_pairs;   ///< inner echo requests (src, dst pod address)
  std::set<std::pair<std::string, std::string>> plain_pairs;  ///< echo requests not encapsulated
  std::set<std::pair<std::string, std::string>> ipip_outer;   ///< outer (src, dst) node addresses
};

/// tcpdump prints an IPIP packet on one line: "IP <outer src> > <outer dst>: IP <inner ...>: ICMP ...".
seen parse_capture(const std::string& text) {
  seen s;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto ip = line.find("IP ");
    if (ip == std::string::npos || line.find("ICMP echo request") == std::string::npos) continue;
    auto inner = line.find(": IP ", ip);
    std::istringstream ls(line.substr(ip + 3));
    std::string src, gt, dst;
    ls >> src >> gt >> dst;
    if (!dst.empty() && dst.back() == ':') dst.pop_back();
    if (inner == std::string::npos) {
      s.plain_pairs.insert({src, dst});
      continue;
    }
    s.ipip_outer.insert({src, dst});
    std::istringstream is(line.substr(inner + 5));
    std::string isrc, igt, idst;
    is >> isrc >> igt >> idst;
    if (!idst.empty() && idst.back() == ':') idst.pop_back();
    s.ipip_pairs.insert({isrc, idst});
  }
  return s;
}

}  // namespace

TEST_CASE("ipip in cnf lab: CrossSubnet encapsulates exactly the pairs across subnets; modes change live", "[lab][ipip]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  if (sh("command -v tcpdump").empty()) cnf_test::exit_77_skipped("tcpdump is not installed (scripts/install-deps.sh)");
  lab_env L("ipip");
  REQUIRE(L.lab({"up", "--profile", profile, "--pods-per-node", "1"}).status == 0);
  const std::string pre = "cnflab-" + L.id() + "-";
  auto st = bj::parse(cnf_test::read_file(L.dir / "lab.json")).as_object();
  std::map<std::string, std::int64_t> subnet_of_node, subnet_of_addr;
  for (auto& n : st.at("nodes").as_array()) {
    auto& o = n.as_object();
    subnet_of_node[std::string(o.at("name").as_string())] = o.at("subnet").to_number<std::int64_t>();
    subnet_of_addr[std::string(o.at("address").as_string())] = o.at("subnet").to_number<std::int64_t>();
  }
  REQUIRE(subnet_of_node.size() == 4);
  REQUIRE(subnet_of_node["k8s-w0"] != subnet_of_node["k8s-m"]);
  std::map<std::string, std::string> node_of_pod;
  for (auto& p : st.at("pods").as_array())
    node_of_pod[std::string(p.as_object().at("ip").as_string())] = std::string(p.as_object().at("node").as_string());
  REQUIRE(node_of_pod.size() == 4);
  std::set<std::pair<std::string, std::string>> cross, same;
  for (auto& [a, na] : node_of_pod)
    for (auto& [b, nb] : node_of_pod)
      if (a != b) (subnet_of_node[na] != subnet_of_node[nb] ? cross : same).insert({a, b});

  // Every pair answers once the nodes have their tunnel addresses from each other's Nodes.
  bool all = false;
  for (int i = 0; i < 50 && !all; ++i) {
    all = L.lab({"ping", "--timeout-ms", "500"}).status == 0;
    if (!all) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  REQUIRE(all);

  auto probe = [&](const char* name) {
    capture cap(pre + "router", "icmp or ip proto 4", L.files.path / name);
    auto pr = L.lab({"ping"});
    CHECK(pr.status == 0);
    CHECK_THAT(pr.out, Contains("12 answered, 0 failed"));
    auto s = parse_capture(cap.stop());
    INFO("capture:\n" << cnf_test::read_file(L.files.path / name));
    return s;
  };

  SECTION("CrossSubnet, then Always, then Never") {
    auto s = probe("crosssubnet.txt");
    CHECK(s.ipip_pairs == cross);  // each pair across subnets, in IPIP
    CHECK(s.plain_pairs == same);  // each pair on one subnet, natively
    REQUIRE_FALSE(s.ipip_outer.empty());
    for (auto& [a, b] : s.ipip_outer) {
      INFO("IPIP " << a << " -> " << b);
      CHECK(subnet_of_addr.at(a) != subnet_of_addr.at(b));
    }
    auto status = L.lab({"exec", "k8s-w0", "--", cnf_bin, "node", "status"});
    CHECK_THAT(status.out, Contains("CrossSubnet") && Contains("1480") && Contains("datapath ebpf"));
    // The profile sets no [cni] mtu: the agents served the ADDs with the tunnel's MTU (the
    // uplink's 1500 less IPIP's 20), and say so.
    CHECK_THAT(L.lab({"exec", "k8s-w0", "--", cnf_bin, "node", "status", "-o", "json"}).out, Contains("\"podMtu\":1480"));
    for (auto& p : st.at("pods").as_array()) {
      const std::string pns(p.as_object().at("netns").as_string());
      INFO("pod netns " << pns);
      CHECK_THAT(sh("ip -n " + pns + " link show eth0"), Contains(" mtu 1480 "));
    }
    CHECK_THAT(sh("tc -n " + pre + "k8s-w0 filter show dev eth0 egress 2>&1; ip -n " + pre + "k8s-w0 link show"),
               Contains("ipip_egress"));

    // A restarted agent takes the datapath over: the filters are replaced in place (new maps,
    // refilled from the datastore) and every pair still answers.
    agent_guard again;  // the agent this test restarts on k8s-w0 (not the lab's to stop)
    {
      bj::object w0;
      for (auto& n : st.at("nodes").as_array())
        if (n.as_object().at("name").as_string() == "k8s-w0") w0 = n.as_object();
      const std::string nns(w0.at("netns").as_string()), prof(w0.at("profile").as_string());
      const auto old_pid = static_cast<pid_t>(w0.at("agent").as_object().at("pid").to_number<long>());
      REQUIRE(::kill(old_pid, SIGTERM) == 0);
      for (int i = 0; i < 200 && ::kill(old_pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      again.pid = std::stoi(sh("ip netns exec " + nns + " " + cnf_bin + " agent --profile " + prof + " > /dev/null 2>&1 & echo $!"));
      bool ready = false;
      for (int i = 0; i < 100 && !ready; ++i) {
        ready = sh("ip netns exec " + nns + " " + cnf_bin + " node status -o json --profile " + prof).find("\"routes\":3,") != std::string::npos;
        if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      REQUIRE(ready);  // in sync, its tunnel routes to the three nodes on the other subnet wanted again
      const auto f = sh("tc -n " + nns + " filter show dev eth0 egress; tc -n " + nns + " filter show dev eth0 ingress");
      CHECK(f.find("ipip_egress") != std::string::npos);
      CHECK(f.find("ipip_ingress") != std::string::npos);
      CHECK(L.lab({"ping"}).status == 0);
      CHECK(::kill(again.pid, 0) == 0);

      // The part taken out of the profile: the agent started without [encapsulation] removes
      // the filters an earlier run left (issue 17, item 5), then the original profile again.
      auto restart = [&](const std::string& profile_path) {
        ::kill(again.pid, SIGTERM);
        for (int i = 0; i < 200 && ::kill(again.pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        again.pid = std::stoi(sh("ip netns exec " + nns + " " + cnf_bin + " agent --profile " + profile_path + " > /dev/null 2>&1 & echo $!"));
      };
      std::string text = cnf_test::read_file(prof), without;
      {
        std::istringstream in(text);
        bool skip = false;
        for (std::string line; std::getline(in, line);) {
          if (!line.empty() && line.front() == '[') skip = line.rfind("[encapsulation]", 0) == 0;
          if (!skip) without += line + "\n";
        }
      }
      REQUIRE(without.find("encapsulation") == std::string::npos);
      const auto plain = (L.files.path / "w0-no-encap.toml").string();
      cnf_test::write_file(plain, without);
      restart(plain);
      bool swept = false;
      for (int i = 0; i < 100 && !swept; ++i) {
        swept = sh("tc -n " + nns + " filter show dev eth0 egress; tc -n " + nns + " filter show dev eth0 ingress").find("ipip_") == std::string::npos &&
                sh("ip netns exec " + nns + " " + cnf_bin + " node status -o json --profile " + plain).find("\"ready\":true") != std::string::npos;
        if (!swept) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      CHECK(swept);
      restart(prof);
      ready = false;
      for (int i = 0; i < 100 && !ready; ++i) {
        ready = sh("ip netns exec " + nns + " " + cnf_bin + " node status -o json --profile " + prof).find("\"routes\":3,") != std::string::npos;
        if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      REQUIRE(ready);
    }

    auto set_mode = [&](const char* mode) {
      const auto f = L.files.path / (std::string(mode) + ".yaml");
      cnf_test::write_file(f, std::string("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\n"
                                          "spec:\n  cidr: 10.244.0.0/16\n  blockSize: 26\n  nodeSelector: all()\n  vxlanMode: Never\n"
                                          "  ipipMode: ") + mode + "\n");
      REQUIRE(L.lab({"exec", "k8s-m", "--", cnf_bin, "apply", "-f", f.string()}).status == 0);
    };
    // Always: every pair through the tunnel, on every node, without touching the pods.
    set_mode("Always");
    bool routed = false;
    for (int i = 0; i < 40 && !routed; ++i) {
      routed = true;
      for (auto& n : {"k8s-m", "k8s-w1", "k8s-w2", "k8s-w0"})
        if (auto j = L.lab({"exec", n, "--", cnf_bin, "node", "status", "-o", "json"}).out;
            j.find("\"mode\":\"Always\"") == std::string::npos || j.find("\"routes\":3,") == std::string::npos)
          routed = false;  // the part's routes (the same as direct ones here: the BPF map decides)
      if (!routed) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(routed);
    auto a = probe("always.txt");
    std::set<std::pair<std::string, std::string>> every = cross;
    every.insert(same.begin(), same.end());
    CHECK(a.ipip_pairs == every);
    CHECK(a.plain_pairs.empty());

    // Never: the programs come off every node; the nodes on one subnet still reach each other directly.
    set_mode("Never");
    bool gone = false;
    for (int i = 0; i < 40 && !gone; ++i) {
      gone = true;
      for (auto& [n, _] : subnet_of_node)
        if (sh("tc -n " + pre + n + " filter show dev eth0 egress 2>/dev/null; tc -n " + pre + n + " filter show dev eth0 ingress 2>/dev/null")
                .find("ipip") != std::string::npos)
          gone = false;
      if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(gone);
    auto pr = L.lab({"ping", "--timeout-ms", "500"});
    CHECK(pr.status == 1);
    CHECK_THAT(pr.out, Contains("6 failed"));  // the pairs across subnets
  }
  CHECK(L.lab({"down"}).status == 0);
  CHECK_FALSE(fs::exists(L.dir));
}
