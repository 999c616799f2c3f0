// cnf/encap.hpp — the Encapsulation part: carries pod traffic between nodes that cannot
// route it natively.
//
// Event-driven and incremental, in batches. The host (the node agent) starts the part with
// this node and a sink, then tells it what changed, node by node: another node appeared or
// changed (upsert_node) or went (remove_node). Those calls only record the change; apply()
// programs everything recorded since the last apply in one batch (the device's FDB and
// neighbour entries) and tells the sink which routes the part now wants and which it no
// longer wants. A part never writes kernel routes: the host puts them in its route table
// (cnf/route_table.hpp, owner "vxlan", "ipip", ...), the one owner of cnf's kernel routes.
//
//   struct my_sink : cnf::encap_sink { ... };                 // the host's
//   auto tun = encap.start(self, sink).value();               // e.g. device "vxlan.calico", its MAC
//   encap.upsert_node(remote_b);                              // recorded
//   encap.remove_node("node-c");                              // recorded
//   encap.apply();                                            // one batch; sink.route_wanted(...)
//   encap.status().value().pending;                           // 0 after an apply
//   encap.stop();                                             // no sink call after it returns
//
// stop() removes what the part made (device, FDB and neighbour entries, datapath). Called
// on a part that was never started, it removes what an earlier run of the same plugin left
// on this node: `cnf agent` does that for each encapsulation plugin it finds when its
// profile has no [encapsulation] (a part taken out of the profile leaves nothing behind).
//
// Threading: every operation is called on the host's executor thread, and the part calls
// the sink only on that thread (inside apply(), or posted). A route_wanted replaces the
// route the part wanted before for the same destination. Upserting a node that has not
// changed, or applying with nothing recorded, changes nothing and calls nothing.
//
// Modes follow Calico: always, cross_subnet (only to nodes outside this node's subnets),
// never. Implementations: ipip, vxlan.
#pragma once
#include <cnf/detail/erasure.hpp>
#include <cnf/node.hpp>
#include <cnf/route_table.hpp>

#include <memory>
#include <optional>
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

/// An IP pool as encapsulation sees it: its CIDR and its mode (IPPool spec.vxlanMode for
/// vxlan, spec.ipipMode for ipip). A block takes the mode of the pool that contains it.
struct encap_pool {
  std::string name;
  ip_prefix cidr;
  encap_mode mode = encap_mode::never;
  friend bool operator==(const encap_pool&, const encap_pool&) = default;
};

struct tunnel_info {
  std::string device;
  std::optional<ip_address> address;
  std::optional<mac_address> mac;
  unsigned mtu = 0;
  ip_family family = ip_family::v4;  ///< the family of the traffic it carries (vxlan-v6.calico: v6)
  friend bool operator==(const tunnel_info&, const tunnel_info&) = default;
};

struct encap_status {
  encap_mode mode = encap_mode::never;   ///< IPv4 pools (or the profile's override)
  tunnel_info tunnel;                    ///< the IPv4 tunnel
  encap_mode mode_v6 = encap_mode::never;  ///< IPv6 pools; never for a part that carries no IPv6
  tunnel_info tunnel_v6{{}, std::nullopt, std::nullopt, 0, ip_family::v6};  ///< the IPv6 tunnel (vxlan-v6.calico)
  std::size_t remote_nodes = 0;  ///< nodes reached through the tunnel (after the last apply)
  std::size_t routes = 0;        ///< routes the part wants now
  std::size_t pending = 0;       ///< node changes recorded and not yet applied
  std::vector<std::string> notes;  ///< one line each, e.g. a node with no tunnel address yet
};

/// What an encapsulation part reports, implemented by the host. Called on the host's
/// executor thread only; it must not throw (it is called from inside the part).
class encap_sink {
 public:
  /// The part wants this route (its dst replaces any route it wanted for that dst).
  virtual void route_wanted(const route_entry& r) noexcept = 0;
  /// The part no longer wants its route to dst.
  virtual void route_unwanted(const ip_prefix& dst) noexcept = 0;
  /// A tunnel device changed (recreated, new MAC or address, MTU); t.family says which one
  /// when a part has one per family (vxlan.calico, vxlan-v6.calico).
  virtual void tunnel_changed(const tunnel_info& t) noexcept = 0;

 protected:
  ~encap_sink() = default;  // the host owns it; parts never delete it
};

namespace detail {
template <class T> concept en_start = requires(T& t, const node_info& n, encap_sink& s) { { t.start(n, s) } -> returns<tunnel_info>; };
template <class T> concept en_set_node = requires(T& t, const node_info& n) { { t.set_node(n) } -> returns<void>; };
template <class T> concept en_upsert_node = requires(T& t, const remote_node& r) { { t.upsert_node(r) } -> returns<void>; };
template <class T> concept en_remove_node = requires(T& t, std::string_view n) { { t.remove_node(n) } -> returns<void>; };
template <class T> concept en_apply = requires(T& t) { { t.apply() } -> returns<void>; };
template <class T> concept en_status = requires(T& t) { { t.status() } -> returns<encap_status>; };
template <class T> concept en_stop = requires(T& t) { { t.stop() } -> returns<void>; };
}  // namespace detail

/// An encapsulation part: start(self, sink) -> tunnel_info, set_node(self), upsert_node(remote),
/// remove_node(name), apply(), status(), stop().
template <class T>
concept encapsulation = detail::en_start<T> && detail::en_set_node<T> && detail::en_upsert_node<T> && detail::en_remove_node<T> &&
                        detail::en_apply<T> && detail::en_status<T> && detail::en_stop<T>;

template <class T>
consteval bool check_encapsulation() {
  static_assert(detail::en_start<T>, "cnf::encapsulation needs: start(const node_info&, encap_sink&) -> tunnel_info or result<tunnel_info>");
  static_assert(detail::en_set_node<T>, "cnf::encapsulation needs: set_node(const node_info&) -> void or result<void>");
  static_assert(detail::en_upsert_node<T>, "cnf::encapsulation needs: upsert_node(const remote_node&) -> void or result<void>");
  static_assert(detail::en_remove_node<T>, "cnf::encapsulation needs: remove_node(std::string_view name) -> void or result<void>");
  static_assert(detail::en_apply<T>, "cnf::encapsulation needs: apply() -> void or result<void> (programs the recorded changes in one batch)");
  static_assert(detail::en_status<T>, "cnf::encapsulation needs: status() -> encap_status or result<encap_status>");
  static_assert(detail::en_stop<T>, "cnf::encapsulation needs: stop() -> void or result<void>");
  return encapsulation<T>;
}

namespace detail {
struct encap_iface {
  virtual ~encap_iface() = default;
  virtual result<tunnel_info> start(const node_info& n, encap_sink& s) noexcept = 0;
  virtual result<void> set_node(const node_info& n) noexcept = 0;
  virtual result<void> upsert_node(const remote_node& r) noexcept = 0;
  virtual result<void> remove_node(std::string_view name) noexcept = 0;
  virtual result<void> apply() noexcept = 0;
  virtual result<encap_status> status() noexcept = 0;
  virtual result<void> stop() noexcept = 0;
  /// Optional (not part of the concept): the pools and their modes; a part without
  /// set_pools(const std::vector<encap_pool>&) answers errc::unsupported.
  virtual result<void> set_pools(const std::vector<encap_pool>&) noexcept {
    return error(errc::unsupported, "this encapsulation part takes no per-pool modes");
  }
};

template <class T>
struct encap_model final : encap_iface {
  template <class... A>
  explicit encap_model(A&&... a) : impl(std::forward<A>(a)...) {}
  result<tunnel_info> start(const node_info& n, encap_sink& s) noexcept override { return call<tunnel_info>([&] { return impl.start(n, s); }); }
  result<void> set_node(const node_info& n) noexcept override { return call<void>([&] { return impl.set_node(n); }); }
  result<void> upsert_node(const remote_node& r) noexcept override { return call<void>([&] { return impl.upsert_node(r); }); }
  result<void> remove_node(std::string_view n) noexcept override { return call<void>([&] { return impl.remove_node(n); }); }
  result<void> apply() noexcept override { return call<void>([&] { return impl.apply(); }); }
  result<encap_status> status() noexcept override { return call<encap_status>([&] { return impl.status(); }); }
  result<void> stop() noexcept override { return call<void>([&] { return impl.stop(); }); }
  result<void> set_pools(const std::vector<encap_pool>& p) noexcept override {
    if constexpr (requires { impl.set_pools(p); }) return call<void>([&] { return impl.set_pools(p); });
    else return encap_iface::set_pools(p);
  }
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

  result<tunnel_info> start(const node_info& n, encap_sink& s) const { return p_->start(n, s); }
  result<void> set_node(const node_info& n) const { return p_->set_node(n); }
  result<void> upsert_node(const remote_node& r) const { return p_->upsert_node(r); }
  result<void> remove_node(std::string_view name) const { return p_->remove_node(name); }
  result<void> apply() const { return p_->apply(); }
  result<encap_status> status() const { return p_->status(); }
  result<void> stop() const { return p_->stop(); }
  /// The pools' modes (optional for a part: errc::unsupported when it has none).
  result<void> set_pools(const std::vector<encap_pool>& p) const { return p_->set_pools(p); }
  const std::shared_ptr<detail::encap_iface>& interface() const noexcept { return p_; }

 private:
  std::shared_ptr<detail::encap_iface> p_;
};

static_assert(encapsulation<any_encapsulation>);

CNF_END_NAMESPACE
