// cnf/plugins/vxlan.hpp — the `vxlan` encapsulation part, in Calico's shape.
//
// One device per family, as Calico has them: `vxlan.calico` for the IPv4 pools and
// `vxlan-v6.calico` for the IPv6 pools (both VNI 4096, UDP 4789, learning off, bound to the
// node's uplink address of that family: spec.bgp.ipv4Address / ipv6Address). MTU = the
// uplink's minus 50 (IPv4 underlay) or minus 70 (IPv6 underlay) unless set. Each device holds
// this node's tunnel address of its family (spec.ipv4VXLANTunnelAddr / ipv6VXLANTunnelAddr).
// Per remote node with a tunnel address of the family: a permanent neighbour entry (its
// tunnel address -> its VTEP MAC of that family) and a permanent FDB entry (that MAC -> its
// node address of that family), programmed in one netlink batch per device per apply(). The
// routes to a remote node's blocks of the family go via its tunnel address, onlink on the
// device, and are handed to the host's sink (never written here).
//
//   [encapsulation]
//   plugin = "vxlan"
//   # mode = "CrossSubnet"   # Always | CrossSubnet | Never: overrides every pool's vxlanMode
//   # vni = 4096
//   # port = 4789
//   # mtu = 0                # 0: the uplink's MTU - 50
//   # mtu_v6 = 0             # 0: the uplink's MTU - 70
//   # device = "vxlan.calico"
//   # device_v6 = "vxlan-v6.calico"
//
// Which blocks go through the tunnel: each block takes the mode of the pool that contains it
// (set_pools: IPPool spec.vxlanMode); `mode` in the profile overrides them all (for IPv6 only
// when there is an IPv6 pool). Always: every remote node; CrossSubnet: only a node whose
// address of the block's family is on none of this node's subnets of that family; Never: none.
// When no block of a family can need the tunnel, that family's device and everything on it go.
//
// The MAC of a node that has none on its Node (spec.vxlanTunnelMACAddr, vxlanTunnelMACAddrV6)
// is derived from its name (derive_mac, derive_mac_v6), so every node computes the same one.
#pragma once
#include <cnf/encap.hpp>
#include <cnf/log.hpp>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netlink { class rtnl_socket; }
namespace vxlan {

inline constexpr unsigned overhead = 50;     // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
inline constexpr unsigned overhead_v6 = 70;  // outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14

struct config {
  std::string device = "vxlan.calico";
  std::string device_v6 = "vxlan-v6.calico";
  std::uint32_t vni = 4096;
  std::uint16_t port = 4789;
  unsigned mtu = 0;                     ///< 0: the uplink's MTU - overhead
  unsigned mtu_v6 = 0;                  ///< 0: the IPv6 uplink's MTU - overhead_v6
  std::optional<encap_mode> mode;       ///< set: overrides the pools' modes
};

/// "Always", "CrossSubnet" or "Never" (Calico's spelling); anything else is an error naming `field`.
result<encap_mode> parse_mode(std::string_view text, std::string_view field);

/// The VTEP MAC of a node with none on its Node: byte 0x66 ('f': locally administered,
/// unicast) followed by the first five bytes of SHA-1(node name).
mac_address derive_mac(std::string_view node_name);
/// The IPv6 device's VTEP MAC of a node with none on its Node (spec.vxlanTunnelMACAddrV6):
/// byte 0x66 followed by the first five bytes of SHA-1("v6/" + node name), so that the two
/// devices of a node never share a MAC.
mac_address derive_mac_v6(std::string_view node_name);

/// CrossSubnet's question: is `r`'s address of family `f` on none of `self`'s subnets of it?
/// (A node with no address of that family counts as elsewhere.)
bool cross_subnet(const node_info& self, const remote_node& r, ip_family f = ip_family::v4);

/// The mode of a block: `override_mode` if set, else the longest pool containing it, else never.
encap_mode mode_of(const ip_prefix& block, const std::vector<encap_pool>& pools, std::optional<encap_mode> override_mode);

/// What one remote node gets: its VTEP (neighbour + FDB) and the blocks routed through it.
struct remote_plan {
  ip_address tunnel;          ///< its tunnel address (neighbour entry's IP, routes' gateway)
  mac_address mac;            ///< its VTEP MAC
  ip_address node_address;    ///< its underlay address (FDB entry's destination)
  std::vector<ip_prefix> blocks;  ///< routed via the tunnel
  friend bool operator==(const remote_plan&, const remote_plan&) = default;
};

/// The plan for `r` on the device of family `f`, or nullopt with `note` saying why it gets
/// nothing (no tunnel address of the family yet, no underlay address of the family). A node
/// none of whose blocks needs the tunnel still gets its VTEP.
std::optional<remote_plan> plan(const node_info& self, const remote_node& r, const std::vector<encap_pool>& pools,
                                std::optional<encap_mode> override_mode, std::string& note, ip_family f = ip_family::v4);

/// One kernel change on the device.
struct kernel_op {
  enum class type { set_neigh, del_neigh, set_fdb, del_fdb } kind;
  ip_address ip;    ///< neighbour: the tunnel address; FDB: the node address
  mac_address mac;
  std::string node;
  friend bool operator==(const kernel_op&, const kernel_op&) = default;
};

/// The kernel changes that take a node from `before` to `after` (either may be absent):
/// nothing when equal; entries that changed key are deleted, the new ones set (replace).
std::vector<kernel_op> diff(const std::string& node, const std::optional<remote_plan>& before, const std::optional<remote_plan>& after);

/// The route a block gets through the tunnel.
route_entry route_for(const ip_prefix& block, const ip_address& tunnel, const std::string& device);

namespace detail {
/// What the part holds for one family's device.
struct device_state {
  ip_family family = ip_family::v4;
  int ifindex = 0;
  tunnel_info tunnel;
  std::string note;                                          // why there is no device
  bool dirty = true;                                         // the device needs a look
  bool sweep_pending = false;
  std::map<std::string, remote_plan, std::less<>> applied;   // in the kernel (neighbour + FDB)
  std::map<std::string, std::string, std::less<>> notes;     // node -> why it gets nothing
  std::map<ip_prefix, route_entry> routes;                   // what the sink was told
};
}  // namespace detail

class encapsulation {
 public:
  explicit encapsulation(config c = {}, logger* log = nullptr);
  ~encapsulation();
  encapsulation(encapsulation&&) noexcept;
  encapsulation& operator=(encapsulation&&) noexcept;

  result<tunnel_info> start(const node_info& self, encap_sink& sink);
  result<void> set_node(const node_info& self);
  void upsert_node(const remote_node& r);
  void remove_node(std::string_view name);
  void set_pools(const std::vector<encap_pool>& pools);
  result<void> apply();
  encap_status status() const;
  /// Removes both devices (with their neighbour and FDB entries) and withdraws every route.
  result<void> stop();

  const config& settings() const noexcept { return cfg_; }

 private:
  using side = detail::device_state;
  bool active(ip_family f) const;
  const std::string& device_of(const side& d) const noexcept { return d.family == ip_family::v6 ? cfg_.device_v6 : cfg_.device; }
  result<void> ensure_device(side& d);
  result<void> remove_device(side& d);
  result<void> sweep(side& d);
  result<void> program(side& d, const std::set<std::string, std::less<>>& names);
  void want_routes(side& d, const std::optional<remote_plan>& before, const std::optional<remote_plan>& after);
  void withdraw_all(side& d);
  void dirty_all();

  config cfg_;
  logger* log_;
  std::unique_ptr<netlink::rtnl_socket> sock_;
  node_info self_;
  encap_sink* sink_ = nullptr;
  std::vector<encap_pool> pools_;
  std::map<std::string, remote_node, std::less<>> nodes_;
  std::set<std::string, std::less<>> dirty_;   // nodes to plan again, on both devices
  side v4_, v6_;
};

}  // namespace vxlan
CNF_END_NAMESPACE
