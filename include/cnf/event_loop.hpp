// cnf/event_loop.hpp — the reference executor: one Boost.Asio io_context run by one thread.
//
//   cnf::event_loop loop;
//   cnf::syncer sync(ds, loop, {.kinds = {"IPPool"}});     // parts take the executor
//   auto w = loop.watch_readable(fd, [&] { serve(fd); });   // a socket served on the loop
//   std::thread t([&] { loop.run(); });                     // or run() on the main thread
//   ...
//   loop.stop(); t.join();
//
// Everything posted, every timer and every watch callback runs on the thread in run(),
// one at a time; posts run in the order posted, timers in deadline order. An exception
// from a handler leaves run() (the loop stays usable: run() again). Asio stays
// out of this header (pimpl): a host that uses Asio itself includes <cnf/asio.hpp>.
#pragma once
#include <cnf/executor.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

CNF_BEGIN_NAMESPACE

class event_loop final : public executor {
 public:
  event_loop();
  ~event_loop() override;
  event_loop(const event_loop&) = delete;
  event_loop& operator=(const event_loop&) = delete;

  /// Thread-safe; wakes the loop at once.
  void post(std::function<void()> f) override;
  /// Thread-safe; f runs on the loop after d (timers fall due in deadline order).
  timer_id post_after(std::chrono::milliseconds d, std::function<void()> f) override;
  /// Thread-safe; true if f had not started (it never will).
  bool cancel(timer_id id) override;

  /// Runs the loop on the calling thread until stop(). Returns at once if stop() came
  /// first; after it returns, run() may be called again (restart).
  void run();
  /// Thread-safe; run() returns after the handler that is running, if any.
  void stop();
  bool running_in_this_thread() const;

  /// Watch a file descriptor for readability on the loop (f runs on the loop each time it is
  /// readable, until the returned id is passed to unwatch). Lets hosts without Asio in their
  /// headers serve sockets (the CNI server, netlink notifications, signalfd).
  /// The fd stays the caller's (never closed here); f must read what is readable, or it
  /// runs again at once. Call on the loop's thread or before run().
  using watch_id = std::uint64_t;
  watch_id watch_readable(int fd, std::function<void()> f);
  /// Stops a watch; f does not run after this returns (when called on the loop's thread).
  /// Unknown ids are ignored. Call on the loop's thread or while the loop is not running.
  void unwatch(watch_id id);

  struct impl;
  /// For <cnf/asio.hpp>.
  impl& implementation() noexcept { return *p_; }

 private:
  std::unique_ptr<impl> p_;
};

CNF_END_NAMESPACE
