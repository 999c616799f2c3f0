// cnf::syncer: per kind, list -> diff against the cache -> watch from the list's revision.
// All state lives on the executor's thread; datastore watch callbacks (which may come on
// another thread) post there, tagged with the generation of the watch that made them, so
// events of a watch that was replaced are dropped.
#include <cnf/syncer.hpp>

#include <atomic>

CNF_BEGIN_NAMESPACE

struct syncer::state : std::enable_shared_from_this<syncer::state> {
  struct kind_state {
    std::string kind;
    std::map<std::string, resource> cache;
    watch_handle watch;
    std::uint64_t gen = 0;     // of the current watch; events of older ones are dropped
    bool watching = false;     // listed and watched, no error since
    bool down = false;         // the last list or watch failed: retry timer pending
    executor::timer_id retry = 0;
  };

  state(any_datastore d, executor& e, options o) : ds(std::move(d)), ex(e), opts(std::move(o)) {
    for (auto& k : opts.kinds) kinds.push_back(kind_state{.kind = k});
  }

  any_datastore ds;
  executor& ex;
  options opts;
  std::vector<kind_state> kinds;
  std::function<void(const sync_update&)> on_update;
  std::function<void(sync_status)> on_status;
  std::atomic<sync_status> status{sync_status::starting};
  std::atomic<bool> reached{false};
  bool running = false;  // on ex

  void log(log_level l, const std::string& m) {
    if (opts.log && opts.log->enabled(l)) opts.log->write(l, "syncer: " + m);
  }

  void deliver(sync_update::type t, const resource& r) {
    if (on_update) on_update(sync_update{t, r});
  }

  void set_status(sync_status s) {
    if (status.exchange(s) == s) return;
    log(s == sync_status::datastore_down ? log_level::warn : log_level::info, "status " + std::string(to_string(s)));
    if (on_status) on_status(s);
  }

  void recompute() {
    if (!running) return;
    bool any_down = false, all_watching = true;
    for (auto& k : kinds) {
      any_down |= k.down;
      all_watching &= k.watching;
    }
    if (any_down) return set_status(sync_status::datastore_down);
    if (all_watching) {
      reached = true;
      return set_status(sync_status::in_sync);
    }
    set_status(reached ? sync_status::resyncing : sync_status::starting);
  }

  void start() {
    if (running) return;
    running = true;
    for (std::size_t i = 0; i < kinds.size(); ++i) sync_kind(i);
    recompute();
  }

  void stop() {
    running = false;
    for (auto& k : kinds) {
      ++k.gen;
      k.watch.cancel();
      k.watching = false;
      k.down = false;
      if (k.retry) ex.cancel(std::exchange(k.retry, 0));
    }
  }

  // A broken watch or a resync_needed: list again, diff, watch again.
  void restart_kind(std::size_t i, bool failed) {
    auto& k = kinds[i];
    ++k.gen;
    k.watch.cancel();
    k.watching = false;
    if (failed) {
      schedule_retry(i);
    } else {
      recompute();
      sync_kind(i);
    }
    recompute();
  }

  void schedule_retry(std::size_t i) {
    auto& k = kinds[i];
    k.down = true;
    if (k.retry) return;
    std::weak_ptr<state> w = weak_from_this();
    k.retry = ex.post_after(opts.retry, [w, i] {
      auto s = w.lock();
      if (!s || !s->running) return;
      s->kinds[i].retry = 0;
      s->sync_kind(i);
      s->recompute();
    });
  }

  void sync_kind(std::size_t i) {
    auto& k = kinds[i];
    auto l = ds.list_all(list_options{.kind = k.kind});
    if (!l) {
      log(log_level::warn, k.kind + ": list failed (" + l.error().message + "); retrying in " + std::to_string(opts.retry.count()) + " ms");
      return schedule_retry(i);
    }
    // Diff against the cache: only differences reach the consumer.
    std::map<std::string, resource> fresh;
    for (auto& r : l->items) fresh.emplace(r.key().to_string(), std::move(r));
    auto old = std::move(k.cache);
    k.cache = {};
    for (auto& [key, r] : fresh) {
      auto it = old.find(key);
      k.cache.emplace(key, r);
      if (it == old.end()) {
        deliver(sync_update::type::added, r);
      } else {
        if (!(it->second == r)) deliver(sync_update::type::modified, r);
        old.erase(it);
      }
      if (!running) return;
    }
    for (auto& [key, r] : old) {
      deliver(sync_update::type::deleted, r);
      if (!running) return;
    }

    const std::uint64_t gen = ++k.gen;
    std::weak_ptr<state> w = weak_from_this();
    auto h = ds.watch(watch_options{.kind = k.kind, .revision = l->revision}, [w, i, gen](const watch_event& ev) {
      auto s = w.lock();
      if (!s) return;
      s->ex.post([w, i, gen, ev] {
        auto s = w.lock();
        if (s && s->running && s->kinds[i].gen == gen) s->on_event(i, ev);
      });
    });
    if (!h) {
      log(log_level::warn, k.kind + ": watch failed (" + h.error().message + "); retrying in " + std::to_string(opts.retry.count()) + " ms");
      return schedule_retry(i);
    }
    k.watch = std::move(*h);
    k.watching = true;
    k.down = false;
  }

  void on_event(std::size_t i, const watch_event& ev) {
    auto& k = kinds[i];
    using t = watch_event::type;
    switch (ev.kind) {
      case t::added:
      case t::modified: {
        auto key = ev.object.key().to_string();
        auto it = k.cache.find(key);
        if (it == k.cache.end()) {
          k.cache.emplace(key, ev.object);
          deliver(sync_update::type::added, ev.object);
        } else if (!(it->second == ev.object)) {
          it->second = ev.object;
          deliver(sync_update::type::modified, ev.object);
        }
        return;
      }
      case t::deleted: {
        auto it = k.cache.find(ev.object.key().to_string());
        if (it == k.cache.end()) return;
        auto last = std::move(it->second);
        k.cache.erase(it);
        deliver(sync_update::type::deleted, last);
        return;
      }
      case t::in_sync: return;
      case t::resync_needed:
        log(log_level::info, k.kind + ": resync needed (history compacted); listing again");
        return restart_kind(i, false);
      case t::error:
        log(log_level::warn, k.kind + ": watch broken (" + ev.err.message + "); listing again in " + std::to_string(opts.retry.count()) + " ms");
        return restart_kind(i, true);
    }
  }
};

syncer::syncer(any_datastore ds, executor& ex, options o) : s_(std::make_shared<state>(std::move(ds), ex, std::move(o))) {}

syncer::~syncer() {
  s_->on_update = nullptr;
  s_->on_status = nullptr;
  s_->stop();
}

void syncer::on_update(std::function<void(const sync_update&)> f) { s_->on_update = std::move(f); }
void syncer::on_status(std::function<void(sync_status)> f) { s_->on_status = std::move(f); }

void syncer::start() {
  std::weak_ptr<state> w = s_;
  s_->ex.post([w] {
    if (auto s = w.lock()) s->start();
  });
}

void syncer::stop() {
  std::weak_ptr<state> w = s_;
  s_->ex.post([w] {
    if (auto s = w.lock()) s->stop();
  });
}

sync_status syncer::status() const { return s_->status.load(); }
bool syncer::in_sync() const { return s_->reached.load(); }

const std::map<std::string, resource>& syncer::cache(std::string_view kind) const {
  for (auto& k : s_->kinds)
    if (k.kind == kind) return k.cache;
  static const std::map<std::string, resource> none;
  return none;
}

CNF_END_NAMESPACE
