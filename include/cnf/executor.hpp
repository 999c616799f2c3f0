// cnf/executor.hpp — where long-running work of a part runs.
//
// The host owns the event loop (in the reference distribution, cnf::event_loop: one
// Boost.Asio io_context, see <cnf/event_loop.hpp>; hosts that use Asio themselves reach
// it through <cnf/asio.hpp>) and hands parts this small interface, so a part that needs
// no Asio never includes it. Parts post completions and timers here; a part that drives
// its own sockets with Asio may run its own io_context thread and post results back.
//
//   auto t = ex.post_after(std::chrono::seconds(1), [&] { retry(); });
//   ...
//   if (ex.cancel(t)) { /* retry() will not run */ }
#pragma once
#include <cnf/config.hpp>

#include <chrono>
#include <cstdint>
#include <functional>

CNF_BEGIN_NAMESPACE

class executor {
 public:
  /// Names a timer made by post_after; 0 never names one.
  using timer_id = std::uint64_t;

  virtual ~executor() = default;
  /// Runs f soon, on the host's loop; thread-safe; wakes the loop at once.
  virtual void post(std::function<void()> f) = 0;
  /// Runs f after a delay, on the host's loop; thread-safe. The id cancels it.
  virtual timer_id post_after(std::chrono::milliseconds delay, std::function<void()> f) = 0;
  /// Cancels a timer of post_after; thread-safe. True if f had not started (it never
  /// will); false if it ran, is running, was cancelled before, or id names no timer.
  virtual bool cancel(timer_id id) = 0;
};

CNF_END_NAMESPACE
