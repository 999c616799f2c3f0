// cnf/plugins/calico_ipam.hpp — the calico-ipam IPAM: address blocks with node affinity.
//
// All state lives in the datastore as projectcalico.org/v3-shaped resources, and every
// write is compare-and-swap on the resource revision, so any number of processes on any
// number of nodes may assign at once:
//
//   IPPool          spec.cidr, blockSize (26 / 122), nodeSelector, disabled, ipipMode, vxlanMode, natOutgoing
//   IPAMBlock       spec.cidr, affinity "host:<node>", allocations, unallocated (FIFO: released ordinals go
//                   to the back), attributes [{handle_id, secondary{namespace, pod, node}}], sequenceNumber
//   BlockAffinity   spec.node, cidr, state pending -> confirmed (-> pendingDeletion), named "<node>-<block>"
//   IPAMHandle      spec.handleID, block {cidr: count}
//   IPAMConfig      "default": strictAffinity, autoAllocateBlocks, maxBlocksPerHost
//   IPReservation   spec.reservedCIDRs
//
// Assignment takes addresses from the node's blocks first, then claims a new
// block (each node walks the candidate blocks from its own starting point, so nodes do
// not race for the same one), then, only while strictAffinity is false, borrows from other
// blocks. The block's attributes are the record of who holds an address. An IPAMHandle is
// written (before the block, as Calico does) only when a handle holds an address outside
// the blocks affine to its node; in the common case an assignment is one block write.
// A handle is released from its IPAMHandle's blocks and the node's blocks (every block for
// instances without a node), whatever state their BlockAffinities are in; a release that
// cannot write a block holding the handle fails (errc::unavailable) instead of reporting
// success.
//
// The node's blocks, for assignment, release, borrowing and the tools alike: the blocks
// whose own affinity field is "host:<node>". They are found through the node's
// BlockAffinities in any state (a claim writes its affinity before its block, a release
// removes its block before its affinity, so every block of a node has one), and the block
// decides. A claim (pending affinity, block, confirmed affinity) and a release of a block
// (pendingDeletion, block removed, affinity removed) are finished or undone by the next
// operation of the node that finds them interrupted: a pending affinity whose block names
// the node is confirmed, one without its block removed; a pendingDeletion affinity whose
// block still names the node is confirmed again, one without it removed. Claims of one
// node are serialized between the processes of its machine by a lock file
// (options::lock_dir; flock, as Calico's CNI plugin does), so an unfinished claim seen by
// a process holding the lock is an interrupted one; across nodes, compare-and-swap
// decides. No process id is stored in the datastore. Writes to one block from threads of one process are combined into one
// compare-and-swap write (group commit). A corrupt block is skipped, never rewritten.
// cnf adds one field to IPAMBlock: emptySince, when its last address was released (an
// empty affine block is given up after options::empty_block_grace).
//
//   cnf::calico_ipam::ipam ipam(ds, "node-1");
//   cnf::assign_request req;  req.handle = "k8s-pod-network.abc";  req.node = "node-1";
//   auto ips = ipam.assign(req);                  // [{10.244.7.3/32, pool "10.244.0.0/16"}]
//   ipam.release_handle(req.handle);
//
// The free functions at the end serve the `cnf ipam` tool: usage (show --show-blocks),
// borrowed (--show-borrowed), read_config (--show-configuration), lookup (--ip), check
// (check, -o report.json), release_addresses (release --ip / --from-report) and
// change_config (configure). `cnf apply` validates IPPools with parse_pool/validate_pools.
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/ipam.hpp>
#include <cnf/log.hpp>
#include <cnf/net.hpp>
#include <cnf/settings.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace calico_ipam {

// ---- the datastore model --------------------------------------------------------------

/// An IPPool. Valid pools have a network-address CIDR and a blockSize of 20-32 (IPv4) or
/// 116-128 (IPv6) that is not shorter than the pool's prefix.
struct pool {
  std::string name;
  ip_prefix cidr;
  unsigned block_size = 26;
  std::string node_selector = "all()";
  bool disabled = false;
  std::string ipip_mode = "Never";   ///< Never, Always, CrossSubnet (recorded for the encapsulation part)
  std::string vxlan_mode = "Never";
  bool nat_outgoing = false;
  friend bool operator==(const pool&, const pool&) = default;
};

/// Parses and validates one IPPool; errors name the resource and the field, e.g.
/// "IPPool/p1: spec.blockSize: 33 is outside 20-32 for an IPv4 pool".
result<pool> parse_pool(const resource& r);
resource to_resource(const pool& p);

/// Validates a set of pools: each on its own and, across them, overlapping CIDRs. `valid`
/// receives the pools that are safe to assign from (both pools of an overlapping pair are
/// left out: their blocks could overlap and hand out one address twice).
std::vector<error> validate_pools(const std::vector<resource>& pools, std::vector<pool>* valid = nullptr);

/// Calico's node selector, the part of it cnf supports: "all()" (or empty), `k == 'v'`,
/// `k != 'v'`, `has(k)`, `!has(k)`, joined with && and || (&& binds tighter; no parentheses).
result<bool> selector_matches(std::string_view selector, const std::map<std::string, std::string>& labels);

struct allocation_attribute {
  std::optional<std::string> handle_id;
  std::map<std::string, std::string> secondary;  ///< namespace, pod, node, ...
  /// The node the address was assigned for (attribute "node"); empty when not recorded.
  std::string node() const {
    auto it = secondary.find("node");
    return it == secondary.end() ? std::string() : it->second;
  }
  friend bool operator==(const allocation_attribute&, const allocation_attribute&) = default;
};

/// An IPAMBlock. allocations[ordinal] is an index into attributes, or empty when free;
/// unallocated lists every free ordinal once, in the order they will be handed out.
struct block {
  ip_prefix cidr;
  std::optional<std::string> affinity;  ///< "host:<node>"
  std::string affinity_claim_time;      ///< RFC 3339
  std::vector<std::optional<std::uint32_t>> allocations;
  std::vector<std::uint32_t> unallocated;
  std::vector<allocation_attribute> attributes;
  std::uint64_t sequence_number = 0;
  std::map<std::uint32_t, std::uint64_t> sequence_number_for_allocation;  ///< ordinal -> sequence number
  bool deleted = false;
  std::string empty_since;  ///< cnf extension: when the last address was released (RFC 3339)

  static block make(const ip_prefix& cidr, std::optional<std::string> affinity);
  std::uint32_t size() const noexcept { return static_cast<std::uint32_t>(allocations.size()); }
  std::uint32_t in_use() const noexcept;
  bool empty() const noexcept { return in_use() == 0; }
  ip_address address(std::uint32_t ordinal) const noexcept { return cidr.network().offset(ordinal); }
  std::optional<std::uint32_t> ordinal(const ip_address& a) const noexcept;
  /// The node of "host:<node>", or empty.
  std::string affinity_node() const;
  /// The handle holding an ordinal ("" when free or held without a handle).
  std::string handle_of(std::uint32_t ordinal) const;
};

/// Parses an IPAMBlock and checks it is internally consistent (name matches cidr,
/// allocations sized to the cidr, unallocated exactly the free ordinals, attribute
/// indexes in range). A block that fails is never assigned from and never rewritten.
result<block> parse_block(const resource& r);
resource to_resource(const block& b);
std::string to_json(const block& b);

struct block_affinity {
  std::string name;
  std::string state;  ///< pending, confirmed, pendingDeletion
  std::string node;
  ip_prefix cidr;
  bool deleted = false;
};
result<block_affinity> parse_affinity(const resource& r);
resource to_resource(const block_affinity& a);

/// An IPAMHandle: which blocks hold a handle's addresses, and how many in each.
struct handle_record {
  std::string handle_id;
  std::map<std::string, std::uint32_t> blocks;  ///< block CIDR text -> count
  bool deleted = false;
};
result<handle_record> parse_handle(const resource& r);
resource to_resource(const handle_record& h);

/// IPAMConfig "default". maxBlocksPerHost 0 means no limit.
struct ipam_config {
  bool strict_affinity = false;
  bool auto_allocate_blocks = true;
  std::uint32_t max_blocks_per_host = 0;
  friend bool operator==(const ipam_config&, const ipam_config&) = default;
};
result<ipam_config> parse_config(const resource& r);

struct reservation {
  std::string name;
  std::vector<ip_prefix> cidrs;  ///< bare addresses become /32 or /128
};
result<reservation> parse_reservation(const resource& r);
/// Each reservation CIDR must lie inside some pool.
std::vector<error> validate_reservations(const std::vector<reservation>& rs, const std::vector<pool>& pools);

// Resource names, as Calico's Kubernetes backend forms them.
std::string block_name(const ip_prefix& cidr);                      ///< 10.0.0.0/26 -> "10-0-0-0-26"
std::string affinity_name(std::string_view node, const ip_prefix& cidr);  ///< "<node>-<block name>"
std::string handle_name(std::string_view handle_id);               ///< lower-case, [a-z0-9.-], hashed when altered
inline constexpr std::string_view config_name = "default";

// The handles of tunnel addresses (cnf/ipam.hpp).
using cnf::is_tunnel_handle;
using cnf::tunnel_handle;
using cnf::tunnel_kind;

// ---- the IPAM part -------------------------------------------------------------------

/// Plugin settings ([ipam] section of a profile).
struct options {
  std::vector<pool> default_pools;       ///< [[ipam.pools]]: created when the datastore has no IPPool
  std::uint32_t max_retries = 100;       ///< compare-and-swap attempts per write
  std::chrono::milliseconds cache_ttl{2000};  ///< how long pools, IPAMConfig, reservations and node labels are reused
  std::chrono::seconds empty_block_grace{300};  ///< an empty affine block is released after this; negative: never
  std::chrono::seconds reclaim_age{60};  ///< an empty block of another node may be reclaimed this long after its claim
  /// When a handle is found neither in its IPAMHandle nor in this node's blocks, also scan
  /// every block. Always done by instances without a node name (tools, gc); for a node it
  /// only matters if a block changed hands while holding addresses (gc still finds those).
  bool release_scan = false;
  /// Directory of the node-local lock files ("ipam-<node>.lock") that serialize the block
  /// claims of one node's processes. Empty: /run/cnf, or a cnf-ipam-locks directory in the
  /// temporary directory when /run/cnf cannot be created (not root).
  std::string lock_dir;
  /// How long to wait for that lock before failing with errc::unavailable.
  std::chrono::milliseconds lock_timeout{30000};
};

/// Reads an [ipam] section: max_retries, cache_ttl_ms, empty_block_grace_seconds,
/// reclaim_age_seconds, release_scan, lock_dir, lock_timeout_ms, and [[ipam.pools]] tables (cidr, block_size, name,
/// node_selector, disabled, ipip_mode, vxlan_mode, nat_outgoing).
options configure(settings& s);

namespace detail {
struct state;
}

/// The IPAM. Copies share one state (cache, write combiner); all members are thread-safe.
class ipam {
 public:
  /// `node` is this host's name: release_handle looks in its blocks first, and requests
  /// without a node assign for it.
  ipam(any_datastore ds, std::string node, options o = {}, logger* log = nullptr);

  result<std::vector<assigned_address>> assign(const assign_request& r);
  result<void> release_handle(std::string_view handle);
  result<void> release_addresses(std::span<const ip_address> addresses);
  result<ipam_usage> usage();
  result<std::vector<allocation>> allocations();
  /// Releases every handle starting with `prefix` that is not in `valid` (addresses and
  /// IPAMHandles), then repairs what a crash can leave: pending or half-released
  /// BlockAffinities, and empty blocks past the grace period. With a node name (the
  /// plugin's), only addresses assigned for that node (allocation attribute "node") and
  /// the IPAMHandles of that node's handles are released: CNI GC on a node passes the
  /// attachments that node knows, and other nodes' pods are not among them.
  result<gc_report> gc(std::string_view prefix, const std::set<std::string>& valid);

  /// The addresses a handle holds (for CNI CHECK and ADD retries), found as release_handle
  /// finds them.
  result<std::vector<ip_address>> addresses_of(std::string_view handle);

  /// The address of this node's tunnel device (idempotent: an existing one is returned),
  /// from pools whose ipipMode / vxlanMode is not Never (or any pool when none is).
  result<assigned_address> assign_tunnel_address(tunnel_kind k, ip_family f);
  result<void> release_tunnel_address(tunnel_kind k);

  /// Releases this node's empty affine blocks whose emptySince is older than the grace.
  result<std::uint32_t> release_empty_blocks();

  const std::string& node() const noexcept;

  /// Counters since construction (for benchmarks and tests).
  struct stats {
    std::uint64_t block_writes = 0, block_conflicts = 0, block_reads = 0, combined_ops = 0;
    std::uint64_t handle_writes = 0, blocks_claimed = 0, borrowed = 0, scans = 0;
    std::uint64_t block_lists = 0;  ///< lists of every IPAMBlock (each reads all of them)
  };
  stats statistics() const;

 private:
  std::shared_ptr<detail::state> s_;
};

// ---- for the `cnf ipam` tool ---------------------------------------------------------

result<ipam_config> read_config(const any_datastore& ds);

struct config_change {
  std::optional<bool> strict_affinity;
  std::optional<bool> auto_allocate_blocks;
  std::optional<std::uint32_t> max_blocks_per_host;
};
/// Updates IPAMConfig "default" (creating it when absent); returns the new configuration.
result<ipam_config> change_config(const any_datastore& ds, const config_change& c);

/// Pools with their blocks (in use, borrowed). Same as ipam::usage().
result<ipam_usage> usage(const any_datastore& ds);

/// An address in use in a block affine to another node than the one it was assigned for.
struct borrowed_address {
  ip_address address;
  ip_prefix block;
  std::string block_node;  ///< node the block is affine to ("" when none)
  std::string handle;
  std::string node;        ///< node it was assigned for
};
result<std::vector<borrowed_address>> borrowed(const any_datastore& ds);

/// What IPAM knows of one address (`cnf ipam show --ip`).
struct address_info {
  ip_address address;
  std::optional<pool> in_pool;
  std::optional<ip_prefix> block;
  std::string block_affinity;
  bool allocated = false;
  bool reserved = false;  ///< covered by an IPReservation
  std::string handle;
  std::map<std::string, std::string> attributes;
};
result<address_info> lookup(const any_datastore& ds, const ip_address& a);

struct check_options {
  /// The workload endpoints to compare with; nullopt = list WorkloadEndpoint resources
  /// (their spec.ipNetworks) from the datastore.
  std::optional<std::vector<resource>> endpoints;
  /// Instead of endpoints: the set of live handles (e.g. the CNI GC valid list). An
  /// allocation whose handle is not in it (and is not a tunnel handle) is a leak.
  std::optional<std::set<std::string>> live_handles;
  /// Report affinities to nodes with no Node resource (skip when the datastore holds no
  /// Node resources at all, e.g. in a test).
  bool check_nodes = true;
};

struct problem {
  enum class kind {
    leaked_address,               ///< allocated, but no endpoint / live handle owns it
    endpoint_without_allocation,  ///< an endpoint's address is not allocated
    handle_without_addresses,     ///< an IPAMHandle names a block that holds none of its addresses
    block_outside_pools,          ///< an IPAMBlock in no valid pool
    affinity_to_missing_node,     ///< BlockAffinity / block affinity naming a node that does not exist
    stale_affinity,               ///< pending or pendingDeletion affinity, or one whose block is gone or owned elsewhere
    invalid_resource,             ///< a pool, block, handle, reservation or affinity that does not parse or validate
    duplicate_address,            ///< one address in two blocks (overlapping blocks)
  };
  kind what;
  std::string resource;  ///< e.g. "IPAMBlock/10-0-0-0-26"
  std::string message;
  std::optional<ip_address> address;
  std::string handle;
};
std::string_view to_string(problem::kind k) noexcept;

struct check_report {
  std::vector<problem> problems;
  std::uint64_t addresses_in_use = 0;
  std::uint64_t blocks = 0;
  std::uint64_t handles = 0;
  std::string to_json() const;  ///< for `cnf ipam check -o report.json`
};
result<check_report> check(const any_datastore& ds, const check_options& o = {});

struct release_report {
  std::vector<std::pair<ip_address, std::string>> released;  ///< address, handle it had
  std::vector<ip_address> not_allocated;
  std::vector<std::pair<ip_address, std::string>> held_by_other;  ///< address, its current handle
};
/// Releases addresses whatever holds them (`cnf ipam release --ip`), fixing IPAMHandles.
result<release_report> release_addresses(const any_datastore& ds, std::span<const ip_address> addresses);

/// One address to release, only while `handle` still holds it (empty: whatever holds it).
struct release_item {
  ip_address address;
  std::string handle;
};
/// `cnf ipam release --from-report`: an address that was re-assigned since the report was
/// written is left alone and listed in held_by_other.
result<release_report> release_addresses(const any_datastore& ds, std::span<const release_item> items);

/// What release_node did (`cnf delete node`).
struct node_release_report {
  std::uint64_t addresses = 0;    ///< addresses assigned for the node, released (in any block)
  std::uint64_t handles = 0;      ///< IPAMHandles of those handles (or written by the node) removed
  std::uint64_t blocks = 0;       ///< the node's blocks removed (empty once its addresses were released)
  std::uint64_t blocks_kept = 0;  ///< its blocks still holding other nodes' addresses: left without affinity
  std::uint64_t affinities = 0;   ///< its BlockAffinities removed
};
/// Releases a deleted node's IPAM state, as calico-kube-controllers does: every address
/// assigned for it (allocation attribute "node"), its tunnel addresses included, the
/// IPAMHandles of those handles, its blocks (removed; a block still holding addresses of
/// other nodes loses its affinity instead) and its BlockAffinities. Other nodes' state is
/// left alone. Safe to run again after an interruption.
result<node_release_report> release_node(const any_datastore& ds, const std::string& node);

/// Reads a report written by check_report::to_json().
result<check_report> parse_check_report(std::string_view json_text);

}  // namespace calico_ipam
CNF_END_NAMESPACE
