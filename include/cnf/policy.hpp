// cnf/policy.hpp — the Policy part: decides which pod traffic is allowed.
//
// Event-driven and incremental, Felix-style. The host (the node agent) turns the datastore's
// changes into typed updates: a workload endpoint of this node appeared, changed or went; a
// policy (NetworkPolicy, GlobalNetworkPolicy) or a profile (Calico's Profile, e.g. kns.<ns>)
// was upserted or removed; an IP set (the members of a selector or a network set, computed by
// the host) gained or lost members. Those calls only record the change and mark what it
// touches dirty; apply() programs what changed since the last apply (chains of the endpoints
// and policies touched, IP set members added and removed) in one batch per dataplane table,
// never the whole world. Upserting what did not change, or applying with nothing recorded,
// changes nothing.
//
//   policy.add_ip_set_members("s:abc", members);             // recorded
//   policy.upsert_policy(pol);                                // rules refer to "s:abc"
//   policy.upsert_endpoint(wep);                              // a cnf::model::workload_endpoint
//   policy.apply();                                           // one batch
//   auto st = policy.status().value();                        // what is programmed, what is pending
//   policy.stop();
//
// Drift: check_drift() reads back what the part programmed (chains and their rule hashes, IP
// set members, dispatch maps), rewrites only what differs from what it wants (a rule deleted
// by hand, a chain flushed, a set member removed) in one batch, and reports each object it
// rewrote; with nothing different it writes nothing. The host calls it on a timer
// ([policy] refresh_interval, cnf/policy/host_settings.hpp). Changes recorded and not yet
// applied are applied first and are not drift.
//
//   auto d = policy.check_drift().value();                   // d.repaired: what was put back
//
// Threading: every operation is called on the host's executor thread. An apply with long
// work (a 100k-rule restore) may run it off the loop; it reports back by posting.
//
// Implementations: iptables (Felix-style chains and ipsets), nftables, ebpf (tc programs and maps).
#pragma once
#include <cnf/detail/erasure.hpp>
#include <cnf/model/workload_endpoint.hpp>
#include <cnf/net.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE

/// A pod interface, as the CNI plugin wrote it (cnf/model/workload_endpoint.hpp).
using workload_endpoint = model::workload_endpoint;

struct port_range {
  std::uint16_t first = 0, last = 0;  ///< inclusive; first == last for one port
  friend bool operator==(const port_range&, const port_range&) = default;
};

/// One rule of a policy or profile. Selectors are already resolved by the host into IP sets
/// (by id); nets are literal.
struct policy_rule {
  enum class action_type { allow, deny, log, pass } action = action_type::allow;
  std::optional<std::uint8_t> protocol;  ///< IPPROTO_TCP, IPPROTO_UDP, ...; none: any
  std::vector<ip_prefix> source_nets, destination_nets;
  std::vector<std::string> source_ip_sets, destination_ip_sets;  ///< ids of IP sets the host keeps
  std::vector<port_range> source_ports, destination_ports;
  // The rest of Calico's rule (filled by the calculator, cnf/policy/calculator.hpp). Within one
  // list: any entry matches (nets, ports); the ip_sets lists: every set must hold the address;
  // the not_ lists: no entry may match. Empty: no condition.
  std::optional<std::uint8_t> not_protocol;
  std::optional<std::uint8_t> icmp_type, icmp_code, not_icmp_type, not_icmp_code;
  std::optional<ip_family> family;  ///< ipVersion: the rule only applies to this family
  std::vector<ip_prefix> not_source_nets, not_destination_nets;
  std::vector<std::string> not_source_ip_sets, not_destination_ip_sets;
  std::vector<port_range> not_source_ports, not_destination_ports;
  friend bool operator==(const policy_rule&, const policy_rule&) = default;
};

/// A NetworkPolicy or GlobalNetworkPolicy, as the host resolved it for this node.
struct network_policy {
  std::string kind = "NetworkPolicy";  ///< or "GlobalNetworkPolicy"
  std::string ns;                      ///< empty for a global policy
  std::string name;
  double order = 1000.0;               ///< lower first (Calico's default when unset: last)
  std::vector<std::string> endpoints;  ///< keys (ns/name) of this node's endpoints it selects
  bool ingress_applies = true, egress_applies = false;  ///< spec.types
  std::vector<policy_rule> ingress, egress;
  /// "<kind>/<ns>/<name>": the key of remove_policy.
  std::string key() const { return kind + "/" + ns + "/" + name; }
  friend bool operator==(const network_policy&, const network_policy&) = default;
};

/// A Calico Profile (e.g. "kns.<namespace>"): rules and labels endpoints naming it inherit.
struct policy_profile {
  std::string name;
  std::map<std::string, std::string> labels_to_apply;
  std::vector<policy_rule> ingress, egress;
  friend bool operator==(const policy_profile&, const policy_profile&) = default;
};

struct policy_status {
  std::size_t endpoints = 0;
  std::size_t policies = 0;
  std::size_t profiles = 0;
  std::size_t ip_sets = 0;
  std::size_t rules = 0;    ///< rules or map entries programmed
  std::size_t pending = 0;  ///< changes recorded and not yet applied
  std::string dataplane;    ///< "iptables-legacy", "nftables", "ebpf", ...
};

/// One kernel object a drift check found different from what the part programmed, and rewrote.
struct policy_repair {
  std::string object;  ///< "chain cali-tw-calie1", "set cali40s:abc", "hook FORWARD", "map cali-to-wl-map", ...
  std::string detail;  ///< what differed, e.g. "7 of 8 rules as programmed"
  friend bool operator==(const policy_repair&, const policy_repair&) = default;
};

/// What one drift check did: how many objects it compared, and those it rewrote (empty: the
/// kernel held what was programmed, and nothing was written).
struct policy_drift {
  std::size_t checked = 0;
  std::vector<policy_repair> repaired;
};

namespace detail {
template <class T> concept po_upsert_endpoint = requires(T& t, const workload_endpoint& e) { { t.upsert_endpoint(e) } -> returns<void>; };
template <class T> concept po_remove_endpoint = requires(T& t, std::string_view k) { { t.remove_endpoint(k) } -> returns<void>; };
template <class T> concept po_upsert_policy = requires(T& t, const network_policy& p) { { t.upsert_policy(p) } -> returns<void>; };
template <class T> concept po_remove_policy = requires(T& t, std::string_view k) { { t.remove_policy(k) } -> returns<void>; };
template <class T> concept po_upsert_profile = requires(T& t, const policy_profile& p) { { t.upsert_profile(p) } -> returns<void>; };
template <class T> concept po_remove_profile = requires(T& t, std::string_view n) { { t.remove_profile(n) } -> returns<void>; };
template <class T> concept po_add_members = requires(T& t, std::string_view id, std::span<const ip_prefix> m) { { t.add_ip_set_members(id, m) } -> returns<void>; };
template <class T> concept po_remove_members = requires(T& t, std::string_view id, std::span<const ip_prefix> m) { { t.remove_ip_set_members(id, m) } -> returns<void>; };
template <class T> concept po_remove_ip_set = requires(T& t, std::string_view id) { { t.remove_ip_set(id) } -> returns<void>; };
template <class T> concept po_apply = requires(T& t) { { t.apply() } -> returns<void>; };
template <class T> concept po_status = requires(T& t) { { t.status() } -> returns<policy_status>; };
template <class T> concept po_stop = requires(T& t) { { t.stop() } -> returns<void>; };
template <class T> concept po_check_drift = requires(T& t) { { t.check_drift() } -> returns<policy_drift>; };
}  // namespace detail

/// A policy part: upsert_endpoint/remove_endpoint, upsert_policy/remove_policy,
/// upsert_profile/remove_profile, add_ip_set_members/remove_ip_set_members/remove_ip_set,
/// apply(), status(), stop(), check_drift().
template <class T>
concept policy = detail::po_upsert_endpoint<T> && detail::po_remove_endpoint<T> && detail::po_upsert_policy<T> &&
                 detail::po_remove_policy<T> && detail::po_upsert_profile<T> && detail::po_remove_profile<T> &&
                 detail::po_add_members<T> && detail::po_remove_members<T> && detail::po_remove_ip_set<T> && detail::po_apply<T> &&
                 detail::po_status<T> && detail::po_stop<T> && detail::po_check_drift<T>;

template <class T>
consteval bool check_policy() {
  static_assert(detail::po_upsert_endpoint<T>, "cnf::policy needs: upsert_endpoint(const workload_endpoint&) -> void or result<void>");
  static_assert(detail::po_remove_endpoint<T>, "cnf::policy needs: remove_endpoint(std::string_view key) -> void or result<void>");
  static_assert(detail::po_upsert_policy<T>, "cnf::policy needs: upsert_policy(const network_policy&) -> void or result<void>");
  static_assert(detail::po_remove_policy<T>, "cnf::policy needs: remove_policy(std::string_view key) -> void or result<void>");
  static_assert(detail::po_upsert_profile<T>, "cnf::policy needs: upsert_profile(const policy_profile&) -> void or result<void>");
  static_assert(detail::po_remove_profile<T>, "cnf::policy needs: remove_profile(std::string_view name) -> void or result<void>");
  static_assert(detail::po_add_members<T>,
                "cnf::policy needs: add_ip_set_members(std::string_view id, std::span<const ip_prefix>) -> void or result<void>");
  static_assert(detail::po_remove_members<T>,
                "cnf::policy needs: remove_ip_set_members(std::string_view id, std::span<const ip_prefix>) -> void or result<void>");
  static_assert(detail::po_remove_ip_set<T>, "cnf::policy needs: remove_ip_set(std::string_view id) -> void or result<void>");
  static_assert(detail::po_apply<T>, "cnf::policy needs: apply() -> void or result<void> (programs what changed since the last apply)");
  static_assert(detail::po_status<T>, "cnf::policy needs: status() -> policy_status or result<policy_status>");
  static_assert(detail::po_stop<T>, "cnf::policy needs: stop() -> void or result<void>");
  static_assert(detail::po_check_drift<T>,
                "cnf::policy needs: check_drift() -> policy_drift or result<policy_drift> (reads the kernel back, rewrites what differs)");
  return policy<T>;
}

namespace detail {
struct policy_iface {
  virtual ~policy_iface() = default;
  virtual result<void> upsert_endpoint(const workload_endpoint& e) noexcept = 0;
  virtual result<void> remove_endpoint(std::string_view key) noexcept = 0;
  virtual result<void> upsert_policy(const network_policy& p) noexcept = 0;
  virtual result<void> remove_policy(std::string_view key) noexcept = 0;
  virtual result<void> upsert_profile(const policy_profile& p) noexcept = 0;
  virtual result<void> remove_profile(std::string_view name) noexcept = 0;
  virtual result<void> add_ip_set_members(std::string_view id, std::span<const ip_prefix> m) noexcept = 0;
  virtual result<void> remove_ip_set_members(std::string_view id, std::span<const ip_prefix> m) noexcept = 0;
  virtual result<void> remove_ip_set(std::string_view id) noexcept = 0;
  virtual result<void> apply() noexcept = 0;
  virtual result<policy_status> status() noexcept = 0;
  virtual result<void> stop() noexcept = 0;
  virtual result<policy_drift> check_drift() noexcept = 0;
};

template <class T>
struct policy_model final : policy_iface {
  template <class... A>
  explicit policy_model(A&&... a) : impl(std::forward<A>(a)...) {}
  result<void> upsert_endpoint(const workload_endpoint& e) noexcept override { return call<void>([&] { return impl.upsert_endpoint(e); }); }
  result<void> remove_endpoint(std::string_view k) noexcept override { return call<void>([&] { return impl.remove_endpoint(k); }); }
  result<void> upsert_policy(const network_policy& p) noexcept override { return call<void>([&] { return impl.upsert_policy(p); }); }
  result<void> remove_policy(std::string_view k) noexcept override { return call<void>([&] { return impl.remove_policy(k); }); }
  result<void> upsert_profile(const policy_profile& p) noexcept override { return call<void>([&] { return impl.upsert_profile(p); }); }
  result<void> remove_profile(std::string_view n) noexcept override { return call<void>([&] { return impl.remove_profile(n); }); }
  result<void> add_ip_set_members(std::string_view id, std::span<const ip_prefix> m) noexcept override {
    return call<void>([&] { return impl.add_ip_set_members(id, m); });
  }
  result<void> remove_ip_set_members(std::string_view id, std::span<const ip_prefix> m) noexcept override {
    return call<void>([&] { return impl.remove_ip_set_members(id, m); });
  }
  result<void> remove_ip_set(std::string_view id) noexcept override { return call<void>([&] { return impl.remove_ip_set(id); }); }
  result<void> apply() noexcept override { return call<void>([&] { return impl.apply(); }); }
  result<policy_status> status() noexcept override { return call<policy_status>([&] { return impl.status(); }); }
  result<void> stop() noexcept override { return call<void>([&] { return impl.stop(); }); }
  result<policy_drift> check_drift() noexcept override { return call<policy_drift>([&] { return impl.check_drift(); }); }
  T impl;
};
}  // namespace detail

class any_policy {
 public:
  any_policy() = default;
  template <class T>
    requires detail::not_self<T, any_policy> && policy<std::remove_cvref_t<T>>
  any_policy(T&& t) : p_(std::make_shared<detail::policy_model<std::remove_cvref_t<T>>>(std::forward<T>(t))) {}
  explicit any_policy(std::shared_ptr<detail::policy_iface> p) : p_(std::move(p)) {}
  explicit operator bool() const noexcept { return p_ != nullptr; }

  result<void> upsert_endpoint(const workload_endpoint& e) const { return p_->upsert_endpoint(e); }
  result<void> remove_endpoint(std::string_view key) const { return p_->remove_endpoint(key); }
  result<void> upsert_policy(const network_policy& p) const { return p_->upsert_policy(p); }
  result<void> remove_policy(std::string_view key) const { return p_->remove_policy(key); }
  result<void> upsert_profile(const policy_profile& p) const { return p_->upsert_profile(p); }
  result<void> remove_profile(std::string_view name) const { return p_->remove_profile(name); }
  result<void> add_ip_set_members(std::string_view id, std::span<const ip_prefix> m) const { return p_->add_ip_set_members(id, m); }
  result<void> remove_ip_set_members(std::string_view id, std::span<const ip_prefix> m) const { return p_->remove_ip_set_members(id, m); }
  result<void> remove_ip_set(std::string_view id) const { return p_->remove_ip_set(id); }
  result<void> apply() const { return p_->apply(); }
  result<policy_status> status() const { return p_->status(); }
  result<void> stop() const { return p_->stop(); }
  result<policy_drift> check_drift() const { return p_->check_drift(); }
  const std::shared_ptr<detail::policy_iface>& interface() const noexcept { return p_; }

 private:
  std::shared_ptr<detail::policy_iface> p_;
};

static_assert(policy<any_policy>);

CNF_END_NAMESPACE
