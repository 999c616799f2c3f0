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
// restore is one transaction) and the error names the line the kernel refused; with IPv6, a
// change ip6tables refuses after iptables took it is put back in IPv4 too (both or neither).
//
// IPv6 (options.ipv6, on by default), as Felix does it: the same chains in ip6tables (one
// ip6tables-restore --noflush of its filter table, besides the IPv4 one), IP sets cali60s:<id>
// (family inet6) beside cali40s:<id> holding the same selector's IPv6 members, each rule only
// in the family of its nets (a rule with IPv4 nets only is not in the IPv6 chain, and the
// reverse; ipVersion likewise; protocol ICMP is IPv4's, ICMPv6 IPv6's), ICMPv6 matches
// (-m icmp6), and ICMPv6 router and neighbour discovery from the workloads accepted before
// their egress policy in cali-wl-to-host (or a default-deny egress would cut the pod off
// its gateway). Drift checks and the start-up sweep cover both families.
//
//   cnf::iptables_policy::dataplane dp({.backend = "nft"});
//   dp.upsert_endpoint(wep); dp.upsert_profile(kns); dp.apply().value();
#pragma once
#include <cnf/policy.hpp>
#include <cnf/policy/dataplane.hpp>

#include <map>
#include <optional>
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
  /// Program ip6tables and cali60 sets too (Felix's ipv6Support).
  bool ipv6 = true;
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
/// "cali40" + id ("s:..." -> "cali40s:..."), or "cali60" + id for IPv6.
std::string ipset_name(std::string_view id, ip_family f = ip_family::v4);
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
  /// The chains wanted now (rendered) in one family's filter table, for tests.
  std::map<std::string, chain> desired(ip_family f = ip_family::v4) const;
  /// The last iptables-restore (ip6tables-restore) input, for tests and logs.
  const std::string& last_restore(ip_family f = ip_family::v4) const { return last_restore_[fi(f)]; }

 private:
  static constexpr std::size_t fi(ip_family f) { return f == ip_family::v4 ? 0 : 1; }
  // members of both families: cali40<id> holds the IPv4 ones, cali60<id> the IPv6 ones; a
  // fresh family is filled under a temporary name and swapped in.
  struct set_state : netpol::tracked_set {
    std::optional<ip_family> only;  // a not-nets set: one family's
  };
  std::vector<ip_family> families() const;
  std::string tool(ip_family f, std::string_view what) const;  // "iptables-nft-restore", "ip6tables-legacy-save", ...
  result<void> read_kernel();  // at start: chains, and the sweep of stale sets
  result<void> read_chains(ip_family f);  // kernel_ and the hooks, from one iptables-save
  result<std::map<std::string, std::set<std::string>>> read_sets() const;  // cali40/cali60 set -> members
  std::vector<std::string> render_rules(const std::vector<policy_rule>& rules, ip_family f) const;
  chain endpoint_chain(const workload_endpoint& e, bool ingress) const;
  void render_dispatch(std::map<std::string, chain>& out, ip_family f) const;
  void render_owner(const std::string& key, const std::string& in_name, const std::string& out_name, const std::vector<policy_rule>* in,
                    const std::vector<policy_rule>* out);
  /// One family's restore, prepared: the input, and what the kernel holds once it commits.
  struct staged {
    std::map<std::string, chain> dyn;    // endpoint and dispatch chains, rendered for this apply
    std::vector<const chain*> written;   // into policy_chains_ or dyn
    std::vector<std::string> stale;      // cali- chains deleted
    bool hook_forward = false, hook_input = false;  // the jumps inserted
    std::string input;                   // empty: nothing to write
  };
  void stage_family(ip_family f, staged& s) const;
  result<void> commit_family(ip_family f, staged& s);
  /// The restore that puts back what `s` changed, from the rules last read or written.
  std::string undo_input(ip_family f, const staged& s) const;
  void keep_set(const std::string& id);  // a set in use again: not destroyed

  options opt_;
  std::map<std::string, workload_endpoint> eps_;
  std::map<std::string, network_policy> pols_;
  std::map<std::string, policy_profile> profiles_;
  std::map<std::string, set_state> sets_;
  std::set<std::string> sets_to_destroy_;       // kernel set names
  std::map<std::string, chain> policy_chains_[2];  // per family, rendered at upsert: cali-pi/po/pri/pro
  std::set<std::string> dirty_chains_;          // of those, changed since the last apply
  std::map<std::string, std::set<std::string>> pols_of_ep_;  // endpoint key -> policy keys
  bool compare_all_ = true;                     // the kernel's state was (re)read
  std::map<std::string, chain> dynamic_chains(ip_family f) const;  // endpoint and dispatch chains
  std::map<std::string, std::vector<std::string>> chains_of_;  // policy key / profile name -> its chain names
  std::map<std::string, std::vector<std::string>> kernel_[2];  // per family: chain -> hashes programmed
  std::map<std::string, std::vector<std::string>> kernel_rules_[2];  // per family: chain -> its rules, to undo a family
  bool kernel_read_ = false;
  bool forward_hooked_[2] = {false, false}, input_hooked_[2] = {false, false};
  std::size_t pending_ = 0;
  std::string last_restore_[2];
};

}  // namespace iptables_policy
CNF_END_NAMESPACE
