// cnf::event_loop: posts from other threads wake the loop, timers run in deadline order,
// cancel (before firing, from inside the loop, after running), fd watches, stop/restart.
#include <cnf/event_loop.hpp>
#include <cnf/asio.hpp>  // io_context_of: the one header with Asio

#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

struct running_loop {
  cnf::event_loop loop;
  std::thread t{[this] { loop.run(); }};
  ~running_loop() {
    loop.stop();
    t.join();
  }
  // Runs f on the loop and waits for it.
  template <class F>
  auto on_loop(F f) {
    std::promise<decltype(f())> p;
    auto fut = p.get_future();
    loop.post([&] {
      if constexpr (std::is_void_v<decltype(f())>) {
        f();
        p.set_value();
      } else {
        p.set_value(f());
      }
    });
    REQUIRE(fut.wait_for(10s) == std::future_status::ready);
    return fut.get();
  }
};

struct pipe_fds {
  int r = -1, w = -1;
  pipe_fds() {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
    r = p[0];
    w = p[1];
  }
  ~pipe_fds() {
    ::close(r);
    ::close(w);
  }
};

}  // namespace

TEST_CASE("event_loop: a post from another thread runs on the loop's thread, in order", "[unit][event_loop]") {
  running_loop rl;
  std::promise<std::thread::id> where;
  std::vector<int> order;
  std::promise<void> all;
  // The loop sleeps in epoll with no timer pending: the post alone must wake it. The
  // wait is bounded only against a hang (timings belong in benchmarks).
  std::this_thread::sleep_for(20ms);
  std::thread poster([&] {
    for (int i = 0; i < 100; ++i)
      rl.loop.post([&, i] {
        order.push_back(i);
        if (i == 0) where.set_value(std::this_thread::get_id());
        if (i == 99) all.set_value();
      });
  });
  poster.join();
  auto f = all.get_future();
  REQUIRE(f.wait_for(10s) == std::future_status::ready);
  CHECK(where.get_future().get() == rl.t.get_id());
  std::vector<int> want(100);
  for (int i = 0; i < 100; ++i) want[i] = i;
  CHECK(order == want);
  CHECK_FALSE(rl.loop.running_in_this_thread());
  CHECK(rl.on_loop([&] { return rl.loop.running_in_this_thread(); }));
}

TEST_CASE("event_loop: timers fire in deadline order, not in the order they were made", "[unit][event_loop]") {
  running_loop rl;
  std::mutex m;
  std::vector<int> fired;
  std::promise<void> done;
  auto note = [&](int i) {
    std::lock_guard l(m);
    fired.push_back(i);
    if (fired.size() == 4) done.set_value();
  };
  auto a = rl.loop.post_after(60ms, [&] { note(3); });
  auto b = rl.loop.post_after(20ms, [&] { note(1); });
  auto c = rl.loop.post_after(40ms, [&] { note(2); });
  auto d = rl.loop.post_after(0ms, [&] { note(0); });
  CHECK(a != 0);
  CHECK(b != 0);
  CHECK(a != b);
  CHECK(c != d);
  REQUIRE(done.get_future().wait_for(10s) == std::future_status::ready);
  CHECK(fired == std::vector<int>{0, 1, 2, 3});
  // A timer that ran cannot be cancelled, nor can an id that never named one.
  CHECK_FALSE(rl.loop.cancel(a));
  CHECK_FALSE(rl.loop.cancel(0));
  CHECK_FALSE(rl.loop.cancel(123456));
}

TEST_CASE("event_loop: cancel before firing, from another thread and from inside the loop", "[unit][event_loop]") {
  running_loop rl;
  std::atomic<int> ran_cancelled{0};
  std::promise<void> later;

  SECTION("from another thread") {
    auto id = rl.loop.post_after(50ms, [&] { ++ran_cancelled; });
    CHECK(rl.loop.cancel(id));
    CHECK_FALSE(rl.loop.cancel(id));  // once only
  }
  SECTION("from inside the loop, by a handler that runs first") {
    auto victim = rl.loop.post_after(60ms, [&] { ++ran_cancelled; });
    bool cancelled = false;
    rl.loop.post_after(10ms, [&] { cancelled = rl.loop.cancel(victim); });
    // Both deadlines pass before the check below; only the canceller runs.
    std::promise<void> p;
    rl.loop.post_after(120ms, [&] { p.set_value(); });
    REQUIRE(p.get_future().wait_for(10s) == std::future_status::ready);
    CHECK(rl.on_loop([&] { return cancelled; }));
  }
  SECTION("a timer that cancels itself while running: too late") {
    std::promise<bool> p;
    std::atomic<cnf::executor::timer_id> self{0};
    std::atomic<bool> armed{false};
    self = rl.loop.post_after(10ms, [&] {
      while (!armed) std::this_thread::yield();
      p.set_value(rl.loop.cancel(self));
    });
    armed = true;
    auto f = p.get_future();
    REQUIRE(f.wait_for(10s) == std::future_status::ready);
    CHECK_FALSE(f.get());
  }
  // Well past every deadline: nothing cancelled ran.
  rl.loop.post_after(150ms, [&] { later.set_value(); });
  REQUIRE(later.get_future().wait_for(10s) == std::future_status::ready);
  CHECK(ran_cancelled == 0);
}

TEST_CASE("event_loop: watch_readable on a pipe runs on the loop until unwatched", "[unit][event_loop]") {
  running_loop rl;
  pipe_fds p;
  std::atomic<int> bytes{0};
  std::atomic<bool> wrong_thread{false};
  std::promise<void> got3;
  auto id = rl.on_loop([&] {
    return rl.loop.watch_readable(p.r, [&] {
      if (!rl.loop.running_in_this_thread()) wrong_thread = true;
      char buf[64];
      ssize_t n;
      while ((n = ::read(p.r, buf, sizeof buf)) > 0)
        if ((bytes += static_cast<int>(n)) == 3) got3.set_value();
    });
  });
  CHECK(id != 0);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(::write(p.w, "x", 1) == 1);
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(got3.get_future().wait_for(10s) == std::future_status::ready);
  CHECK_FALSE(wrong_thread);
  rl.on_loop([&] { rl.loop.unwatch(id); });
  REQUIRE(::write(p.w, "y", 1) == 1);
  // A handler posted after the write runs after the loop saw the fd readable (if it
  // still watched it): the unwatched callback must not have run.
  std::this_thread::sleep_for(20ms);
  CHECK(rl.on_loop([&] { return bytes.load(); }) == 3);
  // The fd stays the caller's: still open, the byte still there.
  char c = 0;
  CHECK(::read(p.r, &c, 1) == 1);
  CHECK(c == 'y');
  rl.on_loop([&] { rl.loop.unwatch(id); });  // unknown by now: ignored
}

TEST_CASE("event_loop: a watch callback may unwatch itself", "[unit][event_loop]") {
  running_loop rl;
  pipe_fds p;
  std::atomic<int> calls{0};
  std::promise<void> once;
  cnf::event_loop::watch_id id = 0;
  rl.on_loop([&] {
    id = rl.loop.watch_readable(p.r, [&] {
      ++calls;
      rl.loop.unwatch(id);  // without reading: a live watch would be called again at once
      once.set_value();
    });
  });
  REQUIRE(::write(p.w, "z", 1) == 1);
  REQUIRE(once.get_future().wait_for(10s) == std::future_status::ready);
  std::this_thread::sleep_for(20ms);
  CHECK(rl.on_loop([&] { return calls.load(); }) == 1);
}

TEST_CASE("event_loop: stop() before run() returns at once; run() again after stop()", "[unit][event_loop]") {
  cnf::event_loop loop;
  int ran = 0;
  loop.post([&] { ++ran; });
  loop.stop();
  loop.run();  // returns without waiting (the stop came first)
  loop.post([&] {
    ++ran;
    loop.stop();
  });
  loop.run();
  CHECK(ran == 2);
  // Posted before, run after: nothing is lost across a stop.
  int after = 0;
  loop.post([&] {
    after = ran;
    loop.stop();
  });
  loop.run();
  CHECK(ran == 2);
  CHECK(after == 2);
}

TEST_CASE("event_loop: hosts with Asio share the io_context", "[unit][event_loop]") {
  cnf::event_loop loop;
  bool ran = false;
  boost::asio::post(cnf::io_context_of(loop), [&] {
    ran = loop.running_in_this_thread();
    loop.stop();
  });
  loop.run();
  CHECK(ran);
}
