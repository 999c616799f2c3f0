// cnf/netlink/netconf.hpp — a namespace's per-family settings read through rtnetlink
// (RTM_GETNETCONF) instead of /proc/sys.
//
//   auto f = get_forwarding(pod_socket, AF_INET);   // net.ipv4.ip_forward of that netns
//
// Why not /proc/sys: a namespace's first lookup below /proc/sys/net/ipv4 walks a dcache
// hash chain that holds an entry for every other namespace that has looked there (see
// sysctl.hpp), so in a fresh pod namespace on a node with many pods even reading one
// sysctl costs time in proportion to the pods. The socket answers in constant time.
#pragma once
#include <cnf/netlink/socket.hpp>

#include <linux/netconf.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <array>
#include <optional>
#include <string>

CNF_BEGIN_NAMESPACE
namespace netlink {

/// RTM_GETNETCONF for one interface (ifindex > 0) or the whole namespace
/// (NETCONFA_IFINDEX_ALL, the "all" settings).
inline message get_netconf_msg(unsigned char family, int ifindex) {
  message m(RTM_GETNETCONF, 0);
  m.header<netconfmsg>().ncm_family = family;
  m.put_s32(NETCONFA_IFINDEX, ifindex);
  return m;
}

/// Forwarding of the namespace `s` is bound to (family AF_INET: net.ipv4.ip_forward;
/// AF_INET6: net.ipv6.conf.all.forwarding), or of one interface.
inline result<bool> get_forwarding(rtnl_socket& s, unsigned char family, int ifindex = NETCONFA_IFINDEX_ALL) {
  if (family != AF_INET && family != AF_INET6) return error(errc::invalid, "get_forwarding: family must be AF_INET or AF_INET6");
  std::optional<bool> out;
  const std::string what = std::string(family == AF_INET ? "IPv4" : "IPv6") + " forwarding of " +
                           (ifindex == NETCONFA_IFINDEX_ALL ? std::string("the namespace") : "interface #" + std::to_string(ifindex)) +
                           detail::where(s);
  request_batch b;
  b.add(get_netconf_msg(family, ifindex), "get " + what, [&](const nlmsghdr& h) {
    if (h.nlmsg_type != RTM_NEWNETCONF) return;
    std::array<const nlattr*, NETCONFA_MAX + 1> tb{};
    detail::parse_attrs(h, sizeof(netconfmsg), tb);
    if (tb[NETCONFA_FORWARDING] && mnl_attr_get_payload_len(tb[NETCONFA_FORWARDING]) >= 4)
      out = mnl_attr_get_u32(tb[NETCONFA_FORWARDING]) != 0;
  });
  if (auto r = s.execute(b); !r) return std::move(r).error();
  if (!out) return error(errc::io, "get " + what + ": no forwarding in the reply");
  return *out;
}

}  // namespace netlink
CNF_END_NAMESPACE
