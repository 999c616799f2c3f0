// The Kubernetes network policy suite's truth table in `cnf lab` (root; runs the built `cnf`):
// three nodes with direct routing and a policy part (examples/profiles/policy-iptables.toml or
// policy-nftables.toml); namespaces x, y, z with pods a, b, c each (labels pod=<name>,
// namespaces labelled ns=<name> by `cnf apply` of v1 Namespaces), spread so that every node
// has one pod of each namespace and one of each name (x/a, y/c, z/b on node-1; x/b, y/a, z/c
// on node-2; x/c, y/b, z/a on node-3): most pairs cross nodes through the routing part. Every
// pod names its container ports (`cnf lab pod add --ports`, its WorkloadEndpoint's
// spec.ports) and has servers on TCP and UDP 80 and 81 (sockets of this process).
//
// The cases are truth_table.hpp's, applied live one after the other as YAML through
// `cnf apply -f` (K8s networking.k8s.io/v1 NetworkPolicy, projectcalico.org/v3 NetworkPolicy
// and GlobalNetworkPolicy, v1 Namespace labels) and `cnf delete -f` (the previous case's
// policies this one has not). After each step the test waits until every node's agent has
// received the step's changes and flushed them (`cnf node status -o json`: policy.updates,
// upToDate, failures), then probes the full 9 x 9 matrix for TCP/UDP 80/81 at once and compares
// it with the expected one (a diff of the matrices on failure).
//
// CI runs the cases marked `ci` (11 of 15: no policy, default deny, allow from a namespace,
// ipBlock with an except, egress with endPort, a named port that is a different number on
// different pods, two policies adding up, one of them updated in place and the other deleted,
// Calico's GlobalNetworkPolicy Deny before a K8s allow, order of Calico NetworkPolicies, Pass);
// CNF_TRUTH_TABLE_ALL=1 runs every case (also pods by label and port, a port range, a named
// port on egress, namespace labels changed live). Run per plugin: ctest lab_truth_table_iptables,
// lab_truth_table_nftables.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/lab_env.hpp"
#include "../support/process.hpp"
#include "../support/root_gate.hpp"
#include "truth_table.hpp"

#include <boost/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

CNF_TEST_ROOT_GATE("network namespaces");

namespace bj = boost::json;
namespace tt = truth_table;

namespace {

const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";
constexpr int node_count = 3;

/// A JSON value as block YAML (strings double-quoted, as JSON writes them: valid YAML).
void yaml(std::string& out, const bj::value& v, int indent) {
  const std::string pad(static_cast<std::size_t>(indent), ' ');
  auto scalar = [](const bj::value& x) -> std::string {
    if (x.is_object()) return "{}";
    if (x.is_array()) return "[]";
    return bj::serialize(x);
  };
  auto nested = [](const bj::value& x) { return (x.is_object() && !x.as_object().empty()) || (x.is_array() && !x.as_array().empty()); };
  if (v.is_object()) {
    for (auto& [k, x] : v.as_object()) {
      out += pad + std::string(k) + ":";
      if (nested(x)) {
        out += "\n";
        yaml(out, x, indent + 2);
      } else {
        out += " " + scalar(x) + "\n";
      }
    }
  } else if (v.is_array()) {
    for (auto& x : v.as_array()) {
      if (!nested(x)) {
        out += pad + "- " + scalar(x) + "\n";
        continue;
      }
      std::string item;
      yaml(item, x, indent + 2);
      out += pad + "- " + item.substr(static_cast<std::size_t>(indent) + 2);
    }
  }
}

std::string yaml_of(const tt::policy_doc& d) {
  bj::object md{{"name", d.name}};
  if (!d.ns.empty()) md["namespace"] = d.ns;
  bj::object o{{"apiVersion", d.kind == tt::api::k8s ? "networking.k8s.io/v1" : "projectcalico.org/v3"},
               {"kind", d.kind == tt::api::calico_global ? "GlobalNetworkPolicy" : "NetworkPolicy"},
               {"metadata", std::move(md)},
               {"spec", bj::parse(d.spec)}};
  std::string s = "---\n";
  yaml(s, o, 0);
  return s;
}

std::string namespace_yaml(const std::string& name, const std::map<std::string, std::string>& labels) {
  bj::object l;
  for (auto& [k, v] : labels) l[k] = v;
  std::string s = "---\n";
  yaml(s, bj::object{{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", bj::object{{"name", name}, {"labels", std::move(l)}}}}, 0);
  return s;
}

/// Lines of `cnf apply` / `cnf delete` that say a resource was written.
int writes(const std::string& out) {
  int n = 0;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    for (const char* verb : {" created", " configured", " deleted"})
      if (line.size() > std::strlen(verb) && line.compare(line.size() - std::strlen(verb), std::string::npos, verb) == 0) ++n;
  return n;
}

struct lab_env : cnf_test::lab_env {
  lab_env() : cnf_test::lab_env("truth") {}
  /// `cnf <args>` on node-1 (its profile names the lab's datastore).
  cnf_test::process_result cnf(std::vector<std::string> args) const {
    std::vector<std::string> a = {"exec", "node-1", "--", cnf_bin};
    a.insert(a.end(), args.begin(), args.end());
    return lab(a);
  }
  /// The node's `cnf node status -o json` policy object (null when it does not answer).
  bj::value policy_status(int node) const {
    auto r = run({"exec", "node-" + std::to_string(node), "--", cnf_bin, "node", "status", "-o", "json"});
    boost::system::error_code ec;
    auto v = bj::parse(r.out, ec);
    if (r.status != 0 || ec || !v.is_object() || !v.as_object().contains("policy")) return nullptr;
    return v.as_object().at("policy");
  }
};

struct mark {
  std::int64_t updates = 0, failures = 0;
};

void scenario(const std::string& plugin) {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  if (plugin == "iptables" && cnf_test::sh("command -v iptables-nft-restore").empty()) cnf_test::exit_77_skipped("iptables-nft-restore is not installed");
  if (plugin == "nftables" && cnf_test::sh("command -v nft").empty()) cnf_test::exit_77_skipped("nft is not installed");
  const char* all_env = std::getenv("CNF_TRUTH_TABLE_ALL");
  const bool all = all_env && std::string(all_env) == "1";
  const std::string profile = std::string(CNF_TEST_SOURCE_DIR) + "/examples/profiles/policy-" + plugin + ".toml";

  lab_env L;
  REQUIRE(L.lab({"up", "--nodes", std::to_string(node_count), "--pods-per-node", "0", "--profile", profile}, std::chrono::seconds(120)).status == 0);

  // Namespaces first (labels ns=<name>), then the pods, each on the node (i + j) mod 3.
  std::map<std::string, std::map<std::string, std::string>> ns_labels;
  std::string ns_file;
  for (std::string ns : {"x", "y", "z"}) {
    ns_labels[ns] = {{"ns", ns}};
    ns_file += namespace_yaml(ns, ns_labels[ns]);
  }
  const auto ns_path = (L.files.path / "namespaces.yaml").string();
  cnf_test::write_file(ns_path, ns_file);
  REQUIRE(L.cnf({"apply", "-f", ns_path}).status == 0);
  auto pods = tt::suite_pods();
  for (std::size_t k = 0; k < pods.size(); ++k) {
    auto& p = pods[k];
    p.node = "node-" + std::to_string((k / 3 + k % 3) % node_count + 1);
    std::string ports;
    for (auto& n : tt::pod_ports(p.name)) ports += (ports.empty() ? "" : ",") + n.name + "=" + n.protocol + ":" + std::to_string(n.port);
    REQUIRE(L.lab({"pod", "add", p.key(), "--node", p.node, "--labels", "pod=" + p.name, "--ports", ports}).status == 0);
  }
  {  // A port that is not one: refused before anything is made, naming the option and the item.
    auto bad = L.lab({"pod", "add", "x/d", "--ports", "web=TCP:80,dns=DNS:53"});
    CHECK(bad.status != 0);
    CHECK_THAT(bad.err, Catch::Matchers::Contains("--ports: 'dns=DNS:53'"));
  }
  auto st = bj::parse(cnf_test::read_file(L.dir / "lab.json")).as_object();
  for (auto& v : st.at("pods").as_array()) {
    auto& o = v.as_object();
    const std::string key = std::string(o.at("namespace").as_string()) + "/" + std::string(o.at("name").as_string());
    for (auto& p : pods)
      if (p.key() == key) {
        p.ip = std::string(o.at("ip").as_string());
        p.netns_path = "/var/run/netns/" + std::string(o.at("netns").as_string());
      }
  }
  for (auto& p : pods) REQUIRE_FALSE(p.ip.empty());
  tt::prober probe(pods);

  // The agents have every endpoint and namespace: nothing of the setup is still arriving.
  auto settled = [&](int node, const mark& from, std::int64_t want_updates) {
    auto v = L.policy_status(node);
    if (!v.is_object()) return false;
    auto& o = v.as_object();
    return o.at("updates").to_number<std::int64_t>() >= from.updates + want_updates && o.at("upToDate").as_bool() &&
           o.at("failures").to_number<std::int64_t>() == from.failures;
  };
  auto marks = [&] {
    std::vector<mark> m(node_count + 1);
    for (int n = 1; n <= node_count; ++n) {
      auto v = L.policy_status(n);
      REQUIRE(v.is_object());
      m[static_cast<std::size_t>(n)] = {v.as_object().at("updates").to_number<std::int64_t>(), v.as_object().at("failures").to_number<std::int64_t>()};
    }
    return m;
  };
  // Every node has its 3 endpoints programmed and has received everything of the setup (the
  // endpoints of the other nodes, their labels, the namespaces): its count of changes stays
  // the same for 300 ms. Each step's wait counts from here.
  for (int n = 1; n <= node_count; ++n) {
    bool ok = false;
    std::int64_t last = -1;
    int same = 0;
    for (int i = 0; i < 300 && !ok; ++i) {
      if (i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      auto v = L.policy_status(n);
      if (!v.is_object() || !v.as_object().at("upToDate").as_bool() || v.as_object().at("endpoints").to_number<int>() != 3) continue;
      const auto u = v.as_object().at("updates").to_number<std::int64_t>();
      same = u == last ? same + 1 : 0;
      last = u;
      ok = same >= 3;
    }
    INFO("node-" << n << " policy status: " << bj::serialize(L.policy_status(n)));
    REQUIRE(ok);
  }

  std::map<std::string, tt::policy_doc> live;
  int step = 0, ran = 0;
  for (auto& tc : tt::cases(pods, "10.244.0.0/16")) {
    if (!tc.ci && !all) continue;
    ++step;
    ++ran;
    const auto before = marks();
    int written = 0;
    // This case's namespace labels and policies (those the previous case had too are updated
    // in place, or unchanged), then the previous case's other policies deleted.
    std::string apply_text;
    for (std::string ns : {"x", "y", "z"}) {
      std::map<std::string, std::string> want{{"ns", ns}};
      if (auto it = tc.ns_labels.find(ns); it != tc.ns_labels.end()) want.insert(it->second.begin(), it->second.end());
      if (want != ns_labels[ns]) apply_text += namespace_yaml(ns, want);
      ns_labels[ns] = want;
    }
    std::map<std::string, tt::policy_doc> next;
    for (auto& d : tc.policies) {
      apply_text += yaml_of(d);
      next[d.key()] = d;
    }
    std::string delete_text;
    for (auto& [k, d] : live)
      if (!next.count(k)) delete_text += yaml_of(d);
    live = std::move(next);
    if (!apply_text.empty()) {
      const auto f = (L.files.path / ("case-" + std::to_string(step) + ".yaml")).string();
      cnf_test::write_file(f, apply_text);
      auto r = L.cnf({"apply", "-f", f});
      INFO(tc.name << ": cnf apply -f of\n" << apply_text);
      REQUIRE(r.status == 0);
      written += writes(r.out);
    }
    if (!delete_text.empty()) {
      const auto f = (L.files.path / ("case-" + std::to_string(step) + "-gone.yaml")).string();
      cnf_test::write_file(f, delete_text);
      auto r = L.cnf({"delete", "-f", f});
      INFO(tc.name << ": cnf delete -f of\n" << delete_text);
      REQUIRE(r.status == 0);
      written += writes(r.out);
    }
    // Programmed on every node: each agent has received the step's writes and flushed them.
    for (int n = 1; n <= node_count; ++n) {
      bool ok = false;
      for (int i = 0; i < 400 && !ok; ++i) {
        if (i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
        ok = settled(n, before[static_cast<std::size_t>(n)], written);
      }
      INFO(tc.name << ": node-" << n << " did not program the step's " << written << " change(s) within 10 s (before: updates "
                   << before[static_cast<std::size_t>(n)].updates << ", failures " << before[static_cast<std::size_t>(n)].failures
                   << "); policy status: " << bj::serialize(L.policy_status(n)));
      REQUIRE(ok);
    }
    auto want = tt::expected(pods, tc);
    auto got = probe.probe();
    INFO(tc.name << " (" << plugin << ")\n" << tt::diff(pods, want, got));
    const bool same = got == want;
    CHECK(same);
  }
  CHECK(ran >= 11);
  WARN(ran << " case(s) on " << plugin << (all ? " (CNF_TRUTH_TABLE_ALL=1: every case)" : " (the CI subset; CNF_TRUTH_TABLE_ALL=1 runs every case)"));
  CHECK(L.lab({"down"}).status == 0);
}

}  // namespace

TEST_CASE("truth table in cnf lab, three nodes, iptables part", "[lab][policy][iptables]") { scenario("iptables"); }

TEST_CASE("truth table in cnf lab, three nodes, nftables part", "[lab][policy][nftables]") { scenario("nftables"); }
