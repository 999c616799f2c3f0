// cnf/netlink/route.hpp — routes: add, delete, list with filters.
//
//   route_spec r;                                  // 10.0.0.5/32 dev cali... scope link proto 80
//   r.dst = ip_prefix(pod_ip, 32); r.oif = host_index; r.scope = RT_SCOPE_LINK;
//   add_route(s, r);
//   route_filter f; f.protocol = cnf_route_protocol;
//   auto ours = list_routes(s, f);                 // what this node's CNI programmed
#pragma once
#include <cnf/netlink/socket.hpp>

#include <optional>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netlink {

/// The route protocol number (rtm_protocol) that marks routes cnf programs, so they can
/// be found and garbage-collected (`ip route show proto 80`). 80 is the value Calico
/// uses for its workload routes; it is outside the numbers iproute2 and the common
/// routing daemons claim (see /etc/iproute2/rt_protos).
inline constexpr unsigned char cnf_route_protocol = 80;  // 0x50

struct route_spec {
  ip_prefix dst;                              // 0.0.0.0/0 or ::/0 for a default route
  std::optional<ip_address> gateway;
  int oif = 0;                                // output interface index (0: none)
  unsigned char scope = RT_SCOPE_UNIVERSE;    // RT_SCOPE_LINK for on-link /32 routes (IPv4)
  unsigned char protocol = cnf_route_protocol;
  std::uint32_t table = RT_TABLE_MAIN;
  unsigned char type = RTN_UNICAST;
  std::optional<std::uint32_t> priority;      // metric

  std::string to_string() const {
    std::string s = dst.to_string();
    if (gateway) s += " via " + gateway->to_string();
    if (oif) s += " dev #" + std::to_string(oif);
    return s;
  }
};

struct route_info {
  ip_prefix dst;
  std::optional<ip_address> gateway;
  std::optional<ip_address> prefsrc;
  int oif = 0;
  std::uint32_t table = 0;
  unsigned char protocol = 0;
  unsigned char scope = 0;
  unsigned char type = 0;
  std::uint32_t priority = 0;
  unsigned flags = 0;                         // RTNH_F_* / RTM_F_*

  ip_family family() const noexcept { return dst.family(); }
};

/// Which routes list_routes returns. Unset fields match anything.
struct route_filter {
  std::optional<ip_family> family;            // both if unset
  std::optional<std::uint32_t> table = RT_TABLE_MAIN;
  std::optional<unsigned char> protocol;
  std::optional<ip_prefix> dst;               // exact prefix
  int oif = 0;                                // 0: any
  bool unicast_only = true;                   // skip local/broadcast/multicast/... entries
};

namespace detail {
inline void fill_rtmsg(message& m, const route_spec& r) {
  auto& rt = m.header<rtmsg>();
  rt.rtm_family = static_cast<unsigned char>(r.dst.address().af());
  rt.rtm_dst_len = static_cast<unsigned char>(r.dst.length());
  rt.rtm_table = r.table < 256 ? static_cast<unsigned char>(r.table) : static_cast<unsigned char>(RT_TABLE_UNSPEC);
  rt.rtm_protocol = r.protocol;
  rt.rtm_scope = r.scope;
  rt.rtm_type = r.type;
  if (r.table >= 256) m.put_u32(RTA_TABLE, r.table);
  if (r.dst.length() > 0) m.put_addr(RTA_DST, r.dst.network());
  if (r.gateway) m.put_addr(RTA_GATEWAY, *r.gateway);
  if (r.oif) m.put_u32(RTA_OIF, static_cast<std::uint32_t>(r.oif));
  if (r.priority) m.put_u32(RTA_PRIORITY, *r.priority);
}
}  // namespace detail

/// RTM_NEWROUTE with NLM_F_CREATE|NLM_F_EXCL (EEXIST if the route exists), or with
/// NLM_F_REPLACE when `replace` is true.
inline message add_route_msg(const route_spec& r, bool replace = false) {
  message m(RTM_NEWROUTE, static_cast<std::uint16_t>(NLM_F_CREATE | (replace ? NLM_F_REPLACE : NLM_F_EXCL)));
  detail::fill_rtmsg(m, r);
  return m;
}

inline message del_route_msg(const route_spec& r) {
  message m(RTM_DELROUTE, 0);
  detail::fill_rtmsg(m, r);
  // Match any protocol/scope/type on delete: the kernel compares only what is non-zero.
  auto* rt = static_cast<rtmsg*>(mnl_nlmsg_get_payload(m.nlh()));
  rt->rtm_protocol = r.protocol;
  rt->rtm_scope = RT_SCOPE_NOWHERE;
  rt->rtm_type = RTN_UNSPEC;
  return m;
}

/// Route dump; with strict checking the kernel filters by table, protocol and oif.
inline message dump_routes_msg(const route_filter& f, unsigned char af) {
  message m(RTM_GETROUTE, NLM_F_DUMP);
  auto& rt = m.header<rtmsg>();
  rt.rtm_family = af;
  if (f.table) {
    if (*f.table < 256) rt.rtm_table = static_cast<unsigned char>(*f.table);
    else m.put_u32(RTA_TABLE, *f.table);
  }
  if (f.protocol) rt.rtm_protocol = *f.protocol;
  if (f.oif) m.put_u32(RTA_OIF, static_cast<std::uint32_t>(f.oif));
  return m;
}

inline std::optional<route_info> parse_route(const nlmsghdr& nlh) {
  if (nlh.nlmsg_type != RTM_NEWROUTE || mnl_nlmsg_get_payload_len(&nlh) < sizeof(rtmsg)) return std::nullopt;
  const auto* rt = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(&nlh));
  auto fam = detail::family_of(rt->rtm_family);
  if (!fam) return std::nullopt;
  std::array<const nlattr*, RTA_MAX + 1> tb;
  detail::parse_attrs(nlh, sizeof(rtmsg), tb);
  route_info r;
  ip_address dst = ip_address::from_bytes(*fam, std::array<std::uint8_t, 16>{}.data());
  detail::attr_addr(tb[RTA_DST], *fam, dst);
  r.dst = ip_prefix(dst, rt->rtm_dst_len);
  ip_address a;
  if (detail::attr_addr(tb[RTA_GATEWAY], *fam, a)) r.gateway = a;
  if (detail::attr_addr(tb[RTA_PREFSRC], *fam, a)) r.prefsrc = a;
  r.oif = static_cast<int>(detail::attr_u32(tb[RTA_OIF]));
  r.table = detail::attr_u32(tb[RTA_TABLE], rt->rtm_table);
  r.protocol = rt->rtm_protocol;
  r.scope = rt->rtm_scope;
  r.type = rt->rtm_type;
  r.priority = detail::attr_u32(tb[RTA_PRIORITY]);
  r.flags = rt->rtm_flags;
  return r;
}

inline bool matches(const route_info& r, const route_filter& f) {
  if (f.family && r.family() != *f.family) return false;
  if (f.table && r.table != *f.table) return false;
  if (f.protocol && r.protocol != *f.protocol) return false;
  if (f.dst && !(r.dst == *f.dst)) return false;
  if (f.oif && r.oif != f.oif) return false;
  if (f.unicast_only && r.type != RTN_UNICAST) return false;
  return true;
}

/// Routes matching `f` (one dump per family asked for).
inline result<std::vector<route_info>> list_routes(rtnl_socket& s, const route_filter& f = {}) {
  std::vector<route_info> out;
  for (unsigned char af : {static_cast<unsigned char>(AF_INET), static_cast<unsigned char>(AF_INET6)}) {
    if (f.family && (*f.family == ip_family::v4) != (af == AF_INET)) continue;
    for (int attempt = 0;; ++attempt) {
      std::vector<route_info> part;
      auto r = s.dump(dump_routes_msg(f, af),
                      std::string("list ") + (af == AF_INET ? "IPv4" : "IPv6") + " routes" +
                          (s.label().empty() ? "" : " in " + s.label()),
                      [&](const nlmsghdr& h) {
                        if (auto ri = parse_route(h); ri && matches(*ri, f)) part.push_back(std::move(*ri));
                      });
      if (r) {
        out.insert(out.end(), part.begin(), part.end());
        break;
      }
      // A kernel built without IPv6 refuses AF_INET6 dumps: that family has no routes.
      if (af == AF_INET6 && !f.family && r.error().code == errc::unsupported) break;
      if (r.error().code != errc::unavailable || attempt == 2) return std::move(r).error();
    }
  }
  return out;
}

inline result<void> add_route(rtnl_socket& s, const route_spec& r, bool replace = false) {
  request_batch b;
  b.add(add_route_msg(r, replace), "add route " + r.to_string() + (s.label().empty() ? "" : " in " + s.label()));
  return s.execute(b);
}

/// Idempotent: ok if no such route exists.
inline result<void> delete_route(rtnl_socket& s, const route_spec& r) {
  request_batch b;
  b.add(del_route_msg(r), "delete route " + r.to_string() + (s.label().empty() ? "" : " in " + s.label()));
  auto res = s.execute(b);
  if (!res && b.error_of(0) == ESRCH) return {};
  return res;
}

}  // namespace netlink
CNF_END_NAMESPACE
