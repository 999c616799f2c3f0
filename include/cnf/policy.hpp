// cnf/policy.hpp — the Policy part: decides which pod traffic is allowed.
//
// The host hands the part the full desired set (workload endpoints and policy resources
// as they are in the datastore); the part computes what the dataplane must hold and
// applies the difference.
//
//   policy.sync(endpoints, policies);   // NetworkPolicy / GlobalNetworkPolicy resources
//   auto st = policy.status().value();  // what is programmed
//
// Implementations: iptables (Felix-style chains and ipsets), ebpf (tc programs and maps).
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/detail/erasure.hpp>
#include <cnf/net.hpp>

#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE

struct workload_endpoint {
  std::string name;  ///< resource name of the WorkloadEndpoint
  std::string node;
  std::string ns;
  std::string pod;
  std::string container_id;
  std::string host_interface;  ///< host side of the veth
  std::string pod_interface;   ///< CNI_IFNAME
  std::vector<ip_prefix> addresses;
  std::optional<mac_address> mac;
  std::map<std::string, std::string> labels;
  std::vector<std::string> profiles;
};

struct policy_status {
  std::size_t endpoints = 0;
  std::size_t policies = 0;
  std::size_t rules = 0;   ///< rules or map entries programmed
  std::string dataplane;   ///< "iptables-legacy", "ebpf", ...
};

namespace detail {
template <class T> concept po_sync = requires(T& t, std::span<const workload_endpoint> e, std::span<const resource> p) { { t.sync(e, p) } -> returns<void>; };
template <class T> concept po_status = requires(T& t) { { t.status() } -> returns<policy_status>; };
template <class T> concept po_teardown = requires(T& t) { { t.teardown() } -> returns<void>; };
}  // namespace detail

template <class T>
concept policy = detail::po_sync<T> && detail::po_status<T> && detail::po_teardown<T>;

template <class T>
consteval bool check_policy() {
  static_assert(detail::po_sync<T>, "cnf::policy needs: sync(std::span<const workload_endpoint>, std::span<const resource>) -> void or result<void>");
  static_assert(detail::po_status<T>, "cnf::policy needs: status() -> policy_status or result<policy_status>");
  static_assert(detail::po_teardown<T>, "cnf::policy needs: teardown() -> void or result<void>");
  return policy<T>;
}

namespace detail {
struct policy_iface {
  virtual ~policy_iface() = default;
  virtual result<void> sync(std::span<const workload_endpoint> e, std::span<const resource> p) noexcept = 0;
  virtual result<policy_status> status() noexcept = 0;
  virtual result<void> teardown() noexcept = 0;
};

template <class T>
struct policy_model final : policy_iface {
  template <class... A>
  explicit policy_model(A&&... a) : impl(std::forward<A>(a)...) {}
  result<void> sync(std::span<const workload_endpoint> e, std::span<const resource> p) noexcept override {
    return call<void>([&] { return impl.sync(e, p); });
  }
  result<policy_status> status() noexcept override { return call<policy_status>([&] { return impl.status(); }); }
  result<void> teardown() noexcept override { return call<void>([&] { return impl.teardown(); }); }
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

  result<void> sync(std::span<const workload_endpoint> e, std::span<const resource> p) const { return p_->sync(e, p); }
  result<policy_status> status() const { return p_->status(); }
  result<void> teardown() const { return p_->teardown(); }
  const std::shared_ptr<detail::policy_iface>& interface() const noexcept { return p_; }

 private:
  std::shared_ptr<detail::policy_iface> p_;
};

static_assert(policy<any_policy>);

CNF_END_NAMESPACE
