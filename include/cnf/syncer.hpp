// cnf/syncer.hpp — a datastore's kinds mirrored in memory, with changes delivered in order.
//
// Felix's rule: nothing is programmed before the first complete sync. A syncer lists each
// kind, then watches it from the list's revision, keeps a cache of what it has seen and
// tells its consumer what changed (on the executor) and how it stands (sync_status):
//
//   cnf::syncer s(ds, loop, {.kinds = {"IPPool", "IPAMBlock"}});
//   s.on_update([&](const cnf::sync_update& u) { routes.update(u); });
//   s.on_status([&](cnf::sync_status st) { routes.set_ready(st == cnf::sync_status::in_sync); });
//   s.start();
//
//   starting --(every kind listed and watched)--> in_sync
//   in_sync  --(resync_needed, a broken watch)--> resyncing --(listed again)--> in_sync
//   any      --(the datastore does not answer)--> datastore_down --(retry every `retry`)--> ...
//
// On resync_needed (etcd compaction, Kubernetes 410 Gone) or a broken watch the kind is
// listed again and compared with the cache: only the differences are delivered (added,
// modified, deleted), so a consumer never sees a resource vanish and come back. While the
// datastore is down the cache, and everything the consumer built from it, stay as they are.
// Updates of one kind come in revision order; in_sync() stays true once reached (a later
// resync delivers differences, it does not start over).
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/executor.hpp>
#include <cnf/log.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE

enum class sync_status { starting, in_sync, resyncing, datastore_down };

inline constexpr std::string_view to_string(sync_status s) noexcept {
  switch (s) {
    case sync_status::starting: return "starting";
    case sync_status::in_sync: return "in-sync";
    case sync_status::resyncing: return "resyncing";
    case sync_status::datastore_down: return "datastore-down";
  }
  return "?";
}

struct sync_update {
  enum class type { added, modified, deleted } kind;
  resource object;  ///< for deleted: the last state the cache held
};

class syncer {
 public:
  struct options {
    std::vector<std::string> kinds;
    std::chrono::milliseconds retry{1000};  ///< between attempts while the datastore is down
    logger* log = nullptr;                  ///< state changes and errors; none when null
  };

  /// Starts nothing yet (see start()). ex must outlive the syncer.
  syncer(any_datastore ds, executor& ex, options o);
  /// Stops its watches; no callback runs after it returns. Call on the executor's thread
  /// (or when the executor runs nothing of this syncer's).
  ~syncer();
  syncer(const syncer&) = delete;
  syncer& operator=(const syncer&) = delete;

  /// Set before start(). Both run on ex.
  void on_update(std::function<void(const sync_update&)> f);
  void on_status(std::function<void(sync_status)> f);
  /// Lists and watches every kind (the work runs on ex). Thread-safe.
  void start();
  /// Stops watching; the cache stays. Thread-safe; start() again resyncs by diff.
  void stop();
  sync_status status() const;
  /// True once every kind was listed and watched at least once.
  bool in_sync() const;
  /// The cache: kind -> (resource_key::to_string() -> resource). Read on the executor's thread.
  /// An unknown kind gives an empty map.
  const std::map<std::string, resource>& cache(std::string_view kind) const;

  struct state;

 private:
  std::shared_ptr<state> s_;
};

CNF_END_NAMESPACE
