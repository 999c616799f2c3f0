// cnf/plugins/policy_iptables.hpp — the iptables policy part, in Felix's layout and names.
//
// filter table:
//   FORWARD             -> cali-FORWARD (inserted first, once)
//   INPUT               -> cali-INPUT: from <prefix>+ to cali-wl-to-host, which runs the
//                       endpoint's egress (cali-from-wl-dispatch), then the configured
//                       endpoint-to-host action
//   cali-FORWARD        clears the policy marks, sends traffic from and to workload interfaces
//                       (<prefix>+) to the dispatch chains, accepts what policy accepted
//   cali-from-wl-dispatch / cali-to-wl-dispatch   -i/-o <iface> -g cali-fw-<iface> / cali-tw-<iface>
//   cali-tw-<iface>     ingress of one endpoint: conntrack, clear marks, its policies in order
//   cali-fw-<iface>     (each followed by "Return if policy accepted"), "Drop if no policies
//                       passed packet", then its profiles cali-pri-/cali-pro-<profile>
//   cali-pi-<policy> / cali-po-<policy>   a policy's ingress / egress rules
//   cali-pri-<profile> / cali-pro-<profile>
// Accept mark 0x10000, pass mark 0x20000 (cleared together: MARK and 0xfffcffff). Every rule
// carries a "cali:<hash>" comment; the hash chains the chain name, the previous rule's hash
// and the rule, so the hashes read back with iptables-save show which chains differ from what
// is wanted (drift, or what a previous run left). check_drift() compares them, and the
// members of the sets (ipset save), with what was programmed and rewrites only what differs. IP sets are cali40s:<id> (hash:net); a new
// or resynced set is filled under a temporary name and swapped in; changes are add/del.
//
// apply(): one `ipset restore`, then one `iptables-restore --noflush` of the filter table
// rewriting only the chains whose rules changed (and deleting chains no longer wanted), then
// destroys the IP sets no rule uses any more. The first apply reads the table back and sweeps
// every stale cali- chain and cali40 set. A refused restore leaves the table as it was (the
// restore is one transaction) and the error names the line the kernel refused.
// IPv4 only for now: IPv6 nets, sets and rules with ipVersion 6 are left out.
//
//   cnf::iptables_policy::dataplane dp({.backend = "nft"});
//   dp.upsert_endpoint(wep); dp.upsert_profile(kns); dp.apply().value();
#pragma once
#include <cnf/policy.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace iptables_policy {

struct options {
  std::string backend = "nft";           ///< "nft" (iptables-nft-restore) or "legacy"
  std::string interface_prefix = "cali";  ///< workload interfaces: <prefix>+
  std::string ipset = "ipset";
  /// What happens to traffic from a workload to this host once its egress policy let it
  /// through (Felix's DefaultEndpointToHostAction): "accept", "drop" or "return" (to INPUT).
  std::string endpoint_to_host_action = "accept";
};

/// One chain as wanted: rules as iptables-restore lines without "-A <chain> ", and their hashes.
struct chain {
  std::string name;
  std::vector<std::string> rules;   ///< with the comment in place
  std::vector<std::string> hashes;  ///< one per rule
  friend bool operator==(const chain&, const chain&) = default;
};

/// "cali-pi-<name>" when it fits 28 characters, else "cali-pi-_<hash>".
std::string chain_name(std::string_view prefix, std::string_view name);
/// "cali40" + id ("s:..." -> "cali40s:...").
std::string ipset_name(std::string_view id);
/// Rules as Felix renders them: the rule's match and action, the hash comment added.
chain render_chain(std::string name, const std::vector<std::string>& rule_bodies);

class dataplane {
 public:
  explicit dataplane(options o = {});

  result<void> upsert_endpoint(const workload_endpoint& e);
  result<void> remove_endpoint(std::string_view key);
  result<void> upsert_policy(const network_policy& p);
  result<void> remove_policy(std::string_view key);
  result<void> upsert_profile(const policy_profile& p);
  result<void> remove_profile(std::string_view name);
  result<void> add_ip_set_members(std::string_view id, std::span<const ip_prefix> m);
  result<void> remove_ip_set_members(std::string_view id, std::span<const ip_prefix> m);
  result<void> remove_ip_set(std::string_view id);
  result<void> apply();
  result<policy_status> status();
  result<void> stop();

  /// Applies what is pending, then reads the table (one iptables-save) and the sets (one ipset
  /// save) back and rewrites the chains whose rule hashes differ and the sets whose members
  /// differ, in one restore each; reports what it rewrote. Nothing differs: nothing written.
  result<policy_drift> check_drift();
  /// The chains wanted now (rendered), for tests.
  std::map<std::string, chain> desired() const;
  /// The last iptables-restore input, for tests and logs.
  const std::string& last_restore() const { return last_restore_; }

 private:
  struct set_state {
    std::set<ip_prefix> members;
    std::set<ip_prefix> added, removed;
    bool fresh = true;  // not yet in the kernel (or to be rebuilt): fill and swap
  };
  result<void> read_kernel();  // at start: chains, and the sweep of stale sets
  result<void> read_chains();  // kernel_ and the hooks, from one iptables-save
  result<std::map<std::string, std::set<std::string>>> read_sets() const;  // cali40 set -> members
  std::vector<std::string> render_rules(const std::vector<policy_rule>& rules, std::string_view direction) const;
  chain endpoint_chain(const workload_endpoint& e, bool ingress) const;
  void render_dispatch(std::map<std::string, chain>& out) const;

  options opt_;
  std::map<std::string, workload_endpoint> eps_;
  std::map<std::string, network_policy> pols_;
  std::map<std::string, policy_profile> profiles_;
  std::map<std::string, set_state> sets_;
  std::set<std::string> sets_to_destroy_;
  std::map<std::string, chain> policy_chains_;  // rendered at upsert: cali-pi/po/pri/pro
  std::set<std::string> dirty_chains_;          // of those, changed since the last apply
  std::map<std::string, std::set<std::string>> pols_of_ep_;  // endpoint key -> policy keys
  bool compare_all_ = true;                     // the kernel's state was (re)read
  std::map<std::string, chain> dynamic_chains() const;  // endpoint and dispatch chains
  std::map<std::string, std::vector<std::string>> chains_of_;  // policy key / profile name -> its chain names
  std::map<std::string, std::vector<std::string>> kernel_;     // chain -> hashes programmed
  bool kernel_read_ = false;
  bool forward_hooked_ = false, input_hooked_ = false;
  std::size_t pending_ = 0;
  std::string last_restore_;
};

}  // namespace iptables_policy
CNF_END_NAMESPACE
