// cnf/plugins/ipip.hpp — the `ipip` encapsulation part, in Calico's shape, with two datapaths.
//
// kernel: Calico's `tunl0` (an ipip device) holding this node's tunnel address; the routes to a
//         remote node's blocks go `via <its node address> dev tunl0 onlink`.
// ebpf:   for kernels without the ipip module (this project's CI machine): a tc program pair
//         on the node's uplink (the interface holding its address) encapsulates on egress the
//         packets bound for a remote block in an outer IPv4 header (protocol 4, this node ->
//         that node) and decapsulates on ingress protocol 4 addressed to this node from a
//         known node. The routes go `via <the next hop toward that node> dev <uplink>`, so the
//         kernel resolves the link layer of the outer packet; a BPF LPM map (block -> node
//         address) tells the program which packets to wrap. Nothing is pinned: programs and
//         maps live as long as the part (stop() detaches them).
//
//   [encapsulation]
//   plugin = "ipip"
//   # datapath = "auto"      # auto | kernel | ebpf   (auto: kernel when an ipip device can be made)
//   # mode = "CrossSubnet"   # Always | CrossSubnet | Never: overrides every pool's ipipMode
//   # mtu = 0                # 0: the uplink's MTU - 20
//
// Which blocks go through the tunnel: each block takes the mode of the pool that contains it
// (set_pools: IPPool spec.ipipMode), as cnf/encap_decision.hpp decides for every part.
#pragma once
#include <cnf/encap.hpp>
#include <cnf/log.hpp>
#include <cnf/netlink/socket.hpp>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netlink { class rtnl_socket; }
namespace ipip {

inline constexpr unsigned overhead = 20;  // the outer IPv4 header

enum class datapath { automatic, kernel, ebpf };
std::string_view to_string(datapath d) noexcept;
/// "auto", "kernel" or "ebpf"; anything else is an error naming `field`.
result<datapath> parse_datapath(std::string_view text, std::string_view field);

struct config {
  std::string device = "tunl0";
  datapath path = datapath::automatic;
  unsigned mtu = 0;                 ///< 0: the uplink's MTU - overhead
  std::optional<encap_mode> mode;   ///< set: overrides the pools' modes
};

/// What one remote node gets: the blocks routed to it through the tunnel.
struct remote_plan {
  ip_address node_address;          ///< its underlay address: the outer destination
  std::vector<ip_prefix> blocks;    ///< IPv4 blocks that need the tunnel, sorted
  friend bool operator==(const remote_plan&, const remote_plan&) = default;
};

/// The plan for `r`, or nullopt with `note` saying why it gets nothing (no IPv4 address).
std::optional<remote_plan> plan(const node_info& self, const remote_node& r, const std::vector<encap_pool>& pools,
                                std::optional<encap_mode> override_mode, std::string& note);

// ---- the kernel datapath's requests ----------------------------------------------------------

/// RTM_NEWLINK NLM_F_CREATE|NLM_F_EXCL for an ipip device (`ip link add tunl0 type ipip`,
/// no fixed local or remote: Calico's tunl0), path MTU discovery on.
netlink::message new_ipip_msg(std::string_view name, unsigned mtu);
/// A route through tunl0: `dst via <node> dev <device> onlink`.
route_entry kernel_route(const ip_prefix& block, const ip_address& node, const std::string& device);
/// Whether a failed device creation means "this kernel has no ipip" (fall back to eBPF).
bool kernel_lacks_ipip(int err) noexcept;

// ---- the eBPF datapath --------------------------------------------------------------------

/// The key of the program's LPM map, as the program reads it (prefix length, then the
/// address in network order).
struct lpm_key {
  std::uint32_t prefixlen;
  std::uint32_t addr;
  friend bool operator==(const lpm_key&, const lpm_key&) = default;
};
lpm_key lpm_key_of(const ip_prefix& block);
/// An IPv4 address as the program compares it (network order in a host integer).
std::uint32_t be32_of(const ip_address& a);
/// A route through the uplink toward `next_hop` (the node itself or the router to it), with
/// the tunnel's MTU as the route's: the program adds 20 bytes on a device whose own MTU it
/// does not lower, so what the node itself sends must leave that much smaller.
route_entry ebpf_route(const ip_prefix& block, const ip_address& next_hop, const std::string& uplink, unsigned mtu);

/// The loaded program pair and its maps, attached to one interface of this thread's
/// namespace (libbpf, tc clsact). Not pinned; detach() (or the destructor) takes the filters
/// off and the clsact qdisc too when attach() made it.
class bpf_datapath {
 public:
  bpf_datapath();
  ~bpf_datapath();
  bpf_datapath(const bpf_datapath&) = delete;
  bpf_datapath& operator=(const bpf_datapath&) = delete;

  result<void> attach(int ifindex, const ip_address& self);
  result<void> set_self(const ip_address& self);
  result<void> set_block(const ip_prefix& block, const ip_address& node);
  result<void> del_block(const ip_prefix& block);
  result<void> set_peer(const ip_address& node);
  result<void> del_peer(const ip_address& node);
  result<void> detach();
  bool attached() const noexcept { return ifindex_ != 0; }
  /// Detaches this datapath's programs (tc egress and ingress at filter_handle and
  /// filter_priority, programs named ipip_*) that an earlier run left on interface
  /// `ifindex`, e.g. an agent since restarted without the part; a filter of another program
  /// there is left alone. The clsact qdisc stays (its maker is unknown). Returns how many
  /// filters it removed.
  static result<int> sweep(int ifindex);
  int ifindex() const noexcept { return ifindex_; }

  /// tc filter handle and priority of the two programs (`tc filter show dev X egress`).
  static constexpr std::uint32_t filter_handle = 0x1c1f;
  static constexpr std::uint32_t filter_priority = 4;

 private:
  struct object;
  std::unique_ptr<object> obj_;
  int ifindex_ = 0;
  bool made_qdisc_ = false;
};

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
  /// Takes everything of the part away (filters, maps, device it made) and withdraws every
  /// route. On a part never started: removes the eBPF filters an earlier run left on any
  /// interface (what an agent started without this part asks for).
  result<void> stop();

  const config& settings() const noexcept { return cfg_; }
  /// The datapath in use once started: kernel or ebpf (automatic before).
  datapath in_use() const noexcept { return used_; }

 private:
  bool active() const;
  result<void> ensure_datapath();
  result<void> remove_datapath();
  result<void> sweep_leftovers();
  result<void> ensure_kernel(int uplink, unsigned mtu);
  result<void> ensure_ebpf(int uplink, unsigned mtu, const ip_address& local);
  result<std::optional<route_entry>> route_to(const ip_prefix& block, const ip_address& node);
  void withdraw_all();

  config cfg_;
  logger* log_;
  std::unique_ptr<netlink::rtnl_socket> sock_;
  std::unique_ptr<bpf_datapath> bpf_;
  node_info self_;
  encap_sink* sink_ = nullptr;
  std::vector<encap_pool> pools_;
  std::map<std::string, remote_node, std::less<>> nodes_;
  std::map<std::string, remote_plan, std::less<>> applied_;  // programmed (maps, routes wanted)
  std::map<std::string, std::string, std::less<>> notes_;
  std::set<std::string, std::less<>> dirty_;
  std::map<ip_prefix, route_entry> routes_;                   // what the sink was told
  std::map<ip_prefix, ip_address> blocks_;                    // eBPF: what the LPM map holds
  std::set<ip_address> peers_;                                // eBPF: what the peers map holds
  bool datapath_dirty_ = true;
  bool made_device_ = false;
  datapath used_ = datapath::automatic;
  std::string uplink_;
  int tunnel_ifindex_ = 0;
  tunnel_info tunnel_;
  std::string datapath_note_;
};

}  // namespace ipip
CNF_END_NAMESPACE
