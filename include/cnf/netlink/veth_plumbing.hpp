// cnf/netlink/veth_plumbing.hpp — the CNI ADD/DEL/CHECK dataplane for a pod, with
// Calico's semantics, entirely over netlink and /proc/sys (no `ip` processes).
//
//   pod_plumbing_request req;
//   req.netns_path   = "/var/run/netns/cni-1234";                     // from CNI_NETNS
//   req.pod_ifname   = "eth0";                                        // CNI_IFNAME
//   req.host_ifname  = host_veth_name("cali", "default", "web-0").value();
//   req.addresses    = {ip_prefix::parse("10.244.1.7/32").value()};   // from IPAM
//   req.mtu          = 1450;
//   auto res = plumb_pod(req);      // host ifindex, pod ifindex, pod MAC; rolled back on error
//   auto problems = check_pod(req); // one cnf::error per mismatch, empty if all is well
//   unplumb_pod(req.host_ifname);   // idempotent
//
// What plumb_pod builds (the calling thread's namespace is the "node" namespace):
//   node:  veth <host_ifname> with MAC ee:ee:ee:ee:ee:ee, up, MTU as requested;
//          sysctls on it: ipv4 proxy_arp=1, forwarding=1, route_localnet=1,
//          neigh proxy_delay=0; ipv6 accept_dad=0, disable_ipv6=0, addr_gen_mode=eui64,
//          proxy_ndp=1, forwarding=1; accept_ra=0;
//          a route per pod address (/32 scope link, /128) dev <host_ifname>,
//          protocol cnf_route_protocol (80).
//   pod:   <pod_ifname> (created there directly: one RTM_NEWLINK with IFLA_NET_NS_FD for
//          the peer, nothing transient in the node namespace), up, MTU as requested;
//          addresses /32 and /128 (IFA_F_NODAD); IPv4: 169.254.1.1 dev eth0 scope link,
//          then each route (default 0.0.0.0/0) via 169.254.1.1 dev eth0; IPv6: each route
//          (default ::/0) via fe80::ecee:eeff:feee:eeee dev eth0.
//
// The IPv6 gateway is the host veth's own link-local address: the kernel derives it by
// EUI-64 from the MAC ee:ee:ee:ee:ee:ee when the link gets carrier. For it to answer
// neighbour solicitations at once, the host side must do no DAD (accept_dad=0, written
// before the link goes up), must not have IPv6 disabled, and must generate its address
// by EUI-64 whatever the node's default addr_gen_mode is; all three are set above. The
// pod side's own link-local gets accept_dad=0 too (pod netns sysctl), as Calico does.
//
// Cost: 4 netlink round trips (node: create+read back; node: up+host routes; pod: its
// IPv4 forwarding; pod: up+addresses+routes+read back), about 12 small /proc/sys writes
// (the node's through directories kept open, see sysctl.hpp), and 2 setns() calls.
// plumb_pod is begin_plumb_pod (the veth, the sysctls, a socket in the pod namespace: no
// address needed) followed by finish_plumb_pod (routes, addresses, up). A CNI plugin can
// run the first half on another thread while its IPAM assigns the addresses, which takes
// the veth creation (the largest kernel cost here) off its critical path.
// The pod-side ifindex is read from the host side's IFLA_LINK (a veth's peer index in
// the peer's own namespace) and confirmed by the read-back in the pod namespace.
//
// Threads: every function here must run on a thread whose network namespace is the node
// namespace; plumb_pod and check_pod briefly move that thread into the pod namespace
// (netns_guard) and always bring it back.
#pragma once
#include <cnf/netlink/address.hpp>
#include <cnf/netlink/link.hpp>
#include <cnf/netlink/netconf.hpp>
#include <cnf/netlink/netns.hpp>
#include <cnf/netlink/route.hpp>
#include <cnf/netlink/sha1.hpp>
#include <cnf/netlink/sysctl.hpp>
#include <cnf/netlink/socket.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netlink {

/// The host side's MAC: the same on every host veth (Calico's choice; the pod never needs
/// to learn a per-pod gateway MAC).
inline mac_address host_side_mac() { return mac_address{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}}; }
/// The pod's IPv4 next hop: a link-local address nobody owns; proxy ARP on the host veth
/// answers for it.
inline ip_address pod_gateway_v4() { return ip_address::v4(0xA9FE0101u); }  // 169.254.1.1
/// The pod's IPv6 next hop: the host veth's EUI-64 link-local address (from host_side_mac).
inline ip_address pod_gateway_v6() {
  const std::uint8_t b[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0xec, 0xee, 0xee, 0xff, 0xfe, 0xee, 0xee, 0xee};
  return ip_address::from_bytes(ip_family::v6, b);
}

/// Host-side interface name: prefix + the first 11 hex digits of SHA-1("<ns>.<pod>"),
/// as Calico names its workload interfaces (so "cali" gives 15 characters). SHA-1 is the
/// small implementation in sha1.hpp (no libcrypto dependency).
inline result<std::string> host_veth_name(std::string_view prefix, std::string_view k8s_namespace,
                                          std::string_view pod_name) {
  if (prefix.empty() || prefix.size() > 4)
    return error(errc::invalid, "host interface prefix '" + std::string(prefix) +
                                    "' must be 1 to 4 characters (names are at most 15 with 11 hash digits)");
  std::string key = std::string(k8s_namespace) + "." + std::string(pod_name);
  std::string name = std::string(prefix) + detail::sha1_hex(key).substr(0, 11);
  if (auto v = validate_ifname(name); !v) return std::move(v).error();
  return name;
}

struct pod_plumbing_request {
  std::string netns_path;                 // the pod's netns (/var/run/netns/X or /proc/PID/ns/net)
  std::string pod_ifname = "eth0";
  std::string host_ifname;                // see host_veth_name
  std::vector<ip_prefix> addresses;       // pod addresses; configured as /32 or /128
  std::vector<ip_prefix> routes;          // pod routes via the gateway; empty: default route per family
  unsigned mtu = 0;                       // both ends; 0: kernel default (1500)
  unsigned queues = 0;                    // TX/RX queues of both ends; 0: kernel default (one per
                                          // CPU allocated, cut to one real queue per end, each cut
                                          // waiting for an RCU grace period under the RTNL lock);
                                          // 1 gives the same real queues without those waits
  std::optional<mac_address> pod_mac;     // empty: the kernel picks a random one
  bool pod_ip_forwarding = false;         // ip_forward / conf.all.forwarding inside the pod
  bool host_routes = true;                // false: leave the node routes to someone else
  unsigned char route_protocol = cnf_route_protocol;
};

struct pod_plumbing_result {
  std::string host_ifname;
  int host_ifindex = 0;
  mac_address host_mac;
  std::string pod_ifname;
  int pod_ifindex = 0;                    // in the pod namespace
  mac_address pod_mac;
  std::vector<ip_prefix> addresses;       // as configured (/32, /128)
  std::chrono::microseconds elapsed{0};
  unsigned round_trips = 0;               // netlink sendmsg calls, both namespaces
};

namespace detail {

inline ip_prefix host_prefix(const ip_prefix& p) { return ip_prefix(p.address(), p.address().bits()); }

struct family_mask {
  bool v4 = false, v6 = false;
};
inline family_mask families(const std::vector<ip_prefix>& addrs) {
  family_mask m;
  for (const auto& a : addrs) (a.family() == ip_family::v4 ? m.v4 : m.v6) = true;
  return m;
}

inline std::vector<ip_prefix> pod_routes(const pod_plumbing_request& r, family_mask fm) {
  if (!r.routes.empty()) return r.routes;
  std::vector<ip_prefix> out;
  if (fm.v4) out.emplace_back(ip_address::v4(0), 0);
  if (fm.v6) {
    std::uint8_t z[16] = {};
    out.emplace_back(ip_address::from_bytes(ip_family::v6, z), 0);
  }
  return out;
}

inline result<void> validate(const pod_plumbing_request& r) {
  if (r.netns_path.empty()) return error(errc::invalid, "pod netns path is empty");
  if (auto v = validate_ifname(r.pod_ifname); !v) return error(errc::invalid, "pod " + v.error().message);
  if (auto v = validate_ifname(r.host_ifname); !v) return error(errc::invalid, "host " + v.error().message);
  if (r.addresses.empty()) return error(errc::invalid, "no pod address to configure on " + r.pod_ifname);
  if (r.mtu != 0 && (r.mtu < 68 || r.mtu > 65535))
    return error(errc::invalid, "MTU " + std::to_string(r.mtu) + " out of range 68..65535");
  if (r.queues > 1024) return error(errc::invalid, "queue count " + std::to_string(r.queues) + " above 1024");
  auto fm = families(r.addresses);
  for (const auto& rt : r.routes)
    if ((rt.family() == ip_family::v4 && !fm.v4) || (rt.family() == ip_family::v6 && !fm.v6))
      return error(errc::invalid, "route " + rt.to_string() + " has no pod address of its family");
  return {};
}

inline result<void> host_sysctls(const std::string& h, family_mask fm) {
  struct kv { std::string key; const char* value; bool required; };
  std::vector<kv> list;
  if (fm.v4) {
    list.push_back({"net/ipv4/conf/" + h + "/route_localnet", "1", true});  // NAT to the host's 127/8
    list.push_back({"net/ipv4/neigh/" + h + "/proxy_delay", "0", true});    // answer proxy ARP at once
    list.push_back({"net/ipv4/conf/" + h + "/proxy_arp", "1", true});       // answer for 169.254.1.1
    list.push_back({"net/ipv4/conf/" + h + "/forwarding", "1", true});
  }
  if (fm.v6) {
    // Before the link goes up: its EUI-64 link-local is the pods' IPv6 gateway.
    list.push_back({"net/ipv6/conf/" + h + "/accept_dad", "0", true});
    list.push_back({"net/ipv6/conf/" + h + "/disable_ipv6", "0", true});
    list.push_back({"net/ipv6/conf/" + h + "/addr_gen_mode", "0", true});
    list.push_back({"net/ipv6/conf/" + h + "/proxy_ndp", "1", true});
    list.push_back({"net/ipv6/conf/" + h + "/forwarding", "1", true});
  }
  // No router advertisements from pods; absent when the kernel runs without IPv6.
  list.push_back({"net/ipv6/conf/" + h + "/accept_ra", "0", fm.v6});
  const node_sysctls node;
  for (const auto& e : list) {
    auto r = node.write(e.key, e.value);
    if (!r && (e.required || r.error().code != errc::not_found)) return r;
  }
  return {};
}

/// Pod-namespace sysctls; the calling thread must be in the pod namespace.
inline result<void> pod_sysctls(const pod_plumbing_request& req, family_mask fm, rtnl_socket& pod) {
  const char* fwd = req.pod_ip_forwarding ? "1" : "0";
  // Written only when it differs (a new namespace starts with 0 unless the node sets
  // net.core.devconf_inherit_init_net): asking the pod's socket is constant time, while
  // a fresh namespace's first /proc/sys/net/ipv4 lookup is not (netconf.hpp).
  if (fm.v4) {
    auto now = get_forwarding(pod, AF_INET);
    if (!now || *now != req.pod_ip_forwarding)
      if (auto r = write_sysctl("net/ipv4/ip_forward", fwd); !r) return r;
  }
  if (fm.v6) {
    for (const char* k : {"net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6",
                          "net/ipv6/conf/lo/disable_ipv6"})
      if (auto r = write_sysctl(k, "0"); !r) return r;
    if (auto r = write_sysctl("net/ipv6/conf/" + req.pod_ifname + "/disable_ipv6", "0"); !r) return r;
    if (auto r = write_sysctl("net/ipv6/conf/" + req.pod_ifname + "/accept_dad", "0"); !r) return r;
    if (auto r = write_sysctl("net/ipv6/conf/all/forwarding", fwd); !r) return r;
  }
  return {};
}

inline std::string in_ns(const std::string& path) { return " in netns " + path; }

}  // namespace detail

/// The node half of plumb_pod, done by begin_plumb_pod: the veth exists (its pod end in
/// the pod namespace), the host-side and pod-side sysctls are written, and a socket is
/// open in the pod namespace. Both ends are still down and have no address or route.
/// Move-only; give it to finish_plumb_pod, or to abort_plumb_pod to remove the veth.
struct pod_plumbing_started {
  std::string host_ifname;
  int host_index = 0;
  mac_address host_mac;
  std::string pod_ifname;
  int pod_index = 0;                      // in the pod namespace
  std::optional<mac_address> pod_mac;     // as requested; unset: the kernel's pick (finish reads it)
  std::string netns_path;
  bool v4 = false, v6 = false;            // families prepared (sysctls written)
  std::optional<rtnl_socket> pod;         // opened in the pod namespace
  std::chrono::steady_clock::time_point t0{};
  std::uint64_t node_round_trips = 0;     // sendmsg calls on the node socket so far
};

namespace detail {
inline result<void> validate_names(const pod_plumbing_request& r) {
  if (r.netns_path.empty()) return error(errc::invalid, "pod netns path is empty");
  if (auto v = validate_ifname(r.pod_ifname); !v) return error(errc::invalid, "pod " + v.error().message);
  if (auto v = validate_ifname(r.host_ifname); !v) return error(errc::invalid, "host " + v.error().message);
  if (r.mtu != 0 && (r.mtu < 68 || r.mtu > 65535))
    return error(errc::invalid, "MTU " + std::to_string(r.mtu) + " out of range 68..65535");
  if (r.queues > 1024) return error(errc::invalid, "queue count " + std::to_string(r.queues) + " above 1024");
  return {};
}
}  // namespace detail

/// First half of plumb_pod (steps 1, 2 and 4 at the top of this file): creates the veth,
/// checks it, writes the sysctls of the families `v4`/`v6` on both sides, and opens a
/// socket in the pod namespace. It needs no address, so a caller can run it while its
/// IPAM assigns them (on another thread whose namespace is the node's).
///
/// `replace_stale`: a veth of the host-side name already in the node namespace (left by
/// an earlier sandbox of this pod) is removed and the pair created again, as plumb_pod
/// does. false: a taken name is errc::already_exists and nothing is touched, for callers
/// that have not yet decided whether that interface belongs to a live attachment.
/// On failure nothing is left behind.
inline result<pod_plumbing_started> begin_plumb_pod(rtnl_socket& node, const pod_plumbing_request& req, bool v4, bool v6,
                                                    bool replace_stale = true) {
  pod_plumbing_started st;
  st.t0 = std::chrono::steady_clock::now();
  if (auto v = detail::validate_names(req); !v) return std::move(v).error();
  if (!v4 && !v6) return error(errc::invalid, "no address family to prepare " + req.pod_ifname + " for");
  const detail::family_mask fm{v4, v6};
  const std::string& H = req.host_ifname;
  const std::string& P = req.pod_ifname;
  const std::string where_pod = detail::in_ns(req.netns_path);

  auto pod_ns = open_netns(req.netns_path);
  if (!pod_ns) return std::move(pod_ns).error();
  {
    auto self = current_netns();
    if (!self) return std::move(self).error();
    if (self->inode() == pod_ns->inode())
      return error(errc::invalid, "pod netns " + req.netns_path + " is the node's own namespace; refusing to plumb");
  }
  const std::uint64_t node_rt0 = node.round_trips();

  // 1. Create the pair in one request and read the host side back in the same sendmsg.
  veth_spec vs;
  vs.name = H;
  vs.mac = host_side_mac();
  vs.mtu = req.mtu;
  vs.peer_name = P;
  vs.peer_mac = req.pod_mac;
  vs.peer_netns_fd = pod_ns->get();
  vs.queues = req.queues;
  std::optional<link_info> host;
  enum class outcome { created, stale_host };
  auto create = [&]() -> result<outcome> {
    request_batch b;
    b.add(new_veth_msg(vs), "create veth " + H + " <-> " + P + where_pod);
    b.add(get_link_msg(H), "get interface " + H, [&](const nlmsghdr& h) { host = parse_link(h); });
    auto r = node.execute(b);
    if (r) return outcome::created;
    if (b.error_of(0) != EEXIST) return request_batch::describe(b.at(0));
    // Which name is taken? A leftover host side of an earlier sandbox of this pod is
    // removed (as Calico does); a taken pod-side name is the caller's problem.
    auto old = get_link(node, H);
    if (!old) return error(errc::already_exists, "interface " + P + " already exists" + where_pod);
    if (old->kind != "veth")
      return error(errc::already_exists, "interface " + H + " already exists in the node netns and is a " +
                                             (old->kind.empty() ? std::string("device") : old->kind) +
                                             ", not a veth; refusing to replace it");
    if (!replace_stale) return error(errc::already_exists, "interface " + H + " already exists in the node netns");
    return outcome::stale_host;
  };
  auto r = create();
  if (r && *r == outcome::stale_host) {
    if (auto d = delete_link(node, H); !d)
      return error(d.error().code, "removing stale " + H + ": " + d.error().message);
    host.reset();
    r = create();
    if (r && *r == outcome::stale_host)
      return error(errc::conflict, "interface " + H + " reappeared while plumbing; another ADD for this pod is running?");
  }
  if (!r) return std::move(r).error();
  if (!host || host->index <= 0)
    return error(errc::internal, "created " + H + " but could not read it back");

  st.host_ifname = H;
  st.host_index = host->index;
  st.host_mac = host->mac.value_or(mac_address{});
  st.pod_ifname = P;
  st.pod_mac = req.pod_mac;
  st.netns_path = req.netns_path;
  st.v4 = v4;
  st.v6 = v6;
  const int host_index = host->index;

  // From here on, every failure removes the pair again.
  auto fail = [&](error e) -> result<pod_plumbing_started> {
    request_batch b;
    b.add(del_link_msg(host_index), "delete interface " + H);
    if (auto d = node.execute(b); !d && b.error_of(0) != ENODEV)
      e.message += " (rollback failed: " + d.error().message + ")";
    return e;
  };
  if (host->kind != "veth" || host->link_index <= 0)
    return fail(error(errc::internal, "created " + H + " but it does not look like a veth with a peer"));
  if (st.host_mac != host_side_mac())
    return fail(error(errc::internal, "created " + H + " with MAC " + host_side_mac().to_string() +
                                          " but the kernel reports " + st.host_mac.to_string()));
  st.pod_index = host->link_index;  // the peer's ifindex in the pod namespace

  // 2. Host-side sysctls (before the link goes up: IPv6 DAD and address generation).
  if (auto s = detail::host_sysctls(H, fm); !s) return fail(error(s.error().code, "host " + H + ": " + s.error().message));

  // 4. Into the pod namespace just long enough to open a socket there and write the pod
  //    sysctls (which follow the calling thread's namespace).
  {
    auto g = netns_guard::enter(*pod_ns);
    if (!g) return fail(std::move(g).error());
    auto s = rtnl_socket::open("netns " + req.netns_path);
    if (!s) return fail(std::move(s).error());
    st.pod.emplace(std::move(s).value());
    if (auto sy = detail::pod_sysctls(req, fm, *st.pod); !sy) return fail(error(sy.error().code, "pod" + where_pod + ": " + sy.error().message));
    if (auto back = g->restore(); !back) return fail(std::move(back).error());
  }
  st.node_round_trips = node.round_trips() - node_rt0;
  return st;
}

/// Removes what begin_plumb_pod made (the veth; both ends go). Ok if already gone.
inline result<void> abort_plumb_pod(rtnl_socket& node, const pod_plumbing_started& st) {
  request_batch b;
  b.add(del_link_msg(st.host_index), "delete interface " + st.host_ifname);
  if (auto d = node.execute(b); !d && b.error_of(0) != ENODEV) return d;
  return {};
}

/// Second half of plumb_pod (steps 3 and 5): host side up with its routes to
/// req.addresses, pod side up with the addresses and routes, then read back. `req` is the
/// request given to begin_plumb_pod with the addresses filled in; their families must
/// have been prepared there. On failure the veth is removed (`st` is then spent).
inline result<pod_plumbing_result> finish_plumb_pod(rtnl_socket& node, pod_plumbing_started& st, const pod_plumbing_request& req) {
  const std::string& H = st.host_ifname;
  const std::string& P = st.pod_ifname;
  const std::string where_pod = detail::in_ns(st.netns_path);
  const int host_index = st.host_index;
  const int pod_index = st.pod_index;
  const std::uint64_t node_rt0 = node.round_trips();
  auto fail = [&](error e) -> result<pod_plumbing_result> {
    if (auto d = abort_plumb_pod(node, st); !d) e.message += " (rollback failed: " + d.error().message + ")";
    return e;
  };
  if (!st.pod || host_index <= 0) return error(errc::invalid, "finish_plumb_pod: " + H + " was not started by begin_plumb_pod");
  if (auto v = detail::validate(req); !v) return fail(std::move(v).error());
  if (req.host_ifname != H || req.pod_ifname != P || req.netns_path != st.netns_path)
    return fail(error(errc::invalid, "finish_plumb_pod: the request names " + req.host_ifname + "/" + req.pod_ifname +
                                         " but " + H + "/" + P + " was started"));
  const auto fm = detail::families(req.addresses);
  if ((fm.v4 && !st.v4) || (fm.v6 && !st.v6))
    return fail(error(errc::invalid, std::string("pod address family ") + (fm.v4 && !st.v4 ? "IPv4" : "IPv6") +
                                         " was not prepared on " + H + " (begin_plumb_pod)"));

  pod_plumbing_result out;
  out.host_ifname = H;
  out.host_ifindex = host_index;
  out.host_mac = st.host_mac;
  out.pod_ifname = P;

  // 3. Host side up, and the routes to the pod through it.
  {
    request_batch b;
    b.add(set_link_up_msg(host_index), "set " + H + " up");
    std::vector<std::size_t> route_idx;
    std::vector<ip_prefix> route_dst;
    if (req.host_routes) {
      for (const auto& a : req.addresses) {
        route_spec rs;
        rs.dst = detail::host_prefix(a);
        rs.oif = host_index;
        rs.scope = a.family() == ip_family::v4 ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
        rs.protocol = req.route_protocol;
        route_idx.push_back(b.add(add_route_msg(rs), "add host route " + rs.dst.to_string() + " dev " + H));
        route_dst.push_back(rs.dst);
      }
    }
    if (auto e = node.execute(b); !e) {
      if (b.error_of(0) != 0) return fail(std::move(e).error());
      // Only routes failed. EEXIST through our own interface (a fast agent) is fine.
      for (std::size_t i = 0; i < route_idx.size(); ++i) {
        int err = b.error_of(route_idx[i]);
        if (err == 0) continue;
        if (err != EEXIST) return fail(request_batch::describe(b.at(route_idx[i])));
        route_filter f;
        f.dst = route_dst[i];
        auto existing = list_routes(node, f);
        if (!existing) return fail(std::move(existing).error());
        bool ours = false;
        int other = 0;
        for (const auto& ri : *existing) {
          if (ri.oif == host_index) ours = true;
          else other = ri.oif;
        }
        if (!ours) {
          std::string dev = other ? "#" + std::to_string(other) : std::string("another interface");
          if (other)
            if (auto l = get_link(node, other)) dev = l->name;
          return fail(error(errc::already_exists, "host route " + route_dst[i].to_string() +
                                                      " already exists through " + dev + ", not " + H));
        }
      }
    }
  }

  // 5. Pod side in one sendmsg: up, addresses, routes, then read it back.
  {
    request_batch b;
    b.add(set_link_up_msg(pod_index), "set " + P + " up" + where_pod);
    for (const auto& a : req.addresses) {
      auto p = detail::host_prefix(a);
      out.addresses.push_back(p);
      b.add(add_address_msg(pod_index, p, p.family() == ip_family::v6 ? IFA_F_NODAD : 0),
            "add address " + p.to_string() + " to " + P + where_pod);
    }
    if (fm.v4) {
      route_spec gw;
      gw.dst = ip_prefix(pod_gateway_v4(), 32);
      gw.oif = pod_index;
      gw.scope = RT_SCOPE_LINK;
      gw.protocol = req.route_protocol;
      b.add(add_route_msg(gw), "add route " + gw.dst.to_string() + " dev " + P + " scope link" + where_pod);
    }
    for (const auto& rt : detail::pod_routes(req, fm)) {
      route_spec rs;
      rs.dst = rt.canonical();
      rs.gateway = rt.family() == ip_family::v4 ? pod_gateway_v4() : pod_gateway_v6();
      rs.oif = pod_index;
      rs.protocol = req.route_protocol;
      b.add(add_route_msg(rs), "add route " + rs.dst.to_string() + " via " + rs.gateway->to_string() + " dev " + P + where_pod);
    }
    std::optional<link_info> pl;
    b.add(get_link_msg(pod_index), "get interface " + P + where_pod, [&](const nlmsghdr& h) { pl = parse_link(h); });
    if (auto e = st.pod->execute(b); !e) return fail(std::move(e).error());
    if (!pl || pl->name != P || !pl->mac)
      return fail(error(errc::internal, "interface #" + std::to_string(pod_index) + where_pod + " is not " + P +
                                            " (peer of " + H + ")"));
    if (req.pod_mac && *pl->mac != *req.pod_mac)
      return fail(error(errc::internal, "interface " + P + where_pod + " has MAC " + pl->mac->to_string() + ", not " +
                                            req.pod_mac->to_string() + " as created"));
    out.pod_ifindex = pl->index;
    out.pod_mac = *pl->mac;
  }

  out.round_trips = static_cast<unsigned>(st.node_round_trips + node.round_trips() - node_rt0 + st.pod->round_trips());
  out.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - st.t0);
  return out;
}

/// Builds the pod's dataplane (see the top of this file): begin_plumb_pod, then
/// finish_plumb_pod. `node` must be a socket opened in the calling thread's (node)
/// namespace. On any failure after the veth exists, the veth is deleted again (removing
/// one end removes both) and the error says what failed.
inline result<pod_plumbing_result> plumb_pod(rtnl_socket& node, const pod_plumbing_request& req) {
  if (auto v = detail::validate(req); !v) return std::move(v).error();
  const auto fm = detail::families(req.addresses);
  auto st = begin_plumb_pod(node, req, fm.v4, fm.v6, true);
  if (!st) return std::move(st).error();
  return finish_plumb_pod(node, *st, req);
}

/// plumb_pod with a node socket opened for the occasion in the calling thread's namespace.
inline result<pod_plumbing_result> plumb_pod(const pod_plumbing_request& req) {
  auto node = rtnl_socket::open();
  if (!node) return std::move(node).error();
  return plumb_pod(*node, req);
}

/// Removes the pod's veth by its host-side name (the pod side and every route through
/// it go with it). Idempotent: ok if it is already gone.
inline result<void> unplumb_pod(rtnl_socket& node, std::string_view host_ifname) {
  return delete_link(node, host_ifname);
}
inline result<void> unplumb_pod(std::string_view host_ifname) {
  auto node = rtnl_socket::open();
  if (!node) return std::move(node).error();
  return unplumb_pod(*node, host_ifname);
}

/// CNI CHECK: compares the kernel with what plumb_pod(req) would have built. Returns one
/// error per mismatch (interface missing or wrong, address missing, route missing, host
/// route missing, host sysctl wrong); empty when everything is in place.
inline std::vector<error> check_pod(rtnl_socket& node, const pod_plumbing_request& req) {
  std::vector<error> errs;
  if (auto v = detail::validate(req); !v) {
    errs.push_back(std::move(v).error());
    return errs;
  }
  const auto fm = detail::families(req.addresses);
  const std::string& H = req.host_ifname;
  const std::string& P = req.pod_ifname;
  const std::string where_pod = detail::in_ns(req.netns_path);
  auto add = [&](errc c, std::string m) { errs.emplace_back(c, std::move(m)); };

  // Node side.
  std::optional<link_info> host;
  if (auto h = get_link(node, H); h) {
    host = std::move(h).value();
    if (host->kind != "veth") add(errc::invalid, "host interface " + H + " is a " + (host->kind.empty() ? std::string("device") : host->kind) + ", not a veth");
    if (!host->up()) add(errc::invalid, "host interface " + H + " is down");
    if (host->mac != host_side_mac())
      add(errc::invalid, "host interface " + H + " has MAC " + (host->mac ? host->mac->to_string() : std::string("none")) + ", want " + host_side_mac().to_string());
    if (req.mtu && host->mtu != req.mtu)
      add(errc::invalid, "host interface " + H + " has MTU " + std::to_string(host->mtu) + ", want " + std::to_string(req.mtu));
    struct kv { std::string key; const char* want; };
    std::vector<kv> sys;
    if (fm.v4) {
      sys.push_back({"net/ipv4/conf/" + H + "/proxy_arp", "1"});
      sys.push_back({"net/ipv4/conf/" + H + "/forwarding", "1"});
    }
    if (fm.v6) {
      sys.push_back({"net/ipv6/conf/" + H + "/proxy_ndp", "1"});
      sys.push_back({"net/ipv6/conf/" + H + "/forwarding", "1"});
    }
    const node_sysctls node_sys;
    for (const auto& e : sys) {
      auto v = node_sys.read(e.key);
      if (!v) add(v.error().code, "host interface " + H + ": " + v.error().message);
      else if (*v != e.want) add(errc::invalid, "host interface " + H + ": sysctl " + e.key + " is " + *v + ", want " + e.want);
    }
    if (req.host_routes) {
      for (const auto& a : req.addresses) {
        route_filter f;
        f.dst = detail::host_prefix(a);
        f.family = a.family();
        f.oif = host->index;  // the kernel filters the dump by device
        auto rs = list_routes(node, f);
        if (!rs) { add(rs.error().code, rs.error().message); continue; }
        if (rs->empty()) add(errc::not_found, "host route " + f.dst->to_string() + " dev " + H + " missing");
      }
    }
  } else {
    add(h.error().code, "host interface " + H + " missing: " + h.error().message);
  }

  // Pod side.
  auto pod_ns = open_netns(req.netns_path);
  if (!pod_ns) {
    add(pod_ns.error().code, pod_ns.error().message);
    return errs;
  }
  std::optional<rtnl_socket> pod;
  {
    auto g = netns_guard::enter(*pod_ns);
    if (!g) { add(g.error().code, g.error().message); return errs; }
    auto s = rtnl_socket::open("netns " + req.netns_path);
    if (!s) { add(s.error().code, s.error().message); return errs; }
    pod.emplace(std::move(s).value());
  }
  auto pl = get_link(*pod, P);
  if (!pl) {
    add(errc::not_found, "interface " + P + " missing" + where_pod);
    return errs;
  }
  if (pl->kind != "veth") add(errc::invalid, "interface " + P + where_pod + " is a " + (pl->kind.empty() ? std::string("device") : pl->kind) + ", not a veth");
  if (!pl->up()) add(errc::invalid, "interface " + P + where_pod + " is down");
  if (req.mtu && pl->mtu != req.mtu)
    add(errc::invalid, "interface " + P + where_pod + " has MTU " + std::to_string(pl->mtu) + ", want " + std::to_string(req.mtu));
  if (req.pod_mac && pl->mac != req.pod_mac)
    add(errc::invalid, "interface " + P + where_pod + " has MAC " + (pl->mac ? pl->mac->to_string() : std::string("none")) + ", want " + req.pod_mac->to_string());
  if (host && pl->link_index != host->index)
    add(errc::invalid, "interface " + P + where_pod + " is not the peer of host interface " + H);

  if (auto addrs = list_addresses(*pod, pl->index); !addrs) {
    add(addrs.error().code, addrs.error().message);
  } else {
    for (const auto& a : req.addresses) {
      auto want = detail::host_prefix(a);
      bool found = false;
      for (const auto& ai : *addrs) found = found || ai.prefix == want;
      if (!found) add(errc::not_found, "address " + want.to_string() + " missing on " + P + where_pod);
    }
  }

  route_filter f;
  f.oif = pl->index;
  auto routes = list_routes(*pod, f);
  if (!routes) {
    add(routes.error().code, routes.error().message);
    return errs;
  }
  auto has = [&](const ip_prefix& dst, const std::optional<ip_address>& gw) {
    for (const auto& ri : *routes)
      if (ri.dst == dst && ri.gateway == gw) return true;
    return false;
  };
  if (fm.v4 && !has(ip_prefix(pod_gateway_v4(), 32), std::nullopt))
    add(errc::not_found, "route " + pod_gateway_v4().to_string() + "/32 dev " + P + " scope link missing" + where_pod);
  for (const auto& rt : detail::pod_routes(req, fm)) {
    auto gw = rt.family() == ip_family::v4 ? pod_gateway_v4() : pod_gateway_v6();
    if (!has(rt.canonical(), gw))
      add(errc::not_found, "route " + rt.canonical().to_string() + " via " + gw.to_string() + " dev " + P + " missing" + where_pod);
  }
  return errs;
}

inline std::vector<error> check_pod(const pod_plumbing_request& req) {
  auto node = rtnl_socket::open();
  if (!node) return {std::move(node).error()};
  return check_pod(*node, req);
}

}  // namespace netlink
CNF_END_NAMESPACE
