// cnf/netlink/vxlan.hpp — VXLAN devices, permanent neighbour entries and FDB entries.
//
//   vxlan_spec v{.name = "vxlan.calico", .vni = 4096, .port = 4789, .local = node_ip, .link_index = eth0};
//   request_batch b;
//   b.add(new_vxlan_msg(v), "create vxlan.calico");
//   b.add(set_neigh_msg(idx, tunnel_ip, mac), "neighbour 10.244.1.0 lladdr 66:..");  // tunnel address -> MAC
//   b.add(set_fdb_msg(idx, mac, node_ip), "fdb 66:.. dst 192.168.1.2");               // MAC -> node address
//   sock.execute(b);
//   auto all = list_neighbours(sock, idx);   // both kinds, read back
//
// Neighbour and FDB requests carry NLM_F_CREATE|NLM_F_REPLACE: sending one twice is not an
// error, and a changed MAC or node address replaces the old entry in place.
#pragma once
#include <cnf/netlink/link.hpp>

#include <linux/if_link.h>
#include <linux/neighbour.h>

#include <arpa/inet.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netlink {

/// A VXLAN device (`ip link add NAME type vxlan id VNI dstport PORT local ADDR dev LINK nolearning`).
struct vxlan_spec {
  std::string name;
  std::uint32_t vni = 0;
  std::uint16_t port = 4789;
  std::optional<ip_address> local;  ///< source address of the outer packets
  int link_index = 0;               ///< the uplink (0: none)
  bool learning = false;
  unsigned mtu = 0;                 ///< 0: kernel default
  std::optional<mac_address> mac;
  friend bool operator==(const vxlan_spec&, const vxlan_spec&) = default;
};

/// What the kernel says about a VXLAN device (from RTM_NEWLINK's IFLA_INFO_DATA).
struct vxlan_info {
  link_info link;
  std::uint32_t vni = 0;
  std::uint16_t port = 0;
  std::optional<ip_address> local;
  int link_index = 0;
  bool learning = true;
};

/// One neighbour (family AF_INET/AF_INET6) or FDB (AF_BRIDGE) entry.
struct neigh_info {
  int ifindex = 0;
  bool fdb = false;
  std::optional<ip_address> dst;    ///< neighbour: the IP; FDB: the remote VTEP
  std::optional<mac_address> mac;
  std::uint16_t state = 0;          ///< NUD_*
  std::uint8_t flags = 0;           ///< NTF_*
  bool permanent() const noexcept { return (state & NUD_PERMANENT) != 0; }
};

// ---- request builders ------------------------------------------------------------------

/// RTM_NEWLINK NLM_F_CREATE|NLM_F_EXCL: EEXIST if the name is taken (nothing changes then).
inline message new_vxlan_msg(const vxlan_spec& v) {
  message m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
  m.put_str(IFLA_IFNAME, v.name);
  if (v.mtu) m.put_u32(IFLA_MTU, v.mtu);
  if (v.mac) m.put(IFLA_ADDRESS, v.mac->bytes.data(), 6);
  auto* li = m.begin_nest(IFLA_LINKINFO);
  m.put_str(IFLA_INFO_KIND, "vxlan");
  auto* data = m.begin_nest(IFLA_INFO_DATA);
  m.put_u32(IFLA_VXLAN_ID, v.vni);
  if (v.local) m.put_addr(v.local->is_v4() ? IFLA_VXLAN_LOCAL : IFLA_VXLAN_LOCAL6, *v.local);
  if (v.link_index) m.put_u32(IFLA_VXLAN_LINK, static_cast<std::uint32_t>(v.link_index));
  m.put_u16(IFLA_VXLAN_PORT, htons(v.port));  // the kernel wants it in network byte order
  m.put_u8(IFLA_VXLAN_LEARNING, v.learning ? 1 : 0);
  m.end_nest(data);
  m.end_nest(li);
  return m;
}

/// Changes a device's MTU and/or MAC in place (RTM_NEWLINK on its index, no create).
inline message set_link_mtu_mac_msg(int index, unsigned mtu, const std::optional<mac_address>& mac) {
  message m(RTM_NEWLINK, 0);
  auto& ifi = m.header<ifinfomsg>();
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = index;
  if (mtu) m.put_u32(IFLA_MTU, mtu);
  if (mac) m.put(IFLA_ADDRESS, mac->bytes.data(), 6);
  return m;
}

namespace detail {
inline message neigh_msg(std::uint16_t type, std::uint16_t flags, unsigned char family, int ifindex, std::uint8_t ntf) {
  message m(type, flags);
  auto& nd = m.header<ndmsg>();
  nd.ndm_family = family;
  nd.ndm_ifindex = ifindex;
  nd.ndm_state = NUD_PERMANENT;
  nd.ndm_flags = ntf;
  return m;
}
}  // namespace detail

/// A permanent neighbour entry on `ifindex`: `ip` answers at `mac` (`ip neigh replace IP lladdr MAC dev D nud permanent`).
inline message set_neigh_msg(int ifindex, const ip_address& ip, const mac_address& mac) {
  auto m = detail::neigh_msg(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, static_cast<unsigned char>(ip.af()), ifindex, 0);
  m.put_addr(NDA_DST, ip);
  m.put(NDA_LLADDR, mac.bytes.data(), 6);
  return m;
}
inline message del_neigh_msg(int ifindex, const ip_address& ip) {
  auto m = detail::neigh_msg(RTM_DELNEIGH, 0, static_cast<unsigned char>(ip.af()), ifindex, 0);
  m.put_addr(NDA_DST, ip);
  return m;
}
/// A permanent FDB entry on a VXLAN device: frames to `mac` go to the VTEP at `dst`
/// (`bridge fdb replace MAC dev D dst DST self permanent`).
inline message set_fdb_msg(int ifindex, const mac_address& mac, const ip_address& dst) {
  auto m = detail::neigh_msg(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, AF_BRIDGE, ifindex, NTF_SELF);
  m.put(NDA_LLADDR, mac.bytes.data(), 6);
  m.put_addr(NDA_DST, dst);
  return m;
}
inline message del_fdb_msg(int ifindex, const mac_address& mac, const ip_address& dst) {
  auto m = detail::neigh_msg(RTM_DELNEIGH, 0, AF_BRIDGE, ifindex, NTF_SELF);
  m.put(NDA_LLADDR, mac.bytes.data(), 6);
  m.put_addr(NDA_DST, dst);
  return m;
}
/// Dump of every neighbour (AF_INET, AF_INET6) or FDB (AF_BRIDGE) entry of the namespace
/// (strict dump checking refuses an ifindex in the header; callers filter by device).
inline message dump_neigh_msg(unsigned char family) {
  message m(RTM_GETNEIGH, NLM_F_DUMP);
  m.header<ndmsg>().ndm_family = family;
  return m;
}

// ---- parsing -----------------------------------------------------------------------------

inline std::optional<neigh_info> parse_neigh(const nlmsghdr& nlh) {
  if (nlh.nlmsg_type != RTM_NEWNEIGH || mnl_nlmsg_get_payload_len(&nlh) < sizeof(ndmsg)) return std::nullopt;
  const auto* nd = static_cast<const ndmsg*>(mnl_nlmsg_get_payload(&nlh));
  std::array<const nlattr*, NDA_MAX + 1> tb;
  detail::parse_attrs(nlh, sizeof(ndmsg), tb);
  neigh_info n;
  n.ifindex = nd->ndm_ifindex;
  n.fdb = nd->ndm_family == AF_BRIDGE;
  n.state = nd->ndm_state;
  n.flags = nd->ndm_flags;
  if (tb[NDA_DST]) {
    ip_address a;
    if (detail::attr_addr(tb[NDA_DST], ip_family::v4, a) || detail::attr_addr(tb[NDA_DST], ip_family::v6, a)) n.dst = a;
  }
  if (tb[NDA_LLADDR] && mnl_attr_get_payload_len(tb[NDA_LLADDR]) == 6) {
    mac_address mac;
    std::memcpy(mac.bytes.data(), mnl_attr_get_payload(tb[NDA_LLADDR]), 6);
    n.mac = mac;
  }
  return n;
}

inline std::optional<vxlan_info> parse_vxlan(const nlmsghdr& nlh) {
  auto l = parse_link(nlh);
  if (!l || l->kind != "vxlan") return std::nullopt;
  vxlan_info v;
  v.link = *l;
  std::array<const nlattr*, IFLA_MAX + 1> tb;
  detail::parse_attrs(nlh, sizeof(ifinfomsg), tb);
  std::array<const nlattr*, IFLA_INFO_MAX + 1> li;
  detail::parse_nested(tb[IFLA_LINKINFO], li);
  std::array<const nlattr*, IFLA_VXLAN_MAX + 1> vx;
  detail::parse_nested(li[IFLA_INFO_DATA], vx);
  v.vni = detail::attr_u32(vx[IFLA_VXLAN_ID]);
  if (vx[IFLA_VXLAN_PORT] && mnl_attr_get_payload_len(vx[IFLA_VXLAN_PORT]) >= 2) v.port = ntohs(mnl_attr_get_u16(vx[IFLA_VXLAN_PORT]));
  ip_address a;
  if (detail::attr_addr(vx[IFLA_VXLAN_LOCAL], ip_family::v4, a) || detail::attr_addr(vx[IFLA_VXLAN_LOCAL6], ip_family::v6, a)) v.local = a;
  v.link_index = static_cast<int>(detail::attr_u32(vx[IFLA_VXLAN_LINK]));
  if (vx[IFLA_VXLAN_LEARNING]) v.learning = mnl_attr_get_u8(vx[IFLA_VXLAN_LEARNING]) != 0;
  return v;
}

// ---- one-request conveniences ---------------------------------------------------------

/// Every VXLAN device of the namespace.
inline result<std::vector<vxlan_info>> list_vxlans(rtnl_socket& s) {
  for (int attempt = 0;; ++attempt) {
    std::vector<vxlan_info> out;
    auto r = s.dump(dump_links_msg("vxlan"), "list vxlan devices" + detail::where(s), [&](const nlmsghdr& h) {
      if (auto v = parse_vxlan(h)) out.push_back(std::move(*v));
    });
    if (r) return out;
    if (r.error().code != errc::unavailable || attempt == 2) return std::move(r).error();
  }
}

/// The neighbour (family AF_INET/AF_INET6) or FDB (AF_BRIDGE) entries of device `ifindex`.
inline result<std::vector<neigh_info>> list_neighbours(rtnl_socket& s, unsigned char family, int ifindex) {
  for (int attempt = 0;; ++attempt) {
    std::vector<neigh_info> out;
    auto r = s.dump(dump_neigh_msg(family), "list neighbours" + detail::where(s), [&](const nlmsghdr& h) {
      if (auto n = parse_neigh(h); n && n->ifindex == ifindex) out.push_back(std::move(*n));
    });
    if (r) return out;
    if (r.error().code != errc::unavailable || attempt == 2) return std::move(r).error();
  }
}

}  // namespace netlink
CNF_END_NAMESPACE
