// The local datastore's engine: a write-ahead log plus one file per resource, shared by
// every process that opens the same directory. Internal to the plugin.
#pragma once
#include "format.hpp"

#include <cnf/plugins/local.hpp>

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace detail::local {

/// An owned file descriptor.
class file_descriptor {
 public:
  file_descriptor() = default;
  explicit file_descriptor(int fd) noexcept : fd_(fd) {}
  file_descriptor(file_descriptor&& o) noexcept : fd_(o.release()) {}
  file_descriptor& operator=(file_descriptor&& o) noexcept {
    if (this != &o) { reset(); fd_ = o.release(); }
    return *this;
  }
  file_descriptor(const file_descriptor&) = delete;
  file_descriptor& operator=(const file_descriptor&) = delete;
  ~file_descriptor() { reset(); }
  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { int f = fd_; fd_ = -1; return f; }
  void reset() noexcept;

 private:
  int fd_ = -1;
};

using record_ptr = std::shared_ptr<const record>;

/// How a scan of a log segment ended.
struct scan_outcome {
  enum kind { eof, partial, limit, corrupt } stop = eof;
  std::string why;  ///< for corrupt: what and where
};

/// Reads complete records of one segment from `off` (records must follow `last_rev`),
/// handing each with rev <= max_rev to `sink`; advances off/last_rev past them.
result<scan_outcome> scan_segment(int fd, const std::string& path, std::uint64_t seg, std::uint64_t& off,
                                  std::uint64_t& last_rev, std::uint64_t max_rev, std::vector<char>& buf,
                                  const std::function<void(record&&)>& sink);

class store : public std::enable_shared_from_this<store> {
 public:
  static result<std::shared_ptr<store>> open(local_datastore_options o);
  ~store();

  result<resource> get(const resource_key& k);
  result<resource_list> list(const list_options& o);
  result<resource> create(const resource& r);
  result<resource> update(const resource& r);
  result<void> remove(const resource_key& k, std::string_view revision);
  result<watch_handle> watch(const watch_options& o, watch_callback cb);
  result<datastore_status> status();
  void defer_sync(bool on);
  result<void> sync();
  bool sync_deferred() const noexcept { return opt_.fsync && defer_.load(std::memory_order_relaxed); }

  const local_datastore_options& options() const noexcept { return opt_; }
  logger& log() const noexcept { return *opt_.log; }

  // ---- for watches --------------------------------------------------------------------
  /// The revision readers see now (every record up to it is durable and readable).
  result<std::uint64_t> visible_revision();
  /// Log segments on disk (first revisions, ascending), up to the active one.
  result<std::vector<std::uint64_t>> segments();
  /// Opens a segment for reading; errc::not_found when it is gone.
  result<file_descriptor> open_segment(std::uint64_t first);
  std::string segment_path(std::uint64_t first) const;
  std::string head_path() const { return v1_ + "/head"; }

 private:
  struct view {
    std::uint64_t m_rev = 0, d_rev = 0, base = 0;
    std::vector<record_ptr> recs;  // the records in (base, d_rev] it asked for, ascending (base <= m_rev)
  };
  enum class refreshed { ok, recover, retry };

  explicit store(local_datastore_options o);
  result<void> init();

  // Reader side: bring head_ and the window up to date (mu_ held).
  result<refreshed> refresh(bool locked);
  // A consistent view for a reader (takes the locks itself when recovery is needed).
  // may_lock = false: fail with errc::unavailable rather than take the exclusive lock.
  // keep: only records it accepts (all when null).
  // key: only the key's newest visible record (if the window has one).
  // with_records = false: the revisions only (what visible_revision needs, per watch wake-up:
  // copying the whole window there made every publish cost each watcher O(store size)).
  result<view> snapshot(bool may_lock = true, const std::function<bool(const record&)>* keep = nullptr,
                        const resource_key* key = nullptr, bool with_records = true);
  // Writer side (wmu_ + flock + mu_ held): refresh, recovering when needed.
  result<void> refresh_locked();
  result<void> recover();
  result<void> rotate();
  result<void> write_head();
  // Publishes every record up to `rev` (durable already): head d_rev, files, head m_rev.
  // files = false: the first step alone (head d_rev), which makes the records visible to
  // every reader (through the log); a later publish writes their files.
  result<void> publish(std::uint64_t rev, bool files = true);
  // The first step of publish_locked: head d_rev up to `rev` (clamped to the log's end).
  result<void> expose_locked(std::uint64_t rev);
  // Whether the writer of the newest visible record not yet in its file is this process
  // or another that is alive: it writes the file itself (see sync()).
  bool publisher_alive() const;
  result<void> publish_locked(std::uint64_t rev, std::unique_lock<std::mutex>& l);
  result<void> materialize(const std::vector<record_ptr>& recs);
  // The spare-file pool (v1/spare). Under the flock: gives a new resource file an inode
  // from the pool (written first, then renamed into place); false when the pool is empty.
  bool place_from_spare(int dfd, const std::string& path, const std::string& text);
  // Under the flock: moves a removed resource's file into the pool (or unlinks it).
  result<void> retire_file(int dfd, const std::string& path, std::uint64_t rev);
  result<void> open_spares();
  void refill_spares(std::uint32_t n);
  // Makes records of a writer that is gone visible: fdatasync, then publish.
  result<void> settle(std::uint64_t rev, std::shared_ptr<file_descriptor> seg);
  // A reader that sees files left half-written by a dead writer writes them (no wait).
  result<void> finish_publish();
  bool writer_gone() const;
  // Liveness of writers without process ids: from before a writer appends its record
  // until its files are written it holds a shared flock on v1/live (one per handle,
  // counted across the handle's threads; a deferred write holds it until sync() has
  // published). A process that takes the lock exclusively, without waiting, knows that no
  // writer is at work: records not yet published are a dead writer's. The kernel drops a
  // killed process's locks, in any PID namespace.
  void hold_live();
  void release_live();
  bool writers_at_work() const;
  static std::string key_string(const resource_key& k);
  void window_push(record_ptr r);
  void window_pop_front();
  void window_clear();
  record_ptr window_latest(const resource_key& k, std::uint64_t max_rev) const;
  result<void> check_process() const;

  result<resource> write(op what, const resource_key& key, const resource* desired, std::string_view expected);
  result<std::optional<resource>> read_file(const resource_key& k, bool* damaged = nullptr);
  result<std::optional<resource>> read_path(const std::string& rel, const resource_key* expect, bool* damaged = nullptr);
  result<void> write_checkpoint(std::uint64_t rev);
  std::uint64_t read_checkpoint();
  result<void> create_segment(std::uint64_t first);
  result<void> remove_old_segments();
  result<std::vector<std::string>> list_dir(int dirfd, const std::string& rel, bool& missing);
  error sys_error(std::string_view what, const std::string& path, int err) const;

  local_datastore_options opt_;
  std::string root_, v1_;
  std::string boot_;
  pid_t pid_ = 0;  // the process that opened the store
  file_descriptor root_fd_, v1_fd_, data_fd_, log_fd_, head_fd_, shared_fd_;

  file_descriptor live_fd_, probe_fd_;  // v1/live, two open file descriptions (hold / probe)
  mutable std::mutex live_mu_;          // the two below; taken after mu_, never before it
  std::uint32_t live_holders_ = 0;
  bool pending_live_ = false;  // (mu_) the deferred writes (pending_rev_) hold one
  std::mutex wmu_;  // writers of this process (flock does not exclude threads sharing an fd)
  std::mutex mu_;   // everything below
  head head_;
  std::shared_ptr<file_descriptor> seg_;
  std::uint64_t seg_first_ = 0;
  std::uint64_t off_ = 0;       // end of the records read from seg_
  std::uint64_t last_rev_ = 0;  // revision of the last record read
  std::uint64_t base_ = 0;      // window_ holds every record in (base_, last_rev_]
  std::deque<record_ptr> window_;
  std::unordered_map<std::string, record_ptr> latest_;  // key_string -> its newest record in window_
  std::size_t window_bytes_ = 0;
  std::vector<char> buf_;
  // Deferred durability: the newest revision this handle wrote and has not flushed, and
  // the segment that holds it (0 / null: none).
  std::atomic<bool> defer_{false};
  // The spare-file pool: its directory, names believed to be in it (flock held), and the
  // thread that tops it up when this handle opened (stopped and joined by ~store).
  file_descriptor spare_fd_;
  std::vector<std::string> spares_;
  bool spares_listed_ = false;
  std::size_t spares_known_ = 0;  // the pool's size when last listed, +/- this handle's moves
  std::atomic<bool> stop_refill_{false};
  std::thread refill_;
  std::uint64_t pending_rev_ = 0;
  std::shared_ptr<file_descriptor> pending_seg_;
};

}  // namespace detail::local
CNF_END_NAMESPACE
