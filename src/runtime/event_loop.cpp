// cnf::event_loop: one io_context, a work guard so run() waits for work, timers that a
// mutex-guarded table decides (so cancel() is exact from any thread), fd watches.
#include <cnf/asio.hpp>
#include <cnf/event_loop.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <mutex>
#include <unordered_map>

CNF_BEGIN_NAMESPACE

namespace asio = boost::asio;

struct event_loop::impl {
  struct timer_rec {
    explicit timer_rec(asio::io_context& io) : t(io) {}
    asio::steady_timer t;
    std::function<void()> f;
  };
  struct watch_rec {
    explicit watch_rec(asio::io_context& io, int fd) : d(io, fd) {}
    asio::posix::stream_descriptor d;
    std::function<void()> f;
    bool live = true;
  };

  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  std::mutex mu;
  std::uint64_t next_timer = 0;
  std::unordered_map<timer_id, std::shared_ptr<timer_rec>> timers;  // pending only
  std::uint64_t next_watch = 0;
  std::unordered_map<watch_id, std::shared_ptr<watch_rec>> watches;

  // Claims a timer for running or cancelling: exactly one of the two wins.
  std::shared_ptr<timer_rec> take(timer_id id) {
    std::lock_guard l(mu);
    auto it = timers.find(id);
    if (it == timers.end()) return nullptr;
    auto r = std::move(it->second);
    timers.erase(it);
    return r;
  }

  void arm(const std::shared_ptr<watch_rec>& w) {
    w->d.async_wait(asio::posix::stream_descriptor::wait_read, [this, w](const boost::system::error_code& ec) {
      if (!w->live || ec == asio::error::operation_aborted) return;
      auto f = std::move(w->f);  // f may unwatch itself: keep it alive while it runs
      if (!ec) f();
      if (!w->live) return;
      w->f = std::move(f);
      arm(w);
    });
  }

  void release(watch_rec& w) {
    w.live = false;
    w.f = nullptr;
    boost::system::error_code ec;
    w.d.cancel(ec);
    (void)w.d.release();  // the fd stays the caller's
  }
};

event_loop::event_loop() : p_(std::make_unique<impl>()) {}

event_loop::~event_loop() {
  for (auto& [id, w] : p_->watches) p_->release(*w);
  p_->watches.clear();
}

void event_loop::post(std::function<void()> f) { asio::post(p_->io, std::move(f)); }

executor::timer_id event_loop::post_after(std::chrono::milliseconds d, std::function<void()> f) {
  auto r = std::make_shared<impl::timer_rec>(p_->io);
  r->f = std::move(f);
  r->t.expires_after(d);
  timer_id id;
  {
    std::lock_guard l(p_->mu);
    id = ++p_->next_timer;
    p_->timers.emplace(id, r);
  }
  impl* p = p_.get();
  r->t.async_wait([p, id](const boost::system::error_code&) {
    if (auto mine = p->take(id)) {
      auto f = std::move(mine->f);
      f();
    }
  });
  return id;
}

bool event_loop::cancel(timer_id id) {
  auto r = p_->take(id);
  if (!r) return false;
  // The timer object belongs to the loop's thread: cancel its wait there, which frees it
  // now rather than at its deadline. Its handler finds the id gone and runs nothing.
  asio::post(p_->io, [r] { r->t.cancel(); });
  return true;
}

void event_loop::run() {
  struct restart_on_exit {
    asio::io_context& io;
    ~restart_on_exit() { io.restart(); }
  } restart{p_->io};
  p_->io.run();
}

void event_loop::stop() { p_->io.stop(); }

bool event_loop::running_in_this_thread() const { return p_->io.get_executor().running_in_this_thread(); }

event_loop::watch_id event_loop::watch_readable(int fd, std::function<void()> f) {
  auto w = std::make_shared<impl::watch_rec>(p_->io, fd);
  w->f = std::move(f);
  watch_id id;
  {
    std::lock_guard l(p_->mu);
    id = ++p_->next_watch;
    p_->watches.emplace(id, w);
  }
  p_->arm(w);
  return id;
}

void event_loop::unwatch(watch_id id) {
  std::shared_ptr<impl::watch_rec> w;
  {
    std::lock_guard l(p_->mu);
    auto it = p_->watches.find(id);
    if (it == p_->watches.end()) return;
    w = std::move(it->second);
    p_->watches.erase(it);
  }
  p_->release(*w);
}

boost::asio::io_context& io_context_of(event_loop& loop) { return loop.implementation().io; }

CNF_END_NAMESPACE
