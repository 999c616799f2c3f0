// The bgp routing plugin with vxlan CrossSubnet in `cnf lab` (root): the classic four nodes
// (k8s-m, k8s-w1, k8s-w2 on 10.100.0.0/16, k8s-w0 alone on 10.101.0.0/16 behind the router),
// every node an iBGP mesh member (tests/bgp/lab-bgp-vxlan.toml). Checks: every session is
// Established on every node (those across the router too); each node's kernel routes every
// other node's blocks, on one subnet as BGP learned them (a plain next hop: the peer's
// address on eth0), across subnets through vxlan.calico (the encapsulation's route wins over
// BGP's, whose next hop is not on a connected subnet); every pod pair answers; the route
// table holds no conflict. A second case checks `cnf lab up --route-reflectors` (below).
// Root only (else "skipped", exit 77); `cnf lab down` on every exit path.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/lab_env.hpp"
#include "../support/process.hpp"
#include "../support/root_gate.hpp"

#include <boost/json.hpp>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

CNF_TEST_ROOT_GATE("network namespaces");

using namespace std::chrono_literals;
namespace bj = boost::json;

namespace {

const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";
const std::string profile = std::string(CNF_TEST_SOURCE_DIR) + "/tests/bgp/lab-bgp-vxlan.toml";

bool wait_for(const std::function<bool()>& f, std::chrono::milliseconds limit = 15s) {
  for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < limit;) {
    if (f()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return f();
}

struct node_info {
  std::string address;
  std::int64_t subnet = 0;
};

/// `ip route show proto 81` of a node: destination -> the rest of the line.
std::map<std::string, std::string> cnf_routes(const cnf_test::lab_env& L, const std::string& node) {
  std::map<std::string, std::string> out;
  std::istringstream in(L.run({"exec", node, "--", "ip", "route", "show", "proto", "81"}).out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string dst;
    ls >> dst;
    if (dst == "blackhole") continue;
    std::string rest;
    std::getline(ls, rest);
    while (!rest.empty() && rest.back() == ' ') rest.pop_back();
    out[dst] = rest.empty() ? rest : rest.substr(1);
  }
  return out;
}

}  // namespace

TEST_CASE("bgp with vxlan CrossSubnet in cnf lab: plain next hops on a subnet, vxlan.calico across, every pod pair answers",
          "[integration][bgp][vxlan]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  cnf_test::lab_env L("bgpvxlan");
  REQUIRE(L.lab({"up", "--profile", profile, "--pods-per-node", "1"}).status == 0);

  std::map<std::string, node_info> nodes;
  const auto state = bj::parse(cnf_test::read_file(L.dir / "lab.json"));
  for (auto& n : state.at("nodes").as_array()) {
    auto& o = n.as_object();
    nodes[std::string(o.at("name").as_string())] = {std::string(o.at("address").as_string()), o.at("subnet").to_number<std::int64_t>()};
  }
  REQUIRE(nodes.size() == 4);
  REQUIRE(nodes["k8s-w0"].subnet != nodes["k8s-m"].subnet);
  REQUIRE(nodes["k8s-w1"].subnet == nodes["k8s-m"].subnet);

  auto status = [&](const std::string& node) {
    auto r = L.run({"exec", node, "--", cnf_bin, "node", "status", "-o", "json"});
    bj::error_code ec;
    auto v = bj::parse(r.out, ec);
    return !ec && v.is_object() ? v.get_object() : bj::object{};
  };

  // Every node: three mesh sessions Established, the one across the router included.
  for (auto& [name, _] : nodes) {
    INFO(name << ":\n" << cnf_test::read_file(L.dir / "nodes" / name / "agent.log"));
    CHECK(wait_for([&] {
      auto st = status(name);
      if (!st.contains("routing")) return false;
      int up = 0;
      for (auto& p : st.at("routing").at("peers").as_array()) up += p.at("state").as_string() == "Established";
      return up == 3;
    }));
  }

  // Each node's blocks (its pod's block and its tunnel address's), from its own status.
  std::map<std::string, std::vector<std::string>> blocks;
  for (auto& [name, _] : nodes) {
    auto st = status(name);
    REQUIRE(st.contains("blocks"));
    for (auto& b : st.at("blocks").as_array()) blocks[name].push_back(std::string(b.as_string()));
    CHECK_FALSE(blocks[name].empty());
  }

  // In each node's kernel (protocol of cnf), every other node's blocks: via the peer's address
  // on eth0 when it shares the subnet (BGP's next hop), through vxlan.calico when it does not.
  for (auto& [name, self] : nodes) {
    std::map<std::string, std::string> routes;
    std::string why;
    const bool ok = wait_for([&] {
      routes = cnf_routes(L, name);
      why.clear();
      for (auto& [other, o] : nodes) {
        if (other == name) continue;
        for (auto& b : blocks[other]) {
          auto it = routes.find(b);
          const std::string want = self.subnet == o.subnet ? "via " + o.address + " dev eth0" : "dev vxlan.calico onlink";
          if (it == routes.end()) why += name + ": no route to " + other + "'s block " + b + "\n";
          else if (self.subnet == o.subnet ? it->second != want : it->second.find(want) == std::string::npos)
            why += name + ": " + b + " " + it->second + " (want " + want + ")\n";
        }
      }
      return why.empty();
    });
    INFO(why);
    CHECK(ok);
    CHECK(status(name).at("conflicts").as_array().empty());
  }

  bool all = wait_for([&] { return L.run({"ping", "--timeout-ms", "500"}).status == 0; }, 10s);
  auto ping = L.lab({"ping"});
  CHECK(all);
  CHECK(ping.status == 0);
  CHECK(ping.out.find("12 answered, 0 failed") != std::string::npos);

  CHECK(L.lab({"down"}).status == 0);
  CHECK_FALSE(std::filesystem::exists(L.dir));
}

// `cnf lab up --route-reflectors 2` (what the lab benchmark in tests/bench/bgp uses): node-1 and
// node-2 reflect for the others, set up in the datastore before any agent starts, so no client
// ever opens a session to another client; each client learns every block with the owner's
// address as next hop (reflection keeps it), and every pod pair answers. Bad counts are refused.
TEST_CASE("cnf lab up --route-reflectors: Calico's reflectors by label, the mesh off from the start", "[integration][bgp]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  const std::string bgp_profile = std::string(CNF_TEST_SOURCE_DIR) + "/tests/bgp/lab-bgp.toml";
  cnf_test::lab_env L("bgprr");
  auto too_many = L.lab({"up", "--nodes", "2", "--route-reflectors", "3", "--profile", bgp_profile});
  CHECK(too_many.status != 0);
  CHECK(too_many.err.find("--route-reflectors 3: more than the lab's 2 node(s)") != std::string::npos);
  auto not_bgp = L.lab({"up", "--nodes", "2", "--route-reflectors", "1"});
  CHECK(not_bgp.status != 0);
  CHECK(not_bgp.err.find("needs [routing] plugin = \"bgp\"") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(L.dir / "lab.json"));

  auto up = L.lab({"up", "--nodes", "5", "--route-reflectors", "2", "--pods-per-node", "1", "--profile", bgp_profile});
  REQUIRE(up.status == 0);
  CHECK(up.out.find("route reflectors: node-1..node-2 (cluster 244.0.0.1), node-to-node mesh off") != std::string::npos);
  auto peers = L.run({"exec", "node-3", "--", cnf_bin, "get", "bgppeers", "-o", "yaml"}).out;
  CHECK(peers.find("peerSelector: route-reflector == 'true'") != std::string::npos);
  CHECK(L.run({"exec", "node-3", "--", cnf_bin, "get", "bgpconfigurations"}).out.find("false") != std::string::npos);

  auto established = [&](const std::string& node) {
    std::set<std::string> names;
    auto r = L.run({"exec", node, "--", cnf_bin, "node", "status", "-o", "json"});
    bj::error_code ec;
    auto v = bj::parse(r.out, ec);
    if (ec || !v.is_object() || !v.as_object().contains("routing")) return names;
    for (auto& p : v.at("routing").at("peers").as_array())
      if (p.at("state").as_string() == "Established") names.insert(std::string(p.at("name").as_string()));
    return names;
  };
  const std::set<std::string> reflectors = {"node-1", "node-2"};
  CHECK(wait_for([&] { return established("node-1") == std::set<std::string>{"node-2", "node-3", "node-4", "node-5"}; }));
  for (const char* client : {"node-3", "node-4", "node-5"}) {
    INFO(client);
    CHECK(wait_for([&] { return established(client) == reflectors; }));
  }
  CHECK(cnf_test::read_file(L.dir / "nodes" / "node-1" / "agent.log").find("route reflector cluster 244.0.0.1, node-to-node mesh off") !=
        std::string::npos);
  // No client ever tried a client: the configuration was there before the first agent started.
  CHECK(cnf_test::read_file(L.dir / "nodes" / "node-3" / "agent.log").find("peer node-4 (") == std::string::npos);
  CHECK(cnf_test::read_file(L.dir / "nodes" / "node-5" / "agent.log").find("peer node-3 (") == std::string::npos);

  // node-3's route to node-4's block goes straight to node-4 (the reflector keeps the next hop).
  std::string routes;
  CHECK(wait_for([&] {
    routes = L.run({"exec", "node-3", "--", "ip", "route", "show", "proto", "81"}).out;
    std::size_t n = 0;
    for (const char* a : {"via 10.100.0.10 dev eth0", "via 10.100.0.11 dev eth0", "via 10.100.0.13 dev eth0", "via 10.100.0.14 dev eth0"})
      n += routes.find(a) != std::string::npos;
    return n == 4;
  }));
  INFO(routes);
  CHECK(wait_for([&] { return L.run({"ping", "--timeout-ms", "500"}).status == 0; }, 10s));
  CHECK(L.lab({"down"}).status == 0);
}
