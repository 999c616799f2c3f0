// cnf::route_table: desired routes by owner -> winners by priority -> diff against the
// kernel's routes of cnf's protocol in one table -> netlink batches (one ack per request).
// The kernel is read back on every apply (one dump per family and one link dump), so the
// diff is always against what is there, whoever changed it.
#include <cnf/netlink/route.hpp>
#include <cnf/route_table.hpp>

#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>

CNF_BEGIN_NAMESPACE

namespace {

bool unspecified(const ip_address& a) {
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a.data()[i]) return false;
  return true;
}

// A route as the kernel holds it, devices by index: what the diff compares.
struct kernel_hop {
  std::optional<ip_address> gateway;
  int oif = 0;
  bool onlink = false;
  friend auto operator<=>(const kernel_hop&, const kernel_hop&) = default;
};
struct kernel_route {
  ip_prefix dst;
  unsigned char type = RTN_UNICAST;
  std::vector<kernel_hop> hops;  // sorted; one for a single-path route (or a device route)
  std::optional<ip_address> prefsrc;
  std::uint32_t metric = 0;
  std::uint32_t mtu = 0;  // RTAX_MTU in RTA_METRICS; 0: none
  unsigned char protocol = 0;
  friend bool operator==(const kernel_route&, const kernel_route&) = default;
};

// Whether the kernel's route `have` is what `want` asks for. A next hop wanted without a
// device (a gateway the kernel resolves) matches the device the kernel chose: comparing the
// index too made every apply rewrite every such route (all of BGP's, 2.3 writes per route
// in tests/bench/bgp/kernel_bench at 100k routes).
bool satisfies(const kernel_route& have, const kernel_route& want) {
  if (have.dst != want.dst || have.type != want.type || have.prefsrc != want.prefsrc || have.metric != want.metric ||
      have.mtu != want.mtu || have.protocol != want.protocol || have.hops.size() != want.hops.size())
    return false;
  for (std::size_t i = 0; i < want.hops.size(); ++i) {
    const auto& h = have.hops[i];
    const auto& w = want.hops[i];
    if (h.gateway != w.gateway || h.onlink != w.onlink || (w.oif != 0 && h.oif != w.oif)) return false;
  }
  return true;
}

std::uint32_t effective_metric(const ip_prefix& dst, std::uint32_t m) {
  return dst.family() == ip_family::v6 && m == 0 ? 1024 : m;  // the kernel's IPv6 default
}

unsigned char rtn_of(route_entry::type t) {
  switch (t) {
    case route_entry::type::unicast: return RTN_UNICAST;
    case route_entry::type::blackhole: return RTN_BLACKHOLE;
    case route_entry::type::unreachable: return RTN_UNREACHABLE;
  }
  return RTN_UNICAST;
}

std::optional<kernel_route> parse(const nlmsghdr& nlh) {
  if (nlh.nlmsg_type != RTM_NEWROUTE || mnl_nlmsg_get_payload_len(&nlh) < sizeof(rtmsg)) return std::nullopt;
  const auto* rt = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(&nlh));
  auto fam = netlink::detail::family_of(rt->rtm_family);
  if (!fam) return std::nullopt;
  std::array<const nlattr*, RTA_MAX + 1> tb;
  netlink::detail::parse_attrs(nlh, sizeof(rtmsg), tb);
  kernel_route r;
  ip_address dst = ip_address::from_bytes(*fam, std::array<std::uint8_t, 16>{}.data());
  netlink::detail::attr_addr(tb[RTA_DST], *fam, dst);
  r.dst = ip_prefix(dst, rt->rtm_dst_len);
  r.type = rt->rtm_type;
  r.protocol = rt->rtm_protocol;
  r.metric = netlink::detail::attr_u32(tb[RTA_PRIORITY]);
  if (tb[RTA_METRICS]) {
    const auto* at = static_cast<const nlattr*>(mnl_attr_get_payload(tb[RTA_METRICS]));
    int alen = static_cast<int>(mnl_attr_get_payload_len(tb[RTA_METRICS]));
    for (; mnl_attr_ok(at, alen); alen -= static_cast<int>(MNL_ALIGN(at->nla_len)), at = mnl_attr_next(at))
      if (mnl_attr_get_type(at) == RTAX_MTU && mnl_attr_get_payload_len(at) >= sizeof(std::uint32_t)) r.mtu = mnl_attr_get_u32(at);
  }
  ip_address a;
  if (netlink::detail::attr_addr(tb[RTA_PREFSRC], *fam, a)) r.prefsrc = a;
  if (r.type != RTN_UNICAST) return r;  // blackhole/unreachable: no next hops (IPv6 shows dev lo)
  if (tb[RTA_MULTIPATH]) {
    const auto* nh = static_cast<const rtnexthop*>(mnl_attr_get_payload(tb[RTA_MULTIPATH]));
    int left = static_cast<int>(mnl_attr_get_payload_len(tb[RTA_MULTIPATH]));
    while (left >= static_cast<int>(sizeof(rtnexthop)) && nh->rtnh_len >= sizeof(rtnexthop) && nh->rtnh_len <= left) {
      kernel_hop h;
      h.oif = nh->rtnh_ifindex;
      h.onlink = nh->rtnh_flags & RTNH_F_ONLINK;
      const auto* at = reinterpret_cast<const nlattr*>(reinterpret_cast<const char*>(nh) + RTNH_LENGTH(0));
      int alen = nh->rtnh_len - static_cast<int>(RTNH_LENGTH(0));
      while (mnl_attr_ok(at, alen)) {
        if (mnl_attr_get_type(at) == RTA_GATEWAY && netlink::detail::attr_addr(at, *fam, a)) h.gateway = a;
        alen -= static_cast<int>(MNL_ALIGN(at->nla_len));
        at = mnl_attr_next(at);
      }
      r.hops.push_back(h);
      left -= static_cast<int>(RTNH_ALIGN(nh->rtnh_len));
      nh = reinterpret_cast<const rtnexthop*>(reinterpret_cast<const char*>(nh) + RTNH_ALIGN(nh->rtnh_len));
    }
    std::sort(r.hops.begin(), r.hops.end());
  } else {
    kernel_hop h;
    h.oif = static_cast<int>(netlink::detail::attr_u32(tb[RTA_OIF]));
    h.onlink = rt->rtm_flags & RTNH_F_ONLINK;
    if (netlink::detail::attr_addr(tb[RTA_GATEWAY], *fam, a)) h.gateway = a;
    r.hops.push_back(h);
  }
  return r;
}

void put_hop_attrs(netlink::message& m, const kernel_hop& h) {
  if (h.gateway) m.put_addr(RTA_GATEWAY, *h.gateway);
}

netlink::message route_msg(const kernel_route& r, std::uint32_t table, std::uint16_t flags, std::uint16_t type) {
  netlink::message m(type, flags);
  auto& rt = m.header<rtmsg>();
  rt.rtm_family = static_cast<unsigned char>(r.dst.address().af());
  rt.rtm_dst_len = static_cast<unsigned char>(r.dst.length());
  rt.rtm_table = table < 256 ? static_cast<unsigned char>(table) : static_cast<unsigned char>(RT_TABLE_UNSPEC);
  rt.rtm_protocol = r.protocol;
  rt.rtm_type = r.type;
  if (table >= 256) m.put_u32(RTA_TABLE, table);
  if (r.dst.length() > 0) m.put_addr(RTA_DST, r.dst.network());
  m.put_u32(RTA_PRIORITY, r.metric);
  if (type == RTM_DELROUTE) {
    rt.rtm_scope = RT_SCOPE_NOWHERE;
    return m;
  }
  if (r.prefsrc) m.put_addr(RTA_PREFSRC, *r.prefsrc);
  if (r.mtu) {
    nlattr* metrics = m.begin_nest(RTA_METRICS);
    m.put_u32(RTAX_MTU, r.mtu);
    m.end_nest(metrics);
  }
  const bool device_only = r.hops.size() == 1 && !r.hops[0].gateway;
  rt.rtm_scope = r.type == RTN_UNICAST && device_only && r.dst.family() == ip_family::v4 ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
  if (r.type != RTN_UNICAST) return m;
  if (r.hops.size() == 1) {
    if (r.hops[0].onlink) rt.rtm_flags |= RTNH_F_ONLINK;
    put_hop_attrs(m, r.hops[0]);
    if (r.hops[0].oif) m.put_u32(RTA_OIF, static_cast<std::uint32_t>(r.hops[0].oif));
    return m;
  }
  nlattr* mp = m.begin_nest(RTA_MULTIPATH);
  for (const auto& h : r.hops) {
    auto* nh = static_cast<rtnexthop*>(m.put_raw(nullptr, sizeof(rtnexthop)));
    const std::size_t start = m.nlh()->nlmsg_len - MNL_ALIGN(sizeof(rtnexthop));
    nh->rtnh_ifindex = h.oif;
    nh->rtnh_flags = h.onlink ? RTNH_F_ONLINK : 0;
    put_hop_attrs(m, h);
    if (!m.overflowed())
      reinterpret_cast<rtnexthop*>(reinterpret_cast<char*>(m.nlh()) + start)->rtnh_len =
          static_cast<unsigned short>(m.nlh()->nlmsg_len - start);
  }
  m.end_nest(mp);
  return m;
}

std::string describe(const kernel_route& r, const std::map<int, std::string>& names) {
  std::string s;
  if (r.type == RTN_BLACKHOLE) s = "blackhole ";
  if (r.type == RTN_UNREACHABLE) s = "unreachable ";
  s += r.dst.to_string();
  if (r.type == RTN_UNICAST) {
    for (const auto& h : r.hops) {
      if (r.hops.size() > 1) s += " nexthop";
      if (h.gateway) s += " via " + h.gateway->to_string();
      if (h.oif) {
        auto it = names.find(h.oif);
        s += " dev " + (it == names.end() ? "#" + std::to_string(h.oif) : it->second);
      }
      if (h.onlink) s += " onlink";
    }
  }
  if (r.metric) s += " metric " + std::to_string(r.metric);
  if (r.mtu) s += " mtu " + std::to_string(r.mtu);
  return s;
}

}  // namespace

std::string route_entry::to_string() const {
  std::string s;
  if (kind == type::blackhole) s = "blackhole ";
  if (kind == type::unreachable) s = "unreachable ";
  s += dst.to_string();
  if (kind == type::unicast) {
    for (const auto& h : next_hops) {
      if (next_hops.size() > 1) s += " nexthop";
      if (!unspecified(h.gateway)) s += " via " + h.gateway.to_string();
      if (!h.device.empty()) s += " dev " + h.device;
      if (h.onlink) s += " onlink";
    }
    if (next_hops.empty() && !device.empty()) s += " dev " + device;
  }
  if (source) s += " src " + source->to_string();
  if (metric) s += " metric " + std::to_string(metric);
  if (mtu) s += " mtu " + std::to_string(mtu);
  return s;
}

struct route_table::state : std::enable_shared_from_this<route_table::state> {
  state(executor& e, options o) : ex(e), opts(o) {}

  executor& ex;
  options opts;
  std::optional<netlink::rtnl_socket> sock;  // requests and dumps; used on ex
  std::string last_error;                    // of the last coalesced apply; on ex

  mutable std::mutex mu;  // guards what follows
  std::map<std::string, int, std::less<>> priority;
  std::map<std::string, std::map<ip_prefix, route_entry>, std::less<>> wanted;
  bool ready = false;
  bool pending = false;
  bool hold = false;           // hold_stale(true): keep the last run's unwanted routes
  bool seeded = false;         // the first apply has looked at the kernel
  std::set<ip_prefix> held;    // those routes' destinations, until wanted or released
  executor::timer_id retry = 0;
  std::set<std::string> conflicts;
  route_table_stats totals;

  // Kernel notifications: a thread polls the group socket and posts an apply.
  int monitor_fd = -1;
  int wake_fd = -1;
  std::thread monitor;

  void log(log_level l, const std::string& m) {
    if (opts.log && opts.log->enabled(l)) opts.log->write(l, "route table: " + m);
  }

  // Winners by destination, pointing into `wanted` (no copy of the routes); caller holds mu.
  std::map<ip_prefix, std::pair<int, const route_entry*>> winner_ptrs() const {
    std::map<ip_prefix, std::pair<int, const route_entry*>> best;
    for (const auto& [owner, routes] : wanted) {
      auto p = priority.find(owner);
      const int prio = p == priority.end() ? 0 : p->second;
      for (const auto& [dst, r] : routes) {
        auto [it, fresh] = best.try_emplace(dst, prio, &r);
        if (!fresh && prio > it->second.first) it->second = {prio, &r};  // ties: first owner by name
      }
    }
    return best;
  }

  // Winners by destination; caller holds mu.
  std::map<ip_prefix, route_entry> winners() const {
    std::map<ip_prefix, route_entry> out;
    for (auto& [dst, pr] : winner_ptrs()) out.emplace(dst, *pr.second);
    return out;
  }

  void schedule(bool force = false) {
    {
      std::lock_guard l(mu);
      if ((!ready && !force) || pending) return;
      pending = true;
    }
    std::weak_ptr<state> w = weak_from_this();
    ex.post([w] {
      if (auto s = w.lock()) s->coalesced_apply();
    });
  }

  void coalesced_apply() {
    {
      std::lock_guard l(mu);
      pending = false;
      if (!ready) return;
    }
    auto r = apply();
    if (r) {
      last_error.clear();
      return;
    }
    {
      // One line per distinct failure, not one per retry (a device that never appears).
      const bool same = r.error().message == last_error;
      last_error = r.error().message;
      log(same ? log_level::debug : log_level::warn, r.error().message + "; retrying every " + std::to_string(opts.retry.count()) + " ms");
    }
    {
      std::lock_guard l(mu);
      if (retry) return;
      std::weak_ptr<state> w = weak_from_this();
      retry = ex.post_after(opts.retry, [w] {
        if (auto s = w.lock()) {
          {
            std::lock_guard l(s->mu);
            s->retry = 0;
          }
          s->schedule();
        }
      });
    }
  }

  result<std::map<std::string, int>> links() {
    std::map<std::string, int> out;
    netlink::message m(RTM_GETLINK, NLM_F_DUMP);
    m.header<ifinfomsg>();
    for (int attempt = 0;; ++attempt) {
      out.clear();
      auto r = sock->dump(m, "list links", [&](const nlmsghdr& h) {
        if (h.nlmsg_type != RTM_NEWLINK) return;
        const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(&h));
        std::array<const nlattr*, IFLA_MAX + 1> tb;
        netlink::detail::parse_attrs(h, sizeof(ifinfomsg), tb);
        out.emplace(netlink::detail::attr_str(tb[IFLA_IFNAME]), ifi->ifi_index);
      });
      if (r) return out;
      if (r.error().code != errc::unavailable || attempt == 2) return std::move(r).error();
    }
  }

  result<std::vector<kernel_route>> kernel_routes() {
    std::vector<kernel_route> out;
    for (unsigned char af : {static_cast<unsigned char>(AF_INET), static_cast<unsigned char>(AF_INET6)}) {
      netlink::route_filter f;
      f.table = opts.table;
      for (int attempt = 0;; ++attempt) {
        std::vector<kernel_route> part;
        auto r = sock->dump(netlink::dump_routes_msg(f, af), af == AF_INET ? "list IPv4 routes" : "list IPv6 routes",
                            [&](const nlmsghdr& h) {
                              if (mnl_nlmsg_get_payload_len(&h) < sizeof(rtmsg)) return;
                              const auto* rt = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(&h));
                              std::array<const nlattr*, RTA_MAX + 1> tb;
                              netlink::detail::parse_attrs(h, sizeof(rtmsg), tb);
                              if (netlink::detail::attr_u32(tb[RTA_TABLE], rt->rtm_table) != opts.table) return;
                              if (rt->rtm_type != RTN_UNICAST && rt->rtm_type != RTN_BLACKHOLE &&
                                  rt->rtm_type != RTN_UNREACHABLE && rt->rtm_type != RTN_PROHIBIT)
                                return;
                              if (rt->rtm_flags & RTM_F_CLONED) return;
                              if (auto k = parse(h)) part.push_back(std::move(*k));
                            });
        if (r) {
          out.insert(out.end(), part.begin(), part.end());
          break;
        }
        if (af == AF_INET6 && r.error().code == errc::unsupported) break;
        if (r.error().code != errc::unavailable || attempt == 2) return std::move(r).error();
      }
    }
    return out;
  }

  result<route_table_stats> apply() {
    // The kernel first (I/O, without the lock), then the diff under the lock against the
    // wanted routes in place: copying them all on every apply cost ~250 bytes per route of
    // transient memory and most of the page faults at 100k routes (tests/bench/bgp).
    auto names = links();
    if (!names) return std::move(names).error();
    auto have = kernel_routes();
    if (!have) return std::move(have).error();
    std::map<int, std::string> index_names;
    for (auto& [n, i] : *names) index_names.emplace(i, n);

    std::map<std::pair<ip_prefix, std::uint32_t>, std::pair<const kernel_route*, bool>> ours;  // (dst, metric) -> (route, kept)
    std::set<ip_prefix> foreign;
    for (auto& k : *have) {
      if (k.protocol == opts.protocol) ours.emplace(std::pair(k.dst, k.metric), std::pair(&k, false));
      else foreign.insert(k.dst);
    }
    std::unique_lock want_lock(mu);
    const auto want = winner_ptrs();
    if (!seeded) {
      seeded = true;
      if (hold)
        for (auto& [key, k] : ours)
          if (!want.contains(key.first)) held.insert(key.first);
      if (!held.empty()) log(log_level::info, std::to_string(held.size()) + " route(s) of the last run kept until the routing part has relearned its routes (graceful restart)");
    }

    std::vector<std::string> errors;
    std::set<std::string> now_conflicting;
    std::vector<std::pair<kernel_route, std::uint16_t>> writes;  // route, flags (0: delete)
    auto index_of = [&](const std::string& dev, const route_entry& r) -> std::optional<int> {
      auto it = names->find(dev);
      if (it != names->end()) return it->second;
      errors.push_back(r.to_string() + ": device '" + dev + "' does not exist");
      return std::nullopt;
    };
    for (const auto& [dst, pe] : want) {
      const route_entry& e = *pe.second;
      if (foreign.contains(dst)) {
        now_conflicting.insert(dst.to_string());
        continue;
      }
      kernel_route k;
      k.dst = dst;
      k.type = rtn_of(e.kind);
      k.protocol = opts.protocol;
      k.metric = effective_metric(dst, e.metric);
      k.prefsrc = e.source;
      k.mtu = k.type == RTN_UNICAST ? e.mtu : 0;
      bool ok = true;
      if (k.type == RTN_UNICAST) {
        if (e.next_hops.empty()) {
          if (e.device.empty()) {
            errors.push_back(e.to_string() + ": a unicast route needs next_hops or a device");
            continue;
          }
          kernel_hop h;
          if (auto i = index_of(e.device, e)) h.oif = *i; else ok = false;
          k.hops.push_back(h);
        } else {
          for (const auto& nh : e.next_hops) {
            kernel_hop h;
            if (!unspecified(nh.gateway)) h.gateway = nh.gateway;
            h.onlink = nh.onlink;
            const std::string& dev = nh.device.empty() && e.next_hops.size() == 1 ? e.device : nh.device;
            if (!dev.empty()) {
              if (auto i = index_of(dev, e)) h.oif = *i; else ok = false;
            }
            k.hops.push_back(h);
          }
          std::sort(k.hops.begin(), k.hops.end());
        }
      }
      held.erase(dst);  // wanted again: programmed as usual from now on
      auto it = ours.find({dst, k.metric});
      if (it != ours.end()) it->second.second = true;
      if (!ok) continue;  // leave what is there until the device appears
      if (it == ours.end()) {
        writes.emplace_back(k, NLM_F_CREATE | NLM_F_EXCL);
      } else if (!satisfies(*it->second.first, k)) {
        // An IPv6 multipath route is not replaced in place by the kernel: delete, then add.
        if (dst.family() == ip_family::v6 && (it->second.first->hops.size() > 1 || k.hops.size() > 1)) {
          writes.emplace_back(*it->second.first, 0);
          writes.emplace_back(k, NLM_F_CREATE | NLM_F_EXCL);
        } else {
          writes.emplace_back(k, NLM_F_CREATE | NLM_F_REPLACE);
        }
      }
    }
    for (const auto& [key, k] : ours)
      if (!k.second && !held.contains(key.first)) writes.emplace_back(*k.first, 0);
    want_lock.unlock();
    // Deletions first, so an add that replaces a route of another metric finds room.
    std::stable_partition(writes.begin(), writes.end(), [](const auto& w) { return w.second == 0; });

    route_table_stats st;
    constexpr std::size_t per_batch = 256;
    for (std::size_t from = 0; from < writes.size(); from += per_batch) {
      netlink::request_batch b;
      std::vector<std::size_t> idx;
      for (std::size_t i = from; i < std::min(writes.size(), from + per_batch); ++i) {
        const auto& [k, flags] = writes[i];
        const bool del = flags == 0;
        const bool rep = flags & NLM_F_REPLACE;
        b.add(route_msg(k, opts.table, flags, del ? RTM_DELROUTE : RTM_NEWROUTE),
              std::string(del ? "delete" : rep ? "replace" : "add") + " route " + describe(k, index_names));
        idx.push_back(i);
      }
      ++st.batches;
      auto r = sock->execute(b);
      bool answered = false;
      for (std::size_t j = 0; j < idx.size(); ++j) answered |= b.error_of(j) != 0;
      if (!r && !answered) return std::move(r).error();  // the batch itself failed (send, receive)
      for (std::size_t j = 0; j < idx.size(); ++j) {
        const int err = b.error_of(j);
        const auto flags = writes[idx[j]].second;
        if (err == 0 || (flags == 0 && err == ESRCH)) {
          if (flags == 0) ++st.deleted;
          else if (flags & NLM_F_REPLACE) ++st.replaced;
          else ++st.added;
        } else {
          errors.push_back(netlink::request_batch::describe(b.at(j)).message);
        }
      }
    }

    {
      std::lock_guard l(mu);
      for (const auto& c : now_conflicting)
        if (!conflicts.contains(c))
          log(log_level::warn, c + ": a route of another protocol holds this destination; cnf leaves it alone");
      conflicts = std::move(now_conflicting);
      totals.added += st.added;
      totals.replaced += st.replaced;
      totals.deleted += st.deleted;
      totals.batches += st.batches;
    }
    if (!errors.empty()) {
      std::string m = "route table: " + std::to_string(errors.size()) + " route(s) failed: " + errors.front();
      for (std::size_t i = 1; i < std::min<std::size_t>(errors.size(), 5); ++i) m += "; " + errors[i];
      return error(errc::io, m);
    }
    return st;
  }

  void start_monitor() {
    mnl_socket* nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (!nl) {
      log(log_level::warn, "cannot open a netlink socket for route notifications; no repair of deleted routes");
      return;
    }
    if (mnl_socket_bind(nl, (1u << (RTNLGRP_IPV4_ROUTE - 1)) | (1u << (RTNLGRP_IPV6_ROUTE - 1)), MNL_SOCKET_AUTOPID) < 0) {
      mnl_socket_close(nl);
      log(log_level::warn, "cannot join the route notification groups; no repair of deleted routes");
      return;
    }
    // The fd outlives the mnl_socket wrapper: keep only the fd (closed in stop_monitor).
    monitor_fd = ::dup(mnl_socket_get_fd(nl));
    mnl_socket_close(nl);
    wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    std::weak_ptr<state> w = weak_from_this();
    const int mfd = monitor_fd, wfd = wake_fd;
    const std::uint32_t table = opts.table;
    monitor = std::thread([w, mfd, wfd, table] {
      std::vector<char> buf(65536);
      for (;;) {
        pollfd p[2] = {{mfd, POLLIN, 0}, {wfd, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
          if (errno == EINTR) continue;
          return;
        }
        if (p[1].revents) return;
        bool relevant = false;
        for (;;) {
          ssize_t n = ::recv(mfd, buf.data(), buf.size(), 0);
          if (n < 0) {
            if (errno == ENOBUFS) relevant = true;  // lost notifications: look again
            if (errno == EINTR || errno == ENOBUFS) continue;
            break;
          }
          int len = static_cast<int>(n);
          for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
            if ((nlh->nlmsg_type != RTM_NEWROUTE && nlh->nlmsg_type != RTM_DELROUTE) || mnl_nlmsg_get_payload_len(nlh) < sizeof(rtmsg)) continue;
            const auto* rt = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(nlh));
            std::array<const nlattr*, RTA_MAX + 1> tb;
            netlink::detail::parse_attrs(*nlh, sizeof(rtmsg), tb);
            if (netlink::detail::attr_u32(tb[RTA_TABLE], rt->rtm_table) == table) relevant = true;
          }
        }
        if (relevant)
          if (auto s = w.lock()) s->schedule();
      }
    });
  }

  void stop_monitor() {
    if (monitor.joinable()) {
      std::uint64_t one = 1;
      (void)!::write(wake_fd, &one, sizeof one);
      monitor.join();
    }
    if (monitor_fd >= 0) ::close(monitor_fd);
    if (wake_fd >= 0) ::close(wake_fd);
    monitor_fd = wake_fd = -1;
  }
};

route_table::route_table(executor& ex) : route_table(ex, options{}) {}

route_table::route_table(executor& ex, options o) : s_(std::make_shared<state>(ex, o)) {
  auto sock = netlink::rtnl_socket::open();
  if (!sock) throw error_exception(std::move(sock).error());
  s_->sock.emplace(std::move(*sock));
  if (o.watch_kernel) s_->start_monitor();
}

route_table::~route_table() {
  s_->stop_monitor();
  std::lock_guard l(s_->mu);
  s_->ready = false;
  if (s_->retry) s_->ex.cancel(std::exchange(s_->retry, 0));
}

void route_table::set_owner_priority(std::string_view owner, int priority) {
  {
    std::lock_guard l(s_->mu);
    s_->priority[std::string(owner)] = priority;
  }
  s_->schedule();
}

void route_table::set(std::string_view owner, const route_entry& r) {
  {
    std::lock_guard l(s_->mu);
    auto& m = s_->wanted[std::string(owner)];
    auto dst = r.dst.canonical();
    auto e = r;
    e.dst = dst;
    if (auto it = m.find(dst); it != m.end() && it->second == e) return;
    m.insert_or_assign(dst, std::move(e));
  }
  s_->schedule();
}

void route_table::remove(std::string_view owner, const ip_prefix& dst) {
  {
    std::lock_guard l(s_->mu);
    auto it = s_->wanted.find(owner);
    if (it == s_->wanted.end() || it->second.erase(dst.canonical()) == 0) return;
  }
  s_->schedule();
}

void route_table::replace_all(std::string_view owner, std::vector<route_entry> routes) {
  {
    std::lock_guard l(s_->mu);
    auto& m = s_->wanted[std::string(owner)];
    m.clear();
    for (auto& r : routes) {
      auto dst = r.dst.canonical();
      r.dst = dst;
      m.insert_or_assign(dst, std::move(r));
    }
  }
  s_->schedule();
}

void route_table::set_ready(bool ready) {
  {
    std::lock_guard l(s_->mu);
    s_->ready = ready;
  }
  if (ready) s_->schedule();
}

void route_table::hold_stale(bool hold) {
  std::size_t released = 0;
  {
    std::lock_guard l(s_->mu);
    if (s_->hold == hold) return;
    s_->hold = hold;
    if (!hold) released = std::exchange(s_->held, {}).size();
  }
  if (released) s_->log(log_level::info, std::to_string(released) + " route(s) of the last run not relearned: removing them");
  s_->schedule();
}

std::vector<ip_prefix> route_table::stale() const {
  std::lock_guard l(s_->mu);
  return {s_->held.begin(), s_->held.end()};
}

result<route_table_stats> route_table::apply_now() { return s_->apply(); }

std::vector<route_entry> route_table::desired() const {
  std::lock_guard l(s_->mu);
  std::vector<route_entry> out;
  for (auto& [dst, r] : s_->winners()) out.push_back(r);
  return out;
}

std::vector<std::string> route_table::conflicts() const {
  std::lock_guard l(s_->mu);
  return {s_->conflicts.begin(), s_->conflicts.end()};
}

route_table_stats route_table::totals() const {
  std::lock_guard l(s_->mu);
  return s_->totals;
}

CNF_END_NAMESPACE
