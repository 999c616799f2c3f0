// cnf/memory_datastore.hpp — a datastore that lives in this process's memory.
//
// For research prototypes that compose parts statically and for unit tests of logic that
// sits on a datastore (IPAM, the agent's reconcilers). It models cnf::datastore with the
// same semantics the real backends have:
//   - one store-wide revision counter; every write bumps it, and a resource's revision is
//     the counter's value (as a decimal string) at its last write;
//   - create() fails with errc::already_exists; update() is compare-and-swap on revision
//     (errc::conflict; an empty revision updates unconditionally); remove() takes an optional
//     expected revision;
//   - list() filters by kind, namespace and name prefix, in (namespace, name) order, with
//     pages (limit + continue token); later pages show the store as it is when they are read;
//   - watch() delivers on a thread the watch owns, or on the executor given to the
//     constructor, one event at a time, in revision order: without a revision the current
//     state as `added`, then `in_sync`, then changes; from a revision the changes after it
//     (from a bounded history), then `in_sync`, then changes. A revision older than the
//     history reaches, or a consumer that falls more than `max_pending` events behind, gets
//     `resync_needed` and the watch ends.
// Copies share one store. Every operation is thread-safe.
//
//   cnf::memory_datastore ds;                         // or ds({.exec = &my_executor})
//   auto r = ds.create({.kind = "IPPool", .name = "p1", .spec = R"({"cidr":"10.0.0.0/16"})"});
//   auto w = ds.watch({.kind = "IPPool"}, [](const cnf::watch_event& e) { ... });
//   cnf::any_datastore any = ds;                      // where a part wants any_datastore
//
// Not checked here: that spec is valid JSON (the store keeps it as text).
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/executor.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

CNF_BEGIN_NAMESPACE

struct memory_datastore_options {
  executor* exec = nullptr;          ///< deliver watch events here; null: one thread per watch
  std::size_t history = 10000;       ///< events kept for watches that resume from a revision
  std::size_t max_pending = 100000;  ///< undelivered events per watch before it gets resync_needed
};

namespace detail::memory {

using key_t = std::tuple<std::string, std::string, std::string>;  // kind, namespace, name

inline std::string to_rev(std::uint64_t r) { return std::to_string(r); }

inline bool parse_rev(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

inline std::string hex(std::string_view s) {
  static constexpr char d[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char c : s) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}

inline bool unhex(std::string_view s, std::string& out) {
  if (s.size() % 2) return false;
  auto v = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  out.clear();
  for (std::size_t i = 0; i < s.size(); i += 2) {
    int hi = v(s[i]), lo = v(s[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
  }
  return true;
}

struct history_entry {
  watch_event::type type;
  resource object;  // revision == the event's revision
};

struct watcher;

struct store {
  std::mutex mu;
  std::uint64_t revision = 0;
  std::uint64_t compacted = 0;  // history holds every event with revision > compacted
  std::map<key_t, resource> objects;
  std::deque<history_entry> history;
  std::vector<std::shared_ptr<watcher>> watchers;
  memory_datastore_options opt;
};

inline bool matches(const watch_options& o, const resource& r) {
  if (!o.kind.empty() && r.kind != o.kind) return false;
  if (o.ns && r.ns != *o.ns) return false;
  return r.name.compare(0, o.name_prefix.size(), o.name_prefix) == 0;
}

struct watcher final : watch_handle::state, std::enable_shared_from_this<watcher> {
  watch_options opt;
  watch_callback cb;
  executor* exec = nullptr;
  std::size_t max_pending = 0;
  std::weak_ptr<store> owner;

  std::mutex qmu;
  std::condition_variable cv;
  std::deque<watch_event> queue;
  bool stopped = false;    // cancelled: deliver nothing more
  bool ended = false;      // resync_needed queued: accept nothing more
  bool scheduled = false;  // executor mode: a drain task is posted or running

  std::mutex delivery;  // held while the callback runs
  std::atomic<std::thread::id> delivering{};
  std::thread thread;

  // Called with the store's mutex held. Returns true when the caller must post a drain
  // task (after releasing the store's mutex).
  bool push(watch_event ev, std::uint64_t store_revision) {
    std::lock_guard l(qmu);
    if (stopped || ended) return false;
    if (max_pending && queue.size() >= max_pending) {
      queue.clear();
      watch_event rs;
      rs.kind = watch_event::type::resync_needed;
      rs.revision = to_rev(store_revision);
      queue.push_back(std::move(rs));
      ended = true;
    } else {
      if (ev.kind == watch_event::type::resync_needed) ended = true;
      queue.push_back(std::move(ev));
    }
    if (!exec) {
      cv.notify_one();
      return false;
    }
    if (scheduled) return false;
    scheduled = true;
    return true;
  }

  void deliver(const watch_event& ev) {
    std::lock_guard d(delivery);
    {
      std::lock_guard l(qmu);
      if (stopped) return;
    }
    delivering = std::this_thread::get_id();
    try {
      cb(ev);
    } catch (...) {
      // A throwing consumer must not take the delivery thread (or the host's loop) down.
    }
    delivering = std::thread::id{};
  }

  void run_thread() {
    for (;;) {
      watch_event ev;
      {
        std::unique_lock l(qmu);
        cv.wait(l, [&] { return stopped || !queue.empty(); });
        if (stopped) return;
        ev = std::move(queue.front());
        queue.pop_front();
      }
      deliver(ev);
      if (ev.kind == watch_event::type::resync_needed) return;
    }
  }

  void drain() {
    // A bounded batch per task, so one busy watch does not monopolise the host's loop.
    for (int n = 0; n < 256; ++n) {
      watch_event ev;
      {
        std::lock_guard l(qmu);
        if (stopped || queue.empty()) {
          scheduled = false;
          return;
        }
        ev = std::move(queue.front());
        queue.pop_front();
      }
      deliver(ev);
    }
    exec->post([self = shared_from_this()] { self->drain(); });
  }

  void start() {
    if (exec) {
      bool post = false;
      {
        std::lock_guard l(qmu);
        if (!queue.empty() && !scheduled) post = scheduled = true;
      }
      if (post) exec->post([self = shared_from_this()] { self->drain(); });
    } else {
      thread = std::thread([self = shared_from_this()] { self->run_thread(); });
    }
  }

  void cancel() noexcept override {
    {
      std::lock_guard l(qmu);
      if (stopped) return;
      stopped = true;
      queue.clear();
    }
    cv.notify_all();
    if (auto s = owner.lock()) {
      std::lock_guard l(s->mu);
      std::erase_if(s->watchers, [this](const std::shared_ptr<watcher>& w) { return w.get() == this; });
    }
    bool self_call = delivering.load() == std::this_thread::get_id();
    if (thread.joinable()) {
      if (self_call || thread.get_id() == std::this_thread::get_id()) thread.detach();
      else thread.join();
    } else if (!self_call) {
      // Executor mode: wait for a callback that is running right now to return.
      std::lock_guard d(delivery);
    }
  }
};

}  // namespace detail::memory

class memory_datastore {
 public:
  memory_datastore() : memory_datastore(memory_datastore_options{}) {}
  explicit memory_datastore(executor* exec) : memory_datastore(memory_datastore_options{exec}) {}
  explicit memory_datastore(memory_datastore_options o) : s_(std::make_shared<detail::memory::store>()) {
    s_->opt = o;
  }

  result<resource> get(const resource_key& k) const {
    std::lock_guard l(s_->mu);
    auto it = s_->objects.find({k.kind, k.ns, k.name});
    if (it == s_->objects.end()) return error(errc::not_found, k.to_string() + " not found");
    return it->second;
  }

  result<resource_list> list(const list_options& o) const {
    detail::memory::key_t start{o.kind, o.ns.value_or(""), o.ns ? o.name_prefix : std::string()};
    bool after = false;
    if (!o.continue_token.empty()) {
      auto t = parse_token(o.continue_token);
      if (!t) return error(errc::invalid, "list " + o.kind + ": malformed continue token '" + o.continue_token + "'");
      if ((!o.kind.empty() && std::get<0>(*t) != o.kind) || (o.ns && std::get<1>(*t) != *o.ns))
        return error(errc::invalid, "list " + o.kind + ": continue token '" + o.continue_token + "' belongs to another list");
      start = *t;
      after = true;
    }
    std::lock_guard l(s_->mu);
    resource_list out;
    out.revision = detail::memory::to_rev(s_->revision);
    auto it = after ? s_->objects.upper_bound(start) : s_->objects.lower_bound(start);
    for (; it != s_->objects.end(); ++it) {
      const auto& [kind, ns, name] = it->first;
      if (!o.kind.empty() && kind != o.kind) break;
      if (o.ns && ns != *o.ns) {
        if (!o.kind.empty()) break;
        continue;
      }
      if (name.compare(0, o.name_prefix.size(), o.name_prefix) != 0) {
        if (o.ns && !o.kind.empty() && name > o.name_prefix) break;  // past the prefix's range
        continue;
      }
      if (o.limit && out.items.size() == o.limit) {
        const auto& last = out.items.back();
        out.continue_token = "m1:" + detail::memory::hex(last.kind) + ":" + detail::memory::hex(last.ns) + ":" +
                             detail::memory::hex(last.name);
        break;
      }
      out.items.push_back(it->second);
    }
    return out;
  }

  result<resource> create(const resource& r) const {
    if (auto e = check(r); !e) return e.error();
    std::vector<std::shared_ptr<detail::memory::watcher>> post;
    resource stored;
    {
      std::lock_guard l(s_->mu);
      auto [it, inserted] = s_->objects.try_emplace({r.kind, r.ns, r.name}, r);
      if (!inserted)
        return error(errc::already_exists, r.key().to_string() + " already exists (revision " + it->second.revision + ")");
      it->second.revision = detail::memory::to_rev(++s_->revision);
      stored = it->second;
      record(watch_event::type::added, stored, post);
    }
    post_all(post);
    return stored;
  }

  result<resource> update(const resource& r) const {
    if (auto e = check(r); !e) return e.error();
    std::vector<std::shared_ptr<detail::memory::watcher>> post;
    resource stored;
    {
      std::lock_guard l(s_->mu);
      auto it = s_->objects.find({r.kind, r.ns, r.name});
      if (it == s_->objects.end()) return error(errc::not_found, r.key().to_string() + " not found");
      if (!r.revision.empty() && r.revision != it->second.revision)
        return error(errc::conflict, r.key().to_string() + ": revision " + r.revision + " is stale (current " +
                                         it->second.revision + "); read it again and retry");
      it->second = r;
      it->second.revision = detail::memory::to_rev(++s_->revision);
      stored = it->second;
      record(watch_event::type::modified, stored, post);
    }
    post_all(post);
    return stored;
  }

  result<void> remove(const resource_key& k, std::string_view revision = {}) const {
    std::vector<std::shared_ptr<detail::memory::watcher>> post;
    {
      std::lock_guard l(s_->mu);
      auto it = s_->objects.find({k.kind, k.ns, k.name});
      if (it == s_->objects.end()) return error(errc::not_found, k.to_string() + " not found");
      if (!revision.empty() && revision != it->second.revision)
        return error(errc::conflict, k.to_string() + ": revision " + std::string(revision) + " is stale (current " +
                                         it->second.revision + "); read it again and retry");
      resource last = std::move(it->second);
      s_->objects.erase(it);
      last.revision = detail::memory::to_rev(++s_->revision);
      record(watch_event::type::deleted, last, post);
    }
    post_all(post);
    return {};
  }

  result<watch_handle> watch(const watch_options& o, watch_callback cb) const {
    if (!cb) return error(errc::invalid, "watch " + o.kind + ": no callback");
    std::uint64_t from = 0;
    if (!o.revision.empty() && !detail::memory::parse_rev(o.revision, from))
      return error(errc::invalid, "watch " + o.kind + ": revision '" + o.revision + "' is not a decimal number");
    auto w = std::make_shared<detail::memory::watcher>();
    w->opt = o;
    w->cb = std::move(cb);
    w->exec = s_->opt.exec;
    w->max_pending = s_->opt.max_pending;
    w->owner = s_;
    {
      std::lock_guard l(s_->mu);
      auto ev = [](watch_event::type t, const resource& r, std::string rev) {
        watch_event e;
        e.kind = t;
        e.object = r;
        e.revision = std::move(rev);
        return e;
      };
      std::string now = detail::memory::to_rev(s_->revision);
      if (o.revision.empty()) {
        for (auto& [k, r] : s_->objects)
          if (detail::memory::matches(o, r)) w->queue.push_back(ev(watch_event::type::added, r, r.revision));
      } else if (from < s_->compacted) {
        w->queue.push_back(ev(watch_event::type::resync_needed, {}, now));
        w->ended = true;
      } else {
        for (auto& h : s_->history) {
          std::uint64_t hr = 0;
          detail::memory::parse_rev(h.object.revision, hr);
          if (hr > from && detail::memory::matches(o, h.object)) w->queue.push_back(ev(h.type, h.object, h.object.revision));
        }
      }
      if (!w->ended) {
        w->queue.push_back(ev(watch_event::type::in_sync, {}, now));
        s_->watchers.push_back(w);
      }
    }
    w->start();
    return watch_handle(w);
  }

  result<datastore_status> status() const {
    std::lock_guard l(s_->mu);
    return datastore_status{"memory", "in-process", detail::memory::to_rev(s_->revision)};
  }

  /// Drops the history up to and including `revision` (as etcd's compaction does): watches
  /// that resume from an older revision get resync_needed. For tests of that path.
  void compact(std::string_view revision) const {
    std::uint64_t r = 0;
    if (!detail::memory::parse_rev(revision, r)) return;
    std::lock_guard l(s_->mu);
    while (!s_->history.empty()) {
      std::uint64_t hr = 0;
      detail::memory::parse_rev(s_->history.front().object.revision, hr);
      if (hr > r) break;
      s_->history.pop_front();
      s_->compacted = hr;
    }
    if (r > s_->compacted) s_->compacted = std::min(r, s_->revision);
  }

  /// Number of resources held (all kinds).
  std::size_t size() const {
    std::lock_guard l(s_->mu);
    return s_->objects.size();
  }

 private:
  static result<void> check(const resource& r) {
    if (r.kind.empty()) return error(errc::invalid, "resource " + r.key().to_string() + ": kind is empty");
    if (r.name.empty()) return error(errc::invalid, "resource " + r.key().to_string() + ": name is empty");
    return {};
  }

  static std::optional<detail::memory::key_t> parse_token(std::string_view t) {
    if (t.substr(0, 3) != "m1:") return std::nullopt;
    t.remove_prefix(3);
    auto c1 = t.find(':');
    if (c1 == std::string_view::npos) return std::nullopt;
    auto c2 = t.find(':', c1 + 1);
    if (c2 == std::string_view::npos) return std::nullopt;
    detail::memory::key_t out;
    if (!detail::memory::unhex(t.substr(0, c1), std::get<0>(out)) ||
        !detail::memory::unhex(t.substr(c1 + 1, c2 - c1 - 1), std::get<1>(out)) ||
        !detail::memory::unhex(t.substr(c2 + 1), std::get<2>(out)))
      return std::nullopt;
    return out;
  }

  // With the store's mutex held: keep the event in the history and queue it for watches.
  void record(watch_event::type t, const resource& r, std::vector<std::shared_ptr<detail::memory::watcher>>& post) const {
    auto& s = *s_;
    if (s.opt.history) {
      s.history.push_back({t, r});
      while (s.history.size() > s.opt.history) {
        detail::memory::parse_rev(s.history.front().object.revision, s.compacted);
        s.history.pop_front();
      }
    } else {
      s.compacted = s.revision;
    }
    bool ended_any = false;
    for (auto& w : s.watchers) {
      if (!detail::memory::matches(w->opt, r)) continue;
      watch_event e;
      e.kind = t;
      e.object = r;
      e.revision = r.revision;
      if (w->push(std::move(e), s.revision)) post.push_back(w);
      std::lock_guard l(w->qmu);
      ended_any |= w->ended;
    }
    if (ended_any)
      std::erase_if(s.watchers, [](const std::shared_ptr<detail::memory::watcher>& w) {
        std::lock_guard l(w->qmu);
        return w->ended;
      });
  }

  static void post_all(const std::vector<std::shared_ptr<detail::memory::watcher>>& post) {
    for (auto& w : post) w->exec->post([w] { w->drain(); });
  }

  std::shared_ptr<detail::memory::store> s_;
};

static_assert(datastore<memory_datastore>);

CNF_END_NAMESPACE
