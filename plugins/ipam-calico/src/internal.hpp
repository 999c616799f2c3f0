// Internals of calico-ipam shared by its translation units; not installed.
#pragma once
#include <cnf/plugins/calico_ipam.hpp>

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace calico_ipam::detail {

__extension__ using u128 = unsigned __int128;

using sys_clock = std::chrono::system_clock;
std::string format_time(sys_clock::time_point t);
std::string now_text();
std::optional<sys_clock::time_point> parse_time(std::string_view s);

std::uint64_t fnv1a(std::string_view s) noexcept;
ip_address add(const ip_address& a, u128 n) noexcept;
std::string family_name(ip_family f);

/// The spec of a resource as a JSON object, or an error naming the resource.
result<boost::json::object> spec_object(const resource& r);
result<boost::json::object> spec_object(const resource& r, boost::json::storage_ptr sp);
std::string where(const resource& r);  ///< "IPAMBlock/10-0-0-0-26"

/// IPReservation CIDRs, with the resource each came from.
struct reserved_set {
  std::vector<std::pair<ip_prefix, std::string>> cidrs;
  const std::string* holder(const ip_address& a) const noexcept;  ///< reservation name, or null
  bool covers(const ip_prefix& block) const noexcept;              ///< every address reserved
  bool touches(const ip_prefix& block) const noexcept;             ///< some address reserved
  std::uint32_t free_in(const block& b) const;                      ///< free ordinals not reserved
};

// ---- pure operations on a block (no I/O) ----------------------------------------------
/// Takes up to `n` free, unreserved ordinals from the front of `unallocated`.
std::vector<std::uint32_t> take(block& b, std::uint32_t n, const std::string& handle,
                                const std::map<std::string, std::string>& secondary, const reserved_set& reserved);
/// Marks one ordinal allocated (it must be free).
void take_ordinal(block& b, std::uint32_t ordinal, const std::string& handle, const std::map<std::string, std::string>& secondary);
/// Frees the given ordinals (those allocated), appending them to the back of unallocated.
void free_ordinals(block& b, const std::vector<std::uint32_t>& ordinals);

// ---- the write combiner for one block ----------------------------------------------------
/// The label of an IPAMHandle naming the node whose assignment wrote it: gc of that node
/// may remove the record once the handle is gone.
inline constexpr std::string_view node_label = "cnf.dev/node";

/// The node-local lock that serializes one node's block claims and repairs between the
/// processes (and threads) of a machine: flock on "<dir>/ipam-<node>.lock", one open file
/// per holder, released when the holder goes away (a killed process included).
/// Re-entrant within a thread.
class node_lock {
 public:
  static result<node_lock> acquire(const std::string& dir, const std::string& node, std::chrono::milliseconds timeout);
  node_lock() = default;
  node_lock(node_lock&& o) noexcept : fd_(std::exchange(o.fd_, -1)), key_(std::move(o.key_)) {}
  node_lock& operator=(node_lock&& o) noexcept {
    if (this != &o) {
      release();
      fd_ = std::exchange(o.fd_, -1);
      key_ = std::move(o.key_);
    }
    return *this;
  }
  ~node_lock() { release(); }

 private:
  void release() noexcept;
  int fd_ = -1;
  std::string key_;  ///< non-empty while this object counts in the thread's re-entry map
};

struct block_op {
  enum class kind { allocate, claim_exact, release_handles, release_addresses };
  enum class outcome { ok, gone, corrupt, affinity_mismatch, failed };
  kind what = kind::allocate;
  // allocate / claim_exact
  std::uint32_t want = 0;
  std::string handle;
  std::map<std::string, std::string> secondary;
  std::string affine_to;  ///< allocate: only if the block is affine to this node
  std::shared_ptr<const reserved_set> reserved;
  // claim_exact / release_addresses
  std::vector<ip_address> addresses;
  std::string only_handle;  ///< release_addresses: only addresses held by this handle
  std::map<ip_address, std::string> expected;  ///< release_addresses: per-address holder to insist on
  // release_handles
  std::set<std::string> handles;
  std::string only_node;  ///< release_handles: only addresses assigned for this node (attribute "node")
  // results
  outcome out = outcome::ok;
  cnf::error err;
  std::vector<ip_address> got;
  std::vector<ip_address> already;  ///< claim_exact: held by this handle before
  std::vector<std::pair<ip_address, std::string>> released;
  bool done = false;  ///< guarded by the slot mutex
};

struct block_slot {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<resource> res;  ///< last seen version
  std::optional<block> parsed;
  std::optional<cnf::error> corrupt;
  bool missing = false;
  /// Bumped whenever res/parsed are replaced or dropped by anything but the running
  /// process() committing its own write: that one changes `parsed` in place before it
  /// writes, and keeps the result only if nothing else touched the copy meanwhile.
  std::uint64_t version = 0;
  std::vector<std::shared_ptr<block_op>> queue;
  bool busy = false;
};

struct counters {
  std::atomic<std::uint64_t> block_writes{0}, block_conflicts{0}, block_reads{0}, combined_ops{0};
  std::atomic<std::uint64_t> handle_writes{0}, blocks_claimed{0}, borrowed{0}, scans{0};
  std::atomic<std::uint64_t> block_lists{0};
};

/// Pools, IPAMConfig, reservations and node labels, reused for options::cache_ttl.
struct snapshot {
  std::vector<pool> pools;  ///< valid ones, sorted by name
  std::vector<cnf::error> pool_problems;
  std::vector<std::string> invalid_pool_names;
  ipam_config config;
  std::shared_ptr<reserved_set> reserved;
  std::chrono::steady_clock::time_point fetched{};
};

/// One listed block.
struct listed_block {
  std::string name;
  std::string revision;
  std::optional<block> parsed;  ///< empty when corrupt
  std::optional<cnf::error> problem;
  std::string spec;
};

struct state {
  any_datastore ds;
  std::string node;
  options opts;
  logger* log = nullptr;
  counters stats;

  std::mutex snap_mu;
  std::shared_ptr<const snapshot> snap;
  std::map<std::string, std::pair<std::map<std::string, std::string>, std::chrono::steady_clock::time_point>> node_labels;

  std::mutex slots_mu;
  std::unordered_map<std::string, std::shared_ptr<block_slot>> slots;

  std::mutex affine_mu;
  struct affine_entry {
    std::vector<ip_prefix> blocks;  ///< confirmed, sorted
    bool valid = false;
  };
  std::map<std::string, affine_entry> affine;
  /// Set when a claim or release of a block stopped half-way in this process: the next
  /// operation lists the node's affinities and settles them.
  std::atomic<bool> unsettled{false};

  std::atomic<std::int64_t> last_sweep_ns{0};

  /// Handles this process assigned, with the blocks that hold them: released without a
  /// search. Bounded; forgotten entries fall back to the search.
  std::mutex mine_mu;
  std::unordered_map<std::string, std::vector<ip_prefix>> mine;
  void remember_handle(const std::string& h, std::vector<ip_prefix> blocks);
  std::optional<std::vector<ip_prefix>> take_handle(const std::string& h);

  state(any_datastore d, std::string n, options o, logger* l)
      : ds(std::move(d)), node(std::move(n)), opts(std::move(o)), log(l ? l : &default_logger()) {}

  // snapshot / lookups
  result<std::shared_ptr<const snapshot>> load(bool force = false);
  result<std::map<std::string, std::string>> labels_of(const std::string& node);
  /// The node's blocks: the CIDRs its BlockAffinities name, in any state, after settling
  /// the unconfirmed ones (see settle). `refresh`: list again instead of using the cache.
  result<std::vector<ip_prefix>> affine_blocks(const std::string& node, bool refresh);
  /// Finishes or undoes the node's interrupted claims and releases of blocks, holding the
  /// node's lock: pending or pendingDeletion affinities whose block names the node are
  /// confirmed, the others (and confirmed ones whose block is gone or someone else's)
  /// removed. Returns the CIDRs of the node's affinities left.
  result<std::vector<ip_prefix>> settle(const std::string& node);
  result<std::vector<ip_prefix>> settle_locked(const std::string& node);  ///< one pass of settle, the lock held
  result<node_lock> lock(const std::string& node);
  void forget_affine(const std::string& node);
  result<std::vector<listed_block>> list_blocks();

  // block slots
  std::shared_ptr<block_slot> slot(const std::string& name);
  void run(const std::string& name, const std::shared_ptr<block_op>& op);
  void process(const std::string& name, block_slot& s, std::vector<std::shared_ptr<block_op>>& batch);
  void remember(block_slot& s, const resource& r);
  /// Drops the cached copy of a block (it is read again when next needed); `missing`:
  /// the block is known not to exist. drop_locked: the caller holds s.mu.
  void forget(block_slot& s);
  void drop_locked(block_slot& s, bool missing);
  std::optional<block> cached(const std::string& name);
  /// Free addresses (not reserved) of the cached copy of block `name`; nullopt when this
  /// process holds no usable copy. A hint only: the copy may be stale.
  std::optional<std::uint32_t> cached_free(const std::string& name, const reserved_set& reserved);

  // datastore steps
  result<bool> try_claim(const ip_prefix& cidr, const std::string& node);
  result<void> confirm_affinity(const resource& pending);
  result<bool> release_affinity(const ip_prefix& cidr, const std::string& node, bool require_empty,
                                const std::string& expected_revision);
  /// Adds `delta` to the handle's count for `block` in its IPAMHandle (created when
  /// missing, with the label node_label = `owner` when given; removed at zero).
  result<void> adjust_handle(const std::string& handle, const ip_prefix& block, int delta, const std::string& owner = {});

  // the operations
  result<std::vector<assigned_address>> assign(const assign_request& r);
  result<std::uint32_t> release_handle(std::string_view handle);
  result<release_report> release_addresses(std::span<const release_item> items);
  result<gc_report> gc(std::string_view prefix, const std::set<std::string>& valid);
  result<std::uint32_t> release_empty(const std::string& node_or_all, bool all_nodes);
  result<std::vector<std::pair<ip_address, ip_prefix>>> find_handle(const std::string& handle);
  void maybe_sweep();

  std::uint32_t retries() const { return opts.max_retries ? opts.max_retries : 1; }
};

}  // namespace calico_ipam::detail
CNF_END_NAMESPACE
