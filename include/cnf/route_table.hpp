// cnf/route_table.hpp — the only owner of cnf's kernel routes.
//
// Parts say which routes they want, by owner; the route table programs the difference
// between all owners' wishes and what the kernel holds, Felix-style: cheap updates mark
// it dirty, one coalesced apply (posted on the executor) reads back the kernel's cnf
// routes, computes the minimal delta and sends it in netlink batches, one ack per request.
//
//   cnf::route_table rt(loop);                      // sockets in this thread's netns
//   rt.set_owner_priority("blackhole", 0);
//   rt.set_owner_priority("vxlan", 10);
//   rt.set("blackhole", {.dst = block, .kind = cnf::route_entry::type::blackhole});
//   rt.set("vxlan", {.dst = remote_block, .next_hops = {{gw, "vxlan.calico", true}}});
//   rt.set_ready(true);                             // after the first complete sync
//
// Ownership: cnf's routes carry cnf's route protocol number (netlink::cnf_route_protocol,
// `ip route show proto 80`) in one table. A route of another protocol is never touched: if
// it holds a destination cnf wants, cnf's route is left out and reported in conflicts()
// (one log line per destination). Nothing touches the kernel before set_ready(true); the
// first apply then removes the cnf routes nobody wants (left by an earlier agent) and
// leaves identical ones untouched, so a restarted agent changes nothing in the kernel.
// With watch_kernel, RTNLGRP_IPV4_ROUTE/IPV6_ROUTE notifications schedule an apply, which
// repairs a cnf route someone deleted or changed.
//
// Graceful restart (RFC 4724 §4.1, the agent restarting with its forwarding state kept):
// hold_stale(true) before set_ready(true) makes the first apply keep the routes nobody wants
// yet instead of sweeping them, while the routing part relearns its routes; a held
// destination that an owner wants again is programmed as usual (untouched when identical)
// and held no more. hold_stale(false) (the routing part's peers all sent End-of-RIB, or a
// deadline) sweeps the ones still unwanted. The kernel does not say which owner made a route,
// so the last run's unwanted routes of every owner wait for the release alike; routes this
// table programmed itself go as soon as nobody wants them.
//
// Threading: every member runs on the executor's thread except set/remove/replace_all/
// set_owner_priority/set_ready, which are thread-safe. The executor must outlive it.
#pragma once
#include <cnf/error.hpp>
#include <cnf/executor.hpp>
#include <cnf/log.hpp>
#include <cnf/net.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE

struct route_next_hop {
  ip_address gateway;   ///< the unspecified address (the default) means none: a device hop
  std::string device;   ///< output device name; empty lets the kernel pick by gateway
  bool onlink = false;  ///< the gateway is on the device's link (RTNH_F_ONLINK), e.g. VXLAN
  friend bool operator==(const route_next_hop&, const route_next_hop&) = default;
};

struct route_entry {
  ip_prefix dst;
  enum class type { unicast, blackhole, unreachable } kind = type::unicast;
  std::vector<route_next_hop> next_hops;  ///< 0: device route or blackhole; >1: one multipath route (ECMP)
  std::string device;                     ///< a device route with no gateway
  std::optional<ip_address> source;       ///< preferred source (RTA_PREFSRC)
  std::uint32_t metric = 0;
  /// The route's path MTU (RTA_METRICS / RTAX_MTU); 0 leaves it to the output device. For
  /// a datapath that grows packets on a device it does not own (eBPF IP-in-IP on the
  /// uplink), so that locally sent packets leave small enough to take the outer header.
  std::uint32_t mtu = 0;
  friend bool operator==(const route_entry&, const route_entry&) = default;

  /// "10.0.0.0/26 via 192.168.1.2 dev eth0", "blackhole 10.0.0.0/26", for logs and errors.
  std::string to_string() const;
};

struct route_table_stats {
  std::size_t added = 0, replaced = 0, deleted = 0, batches = 0;
  friend bool operator==(const route_table_stats&, const route_table_stats&) = default;
};

class route_table {
 public:
  struct options {
    std::uint32_t table = 254;                    ///< RT_TABLE_MAIN
    std::uint8_t protocol = 80;                   ///< netlink::cnf_route_protocol
    bool watch_kernel = true;                     ///< repair on RTNLGRP_IPV4_ROUTE/IPV6_ROUTE
    logger* log = nullptr;                        ///< conflicts and apply errors; none when null
    std::chrono::milliseconds retry{1000};        ///< after a failed coalesced apply
  };

  /// Opens its netlink sockets in the calling thread's network namespace; touches nothing.
  /// (Two constructors rather than `options o = {}`: GCC refuses that default argument
  /// while the nested struct's member initialisers are incomplete.)
  explicit route_table(executor& ex);
  route_table(executor& ex, options o);
  /// Leaves the kernel as it is (a restarted agent takes over its routes). Call on the
  /// executor's thread (or when the executor runs nothing of this table's).
  ~route_table();
  route_table(const route_table&) = delete;
  route_table& operator=(const route_table&) = delete;

  /// Desired routes by owner ("blackhole", "routing", "vxlan", ...). When owners want the same dst,
  /// the higher priority wins; the other's route comes back when the winner withdraws.
  /// Owners without a priority have 0; equal priorities: the owner name first in order wins.
  void set_owner_priority(std::string_view owner, int priority);
  void set(std::string_view owner, const route_entry& r);
  void remove(std::string_view owner, const ip_prefix& dst);
  void replace_all(std::string_view owner, std::vector<route_entry> routes);
  /// Nothing touches the kernel until ready(true) (the host's first complete sync). Then changes
  /// are applied by a coalesced apply posted on the executor.
  void set_ready(bool ready);
  /// Keep (true) the cnf routes found in the kernel at the first apply that no owner wants,
  /// or sweep them (false, the default) at the next apply. See "Graceful restart" above.
  void hold_stale(bool hold);
  /// The destinations still held (kept from the last run, wanted by nobody yet).
  std::vector<ip_prefix> stale() const;
  /// Diff against the kernel, netlink batches, ack per request. Runs even when not ready
  /// (a host that knows better). An invalid entry (unknown device) fails alone: the rest is
  /// applied and the error names it.
  result<route_table_stats> apply_now();
  /// The winning route of every destination, ordered by destination.
  std::vector<route_entry> desired() const;
  /// Routes cnf wanted but left alone because a foreign route (another protocol) holds the dst.
  std::vector<std::string> conflicts() const;
  /// Totals since construction (every apply, coalesced or not).
  route_table_stats totals() const;

  struct state;

 private:
  std::shared_ptr<state> s_;
};

CNF_END_NAMESPACE
