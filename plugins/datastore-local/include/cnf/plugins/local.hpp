// cnf/plugins/local.hpp — the `local` datastore: cnf resources in files under one
// directory, shared safely by many processes on one machine. The default datastore.
//
//   cnf::local_datastore_options o;
//   o.dir = "/var/lib/cnf";                                  // created 0700 if missing
//   auto ds = cnf::local_datastore::open(o);                  // result<local_datastore>
//   if (!ds) { /* ds.error().message names the directory and the failing call */ }
//   auto p = ds->create({"IPPool", "", "default-ipv4", {}, R"({"cidr":"10.244.0.0/16"})"});
//   cnf::any_datastore any = *ds;                             // models cnf::datastore
//
// Layout (everything 0600 files / 0700 directories):
//   <dir>/v1/head                 lock file (flock) + a small hint: active log segment,
//                                 durable and materialised revisions, boot id
//   <dir>/v1/live                 lock file: writers hold it shared (flock) from appending a
//                                 record until it is published; free = no writer at work
//   <dir>/v1/log/<rev>.log        the write-ahead log: segments named by their first
//                                 revision (20 digits); one record per write
//   <dir>/v1/checkpoint           revision up to which the files below are known durable
//   <dir>/v1/data/<kind>/<ns or _>/<name>.json   one file per resource (readable JSON)
// Kind, namespace and name are percent-escaped (only [A-Za-z0-9.-] stay, a leading '.'
// is escaped, so '/', '..' and '_' can never form a path of their own); names whose
// escaped form is long end in "~<hash>" and the file holds the real name.
//
// A write takes an exclusive flock on `head`, checks the revision (compare-and-swap),
// appends one checksummed record to the log and releases the lock; it then fdatasyncs the
// log (the only fsync of a write; concurrent writers share it) and, under the lock again,
// publishes: advances the durable revision and rewrites the resource's file in place
// (each file ends in a crc32 member). Readers take no lock: they read `head`, the few log
// records newer than the files, and the file; a file caught half-rewritten fails its
// checksum and the reader finds the record in the log instead. A SIGKILL at any point
// leaves either the old or the new state: a torn log record is cut off by the next
// writer, a committed record whose writer died is published by the next writer (or by a
// reader that finds v1/live free: no process ids are stored or probed), and files a dead publisher left half-written are
// written again by the next process that finds the lock free. After a
// reboot (the boot id in `head` differs) the first process replays the log from the
// checkpoint, so files lost with the page cache come back. The store revision is the
// log's record number; watch() tails the log (inotify on `head`), and a revision older
// than the retained segments gets resync_needed.
//
// Lists are consistent with the revision they return; a later page reflects the store as
// it is when that page is read (as memory_datastore does). Spec text is kept as a JSON
// value: it comes back re-serialised (same content, compact form).
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/executor.hpp>
#include <cnf/log.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE

class settings;

/// Settings of the local datastore (profile keys of the same names).
struct local_datastore_options {
  std::string dir = "/var/lib/cnf";  ///< absolute path; created 0700 when missing
  /// fdatasync the log on every write (and sync at checkpoints). `false` is only for tests
  /// and benchmarks: a crash of the machine may then lose acknowledged writes.
  bool fsync = true;
  std::uint64_t log_segment_bytes = 8u << 20;  ///< start a new log segment past this size
  std::uint32_t log_segments_kept = 4;          ///< segments kept for watches that resume
  /// Empty files kept in <dir>/v1/spare for new resources: renaming one into place costs
  /// ~20 us where creating a file (allocating an inode) costs ~0.5 ms on ext4 here. A
  /// handle that finds fewer tops the pool up on a thread of its own when it opens;
  /// removed resources' files go back into it. 0: no pool (files are created in place).
  std::uint32_t spare_files = 12;
  /// Deliver watch events here (null: a thread per watch). With deferred sync, sync()
  /// also leaves the writing of the synced records' files to it (they are durable and
  /// visible when sync() returns; README, "Files after the answer").
  executor* exec = nullptr;
  logger* log = nullptr;     ///< null: cnf::default_logger()
};

/// Reads and validates the plugin's profile section (no I/O); problems are recorded in `s`
/// naming the key, the host reports them with s.finish().
local_datastore_options configure_local_datastore(settings& s);

/// Validates options built in code; the error names the field.
result<void> check_local_datastore_options(const local_datastore_options& o);

namespace detail::local {
class store;
}

/// The local datastore. Copies share one open store; every operation is thread-safe.
class local_datastore {
 public:
  /// Creates the directory layout if needed, replays the log after a reboot, and opens it.
  static result<local_datastore> open(local_datastore_options o);

  result<resource> get(const resource_key& k) const;
  result<resource_list> list(const list_options& o) const;
  result<resource> create(const resource& r) const;
  /// Compare-and-swap on r.revision (an empty revision updates unconditionally).
  result<resource> update(const resource& r) const;
  /// With a non-empty `revision`, only removes that revision (errc::conflict otherwise).
  result<void> remove(const resource_key& k, std::string_view revision = {}) const;
  result<watch_handle> watch(const watch_options& o, watch_callback cb) const;
  result<datastore_status> status() const;
  /// Deferred durability (cnf/datastore.hpp): with it on, a write appends its log record
  /// and returns; sync() then flushes the log once and publishes every such write.
  void defer_sync(bool on) const;
  result<void> sync() const;
  bool sync_deferred() const noexcept;

  const local_datastore_options& options() const noexcept;

 private:
  explicit local_datastore(std::shared_ptr<detail::local::store> s) : s_(std::move(s)) {}
  std::shared_ptr<detail::local::store> s_;
};

static_assert(datastore<local_datastore>);

CNF_END_NAMESPACE
