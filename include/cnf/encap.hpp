// cnf/encap.hpp — the Encapsulation part: carries pod traffic between nodes that cannot
// route it natively.
//
//   auto tun = encap.setup(node).value();          // e.g. device "vxlan.calico", its MAC
//   encap.sync(remote_nodes);                      // the full desired set: routes, FDB, neighbours
//   encap.teardown();
//
// Modes follow Calico: always, cross_subnet (only to nodes outside this node's subnets),
// never. Implementations: ipip, vxlan.
#pragma once
#include <cnf/detail/erasure.hpp>
#include <cnf/node.hpp>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE

enum class encap_mode { never, cross_subnet, always };

inline constexpr std::string_view to_string(encap_mode m) noexcept {
  switch (m) {
    case encap_mode::never: return "Never";
    case encap_mode::cross_subnet: return "CrossSubnet";
    case encap_mode::always: return "Always";
  }
  return "?";
}

struct tunnel_info {
  std::string device;
  std::optional<ip_address> address;
  std::optional<mac_address> mac;
  unsigned mtu = 0;
};

struct encap_status {
  encap_mode mode = encap_mode::never;
  std::string device;
  std::size_t remote_nodes = 0;
  std::size_t routes = 0;
};

namespace detail {
template <class T> concept en_setup = requires(T& t, const node_info& n) { { t.setup(n) } -> returns<tunnel_info>; };
template <class T> concept en_sync = requires(T& t, std::span<const remote_node> r) { { t.sync(r) } -> returns<void>; };
template <class T> concept en_teardown = requires(T& t) { { t.teardown() } -> returns<void>; };
template <class T> concept en_status = requires(T& t) { { t.status() } -> returns<encap_status>; };
}  // namespace detail

template <class T>
concept encapsulation = detail::en_setup<T> && detail::en_sync<T> && detail::en_teardown<T> && detail::en_status<T>;

template <class T>
consteval bool check_encapsulation() {
  static_assert(detail::en_setup<T>, "cnf::encapsulation needs: setup(const node_info&) -> tunnel_info or result<tunnel_info>");
  static_assert(detail::en_sync<T>, "cnf::encapsulation needs: sync(std::span<const remote_node>) -> void or result<void>");
  static_assert(detail::en_teardown<T>, "cnf::encapsulation needs: teardown() -> void or result<void>");
  static_assert(detail::en_status<T>, "cnf::encapsulation needs: status() -> encap_status or result<encap_status>");
  return encapsulation<T>;
}

namespace detail {
struct encap_iface {
  virtual ~encap_iface() = default;
  virtual result<tunnel_info> setup(const node_info& n) noexcept = 0;
  virtual result<void> sync(std::span<const remote_node> r) noexcept = 0;
  virtual result<void> teardown() noexcept = 0;
  virtual result<encap_status> status() noexcept = 0;
};

template <class T>
struct encap_model final : encap_iface {
  template <class... A>
  explicit encap_model(A&&... a) : impl(std::forward<A>(a)...) {}
  result<tunnel_info> setup(const node_info& n) noexcept override { return call<tunnel_info>([&] { return impl.setup(n); }); }
  result<void> sync(std::span<const remote_node> r) noexcept override { return call<void>([&] { return impl.sync(r); }); }
  result<void> teardown() noexcept override { return call<void>([&] { return impl.teardown(); }); }
  result<encap_status> status() noexcept override { return call<encap_status>([&] { return impl.status(); }); }
  T impl;
};
}  // namespace detail

class any_encapsulation {
 public:
  any_encapsulation() = default;
  template <class T>
    requires detail::not_self<T, any_encapsulation> && encapsulation<std::remove_cvref_t<T>>
  any_encapsulation(T&& t) : p_(std::make_shared<detail::encap_model<std::remove_cvref_t<T>>>(std::forward<T>(t))) {}
  explicit any_encapsulation(std::shared_ptr<detail::encap_iface> p) : p_(std::move(p)) {}
  explicit operator bool() const noexcept { return p_ != nullptr; }

  result<tunnel_info> setup(const node_info& n) const { return p_->setup(n); }
  result<void> sync(std::span<const remote_node> r) const { return p_->sync(r); }
  result<void> teardown() const { return p_->teardown(); }
  result<encap_status> status() const { return p_->status(); }
  const std::shared_ptr<detail::encap_iface>& interface() const noexcept { return p_; }

 private:
  std::shared_ptr<detail::encap_iface> p_;
};

static_assert(encapsulation<any_encapsulation>);

CNF_END_NAMESPACE
