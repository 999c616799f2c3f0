// Shared pieces of the etcd datastore tests: a skip check, watch event recording, a
// small executor, configs pointing at a test etcd.
#pragma once
#include <cnf/plugins/etcd.hpp>

#include <catch2/catch.hpp>
#include <etcd_server.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace cnf_test {

/// Exits with 77 (skipped) before any test runs when etcd is not installed.
struct skip_without_etcd {
  skip_without_etcd() {
    if (auto why = etcd_server::unavailable_reason()) {
      std::printf("skipped: %s\n", why->c_str());
      std::fflush(stdout);
      std::_Exit(77);
    }
  }
};

inline cnf::etcd_config config_for(const std::string& endpoint, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
  cnf::etcd_config c;
  c.endpoints = {endpoint};
  c.timeout = timeout;
  return c;
}

inline cnf::etcd_datastore open_store(const cnf::etcd_config& c, cnf::executor* exec = nullptr) {
  auto ds = cnf::etcd_datastore::open(c, nullptr, exec);
  if (!ds) FAIL("open: " << ds.error().message);
  return std::move(*ds);
}

/// Records watch events; waits (with a generous liveness bound) for a condition on them.
class event_log {
 public:
  cnf::watch_callback callback() {
    return [this](const cnf::watch_event& e) {
      {
        std::lock_guard lk(mu_);
        events_.push_back(e);
        threads_.push_back(std::this_thread::get_id());
      }
      cv_.notify_all();
    };
  }
  /// True when pred(events) became true within `limit`.
  bool wait(const std::function<bool(const std::vector<cnf::watch_event>&)>& pred,
            std::chrono::seconds limit = std::chrono::seconds(60)) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, limit, [&] { return pred(events_); });
  }
  bool wait_count(cnf::watch_event::type t, std::size_t n, std::chrono::seconds limit = std::chrono::seconds(60)) {
    return wait([&](auto& es) { return count(es, t) >= n; }, limit);
  }
  std::vector<cnf::watch_event> events() const {
    std::lock_guard lk(mu_);
    return events_;
  }
  std::vector<std::thread::id> threads() const {
    std::lock_guard lk(mu_);
    return threads_;
  }
  static std::size_t count(const std::vector<cnf::watch_event>& es, cnf::watch_event::type t) {
    std::size_t n = 0;
    for (auto& e : es) n += e.kind == t;
    return n;
  }
  /// The events that change resources (added, modified, deleted), in delivery order.
  std::vector<cnf::watch_event> changes() const { return changes_of(events()); }
  static std::vector<cnf::watch_event> changes_of(const std::vector<cnf::watch_event>& es) {
    std::vector<cnf::watch_event> out;
    for (auto& e : es)
      if (e.kind == cnf::watch_event::type::added || e.kind == cnf::watch_event::type::modified || e.kind == cnf::watch_event::type::deleted)
        out.push_back(e);
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<cnf::watch_event> events_;
  std::vector<std::thread::id> threads_;
};

/// An executor with one thread of its own, like a host's event loop.
class thread_executor final : public cnf::executor {
 public:
  thread_executor() : t_([this] { loop(); }) {}
  ~thread_executor() override {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    t_.join();
  }
  void post(std::function<void()> f) override {
    {
      std::lock_guard lk(mu_);
      q_.push_back(std::move(f));
    }
    cv_.notify_all();
  }
  timer_id post_after(std::chrono::milliseconds d, std::function<void()> f) override {
    std::thread([this, d, f = std::move(f)]() mutable {
      std::this_thread::sleep_for(d);
      post(std::move(f));
    }).detach();
    return 0;  // these timers cannot be cancelled
  }
  bool cancel(timer_id) override { return false; }
  std::thread::id id() const { return t_.get_id(); }

 private:
  void loop() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
        if (q_.empty()) return;
        f = std::move(q_.front());
        q_.pop_front();
      }
      f();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  bool stop_ = false;
  std::thread t_;
};

}  // namespace cnf_test
