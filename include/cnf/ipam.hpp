// cnf/ipam.hpp — the IPAM part: hands out pod addresses.
//
// An assignment belongs to a handle (for pods "<network name>.<container id>", as
// Calico names them); releasing the handle releases everything it holds, and releasing
// twice is not an error. Implementations keep their state in the datastore and make
// every write compare-and-swap, so concurrent CNI processes on many nodes are safe.
//
//   cnf::assign_request req;
//   req.handle = "k8s-pod-network.4c2f...";  req.node = "node-1";
//   req.attributes = {{"namespace", "default"}, {"pod", "web-0"}};
//   req.num_v4 = 1;  req.num_v6 = 1;
//   auto ips = ipam.assign(req);              // result<std::vector<cnf::assigned_address>>
//   ipam.addresses_of(req.handle);            // what the handle holds (CNI CHECK, ADD retries)
//   ipam.release_handle(req.handle);
//
// A node's tunnel device (IP-in-IP, VXLAN) gets its address from the IPAM too, under a
// handle of its own ("vxlan-tunnel-addr-<node>", as Calico names it). Assigning it again
// returns the address the handle already holds:
//
//   auto tun = ipam.assign_tunnel_address(cnf::tunnel_kind::vxlan, cnf::ip_family::v4);
//
// Implementations: calico-ipam (blocks with node affinity), host-local (ranges).
#pragma once
#include <cnf/detail/erasure.hpp>
#include <cnf/error.hpp>
#include <cnf/net.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE

struct assign_request {
  std::string handle;
  std::string node;
  std::map<std::string, std::string> attributes;  ///< e.g. namespace, pod, node, container
  unsigned num_v4 = 1;
  unsigned num_v6 = 0;
  std::vector<ip_prefix> pools_v4;    ///< only from these pools / ranges (empty: any)
  std::vector<ip_prefix> pools_v6;
  std::vector<ip_address> requested;  ///< exactly these addresses (CNI runtimeConfig "ips")
};

struct assigned_address {
  ip_prefix address;                  ///< the address, with the prefix length to configure
  std::optional<ip_address> gateway;  ///< when the IPAM has one (host-local ranges)
  std::string pool;                   ///< pool or range it came from (CIDR text)
  friend bool operator==(const assigned_address&, const assigned_address&) = default;
};

struct allocation {
  ip_address address;
  std::string handle;
  std::map<std::string, std::string> attributes;
};

/// The tunnel devices a node's address can be for.
enum class tunnel_kind { ipip, vxlan };

/// "ipip-tunnel-addr-<node>" / "vxlan-tunnel-addr-<node>": the handle of a node's tunnel
/// address (Calico's names, so cluster state reads the same to both).
inline std::string tunnel_handle(tunnel_kind k, std::string_view node) {
  return std::string(k == tunnel_kind::ipip ? "ipip-tunnel-addr-" : "vxlan-tunnel-addr-") + std::string(node);
}
inline bool is_tunnel_handle(std::string_view h) noexcept {
  return h.starts_with("ipip-tunnel-addr-") || h.starts_with("vxlan-tunnel-addr-") || h.starts_with("wireguard-tunnel-addr-");
}

struct block_usage {
  ip_prefix cidr;
  std::string affinity;  ///< "host:<node>" or empty
  std::uint64_t total = 0;
  std::uint64_t in_use = 0;
  std::uint64_t borrowed = 0;  ///< in use by handles of other nodes
};

struct pool_usage {
  ip_prefix cidr;
  std::string name;
  std::uint64_t total = 0;
  std::uint64_t in_use = 0;
  std::vector<block_usage> blocks;  ///< empty for IPAMs without blocks
};

struct ipam_usage {
  std::vector<pool_usage> pools;
};

struct gc_report {
  std::vector<std::string> released_handles;
  std::uint64_t released_addresses = 0;
};

namespace detail {
template <class T> concept ipam_assign = requires(T& t, const assign_request& r) { { t.assign(r) } -> returns<std::vector<assigned_address>>; };
template <class T> concept ipam_release_handle = requires(T& t, std::string_view h) { { t.release_handle(h) } -> returns<void>; };
template <class T> concept ipam_release_addresses = requires(T& t, std::span<const ip_address> a) { { t.release_addresses(a) } -> returns<void>; };
template <class T> concept ipam_usage_ = requires(T& t) { { t.usage() } -> returns<ipam_usage>; };
template <class T> concept ipam_allocations = requires(T& t) { { t.allocations() } -> returns<std::vector<allocation>>; };
template <class T> concept ipam_gc = requires(T& t, std::string_view prefix, const std::set<std::string>& valid) { { t.gc(prefix, valid) } -> returns<gc_report>; };
template <class T> concept ipam_addresses_of = requires(T& t, std::string_view h) { { t.addresses_of(h) } -> returns<std::vector<ip_address>>; };
template <class T> concept ipam_tunnel = requires(T& t, tunnel_kind k, ip_family f) {
  { t.assign_tunnel_address(k, f) } -> returns<assigned_address>;
  { t.release_tunnel_address(k) } -> returns<void>;
};
}  // namespace detail

/// An IPAM: assign(request), release_handle(handle), release_addresses(addresses),
/// usage() (pools, blocks, counts), allocations() (every address in use with its handle),
/// gc(handle_prefix, valid_handles) (release every handle starting with handle_prefix
/// that is not in valid_handles), addresses_of(handle) (what a handle holds, sorted; empty
/// when nothing), assign_tunnel_address(kind, family) (this node's tunnel address, the
/// same one on every call until released) and release_tunnel_address(kind).
template <class T>
concept ipam = detail::ipam_assign<T> && detail::ipam_release_handle<T> && detail::ipam_release_addresses<T> &&
               detail::ipam_usage_<T> && detail::ipam_allocations<T> && detail::ipam_gc<T> && detail::ipam_addresses_of<T> &&
               detail::ipam_tunnel<T>;

template <class T>
consteval bool check_ipam() {
  static_assert(detail::ipam_assign<T>, "cnf::ipam needs: assign(const assign_request&) -> std::vector<assigned_address> or result<...>");
  static_assert(detail::ipam_release_handle<T>, "cnf::ipam needs: release_handle(std::string_view) -> void or result<void>");
  static_assert(detail::ipam_release_addresses<T>, "cnf::ipam needs: release_addresses(std::span<const ip_address>) -> void or result<void>");
  static_assert(detail::ipam_usage_<T>, "cnf::ipam needs: usage() -> ipam_usage or result<ipam_usage>");
  static_assert(detail::ipam_allocations<T>, "cnf::ipam needs: allocations() -> std::vector<allocation> or result<...>");
  static_assert(detail::ipam_gc<T>, "cnf::ipam needs: gc(std::string_view handle_prefix, const std::set<std::string>& valid) -> gc_report or result<gc_report>");
  static_assert(detail::ipam_addresses_of<T>, "cnf::ipam needs: addresses_of(std::string_view handle) -> std::vector<ip_address> or result<...>");
  static_assert(detail::ipam_tunnel<T>, "cnf::ipam needs: assign_tunnel_address(tunnel_kind, ip_family) -> assigned_address or result<...>, "
                                        "and release_tunnel_address(tunnel_kind) -> void or result<void>");
  return ipam<T>;
}

namespace detail {
struct ipam_iface {
  virtual ~ipam_iface() = default;
  virtual result<std::vector<assigned_address>> assign(const assign_request& r) noexcept = 0;
  virtual result<void> release_handle(std::string_view h) noexcept = 0;
  virtual result<void> release_addresses(std::span<const ip_address> a) noexcept = 0;
  virtual result<ipam_usage> usage() noexcept = 0;
  virtual result<std::vector<allocation>> allocations() noexcept = 0;
  virtual result<gc_report> gc(std::string_view prefix, const std::set<std::string>& valid) noexcept = 0;
  virtual result<std::vector<ip_address>> addresses_of(std::string_view h) noexcept = 0;
  virtual result<assigned_address> assign_tunnel_address(tunnel_kind k, ip_family f) noexcept = 0;
  virtual result<void> release_tunnel_address(tunnel_kind k) noexcept = 0;
};

template <class T>
struct ipam_model final : ipam_iface {
  template <class... A>
  explicit ipam_model(A&&... a) : impl(std::forward<A>(a)...) {}
  result<std::vector<assigned_address>> assign(const assign_request& r) noexcept override {
    return call<std::vector<assigned_address>>([&] { return impl.assign(r); });
  }
  result<void> release_handle(std::string_view h) noexcept override { return call<void>([&] { return impl.release_handle(h); }); }
  result<void> release_addresses(std::span<const ip_address> a) noexcept override {
    return call<void>([&] { return impl.release_addresses(a); });
  }
  result<ipam_usage> usage() noexcept override { return call<ipam_usage>([&] { return impl.usage(); }); }
  result<std::vector<allocation>> allocations() noexcept override { return call<std::vector<allocation>>([&] { return impl.allocations(); }); }
  result<gc_report> gc(std::string_view prefix, const std::set<std::string>& valid) noexcept override {
    return call<gc_report>([&] { return impl.gc(prefix, valid); });
  }
  result<std::vector<ip_address>> addresses_of(std::string_view h) noexcept override {
    return call<std::vector<ip_address>>([&] { return impl.addresses_of(h); });
  }
  result<assigned_address> assign_tunnel_address(tunnel_kind k, ip_family f) noexcept override {
    return call<assigned_address>([&] { return impl.assign_tunnel_address(k, f); });
  }
  result<void> release_tunnel_address(tunnel_kind k) noexcept override { return call<void>([&] { return impl.release_tunnel_address(k); }); }
  T impl;
};
}  // namespace detail

class any_ipam {
 public:
  any_ipam() = default;
  template <class T>
    requires detail::not_self<T, any_ipam> && ipam<std::remove_cvref_t<T>>
  any_ipam(T&& t) : p_(std::make_shared<detail::ipam_model<std::remove_cvref_t<T>>>(std::forward<T>(t))) {}
  explicit any_ipam(std::shared_ptr<detail::ipam_iface> p) : p_(std::move(p)) {}
  explicit operator bool() const noexcept { return p_ != nullptr; }

  result<std::vector<assigned_address>> assign(const assign_request& r) const { return p_->assign(r); }
  result<void> release_handle(std::string_view h) const { return p_->release_handle(h); }
  result<void> release_addresses(std::span<const ip_address> a) const { return p_->release_addresses(a); }
  result<ipam_usage> usage() const { return p_->usage(); }
  result<std::vector<allocation>> allocations() const { return p_->allocations(); }
  result<gc_report> gc(std::string_view prefix, const std::set<std::string>& valid) const { return p_->gc(prefix, valid); }
  result<std::vector<ip_address>> addresses_of(std::string_view h) const { return p_->addresses_of(h); }
  result<assigned_address> assign_tunnel_address(tunnel_kind k, ip_family f) const { return p_->assign_tunnel_address(k, f); }
  result<void> release_tunnel_address(tunnel_kind k) const { return p_->release_tunnel_address(k); }

  const std::shared_ptr<detail::ipam_iface>& interface() const noexcept { return p_; }

 private:
  std::shared_ptr<detail::ipam_iface> p_;
};

static_assert(ipam<any_ipam>);

CNF_END_NAMESPACE
