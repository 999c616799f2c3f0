// VXLAN across subnets in `cnf lab` (root): the default topology (k8s-m, k8s-w1, k8s-w2 on one
// subnet, k8s-w0 on a second one behind the router) with examples/profiles/vxlan.toml (direct
// routing + vxlan, the pool CrossSubnet). Every pod pair answers, and a capture in the router
// namespace (tcpdump, which sees both subnets' bridges) shows UDP 4789 exactly for the pairs
// across subnets and plain ICMP for the others. Then the pool's mode changes live with
// `cnf apply -f`: Always encapsulates every pair, Never removes every node's device.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/lab_datastore.hpp"
#include "../support/lab_env.hpp"
#include "../support/process.hpp"
#include "../support/root_gate.hpp"
#include "../support/vxlan_capture.hpp"


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
const std::string profile = std::string(CNF_TEST_SOURCE_DIR) + "/examples/profiles/vxlan.toml";
const std::vector<std::string>& env = cnf_test::lab_process_env();
using cnf_test::capture;
using cnf_test::lab_env;
using cnf_test::sh;
using agent_guard = cnf_test::pid_guard;

}  // namespace

TEST_CASE("vxlan in cnf lab: CrossSubnet encapsulates exactly the pairs across subnets; modes change live", "[lab][vxlan]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  if (sh("command -v tcpdump").empty()) cnf_test::exit_77_skipped("tcpdump is not installed (scripts/install-deps.sh)");
  lab_env L("encap");
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
    capture cap(pre + "router", "udp port 4789 or icmp", L.files.path / name);
    auto pr = L.lab({"ping"});
    CHECK(pr.status == 0);
    CHECK_THAT(pr.out, Contains("12 answered, 0 failed"));
    auto s = cnf_test::parse_vxlan_capture(cap.stop());
    INFO("capture:\n" << cnf_test::read_file(L.files.path / name));
    return s;
  };

  SECTION("CrossSubnet, then Always, then Never") {
    agent_guard again;  // the agent this test restarts on k8s-w0 (not the lab's to stop)
    auto s = probe("crosssubnet.txt");
    CHECK(s.vxlan_pairs == cross);  // each pair across subnets, in the tunnel
    CHECK(s.plain_pairs == same);   // each pair on one subnet, natively
    REQUIRE_FALSE(s.vxlan_outer.empty());
    for (auto& [a, b] : s.vxlan_outer) {
      INFO("VXLAN " << a << " -> " << b);
      CHECK(subnet_of_addr.at(a) != subnet_of_addr.at(b));
    }
    auto status = L.lab({"exec", "k8s-w0", "--", cnf_bin, "node", "status"});
    CHECK_THAT(status.out, Contains("vxlan.calico") && Contains("CrossSubnet") && Contains("1450"));

    // A restarted agent keeps its tunnel address (the IPAM handle's) and takes the device over
    // as it is: same interface, same entries, every pair still answers.
    {
      bj::object w0;
      for (auto& n : st.at("nodes").as_array())
        if (n.as_object().at("name").as_string() == "k8s-w0") w0 = n.as_object();
      const std::string nns(w0.at("netns").as_string()), prof(w0.at("profile").as_string());
      const auto old_pid = static_cast<pid_t>(w0.at("agent").as_object().at("pid").to_number<long>());
      const auto dev = [&] { return sh("ip netns exec " + nns + " cat /sys/class/net/vxlan.calico/ifindex") + sh("ip -n " + nns + " -4 -o addr show dev vxlan.calico | awk '{print $4}'") + sh("ip -n " + nns + " neigh show dev vxlan.calico | sort") + sh("bridge -n " + nns + " fdb show dev vxlan.calico | sort"); };
      const auto before = dev();
      REQUIRE(::kill(old_pid, SIGTERM) == 0);
      for (int i = 0; i < 200 && ::kill(old_pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      again.pid = std::stoi(sh("ip netns exec " + nns + " " + cnf_bin + " agent --profile " + prof + " > /dev/null 2>&1 & echo $!"));
      bool ready = false;
      for (int i = 0; i < 100 && !ready; ++i) {
        ready = sh("ip netns exec " + nns + " " + cnf_bin + " node status --profile " + prof).find("in sync") != std::string::npos;
        if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      REQUIRE(ready);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // its first apply is done
      CHECK(dev() == before);
      CHECK(L.lab({"ping"}).status == 0);
      CHECK(::kill(again.pid, 0) == 0);
    }

    auto set_mode = [&](const char* mode) {
      const auto f = L.files.path / (std::string(mode) + ".yaml");
      cnf_test::write_file(f, std::string("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\n"
                                          "spec:\n  cidr: 10.244.0.0/16\n  blockSize: 26\n  nodeSelector: all()\n  ipipMode: Never\n"
                                          "  vxlanMode: ") + mode + "\n");
      REQUIRE(L.lab({"exec", "k8s-m", "--", cnf_bin, "apply", "-f", f.string()}).status == 0);
    };
    // Always: every pair through the tunnel, on every node, without touching the pods.
    set_mode("Always");
    bool routed = false;
    for (int i = 0; i < 40 && !routed; ++i) {
      routed = true;
      for (auto& n : {"k8s-m", "k8s-w1", "k8s-w2"})
        if (sh("ip -n " + pre + n + " route show proto 81 | grep -c 'dev vxlan.calico'") != "3\n") routed = false;
      if (!routed) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(routed);
    auto a = probe("always.txt");
    std::set<std::pair<std::string, std::string>> every = cross;
    every.insert(same.begin(), same.end());
    CHECK(a.vxlan_pairs == every);
    CHECK(a.plain_pairs.empty());

    // A second pool overlapping the first with another mode, written past `cnf apply` (which
    // refuses overlaps) straight into the lab's datastore: the nodes name both pools in their
    // status and keep Always; once it is gone, the first pool is valid again.
    auto local = [&] { return cnf_test::lab_datastore(L); };
    REQUIRE(local().create({"IPPool", "", "overlap", {}, R"({"cidr": "10.244.0.0/17", "vxlanMode": "Never", "ipipMode": "Never"})", ""}));
    auto invalid_on = [&](const char* node) {
      auto j = L.lab({"exec", node, "--", cnf_bin, "node", "status", "-o", "json"}).out;
      return j.find("IPPool/overlap: spec.cidr 10.244.0.0/17 overlaps IPPool/default-ipv4-ippool") != std::string::npos &&
             j.find("IPPool/default-ipv4-ippool: spec.cidr 10.244.0.0/16 overlaps IPPool/overlap") != std::string::npos;
    };
    bool named = false;
    for (int i = 0; i < 40 && !named; ++i) {
      named = invalid_on("k8s-w0") && invalid_on("k8s-m");
      if (!named) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(named);
    for (auto& n : {"k8s-m", "k8s-w1", "k8s-w2", "k8s-w0"}) CHECK(sh("ip -n " + pre + n + " route show proto 81 | grep -c 'dev vxlan.calico'") == "3\n");
    {
      auto ds = local();
      auto cur = ds.get({"IPPool", "", "overlap"});
      REQUIRE(cur);
      REQUIRE(ds.remove({"IPPool", "", "overlap"}, cur->revision));
    }
    bool valid = false;
    for (int i = 0; i < 40 && !valid; ++i) {
      valid = L.lab({"exec", "k8s-w0", "--", cnf_bin, "node", "status", "-o", "json"}).out.find("overlaps") == std::string::npos;
      if (!valid) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(valid);

    // Never: the devices go on every node; the nodes on one subnet still reach each other directly.
    const auto tunnel_addr = sh("ip -n " + pre + "k8s-w1 -4 -o addr show dev vxlan.calico | awk '{print $4}' | cut -d/ -f1");
    REQUIRE(tunnel_addr.size() > 1);
    const auto addr = tunnel_addr.substr(0, tunnel_addr.size() - 1);
    CHECK_THAT(L.lab({"exec", "k8s-m", "--", cnf_bin, "ipam", "show", "--ip", addr}).out, Contains("in use") && Contains("vxlan-tunnel-addr-k8s-w1"));
    set_mode("Never");
    bool gone = false;
    for (int i = 0; i < 40 && !gone; ++i) {
      gone = true;
      for (auto& [n, _] : subnet_of_node)
        if (sh("ip -n " + pre + n + " -o link show vxlan.calico 2>/dev/null").size() > 0) gone = false;
      if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(gone);
    for (auto& [n, _] : subnet_of_node) CHECK(sh("ip -n " + pre + n + " route show proto 81 | grep -c onlink") == "0\n");
    // ... and each node's tunnel address goes back to the pool (Calico's allocator does the same).
    bool released = false;
    for (int i = 0; i < 40 && !released; ++i) {
      released = L.lab({"exec", "k8s-m", "--", cnf_bin, "ipam", "show", "--ip", addr}).out.find("not assigned") != std::string::npos;
      if (!released) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(released);
    auto pr = L.lab({"ping", "--timeout-ms", "500"});
    CHECK(pr.status == 1);
    CHECK_THAT(pr.out, Contains("6 failed"));  // the pairs across subnets
  }
  CHECK(L.lab({"down"}).status == 0);
  CHECK_FALSE(fs::exists(L.dir));
}
