// cnf/routing.hpp — the Routing part: tells other nodes which pod prefixes live here
// and installs the routes to theirs.
//
//   routing.start(node);                                   // sessions come up on the executor
//   routing.advertise(cnf::ip_prefix::parse("10.244.1.0/26").value());
//   for (auto& p : routing.peers().value()) std::cout << p.address.to_string() << ' ' << p.state;
//
// Implementations: bgp (a speaker of cnf's own, interoperating with BIRD, GoBGP, FRR),
// direct (host-gw style: routes to other nodes' blocks through their node address).
#pragma once
#include <cnf/detail/erasure.hpp>
#include <cnf/node.hpp>

#include <memory>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE

struct learned_route {
  ip_prefix prefix;
  std::vector<ip_address> next_hops;
  std::string peer;  ///< peer or node it came from
};

struct peer_status {
  std::string name;
  ip_address address;
  std::uint32_t asn = 0;
  std::string type;   ///< "node-to-node mesh", "global", "node specific"
  std::string state;  ///< "Established", "Active", "Connect", ...
  std::string since;
  std::string info;
};

namespace detail {
template <class T> concept rt_start = requires(T& t, const node_info& n) { { t.start(n) } -> returns<void>; };
template <class T> concept rt_advertise = requires(T& t, const ip_prefix& p) { { t.advertise(p) } -> returns<void>; };
template <class T> concept rt_withdraw = requires(T& t, const ip_prefix& p) { { t.withdraw(p) } -> returns<void>; };
template <class T> concept rt_routes = requires(T& t) { { t.routes() } -> returns<std::vector<learned_route>>; };
template <class T> concept rt_peers = requires(T& t) { { t.peers() } -> returns<std::vector<peer_status>>; };
template <class T> concept rt_stop = requires(T& t) { { t.stop() } -> returns<void>; };
}  // namespace detail

template <class T>
concept routing = detail::rt_start<T> && detail::rt_advertise<T> && detail::rt_withdraw<T> && detail::rt_routes<T> &&
                  detail::rt_peers<T> && detail::rt_stop<T>;

template <class T>
consteval bool check_routing() {
  static_assert(detail::rt_start<T>, "cnf::routing needs: start(const node_info&) -> void or result<void>");
  static_assert(detail::rt_advertise<T>, "cnf::routing needs: advertise(const ip_prefix&) -> void or result<void>");
  static_assert(detail::rt_withdraw<T>, "cnf::routing needs: withdraw(const ip_prefix&) -> void or result<void>");
  static_assert(detail::rt_routes<T>, "cnf::routing needs: routes() -> std::vector<learned_route> or result<...>");
  static_assert(detail::rt_peers<T>, "cnf::routing needs: peers() -> std::vector<peer_status> or result<...>");
  static_assert(detail::rt_stop<T>, "cnf::routing needs: stop() -> void or result<void>");
  return routing<T>;
}

namespace detail {
struct routing_iface {
  virtual ~routing_iface() = default;
  virtual result<void> start(const node_info& n) noexcept = 0;
  virtual result<void> advertise(const ip_prefix& p) noexcept = 0;
  virtual result<void> withdraw(const ip_prefix& p) noexcept = 0;
  virtual result<std::vector<learned_route>> routes() noexcept = 0;
  virtual result<std::vector<peer_status>> peers() noexcept = 0;
  virtual result<void> stop() noexcept = 0;
};

template <class T>
struct routing_model final : routing_iface {
  template <class... A>
  explicit routing_model(A&&... a) : impl(std::forward<A>(a)...) {}
  result<void> start(const node_info& n) noexcept override { return call<void>([&] { return impl.start(n); }); }
  result<void> advertise(const ip_prefix& p) noexcept override { return call<void>([&] { return impl.advertise(p); }); }
  result<void> withdraw(const ip_prefix& p) noexcept override { return call<void>([&] { return impl.withdraw(p); }); }
  result<std::vector<learned_route>> routes() noexcept override { return call<std::vector<learned_route>>([&] { return impl.routes(); }); }
  result<std::vector<peer_status>> peers() noexcept override { return call<std::vector<peer_status>>([&] { return impl.peers(); }); }
  result<void> stop() noexcept override { return call<void>([&] { return impl.stop(); }); }
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

  result<void> start(const node_info& n) const { return p_->start(n); }
  result<void> advertise(const ip_prefix& p) const { return p_->advertise(p); }
  result<void> withdraw(const ip_prefix& p) const { return p_->withdraw(p); }
  result<std::vector<learned_route>> routes() const { return p_->routes(); }
  result<std::vector<peer_status>> peers() const { return p_->peers(); }
  result<void> stop() const { return p_->stop(); }
  const std::shared_ptr<detail::routing_iface>& interface() const noexcept { return p_; }

 private:
  std::shared_ptr<detail::routing_iface> p_;
};

static_assert(routing<any_routing>);

CNF_END_NAMESPACE
