// Network policy between nodes in `cnf lab` (root; runs the built `cnf`): two nodes with
// direct routing and a policy part (examples/profiles/policy-iptables.toml or
// policy-nftables.toml); pods x/a and z/c on node-1, y/b on node-2. The agents program
// policy from what `cnf apply -f` / `cnf delete` write:
//   baseline                         every pair answers
//   a rule of y/b's chain deleted
//     by hand on node-2              the agent's drift check puts it back (counted in its status)
//   K8s default-deny-ingress in y    nothing reaches y/b; y/b still reaches the others
//   + Namespace x labelled team=x,
//     allow ingress from team=x      x/a reaches y/b again, z/c still does not
//   + a NetworkPolicy that does not
//     parse (written past apply)     listed in the node's status; nothing else changes
//   both deleted                     every pair answers again
// Each step checks the reachability matrix (all six ordered pairs) and that the chains are
// in the receiving node's kernel (iptables-save / nft list table); each pod's ADD, served by
// its node's agent, programmed the pod's endpoint before it answered. Run per plugin:
// ctest lab_policy_iptables, lab_policy_nftables.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/lab_datastore.hpp"
#include "../support/lab_env.hpp"
#include "../support/process.hpp"
#include "../support/root_gate.hpp"


#include <boost/json.hpp>

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
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
const std::vector<std::string>& env = cnf_test::lab_process_env();
using cnf_test::sh;

struct lab_env : cnf_test::lab_env {
  lab_env() : cnf_test::lab_env("policy") {}
  /// `cnf <args>` on node-1 (its profile names the lab's datastore).
  cnf_test::process_result cnf(std::vector<std::string> args) const {
    std::vector<std::string> a = {"exec", "node-1", "--", cnf_bin};
    a.insert(a.end(), args.begin(), args.end());
    return lab(a);
  }
};

using matrix = std::map<std::pair<std::string, std::string>, bool>;

std::string show(const matrix& m) {
  std::string s;
  for (auto& [k, v] : m) s += "  " + k.first + " -> " + k.second + (v ? ": answers\n" : ": no answer\n");
  return s;
}

void scenario(const std::string& plugin) {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  const bool nft = plugin == "nftables";
  if (!nft && sh("command -v iptables-nft-restore").empty()) cnf_test::exit_77_skipped("iptables-nft-restore is not installed");
  const std::string profile = std::string(CNF_TEST_SOURCE_DIR) + "/examples/profiles/policy-" + plugin + ".toml";
  lab_env L;
  REQUIRE(L.lab({"up", "--nodes", "2", "--pods-per-node", "0", "--profile", profile}).status == 0);
  REQUIRE(L.lab({"pod", "add", "x/a", "--node", "node-1", "--labels", "app=a"}).status == 0);
  REQUIRE(L.lab({"pod", "add", "z/c", "--node", "node-1", "--labels", "app=c"}).status == 0);
  REQUIRE(L.lab({"pod", "add", "y/b", "--node", "node-2", "--labels", "app=b"}).status == 0);
  auto st = bj::parse(cnf_test::read_file(L.dir / "lab.json")).as_object();
  std::map<std::string, std::string> ip;  // "ns/name" -> address
  for (auto& p : st.at("pods").as_array()) {
    auto& o = p.as_object();
    ip[std::string(o.at("namespace").as_string()) + "/" + std::string(o.at("name").as_string())] = std::string(o.at("ip").as_string());
  }
  REQUIRE(ip.size() == 3);
  const std::string node2 = "cnflab-" + L.id() + "-node-2";
  // Each ADD (served by the node's agent) programmed its endpoint before it answered.
  auto policy_status = [&](const char* node) {
    auto r = L.lab({"exec", node, "--", cnf_bin, "node", "status", "-o", "json"});
    REQUIRE(r.status == 0);
    return bj::parse(r.out).as_object().at("policy").as_object();
  };
  CHECK(policy_status("node-1").at("endpointsBeforeAdd").to_number<int>() == 2);
  CHECK(policy_status("node-2").at("endpointsBeforeAdd").to_number<int>() == 1);

  // Every ordered pair probed at once: one echo request each, one second to answer.
  auto probe = [&] {
    std::vector<std::pair<std::pair<std::string, std::string>, std::future<bool>>> runs;
    for (auto& from : ip)
      for (auto& to : ip) {
        if (from.first == to.first) continue;
        const std::string src = from.first, addr = to.second;
        runs.emplace_back(std::pair{src, to.first}, std::async(std::launch::async, [&L, src, addr] {
                            return L.run({"exec", src, "--", "ping", "-c", "1", "-W", "1", "-q", addr}).status == 0;
                          }));
      }
    matrix m;
    for (auto& [k, f] : runs) m[k] = f.get();
    return m;
  };
  matrix everything;
  for (auto& from : ip)
    for (auto& to : ip)
      if (from.first != to.first) everything[{from.first, to.first}] = true;
  // The agents apply within milliseconds; a few rounds absorb a loaded machine.
  auto expect = [&](const matrix& want, const char* step) {
    matrix got;
    for (int i = 0; i < 8 && got != want; ++i) {
      if (i) std::this_thread::sleep_for(std::chrono::milliseconds(250));
      got = probe();
    }
    INFO(step << "\nexpected:\n" << show(want) << "got:\n" << show(got));
    CHECK(got == want);
  };
  auto kernel = [&] {
    return nft ? sh("ip netns exec " + node2 + " nft list table ip calico 2>&1") : sh("ip netns exec " + node2 + " iptables-nft-save -t filter 2>&1");
  };
  auto apply = [&](const char* name, const std::string& yaml) {
    const auto f = (L.files.path / name).string();
    cnf_test::write_file(f, yaml);
    auto r = L.cnf({"apply", "-f", f});
    REQUIRE(r.status == 0);
    return f;
  };

  expect(everything, "baseline: no policy");
  auto base = kernel();
  CHECK_THAT(base, Contains("cali-tw-"));  // the endpoint chains exist before any policy (profiles)
  CHECK_THAT(base, !Contains("cali-pi-"));

  // Drift: a rule of y/b's ingress chain deleted by hand in node-2's namespace comes back with
  // the agent's next check (the profile's refresh_interval is 2 s; the deadline is generous).
  {
    auto chain_of = [&](const std::string& table) {
      auto p = table.find("cali-tw-");
      REQUIRE(p != std::string::npos);
      return table.substr(p, table.find_first_of(" \n{},", p) - p);
    };
    const std::string tw = chain_of(base);
    auto chain = [&] {
      if (nft) return sh("ip netns exec " + node2 + " nft list chain ip calico " + tw + " 2>&1");
      std::string out;
      std::istringstream in(sh("ip netns exec " + node2 + " iptables-nft-save -t filter 2>&1"));
      for (std::string l; std::getline(in, l);)
        if (l.starts_with("-A " + tw + " ")) out += l + "\n";
      return out;
    };
    const auto whole = chain();
    REQUIRE_THAT(whole, Contains("cali:"));
    CHECK(policy_status("node-2").at("driftRepairs").to_number<int>() == 0);  // checks ran, nothing differed
    if (nft) {
      auto handles = sh("ip netns exec " + node2 + " nft -a list chain ip calico " + tw);
      auto h = handles.find("ct state invalid drop");
      REQUIRE(h != std::string::npos);
      auto hp = handles.find("# handle ", h);
      REQUIRE(hp != std::string::npos);
      sh("ip netns exec " + node2 + " nft delete rule ip calico " + tw + " handle " + handles.substr(hp + 9, handles.find('\n', hp) - hp - 9));
    } else {
      sh("ip netns exec " + node2 + " iptables-nft -D " + tw + " 2");
    }
    // No check that the rule is gone now: the agent's check (every 2 s) may already have put
    // it back; the repair count below says it did.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (chain() != whole && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    CHECK(chain() == whole);
    CHECK(policy_status("node-2").at("driftRepairs").to_number<int>() >= 1);
    CHECK(policy_status("node-2").at("refreshIntervalMs").to_number<int>() == 2000);
  }

  const auto deny = apply("deny.yaml", R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
  namespace: y
spec:
  podSelector: {}
  policyTypes: [Ingress]
)");
  matrix denied = everything;
  denied[{"x/a", "y/b"}] = denied[{"z/c", "y/b"}] = false;
  expect(denied, "default-deny-ingress in y");
  CHECK_THAT(kernel(), Contains("cali-pi-"));
  auto get = L.cnf({"get", "knp", "-n", "y"});
  CHECK_THAT(get.out, Contains("default-deny-ingress"));

  // A policy that does not parse, written past `cnf apply` (straight into the lab's local
  // datastore): the agents log it and list it, keep running, and keep what they programmed.
  {
    cnf::resource bad{"NetworkPolicy", "y", "broken", {}, R"({"selector": "app ==", "types": ["Ingress"]})", ""};
    REQUIRE(cnf_test::lab_datastore(L).create(bad));
  }
  bool listed = false;
  for (int i = 0; i < 40 && !listed; ++i) {
    if (i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    listed = bj::serialize(policy_status("node-2").at("invalid")).find("NetworkPolicy/y/broken: spec.selector") != std::string::npos;
  }
  CHECK(listed);
  expect(denied, "default-deny-ingress in y, next to a policy that does not parse");
  REQUIRE(L.cnf({"delete", "networkpolicy", "broken", "-n", "y"}).status == 0);
  bool cleared = false;
  for (int i = 0; i < 40 && !cleared; ++i) {
    if (i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    cleared = policy_status("node-2").at("invalid").as_array().empty();
  }
  CHECK(cleared);

  const auto allow = apply("allow.yaml", R"(apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels:
    team: x
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-from-team-x
  namespace: y
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          team: x
)");
  matrix allowed = denied;
  allowed[{"x/a", "y/b"}] = true;
  expect(allowed, "allow from namespaces labelled team=x");

  auto status = L.lab({"exec", "node-2", "--", cnf_bin, "node", "status"});
  CHECK_THAT(status.out, Contains("Policy (" + plugin + ")"));
  auto ps = policy_status("node-2");
  CHECK(ps.at("policies").to_number<int>() == 2);
  CHECK(ps.at("failures").to_number<int>() == 0);

  REQUIRE(L.cnf({"delete", "-f", allow}).status == 0);
  REQUIRE(L.cnf({"delete", "knp", "default-deny-ingress", "-n", "y"}).status == 0);
  (void)deny;
  expect(everything, "policies deleted");
  auto after = kernel();
  CHECK_THAT(after, Contains("cali-tw-"));
  CHECK_THAT(after, !Contains("cali-pi-"));

  CHECK(L.lab({"down"}).status == 0);
  CHECK_FALSE(fs::exists(L.dir));
}

}  // namespace

TEST_CASE("policy in cnf lab with the iptables part: deny, allow from a namespace, delete", "[lab][policy][iptables]") { scenario("iptables"); }

TEST_CASE("policy in cnf lab with the nftables part: deny, allow from a namespace, delete", "[lab][policy][nftables]") { scenario("nftables"); }
