// cnf/routing.hpp — the Routing part: tells other nodes which pod prefixes live here and
// learns where theirs live.
//
// Event-driven and incremental. The host (the node agent) tells the part what changed:
// this node's configuration, another node appearing, changing or going, a configured
// peer, a prefix to advertise or withdraw. The part answers through the routing_sink the
// host gave it to start(): routes it learned (or withdraws), peers whose state changed.
// A part never writes kernel routes: the host puts learned routes into its route table
// (cnf/route_table.hpp), the one owner of cnf's kernel routes, which also lets the
// encapsulation part pick the device of a next hop.
//
//   struct my_sink : cnf::routing_sink { ... };               // the host's
//   routing.start(self, sink);                                // sessions come up on the executor
//   routing.upsert_node(remote);                              // a Node or its blocks changed
//   routing.advertise(cnf::ip_prefix::parse("10.244.1.0/26").value());
//   routing.status().value().peers;                           // for `cnf node status`
//   routing.stop();                                           // no sink call after it returns
//
// Graceful restart: a part that restarts keeping its peers' routes in the kernel (bgp with
// graceful_stop) reports its relearned routes, then initial_routes_complete(); until then the
// host keeps the kernel routes of its last run that nobody has asked for again.
//
// Threading: every operation is called on the host's executor thread (plugin_context::exec),
// and the part calls the sink only on that thread (a part with threads of its own posts to
// the executor first). A learned route replaces the one the part learned before for the same
// prefix; peers are named, and a peer_changed replaces the previous state of that name.
//
// Implementations: direct (host-gw: each remote node's blocks via its address when that
// address is on a subnet this node is connected to), bgp (a speaker of cnf's own).
#pragma once
#include <cnf/detail/erasure.hpp>
#include <cnf/node.hpp>
#include <cnf/route_filter.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE

/// A route the part learned: `prefix` via `next_hops` (several: one multipath route).
struct learned_route {
  ip_prefix prefix;
  std::vector<ip_address> next_hops;
  std::string device;  ///< optional: the device the next hops are on
  std::string peer;    ///< the peer or node it came from
  friend bool operator==(const learned_route&, const learned_route&) = default;
};

/// A configured peer (Calico's BGPPeer): not one of the cluster's nodes.
struct peer_config {
  std::string name;
  ip_address address;
  std::uint32_t asn = 0;
  std::string type = "global";  ///< "global", "node specific"
  std::optional<std::string> password;  ///< TCP MD5 key; none: the part's own (profile) password
  std::uint16_t port = 0;               ///< the peer's BGP port; 0: the part's listen port
  bool keep_original_next_hop = false;  ///< routes to it keep the next hop they were learned with
  std::uint32_t max_restart_time = 0;   ///< seconds (graceful restart); 0: the part's default
  bool bind_source = true;              ///< connect from the node's address (Calico's sourceAddress UseNodeIP)
  bool route_reflector = false;         ///< a route reflector of this node's own cluster (not its client)
  std::vector<route_filter> filters;    ///< its BGPPeer's spec.filters, resolved, in order (a change applies live)
  friend bool operator==(const peer_config&, const peer_config&) = default;
};

/// Communities for the prefixes this node advertises (Calico's prefixAdvertisements): a prefix
/// within `cidr` (as long or longer) is sent with `communities`, values "aa:nn" (standard) or
/// "aa:nn:mm" (large), names already resolved through the BGPConfiguration's communities.
struct prefix_advertisement {
  ip_prefix cidr;
  std::vector<std::string> communities;
  friend bool operator==(const prefix_advertisement&, const prefix_advertisement&) = default;
};

/// The cluster's routing configuration (Calico's BGPConfiguration `default`, with a node's
/// `node.<name>` over it). Unset fields: the part's own settings from the profile. A part
/// applies a change live and touches only the sessions it concerns: the mesh going takes only
/// the mesh sessions; a new default AS restarts the sessions whose AS changed; a new listen
/// port or local AS restarts every session (both are in every OPEN or connection).
struct routing_config {
  std::optional<std::uint32_t> as_number;      ///< the cluster's default AS
  std::optional<bool> node_to_node_mesh;       ///< nodeToNodeMeshEnabled
  std::optional<std::uint16_t> listen_port;    ///< listenPort
  std::optional<std::string> mesh_password;    ///< nodeMeshPassword (resolved)
  std::optional<std::string> route_reflector_cluster_id;  ///< this node's Node spec.bgp.routeReflectorClusterID
  std::optional<std::uint32_t> mesh_max_restart_time;     ///< nodeMeshMaxRestartTime, seconds (graceful restart of mesh peers)
  std::vector<prefix_advertisement> prefix_advertisements;  ///< every entry whose cidr holds a prefix adds its communities
  std::string log_severity_screen;  ///< logSeverityScreen: Debug, Info, Warning, Error, Fatal; empty: the host's level
  friend bool operator==(const routing_config&, const routing_config&) = default;
};

/// A peer as `cnf node status` shows it (calicoctl's columns). For direct routing the
/// peers are the other nodes, with state "Reachable" or "Unreachable".
struct peer_status {
  std::string name;
  ip_address address;
  std::uint32_t asn = 0;
  std::string type;   ///< "node-to-node mesh", "global", "node specific", "direct"
  std::string state;  ///< "Established", "Active", "Connect", ..., "Reachable", "Unreachable"
  std::string since;
  std::string info;
  friend bool operator==(const peer_status&, const peer_status&) = default;
};

struct routing_status {
  std::string plugin;               ///< "direct", "bgp"
  std::vector<peer_status> peers;
  std::vector<std::string> notes;   ///< one line each, e.g. the nodes that cannot be reached directly
};

/// What a routing part reports, implemented by the host. Called on the host's executor
/// thread only; it must not throw (it is called from inside the part).
class routing_sink {
 public:
  virtual void route_learned(const learned_route& r) noexcept = 0;
  virtual void route_withdrawn(const ip_prefix& prefix) noexcept = 0;
  virtual void peer_changed(const peer_status& p) noexcept = 0;
  virtual void peer_removed(std::string_view name) noexcept = 0;
  /// Graceful restart (RFC 4724 §4.1): a part restarted with the forwarding state of its last
  /// run kept (the host holds those kernel routes, cnf/route_table.hpp hold_stale) says when the
  /// routes it reported since make up its whole initial table: every peer's End-of-RIB, or its
  /// deferral time over. The host then removes the old routes not reported again. A part that
  /// does not restart gracefully never calls it. (Last in the table: added in plugin ABI 3.)
  virtual void initial_routes_complete() noexcept {}

 protected:
  ~routing_sink() = default;  // the host owns it; parts never delete it
};

namespace detail {
template <class T> concept rt_start = requires(T& t, const node_info& n, routing_sink& s) { { t.start(n, s) } -> returns<void>; };
template <class T> concept rt_set_node = requires(T& t, const node_info& n) { { t.set_node(n) } -> returns<void>; };
template <class T> concept rt_upsert_node = requires(T& t, const remote_node& r) { { t.upsert_node(r) } -> returns<void>; };
template <class T> concept rt_remove_node = requires(T& t, std::string_view n) { { t.remove_node(n) } -> returns<void>; };
template <class T> concept rt_upsert_peer = requires(T& t, const peer_config& p) { { t.upsert_peer(p) } -> returns<void>; };
template <class T> concept rt_remove_peer = requires(T& t, std::string_view n) { { t.remove_peer(n) } -> returns<void>; };
template <class T> concept rt_advertise = requires(T& t, const ip_prefix& p) { { t.advertise(p) } -> returns<void>; };
template <class T> concept rt_withdraw = requires(T& t, const ip_prefix& p) { { t.withdraw(p) } -> returns<void>; };
template <class T> concept rt_status = requires(T& t) { { t.status() } -> returns<routing_status>; };
template <class T> concept rt_stop = requires(T& t) { { t.stop() } -> returns<void>; };
/// Optional: configure(routing_config) (a part without it answers errc::unsupported).
template <class T> concept rt_configure = requires(T& t, const routing_config& c) { { t.configure(c) } -> returns<void>; };
}  // namespace detail

/// A routing part: start(self, sink), set_node(self), upsert_node(remote), remove_node(name),
/// upsert_peer(peer), remove_peer(name), advertise(prefix), withdraw(prefix), status(), stop().
template <class T>
concept routing = detail::rt_start<T> && detail::rt_set_node<T> && detail::rt_upsert_node<T> && detail::rt_remove_node<T> &&
                  detail::rt_upsert_peer<T> && detail::rt_remove_peer<T> && detail::rt_advertise<T> && detail::rt_withdraw<T> &&
                  detail::rt_status<T> && detail::rt_stop<T>;

template <class T>
consteval bool check_routing() {
  static_assert(detail::rt_start<T>, "cnf::routing needs: start(const node_info&, routing_sink&) -> void or result<void>");
  static_assert(detail::rt_set_node<T>, "cnf::routing needs: set_node(const node_info&) -> void or result<void>");
  static_assert(detail::rt_upsert_node<T>, "cnf::routing needs: upsert_node(const remote_node&) -> void or result<void>");
  static_assert(detail::rt_remove_node<T>, "cnf::routing needs: remove_node(std::string_view name) -> void or result<void>");
  static_assert(detail::rt_upsert_peer<T>, "cnf::routing needs: upsert_peer(const peer_config&) -> void or result<void>");
  static_assert(detail::rt_remove_peer<T>, "cnf::routing needs: remove_peer(std::string_view name) -> void or result<void>");
  static_assert(detail::rt_advertise<T>, "cnf::routing needs: advertise(const ip_prefix&) -> void or result<void>");
  static_assert(detail::rt_withdraw<T>, "cnf::routing needs: withdraw(const ip_prefix&) -> void or result<void>");
  static_assert(detail::rt_status<T>, "cnf::routing needs: status() -> routing_status or result<routing_status>");
  static_assert(detail::rt_stop<T>, "cnf::routing needs: stop() -> void or result<void>");
  return routing<T>;
}

namespace detail {
struct routing_iface {
  virtual ~routing_iface() = default;
  virtual result<void> start(const node_info& n, routing_sink& s) noexcept = 0;
  virtual result<void> set_node(const node_info& n) noexcept = 0;
  virtual result<void> upsert_node(const remote_node& r) noexcept = 0;
  virtual result<void> remove_node(std::string_view name) noexcept = 0;
  virtual result<void> upsert_peer(const peer_config& p) noexcept = 0;
  virtual result<void> remove_peer(std::string_view name) noexcept = 0;
  virtual result<void> advertise(const ip_prefix& p) noexcept = 0;
  virtual result<void> withdraw(const ip_prefix& p) noexcept = 0;
  virtual result<routing_status> status() noexcept = 0;
  virtual result<void> stop() noexcept = 0;
  virtual result<void> configure(const routing_config& c) noexcept = 0;
};

template <class T>
struct routing_model final : routing_iface {
  template <class... A>
  explicit routing_model(A&&... a) : impl(std::forward<A>(a)...) {}
  result<void> start(const node_info& n, routing_sink& s) noexcept override { return call<void>([&] { return impl.start(n, s); }); }
  result<void> set_node(const node_info& n) noexcept override { return call<void>([&] { return impl.set_node(n); }); }
  result<void> upsert_node(const remote_node& r) noexcept override { return call<void>([&] { return impl.upsert_node(r); }); }
  result<void> remove_node(std::string_view n) noexcept override { return call<void>([&] { return impl.remove_node(n); }); }
  result<void> upsert_peer(const peer_config& p) noexcept override { return call<void>([&] { return impl.upsert_peer(p); }); }
  result<void> remove_peer(std::string_view n) noexcept override { return call<void>([&] { return impl.remove_peer(n); }); }
  result<void> advertise(const ip_prefix& p) noexcept override { return call<void>([&] { return impl.advertise(p); }); }
  result<void> withdraw(const ip_prefix& p) noexcept override { return call<void>([&] { return impl.withdraw(p); }); }
  result<routing_status> status() noexcept override { return call<routing_status>([&] { return impl.status(); }); }
  result<void> stop() noexcept override { return call<void>([&] { return impl.stop(); }); }
  result<void> configure(const routing_config& c) noexcept override {
    if constexpr (rt_configure<T>) return call<void>([&] { return impl.configure(c); });
    else return error(errc::unsupported, "this routing part takes no cluster routing configuration");
  }
  T impl;
};
}  // namespace detail

class any_routing {
 public:
  any_routing() = default;
  template <class T>
    requires detail::not_self<T, any_routing> && routing<std::remove_cvref_t<T>>
  any_routing(T&& t) : p_(std::make_shared<detail::routing_model<std::remove_cvref_t<T>>>(std::forward<T>(t))) {}
  explicit any_routing(std::shared_ptr<detail::routing_iface> p) : p_(std::move(p)) {}
  explicit operator bool() const noexcept { return p_ != nullptr; }

  result<void> start(const node_info& n, routing_sink& s) const { return p_->start(n, s); }
  result<void> set_node(const node_info& n) const { return p_->set_node(n); }
  result<void> upsert_node(const remote_node& r) const { return p_->upsert_node(r); }
  result<void> remove_node(std::string_view name) const { return p_->remove_node(name); }
  result<void> upsert_peer(const peer_config& p) const { return p_->upsert_peer(p); }
  result<void> remove_peer(std::string_view name) const { return p_->remove_peer(name); }
  result<void> advertise(const ip_prefix& p) const { return p_->advertise(p); }
  result<void> withdraw(const ip_prefix& p) const { return p_->withdraw(p); }
  result<routing_status> status() const { return p_->status(); }
  result<void> stop() const { return p_->stop(); }
  result<void> configure(const routing_config& c) const { return p_->configure(c); }
  const std::shared_ptr<detail::routing_iface>& interface() const noexcept { return p_; }

 private:
  std::shared_ptr<detail::routing_iface> p_;
};

static_assert(routing<any_routing>);

CNF_END_NAMESPACE
