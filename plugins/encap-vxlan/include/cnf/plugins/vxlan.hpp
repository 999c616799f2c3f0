// cnf/plugins/vxlan.hpp — the `vxlan` encapsulation part, in Calico's shape.
//
// One device, `vxlan.calico` (VNI 4096, UDP 4789, learning off, bound to the node's uplink
// address; MTU = the uplink's minus 50 unless set), holding this node's tunnel address. Per
// remote node with a tunnel address: a permanent neighbour entry (its tunnel address -> its
// VTEP MAC) and a permanent FDB entry (that MAC -> its node address), programmed in one
// netlink batch per apply(). The routes to a remote node's blocks go via its tunnel address,
// onlink on the device, and are handed to the host's sink (never written here).
//
//   [encapsulation]
//   plugin = "vxlan"
//   # mode = "CrossSubnet"   # Always | CrossSubnet | Never: overrides every pool's vxlanMode
//   # vni = 4096
//   # port = 4789
//   # mtu = 0                # 0: the uplink's MTU - 50
//   # device = "vxlan.calico"
//
// Which blocks go through the tunnel: each block takes the mode of the pool that contains it
// (set_pools: IPPool spec.vxlanMode); `mode` in the profile overrides them all. Always: every
// remote node; CrossSubnet: only a node whose address is on none of this node's subnets;
// Never: none. When no block can need the tunnel, the device and everything on it goes.
//
// The MAC of a node that has none on its Node (spec.vxlanTunnelMACAddr) is derived from its
// name, as Calico does (derive_mac), so every node computes the same one.
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

inline constexpr unsigned overhead = 50;  // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14

struct config {
  std::string device = "vxlan.calico";
  std::uint32_t vni = 4096;
  std::uint16_t port = 4789;
  unsigned mtu = 0;                     ///< 0: the uplink's MTU - overhead
  std::optional<encap_mode> mode;       ///< set: overrides the pools' modes
};

/// "Always", "CrossSubnet" or "Never" (Calico's spelling); anything else is an error naming `field`.
result<encap_mode> parse_mode(std::string_view text, std::string_view field);

/// The VTEP MAC of a node with none on its Node: byte 0x66 ('f': locally administered,
/// unicast) followed by the first five bytes of SHA-1(node name).
mac_address derive_mac(std::string_view node_name);

/// CrossSubnet's question: is `r`'s IPv4 address on none of `self`'s IPv4 subnets?
/// (A node with no IPv4 address counts as elsewhere.)
bool cross_subnet(const node_info& self, const remote_node& r);

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

/// The plan for `r`, or nullopt with `note` saying why it gets nothing (no tunnel address yet,
/// no IPv4 address). A node none of whose blocks needs the tunnel still gets its VTEP.
std::optional<remote_plan> plan(const node_info& self, const remote_node& r, const std::vector<encap_pool>& pools,
                                std::optional<encap_mode> override_mode, std::string& note);

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
  /// Removes the device (with its neighbour and FDB entries) and withdraws every route.
  result<void> stop();

  const config& settings() const noexcept { return cfg_; }

 private:
  bool active() const;
  result<void> ensure_device();
  result<void> remove_device();
  result<void> sweep();
  void want_routes(const std::string& node, const std::optional<remote_plan>& before, const std::optional<remote_plan>& after);
  void withdraw_all();

  config cfg_;
  logger* log_;
  std::unique_ptr<netlink::rtnl_socket> sock_;
  node_info self_;
  encap_sink* sink_ = nullptr;
  std::vector<encap_pool> pools_;
  std::map<std::string, remote_node, std::less<>> nodes_;
  std::map<std::string, remote_plan, std::less<>> applied_;  // in the kernel (neighbour + FDB)
  std::map<std::string, std::string, std::less<>> notes_;     // node -> why it gets nothing
  std::set<std::string, std::less<>> dirty_;
  std::map<ip_prefix, route_entry> routes_;                   // what the sink was told
  bool device_dirty_ = true;
  bool sweep_pending_ = false;
  int ifindex_ = 0;
  tunnel_info tunnel_;
  std::string device_note_;
};

}  // namespace vxlan
CNF_END_NAMESPACE
