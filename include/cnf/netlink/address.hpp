// cnf/netlink/address.hpp — interface addresses: add, delete, list.
//
//   add_address(s, ifindex, ip_prefix::parse("10.0.0.5/32").value());
//   add_address(s, ifindex, ip_prefix::parse("fd00::5/128").value(), IFA_F_NODAD);
//   auto addrs = list_addresses(s, ifindex);     // kernel-filtered by ifindex
#pragma once
#include <cnf/netlink/socket.hpp>

#include <linux/if_addr.h>

#include <optional>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netlink {

struct address_info {
  int ifindex = 0;
  ip_prefix prefix;              // the local address and its prefix length
  unsigned char scope = 0;       // RT_SCOPE_*
  std::uint32_t flags = 0;       // IFA_F_* (IFA_F_TENTATIVE, IFA_F_NODAD, IFA_F_PERMANENT...)
  std::string label;             // IPv4 only

  bool tentative() const noexcept { return (flags & IFA_F_TENTATIVE) != 0; }
};

/// RTM_NEWADDR with NLM_F_CREATE|NLM_F_REPLACE (idempotent). `flags` are IFA_F_* (for
/// example IFA_F_NODAD for an IPv6 address on a point-to-point veth).
inline message add_address_msg(int ifindex, const ip_prefix& p, std::uint32_t flags = 0) {
  message m(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
  auto& ifa = m.header<ifaddrmsg>();
  ifa.ifa_family = static_cast<unsigned char>(p.address().af());
  ifa.ifa_prefixlen = static_cast<unsigned char>(p.length());
  ifa.ifa_flags = static_cast<unsigned char>(flags & 0xff);
  ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  ifa.ifa_index = static_cast<unsigned>(ifindex);
  m.put_addr(IFA_LOCAL, p.address());
  m.put_addr(IFA_ADDRESS, p.address());
  if (flags > 0xff) m.put_u32(IFA_FLAGS, flags);
  return m;
}

inline message del_address_msg(int ifindex, const ip_prefix& p) {
  message m(RTM_DELADDR, 0);
  auto& ifa = m.header<ifaddrmsg>();
  ifa.ifa_family = static_cast<unsigned char>(p.address().af());
  ifa.ifa_prefixlen = static_cast<unsigned char>(p.length());
  ifa.ifa_index = static_cast<unsigned>(ifindex);
  m.put_addr(IFA_LOCAL, p.address());
  return m;
}

/// Dump of addresses; with strict checking (enabled by rtnl_socket) the kernel filters
/// by ifindex itself.
inline message dump_addresses_msg(int ifindex = 0, std::optional<ip_family> family = std::nullopt) {
  message m(RTM_GETADDR, NLM_F_DUMP);
  auto& ifa = m.header<ifaddrmsg>();
  ifa.ifa_family = family ? static_cast<unsigned char>(*family == ip_family::v4 ? AF_INET : AF_INET6) : AF_UNSPEC;
  ifa.ifa_index = static_cast<unsigned>(ifindex);
  return m;
}

inline std::optional<address_info> parse_address(const nlmsghdr& nlh) {
  if (nlh.nlmsg_type != RTM_NEWADDR || mnl_nlmsg_get_payload_len(&nlh) < sizeof(ifaddrmsg)) return std::nullopt;
  const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(&nlh));
  auto fam = detail::family_of(ifa->ifa_family);
  if (!fam) return std::nullopt;
  std::array<const nlattr*, IFA_MAX + 1> tb;
  detail::parse_attrs(nlh, sizeof(ifaddrmsg), tb);
  address_info a;
  a.ifindex = static_cast<int>(ifa->ifa_index);
  a.scope = ifa->ifa_scope;
  a.flags = detail::attr_u32(tb[IFA_FLAGS], ifa->ifa_flags);
  ip_address addr;
  // IFA_LOCAL is the local address (IPv4, and IPv6 with a peer); otherwise IFA_ADDRESS.
  if (!detail::attr_addr(tb[IFA_LOCAL], *fam, addr) && !detail::attr_addr(tb[IFA_ADDRESS], *fam, addr))
    return std::nullopt;
  a.prefix = ip_prefix(addr, ifa->ifa_prefixlen);
  a.label = detail::attr_str(tb[IFA_LABEL]);
  return a;
}

inline result<void> add_address(rtnl_socket& s, int ifindex, const ip_prefix& p, std::uint32_t flags = 0) {
  request_batch b;
  b.add(add_address_msg(ifindex, p, flags), "add address " + p.to_string() + " to interface #" + std::to_string(ifindex) + (s.label().empty() ? "" : " in " + s.label()));
  return s.execute(b);
}

/// Idempotent: ok if the address is not there.
inline result<void> delete_address(rtnl_socket& s, int ifindex, const ip_prefix& p) {
  request_batch b;
  b.add(del_address_msg(ifindex, p), "delete address " + p.to_string() + " from interface #" + std::to_string(ifindex) + (s.label().empty() ? "" : " in " + s.label()));
  auto r = s.execute(b);
  if (!r && b.error_of(0) == EADDRNOTAVAIL) return {};
  return r;
}

/// Addresses of one interface (all interfaces if ifindex is 0), optionally one family.
inline result<std::vector<address_info>> list_addresses(rtnl_socket& s, int ifindex = 0,
                                                        std::optional<ip_family> family = std::nullopt) {
  for (int attempt = 0;; ++attempt) {
    std::vector<address_info> out;
    auto r = s.dump(dump_addresses_msg(ifindex, family),
                    "list addresses" + (ifindex ? " of interface #" + std::to_string(ifindex) : std::string()) +
                        (s.label().empty() ? "" : " in " + s.label()),
                    [&](const nlmsghdr& h) {
                      auto a = parse_address(h);
                      if (!a) return;
                      if (ifindex && a->ifindex != ifindex) return;       // in case the kernel did not filter
                      if (family && a->prefix.family() != *family) return;
                      out.push_back(std::move(*a));
                    });
    if (r) return out;
    if (r.error().code != errc::unavailable || attempt == 2) return std::move(r).error();
  }
}

}  // namespace netlink
CNF_END_NAMESPACE
