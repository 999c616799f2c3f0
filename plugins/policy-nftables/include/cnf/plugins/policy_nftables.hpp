// cnf/plugins/policy_nftables.hpp — the nftables policy part: Felix's model in one table per
// family, as Felix's nftables mode has it (table ip calico, and table ip6 calico).
//
// table ip calico (and the same in table ip6 calico):
//   chain cali-FORWARD      (hook forward, priority filter) clears the policy marks, jumps to
//                           the dispatch chains for <prefix>* interfaces, accepts what policy accepted
//   chain cali-INPUT        (hook input) from <prefix>* to cali-wl-to-host: the endpoint's egress,
//                           then the configured endpoint-to-host action
//   chain cali-from-wl-dispatch / cali-to-wl-dispatch   one verdict-map lookup on the interface
//       (maps cali-from-wl-map / cali-to-wl-map: "<iface>" : goto cali-fw-/cali-tw-<iface>),
//       then "Unknown interface" drop
//   chains cali-tw-/cali-fw-<iface>, cali-pi-/cali-po-<policy>, cali-pri-/cali-pro-<profile>
//       as in the iptables part (same marks: accept 0x10000, pass 0x20000)
//   sets cali40s-<hash> (type ipv4_addr, interval) for the IP sets the calculator keeps, their
//       IPv6 members in cali60s-<hash> (type ipv6_addr) of the ip6 table; nets and ports
//       inline as anonymous sets
// Every rule carries comment "cali:<hash>" (chained as in the iptables part). apply() sends one
// transaction (libnftables): only changed chains are flushed and refilled, map and set
// elements added and deleted; the first apply replaces the whole table atomically (sweeping
// whatever a previous run left). check_drift() lists the tables and rewrites the chains whose
// hashes differ, the sets and map entries that differ.
// IPv6 (options.ipv6, on by default): each rule only in the family of its nets (ipVersion
// likewise; protocol ICMP is IPv4's, ICMPv6 IPv6's), ICMPv6 matches, and ICMPv6 router and
// neighbour discovery from workloads accepted before their egress policy in cali-wl-to-host.
// Both tables change in the same transaction.
#pragma once
#include <cnf/policy.hpp>
#include <cnf/policy/dataplane.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace nftables_policy {

struct options {
  std::string table = "calico";
  std::string interface_prefix = "cali";
  std::string endpoint_to_host_action = "accept";  ///< "accept", "drop" or "return"
  bool ipv6 = true;                                ///< the ip6 table too
};

struct chain {
  std::string name;
  std::vector<std::string> rules;   ///< nft rule statements, comment included
  std::vector<std::string> hashes;
  friend bool operator==(const chain&, const chain&) = default;
};

class dataplane {
 public:
  explicit dataplane(options o = {});
  ~dataplane();
  dataplane(dataplane&&) noexcept;
  dataplane& operator=(dataplane&&) noexcept;

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

  /// Applies what is pending, then lists the table once and rewrites, in one transaction, the
  /// chains whose rule hashes differ, the sets whose elements differ and the dispatch map
  /// entries that differ (the whole table when it is gone); reports what it rewrote.
  result<policy_drift> check_drift();
  std::map<std::string, chain> desired(ip_family f = ip_family::v4) const;
  const std::string& last_transaction() const { return last_; }

 private:
  using set_state = netpol::tracked_set;
  static constexpr std::size_t fi(ip_family f) { return f == ip_family::v4 ? 0 : 1; }
  std::vector<ip_family> families() const;
  std::string table(ip_family f) const;  // "ip calico" / "ip6 calico"
  result<std::string> run(const std::string& cmds, bool want_output = false);
  std::vector<std::string> render_rules(const std::vector<policy_rule>& rules, ip_family f) const;
  chain endpoint_chain(const workload_endpoint& e, bool ingress) const;
  void render_owner(const std::string& key, const std::string& in_name, const std::string& out_name, const std::vector<policy_rule>* in,
                    const std::vector<policy_rule>* out);
  void drop_chains(const std::string& key);
  std::string transaction(ip_family f, std::vector<const chain*>& written, std::vector<std::string>& stale, std::map<std::string, chain>& dyn);
  result<void> drift_family(ip_family f, policy_drift& d);

  options opt_;
  std::map<std::string, workload_endpoint> eps_;
  std::map<std::string, network_policy> pols_;
  std::map<std::string, policy_profile> profiles_;
  std::map<std::string, set_state> sets_;
  std::set<std::string> sets_to_delete_;
  std::map<std::string, chain> policy_chains_[2];  // per family, rendered at upsert: cali-pi/po/pri/pro
  std::set<std::string> dirty_chains_;          // of those, changed since the last apply
  std::map<std::string, std::set<std::string>> pols_of_ep_;  // endpoint key -> policy keys
  bool compare_all_ = true;                     // the kernel's state was (re)read
  std::map<std::string, chain> dynamic_chains(ip_family f) const;  // endpoint and dispatch chains
  std::map<std::string, std::vector<std::string>> chains_of_;
  std::map<std::string, std::vector<std::string>> kernel_[2];  // per family: chain -> hashes programmed
  std::map<std::string, std::string> kernel_maps_[2][2];       // per family: iface -> chain, from / to
  bool table_made_[2] = {false, false};
  std::size_t pending_ = 0;
  std::string last_;
};

}  // namespace nftables_policy
CNF_END_NAMESPACE
