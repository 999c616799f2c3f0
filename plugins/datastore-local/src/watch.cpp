// watch(): a thread per watch tails the log (woken by inotify on <dir>/v1/head, which every
// publish rewrites) and delivers the records that match, in revision order, either itself
// or through the host's executor.
#include "store.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <thread>

CNF_BEGIN_NAMESPACE
namespace detail::local {

namespace {

using namespace std::chrono_literals;

constexpr std::size_t max_queued = 4096;  // executor mode: events posted but not yet delivered

bool matches(const watch_options& o, const resource_key& k) {
  if (!o.kind.empty() && k.kind != o.kind) return false;
  if (o.ns && k.ns != *o.ns) return false;
  return k.name.compare(0, o.name_prefix.size(), o.name_prefix) == 0;
}

struct watcher final : watch_handle::state, std::enable_shared_from_this<watcher> {
  std::shared_ptr<store> s;
  watch_options opt;
  watch_callback cb;
  executor* exec = nullptr;

  std::mutex qmu;
  std::condition_variable cv;
  std::deque<watch_event> queue;  // executor mode
  bool stopped = false;
  bool scheduled = false;

  std::mutex delivery;  // held while the callback runs
  std::atomic<std::thread::id> delivering{};
  std::thread thread;
  file_descriptor wake;  // eventfd: cancel() wakes the thread
  file_descriptor inot;

  // Log position.
  file_descriptor seg_fd;
  std::uint64_t seg = 0, off = 0, last = 0;
  std::uint64_t after = 0;  // deliver only records newer than this
  std::vector<char> buf;

  bool is_stopped() {
    std::lock_guard l(qmu);
    return stopped;
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
      // A throwing consumer must not end the watch or the host's loop.
    }
    delivering = std::thread::id{};
  }

  void drain() {
    for (int n = 0; n < 256; ++n) {
      watch_event ev;
      {
        std::lock_guard l(qmu);
        if (stopped || queue.empty()) {
          scheduled = false;
          cv.notify_all();
          return;
        }
        ev = std::move(queue.front());
        queue.pop_front();
        cv.notify_all();
      }
      deliver(ev);
    }
    exec->post([self = shared_from_this()] { self->drain(); });
  }

  // Hands one event over; false once the watch is cancelled.
  bool emit(watch_event ev) {
    if (!exec) {
      if (is_stopped()) return false;
      deliver(ev);
      return !is_stopped();
    }
    bool post = false;
    {
      std::unique_lock l(qmu);
      cv.wait(l, [&] { return stopped || queue.size() < max_queued; });
      if (stopped) return false;
      queue.push_back(std::move(ev));
      if (!scheduled) post = scheduled = true;
    }
    if (post) exec->post([self = shared_from_this()] { self->drain(); });
    return true;
  }

  bool emit_marker(watch_event::type t, std::uint64_t rev) {
    watch_event e;
    e.kind = t;
    e.revision = to_rev(rev);
    return emit(std::move(e));
  }

  bool emit_error(const cnf::error& err) {
    watch_event e;
    e.kind = watch_event::type::error;
    e.err = err;
    return emit(std::move(e));
  }

  // Waits for a change of the head (or a timeout); false when cancelled.
  bool wait(std::chrono::milliseconds t) {
    pollfd p[2] = {{wake.get(), POLLIN, 0}, {inot.get(), POLLIN, 0}};
    int n = ::poll(p, inot ? 2 : 1, static_cast<int>(t.count()));
    if (n > 0 && (p[1].revents & POLLIN)) {
      char b[4096];
      while (::read(inot.get(), b, sizeof b) > 0) {
      }
    }
    return !is_stopped();
  }

  // Positions the reader just after revision `after`; false when the log no longer
  // reaches back that far.
  result<bool> seek(std::uint64_t after) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      auto segs = s->segments();
      if (!segs) return segs.error();
      if (segs->empty() || segs->front() > after + 1) return false;
      std::uint64_t pick = segs->front();
      for (auto f : *segs)
        if (f <= after + 1) pick = f;
      auto fd = s->open_segment(pick);
      if (!fd) {
        if (fd.error().code == errc::not_found) continue;  // removed meanwhile: list again
        return fd.error();
      }
      seg_fd = std::move(*fd);
      seg = pick;
      off = segment_header_size;
      last = pick - 1;
      auto out = scan_segment(seg_fd.get(), s->segment_path(seg), seg, off, last, after, buf, [](record&&) {});
      if (!out) return out.error();
      if (out->stop == scan_outcome::corrupt) return error(errc::invalid, "local datastore: " + out->why);
      return true;
    }
    return false;
  }

  // Delivers the records up to `limit`; false when the log moved on without us (resync).
  result<bool> catch_up(std::uint64_t limit) {
    while (last < limit) {
      bool stop = false;
      auto out = scan_segment(seg_fd.get(), s->segment_path(seg), seg, off, last, limit, buf, [&](record&& r) {
        if (stop || r.rev <= after || !matches(opt, r.key)) return;
        auto obj = decode_resource(r.body, s->segment_path(seg));
        watch_event e;
        if (!obj) {
          e.kind = watch_event::type::error;
          e.err = obj.error();
        } else {
          e.kind = r.what == op::create   ? watch_event::type::added
                   : r.what == op::update ? watch_event::type::modified
                                          : watch_event::type::deleted;
          e.object = std::move(*obj);
        }
        e.revision = to_rev(r.rev);
        if (!emit(std::move(e))) stop = true;
      });
      if (!out) return out.error();
      if (stop) return true;
      if (out->stop == scan_outcome::corrupt) return error(errc::invalid, "local datastore: " + out->why);
      if (last >= limit) break;
      // The rest is in the next segment.
      auto next = s->open_segment(last + 1);
      if (!next) {
        if (next.error().code == errc::not_found) {
          auto segs = s->segments();
          if (!segs) return segs.error();
          bool newer = false;
          for (auto f : *segs) newer |= f > last + 1;
          if (newer || (!segs->empty() && segs->front() > last + 1)) return false;  // deleted under us
          return error(errc::invalid, "local datastore: revision " + std::to_string(limit) + " is durable but " +
                                          s->segment_path(last + 1) + " does not exist");
        }
        return next.error();
      }
      seg_fd = std::move(*next);
      seg = last + 1;
      off = segment_header_size;
    }
    return true;
  }

  void run() {
    inot = file_descriptor(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (inot && ::inotify_add_watch(inot.get(), s->head_path().c_str(), IN_MODIFY) < 0) inot.reset();
    std::uint64_t from = 0;
    bool synced = false;
    if (opt.revision.empty()) {
      for (;;) {
        list_options lo;
        lo.kind = opt.kind;
        lo.ns = opt.ns;
        lo.name_prefix = opt.name_prefix;
        auto l = s->list(lo);
        if (!l) {
          if (!emit_error(l.error()) || !wait(1000ms)) return;
          continue;
        }
        for (auto& r : l->items) {
          watch_event e;
          e.kind = watch_event::type::added;
          e.revision = r.revision;
          e.object = std::move(r);
          if (!emit(std::move(e))) return;
        }
        parse_rev(l->revision, from);
        if (!emit_marker(watch_event::type::in_sync, from)) return;
        synced = true;
        break;
      }
    } else {
      parse_rev(opt.revision, from);
    }
    after = from;
    for (;;) {
      auto pos = seek(from);
      if (pos && *pos) break;
      if (pos) {
        auto now = s->visible_revision();
        emit_marker(watch_event::type::resync_needed, now ? *now : from);
        return;
      }
      if (!emit_error(pos.error()) || !wait(1000ms)) return;
    }
    for (;;) {
      if (is_stopped()) return;
      auto d = s->visible_revision();
      if (!d) {
        if (!emit_error(d.error()) || !wait(1000ms)) return;
        continue;
      }
      auto ok = catch_up(*d);
      if (!ok) {
        if (!emit_error(ok.error()) || !wait(1000ms)) return;
        continue;
      }
      if (!*ok) {
        emit_marker(watch_event::type::resync_needed, *d);
        return;
      }
      if (is_stopped()) return;
      if (!synced) {
        if (!emit_marker(watch_event::type::in_sync, *d)) return;
        synced = true;
      }
      // inotify wakes us on every publish; the timeout covers a missing inotify.
      if (!wait(inot ? 2000ms : 100ms)) return;
    }
  }

  void start() {
    thread = std::thread([self = shared_from_this()] { self->run(); });
  }

  void cancel() noexcept override {
    {
      std::lock_guard l(qmu);
      if (stopped) return;
      stopped = true;
      queue.clear();
    }
    cv.notify_all();
    std::uint64_t one = 1;
    if (wake) (void)!::write(wake.get(), &one, sizeof one);
    bool self_call = delivering.load() == std::this_thread::get_id();
    if (thread.joinable()) {
      if (thread.get_id() == std::this_thread::get_id()) thread.detach();
      else thread.join();
    }
    if (exec && !self_call) {
      // Wait for a callback running right now on the executor.
      std::lock_guard d(delivery);
    }
  }
};

}  // namespace

result<watch_handle> store::watch(const watch_options& o, watch_callback cb) {
  if (!cb) return error(errc::invalid, "watch " + o.kind + ": no callback");
  std::uint64_t from = 0;
  if (!o.revision.empty() && !parse_rev(o.revision, from))
    return error(errc::invalid, "watch " + o.kind + ": revision '" + o.revision + "' is not a decimal number");
  auto w = std::make_shared<watcher>();
  w->s = shared_from_this();
  w->opt = o;
  w->cb = std::move(cb);
  w->exec = opt_.exec;
  w->wake = file_descriptor(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!w->wake) return sys_error("eventfd for watch of", v1_, errno);
  w->start();
  return watch_handle(w);
}

}  // namespace detail::local
CNF_END_NAMESPACE
