// cnf/netlink/link.hpp — links: veth creation across namespaces, up/down, delete, read-back.
//
//   auto s = rtnl_socket::open().value();
//   auto l = get_link(s, "cali1234567890a");     // index, name, mac, mtu, flags, kind, peer
//   auto stale = list_links(s, "cali", "veth");  // GC: host-side leftovers
//   delete_link(s, "cali1234567890a");           // ok if already gone
//
// The *_msg functions build requests for a request_batch (several in one sendmsg); the
// plain functions are one-request conveniences.
#pragma once
#include <cnf/netlink/socket.hpp>

#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/veth.h>
#include <net/if_arp.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netlink {

/// What the kernel says about one link.
struct link_info {
  int index = 0;
  std::string name;
  std::optional<mac_address> mac;
  unsigned mtu = 0;
  unsigned flags = 0;               // IFF_* (IFF_UP, IFF_LOWER_UP, ...)
  unsigned char operstate = 0;      // IF_OPER_*
  std::string kind;                 // "veth", "vxlan", ... ; empty for physical devices
  int link_index = 0;               // IFLA_LINK; for a veth: the peer's ifindex in its own netns
  std::optional<int> link_netnsid;  // set when that peer lives in another namespace

  bool up() const noexcept { return (flags & IFF_UP) != 0; }
  bool lower_up() const noexcept { return (flags & IFF_LOWER_UP) != 0; }
};

/// Checks a Linux interface name: 1..15 bytes, no '/', ':' or whitespace, not "." or "..".
inline result<void> validate_ifname(std::string_view name) {
  auto bad = [&](const char* why) {
    return error(errc::invalid, "invalid interface name '" + std::string(name) + "': " + why);
  };
  if (name.empty()) return bad("empty");
  if (name.size() >= IFNAMSIZ) return bad("longer than 15 characters");
  if (name == "." || name == "..") return bad("reserved");
  for (char c : name)
    if (c == '/' || c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\0' || c == '%')
      return bad("contains '/', ':', '%', NUL or whitespace");
  return {};
}

namespace detail {
inline void put_ext_mask(message& m) { m.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS); }
inline std::string where(const rtnl_socket& s) {
  return s.label().empty() ? std::string() : " in " + s.label();
}
}  // namespace detail

// ---- request builders ------------------------------------------------------------------

inline message get_link_msg(std::string_view name) {
  message m(RTM_GETLINK, 0);
  m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
  m.put_str(IFLA_IFNAME, name);
  detail::put_ext_mask(m);
  return m;
}
inline message get_link_msg(int index) {
  message m(RTM_GETLINK, 0);
  auto& ifi = m.header<ifinfomsg>();
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = index;
  detail::put_ext_mask(m);
  return m;
}
/// Dump of all links; with `kind` set the kernel returns only links of that kind.
inline message dump_links_msg(std::string_view kind = {}) {
  message m(RTM_GETLINK, NLM_F_DUMP);
  m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
  detail::put_ext_mask(m);
  if (!kind.empty()) {
    auto* li = m.begin_nest(IFLA_LINKINFO);
    m.put_str(IFLA_INFO_KIND, kind);
    m.end_nest(li);
  }
  return m;
}

/// Sets IFF_UP (or clears it). By index...
inline message set_link_up_msg(int index, bool up = true) {
  message m(RTM_NEWLINK, 0);
  auto& ifi = m.header<ifinfomsg>();
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = index;
  ifi.ifi_change = IFF_UP;
  ifi.ifi_flags = up ? IFF_UP : 0;
  return m;
}
/// ... or by name (usable in the same batch that creates the link).
inline message set_link_up_msg(std::string_view name, bool up = true) {
  message m(RTM_NEWLINK, 0);
  auto& ifi = m.header<ifinfomsg>();
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_change = IFF_UP;
  ifi.ifi_flags = up ? IFF_UP : 0;
  m.put_str(IFLA_IFNAME, name);
  return m;
}
inline message del_link_msg(std::string_view name) {
  message m(RTM_DELLINK, 0);
  m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
  m.put_str(IFLA_IFNAME, name);
  return m;
}
inline message del_link_msg(int index) {
  message m(RTM_DELLINK, 0);
  auto& ifi = m.header<ifinfomsg>();
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = index;
  return m;
}

/// A veth pair: `name` in the namespace of the socket that sends it, the peer in
/// `peer_netns_fd` (or the same namespace when -1), created by one RTM_NEWLINK: nothing
/// transient appears in the first namespace.
struct veth_spec {
  std::string name;
  std::optional<mac_address> mac;
  unsigned mtu = 0;                   // 0: kernel default
  std::string peer_name;
  std::optional<mac_address> peer_mac;
  unsigned peer_mtu = 0;              // 0: same as mtu
  int peer_netns_fd = -1;
  unsigned queues = 0;                // TX and RX queues of both ends; 0: kernel default
};

/// RTM_NEWLINK with NLM_F_CREATE|NLM_F_EXCL: fails with EEXIST if either name is taken in
/// its namespace, and then creates nothing.
inline message new_veth_msg(const veth_spec& v) {
  message m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
  m.put_str(IFLA_IFNAME, v.name);
  if (v.mac) m.put(IFLA_ADDRESS, v.mac->bytes.data(), 6);
  if (v.mtu) m.put_u32(IFLA_MTU, v.mtu);
  if (v.queues) {
    m.put_u32(IFLA_NUM_TX_QUEUES, v.queues);
    m.put_u32(IFLA_NUM_RX_QUEUES, v.queues);
  }
  auto* li = m.begin_nest(IFLA_LINKINFO);
  m.put_str(IFLA_INFO_KIND, "veth");
  auto* data = m.begin_nest(IFLA_INFO_DATA);
  auto* peer = m.begin_nest(VETH_INFO_PEER);
  // The peer's attributes follow its own ifinfomsg inside VETH_INFO_PEER.
  auto* pifi = static_cast<ifinfomsg*>(m.put_raw(nullptr, sizeof(ifinfomsg)));
  pifi->ifi_family = AF_UNSPEC;
  m.put_str(IFLA_IFNAME, v.peer_name);
  if (v.peer_mac) m.put(IFLA_ADDRESS, v.peer_mac->bytes.data(), 6);
  if (unsigned pm = v.peer_mtu ? v.peer_mtu : v.mtu) m.put_u32(IFLA_MTU, pm);
  if (v.queues) {
    m.put_u32(IFLA_NUM_TX_QUEUES, v.queues);
    m.put_u32(IFLA_NUM_RX_QUEUES, v.queues);
  }
  if (v.peer_netns_fd >= 0) m.put_u32(IFLA_NET_NS_FD, static_cast<std::uint32_t>(v.peer_netns_fd));
  m.end_nest(peer);
  m.end_nest(data);
  m.end_nest(li);
  return m;
}

// ---- parsing -----------------------------------------------------------------------------

/// Decodes an RTM_NEWLINK message; nullopt if it is something else or malformed.
inline std::optional<link_info> parse_link(const nlmsghdr& nlh) {
  if (nlh.nlmsg_type != RTM_NEWLINK || mnl_nlmsg_get_payload_len(&nlh) < sizeof(ifinfomsg)) return std::nullopt;
  const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(&nlh));
  std::array<const nlattr*, IFLA_MAX + 1> tb;
  detail::parse_attrs(nlh, sizeof(ifinfomsg), tb);
  link_info l;
  l.index = ifi->ifi_index;
  l.flags = ifi->ifi_flags;
  l.name = detail::attr_str(tb[IFLA_IFNAME]);
  if (tb[IFLA_ADDRESS] && mnl_attr_get_payload_len(tb[IFLA_ADDRESS]) == 6) {
    mac_address mac;
    std::memcpy(mac.bytes.data(), mnl_attr_get_payload(tb[IFLA_ADDRESS]), 6);
    l.mac = mac;
  }
  l.mtu = detail::attr_u32(tb[IFLA_MTU]);
  if (tb[IFLA_OPERSTATE]) l.operstate = mnl_attr_get_u8(tb[IFLA_OPERSTATE]);
  l.link_index = static_cast<int>(detail::attr_u32(tb[IFLA_LINK]));
  if (tb[IFLA_LINK_NETNSID]) l.link_netnsid = static_cast<int>(detail::attr_u32(tb[IFLA_LINK_NETNSID]));
  if (tb[IFLA_LINKINFO]) {
    std::array<const nlattr*, IFLA_INFO_MAX + 1> li;
    detail::parse_nested(tb[IFLA_LINKINFO], li);
    l.kind = detail::attr_str(li[IFLA_INFO_KIND]);
  }
  return l;
}

// ---- one-request conveniences ---------------------------------------------------------

/// The link called `name`; errc::not_found if there is none.
inline result<link_info> get_link(rtnl_socket& s, std::string_view name) {
  if (auto v = validate_ifname(name); !v) return std::move(v).error();
  std::optional<link_info> out;
  request_batch b;
  b.add(get_link_msg(name), "get interface " + std::string(name) + detail::where(s),
        [&](const nlmsghdr& h) { if (auto l = parse_link(h)) out = std::move(l); });
  if (auto r = s.execute(b); !r) {
    if (b.error_of(0) == ENODEV)
      return error(errc::not_found, "interface " + std::string(name) + " does not exist" + detail::where(s));
    return std::move(r).error();
  }
  if (!out) return error(errc::io, "get interface " + std::string(name) + detail::where(s) + ": no reply");
  return std::move(*out);
}

inline result<link_info> get_link(rtnl_socket& s, int index) {
  std::optional<link_info> out;
  request_batch b;
  b.add(get_link_msg(index), "get interface #" + std::to_string(index) + detail::where(s),
        [&](const nlmsghdr& h) { if (auto l = parse_link(h)) out = std::move(l); });
  if (auto r = s.execute(b); !r) {
    if (b.error_of(0) == ENODEV)
      return error(errc::not_found, "interface #" + std::to_string(index) + " does not exist" + detail::where(s));
    return std::move(r).error();
  }
  if (!out) return error(errc::io, "get interface #" + std::to_string(index) + detail::where(s) + ": no reply");
  return std::move(*out);
}

/// All links whose name starts with `prefix` (all links if empty), optionally only of
/// one kind ("veth"). Retries a dump interrupted by concurrent changes.
inline result<std::vector<link_info>> list_links(rtnl_socket& s, std::string_view prefix = {},
                                                 std::string_view kind = {}) {
  for (int attempt = 0;; ++attempt) {
    std::vector<link_info> out;
    auto r = s.dump(dump_links_msg(kind), "list interfaces" + detail::where(s), [&](const nlmsghdr& h) {
      auto l = parse_link(h);
      if (l && l->name.compare(0, prefix.size(), prefix) == 0) out.push_back(std::move(*l));
    });
    if (r) return out;
    if (r.error().code != errc::unavailable || attempt == 2) return std::move(r).error();
  }
}

inline result<void> set_link_up(rtnl_socket& s, int index, bool up = true) {
  request_batch b;
  b.add(set_link_up_msg(index, up), std::string("set interface #") + std::to_string(index) + (up ? " up" : " down") + detail::where(s));
  return s.execute(b);
}

/// Deletes the link called `name`. Idempotent: ok if it does not exist. (Deleting either
/// end of a veth removes both; the kernel waits for an RCU grace period, ~10-20 ms.)
inline result<void> delete_link(rtnl_socket& s, std::string_view name) {
  if (auto v = validate_ifname(name); !v) return std::move(v).error();
  request_batch b;
  b.add(del_link_msg(name), "delete interface " + std::string(name) + detail::where(s));
  auto r = s.execute(b);
  if (!r && b.error_of(0) == ENODEV) return {};
  return r;
}

}  // namespace netlink
CNF_END_NAMESPACE
