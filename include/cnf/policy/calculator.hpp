// cnf/policy/calculator.hpp — the policy calculation every policy plugin shares: a label index
// and the calculator that turns endpoints, namespaces, service accounts, policies and network
// sets into typed incremental updates for a cnf::policy part (cnf/policy.hpp).
//
// label_index keeps, for each selector in use, the set of members (endpoints, network sets)
// it matches and the multiset of their addresses, up to date as members come, go, or change
// labels or addresses; a change callback names each selector whose members changed.
//
// calculator follows Felix's calculation graph, reduced to one tier:
// - an endpoint's labels are its own plus projectcalico.org/{namespace,orchestrator,
//   serviceaccount} and its namespace's labels as "pcns.<key>" and its service account's as
//   "pcsa.<key>" (so namespaceSelector and serviceAccounts.selector become plain selectors);
// - where the datastore has Pod objects (kubernetes), a Pod's labels replace the copy its
//   WorkloadEndpoint took at ADD (Calico derives the endpoint from the Pod there), so a label
//   changed on the Pod re-evaluates every selector at once; elsewhere the endpoint's own count;
// - a NetworkPolicy applies to endpoints in its namespace matching spec.selector; a rule
//   selector in it without namespaceSelector means its own namespace;
// - a policy is active on this node while it selects one of this node's endpoints; only active
//   policies, and the IP sets their rules use, reach the plugin;
// - an IP set is "s:<22 characters of a hash of the selector>", its members the addresses of
//   the endpoints and network sets the selector matches;
// - profiles kns.<ns> (allow all, namespace labels) and ksa.<ns>.<sa> (labels only).
// Named ports resolve to the numeric ports of the endpoints that name them (ingress: the
// endpoints the policy selects; egress: the destination selector's).
//
// Updates come out of take_updates() in an order safe to apply: IP set members before the
// policies that use them, policies before the endpoints that use them; removals in reverse.
//
//   cnf::netpol::calculator calc("node-1");
//   calc.upsert_namespace("default", {});
//   calc.upsert_endpoint(wep);
//   calc.upsert_policy(cnf::netpol::parse_k8s_network_policy(res).value());
//   calc.flush(plugin).value();   // any_policy: the updates, then apply()
#pragma once
#include <cnf/policy.hpp>
#include <cnf/policy/rules.hpp>
#include <cnf/policy/selector.hpp>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <variant>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netpol {

class label_index {
 public:
  /// Called with the selector text whose members changed (after the change).
  std::function<void(const std::string&)> on_change;

  /// Adds a user of the selector (reference counted); evaluates it against every member.
  void add_selector(const selector& s);
  void release_selector(const std::string& text);
  void set_member(const std::string& key, const label_map& labels, const std::vector<ip_prefix>& addrs);
  void remove_member(const std::string& key);

  bool has_selector(const std::string& text) const { return sels_.contains(text); }
  std::set<std::string> members(const std::string& text) const;
  /// The distinct addresses of the members, sorted.
  std::vector<ip_prefix> addresses(const std::string& text) const;
  std::size_t selector_count() const { return sels_.size(); }

 private:
  struct entry {
    selector sel;
    int users = 0;
    std::set<std::string> members;
    std::map<ip_prefix, int> addrs;
  };
  struct member {
    label_map labels;
    std::vector<ip_prefix> addrs;
  };
  void join(entry& e, const std::string& key, const member& m);
  void leave(entry& e, const std::string& key, const member& m);
  std::map<std::string, entry> sels_;
  std::map<std::string, member> members_;
};

/// "s:" + 22 characters: the id of the IP set of a selector.
std::string ip_set_id(const selector& s);

struct named_port {
  std::string name;
  std::uint8_t protocol = 6;
  std::uint16_t port = 0;
  friend bool operator==(const named_port&, const named_port&) = default;
};

namespace update {
struct endpoint_upsert { workload_endpoint endpoint; };
struct endpoint_removal { std::string key; };
struct policy_upsert { network_policy policy; };
struct policy_removal { std::string key; };
struct profile_upsert { policy_profile profile; };
struct profile_removal { std::string name; };
/// A membership change of one IP set (created by its first members).
struct ip_set_members { std::string id; std::vector<ip_prefix> added, removed; };
struct ip_set_removal { std::string id; };
}  // namespace update
using policy_update = std::variant<update::endpoint_upsert, update::endpoint_removal, update::policy_upsert, update::policy_removal,
                                   update::profile_upsert, update::profile_removal, update::ip_set_members, update::ip_set_removal>;

class calculator {
 public:
  explicit calculator(std::string node);

  void upsert_endpoint(const workload_endpoint& e, std::vector<named_port> ports = {});
  void remove_endpoint(std::string_view key);
  void upsert_namespace(const std::string& name, const label_map& labels);
  void remove_namespace(const std::string& name);
  void upsert_service_account(const std::string& ns, const std::string& name, const label_map& labels);
  void remove_service_account(const std::string& ns, const std::string& name);
  /// A Pod object (the kubernetes datastore): its labels, and its service account where the
  /// endpoint names none, win over those of the endpoints of that pod (namespace + spec.pod).
  void upsert_pod(const std::string& ns, const std::string& name, const label_map& labels, const std::string& service_account = {});
  void remove_pod(const std::string& ns, const std::string& name);
  void upsert_policy(const policy_def& p);
  void remove_policy(std::string_view key);
  void upsert_network_set(const network_set& n);
  void remove_network_set(std::string_view key);

  /// What changed since the last call, in a safe order.
  std::vector<policy_update> take_updates();
  /// take_updates() delivered to the plugin, then apply(). Stops at the first error.
  result<void> flush(const any_policy& plugin);

  const label_index& index() const { return index_; }
  /// The effective labels of an endpoint (own + namespace + service account), for tests.
  label_map endpoint_labels(std::string_view key) const;

 private:
  struct ep {
    workload_endpoint wep;
    std::vector<named_port> ports;
  };
  struct pod_info {
    label_map labels;
    std::string service_account;
  };
  struct pol {
    policy_def def;
    selector applies;
    std::vector<std::string> sels;  // every selector text it holds in the index
    bool named_ports = false;
  };
  void refresh_endpoint(const std::string& key);
  void refresh_pod(const std::string& ns, const std::string& name);
  const pod_info* pod_of(const workload_endpoint& w) const;
  selector entity_selector(const policy_def& p, const entity_rule& e, bool negated, bool& any) const;
  std::vector<policy_rule> resolve_rules(const pol& p, bool ingress) const;
  /// Port number -> addresses of the endpoints that give a destination port name of `r` that
  /// number; empty when the rule names no port or every endpoint resolves it alike.
  std::map<std::uint16_t, std::vector<ip_prefix>> split_named_destination(const pol& p, const rule& r, const std::string& dst_text, bool ingress) const;
  network_policy resolve(const pol& p) const;
  bool local(const std::string& member_key) const;

  std::string node_;
  label_index index_;
  std::map<std::string, ep> eps_;
  std::map<std::string, label_map> namespaces_;
  std::map<std::string, label_map> service_accounts_;  // "<ns>/<sa>"
  std::map<std::string, pod_info> pods_;               // "<ns>/<pod>"
  std::map<std::string, pol> pols_;
  std::map<std::string, network_set> sets_;
  std::map<std::string, std::set<std::string>> users_;  // selector text -> policy keys
  std::set<std::string> dirty_pols_, dirty_eps_, dirty_sets_;  // keys; selector texts
  bool dirty_profiles_ = true;
  // What the plugin has:
  std::map<std::string, network_policy> out_pols_;
  std::map<std::string, workload_endpoint> out_eps_;
  std::map<std::string, policy_profile> out_profiles_;
  std::map<std::string, std::set<ip_prefix>> out_sets_;  // id -> members
  std::map<std::string, std::string> set_ids_;  // selector text -> id (ip sets in use)
  std::map<std::string, int> set_refs_;         // selector text -> programmed policies using it
  std::map<std::string, std::vector<std::string>> out_pol_sets_;  // policy key -> the texts it counts
};

}  // namespace netpol
CNF_END_NAMESPACE
