// cnf::memory_datastore: CRUD and compare-and-swap, list pages, concurrent writers,
// and watch ordering (thread and executor delivery, resume, resync, cancel).
#include <cnf/memory_datastore.hpp>

// The shared conformance suite, once it is part of the tree.
#if __has_include("../datastore/conformance.hpp")
#include "../datastore/conformance.hpp"
#define CNF_HAVE_CONFORMANCE 1
#endif

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

cnf::resource res(std::string kind, std::string name, std::string spec = "{}", std::string ns = "") {
  cnf::resource r;
  r.kind = std::move(kind);
  r.ns = std::move(ns);
  r.name = std::move(name);
  r.spec = std::move(spec);
  return r;
}

std::uint64_t num(const std::string& rev) { return std::stoull(rev); }

// Option builders (designated initializers that skip members warn under -Wextra).
cnf::watch_options wopt(std::string kind, std::string revision = {}, std::optional<std::string> ns = std::nullopt,
                        std::string prefix = {}) {
  cnf::watch_options o;
  o.kind = std::move(kind);
  o.revision = std::move(revision);
  o.ns = std::move(ns);
  o.name_prefix = std::move(prefix);
  return o;
}
cnf::list_options lopt(std::string kind, std::optional<std::string> ns = std::nullopt, std::string prefix = {},
                       std::size_t limit = 0, std::string token = {}) {
  cnf::list_options o;
  o.kind = std::move(kind);
  o.ns = std::move(ns);
  o.name_prefix = std::move(prefix);
  o.limit = limit;
  o.continue_token = std::move(token);
  return o;
}
cnf::memory_datastore_options mopt(std::size_t history, std::size_t max_pending = 100000) {
  cnf::memory_datastore_options o;
  o.history = history;
  o.max_pending = max_pending;
  return o;
}

// Collects watch events; wait() blocks until a predicate over them holds.
struct collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<cnf::watch_event> events;
  std::set<std::thread::id> threads;
  std::atomic<int> in_callback{0};
  std::atomic<int> overlap{0};

  cnf::watch_callback callback() {
    return [this](const cnf::watch_event& e) {
      if (in_callback.fetch_add(1) != 0) overlap++;
      {
        std::lock_guard l(mu);
        events.push_back(e);
        threads.insert(std::this_thread::get_id());
      }
      in_callback.fetch_sub(1);
      cv.notify_all();
    };
  }
  bool wait(const std::function<bool(const std::vector<cnf::watch_event>&)>& pred, std::chrono::milliseconds t = 5000ms) {
    std::unique_lock l(mu);
    return cv.wait_for(l, t, [&] { return pred(events); });
  }
  bool wait_count(std::size_t n) { return wait([n](auto& ev) { return ev.size() >= n; }); }
  std::vector<cnf::watch_event> snapshot() {
    std::lock_guard l(mu);
    return events;
  }
};

// An executor with two worker threads, like a host's io_context run by two threads: the
// store must still deliver one watch's events one at a time and in order.
class pool_executor final : public cnf::executor {
 public:
  explicit pool_executor(int n = 2) {
    for (int i = 0; i < n; ++i) workers_.emplace_back([this] { run(); });
  }
  ~pool_executor() override {
    {
      std::lock_guard l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  void post(std::function<void()> f) override {
    {
      std::lock_guard l(mu_);
      q_.push_back(std::move(f));
      ++posted_;
    }
    cv_.notify_one();
  }
  timer_id post_after(std::chrono::milliseconds, std::function<void()> f) override {
    post(std::move(f));
    return 0;  // posted at once: nothing left to cancel
  }
  bool cancel(timer_id) override { return false; }
  std::set<std::thread::id> ids() const {
    std::set<std::thread::id> s;
    for (auto& t : workers_) s.insert(t.get_id());
    return s;
  }
  std::size_t posted() {
    std::lock_guard l(mu_);
    return posted_;
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return stop_ || !q_.empty(); });
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
  std::vector<std::thread> workers_;
  bool stop_ = false;
  std::size_t posted_ = 0;
};

using T = cnf::watch_event::type;

}  // namespace

static_assert(cnf::check_datastore<cnf::memory_datastore>());

TEST_CASE("memory_datastore: create, get, already_exists, revisions") {
  cnf::memory_datastore ds;
  auto a = ds.create(res("IPPool", "a", R"({"cidr":"10.0.0.0/16"})"));
  REQUIRE(a);
  CHECK(a->revision == "1");
  auto b = ds.create(res("IPPool", "b"));
  REQUIRE(b);
  CHECK(num(b->revision) > num(a->revision));

  auto g = ds.get({"IPPool", "", "a"});
  REQUIRE(g);
  CHECK(g->spec == R"({"cidr":"10.0.0.0/16"})");
  CHECK(g->revision == a->revision);

  auto dup = ds.create(res("IPPool", "a"));
  REQUIRE(!dup);
  CHECK(dup.error().code == cnf::errc::already_exists);
  CHECK(dup.error().message.find("IPPool/a") != std::string::npos);

  auto missing = ds.get({"IPPool", "", "zz"});
  REQUIRE(!missing);
  CHECK(missing.error().code == cnf::errc::not_found);
  CHECK(missing.error().message.find("IPPool/zz") != std::string::npos);

  // Same name, other kind or namespace: different resources.
  CHECK(ds.create(res("Node", "a")));
  CHECK(ds.create(res("IPPool", "a", "{}", "ns1")));
  CHECK(ds.size() == 4);

  auto bad = ds.create(res("IPPool", ""));
  REQUIRE(!bad);
  CHECK(bad.error().code == cnf::errc::invalid);
  auto st = ds.status();
  REQUIRE(st);
  CHECK(st->backend == "memory");
  CHECK(st->revision == "4");
}

TEST_CASE("memory_datastore: update is compare-and-swap on revision") {
  cnf::memory_datastore ds;
  auto v1 = ds.create(res("Node", "n1", R"({"v":1})")).value();
  auto v2r = v1;
  v2r.spec = R"({"v":2})";
  auto v2 = ds.update(v2r);
  REQUIRE(v2);
  CHECK(num(v2->revision) > num(v1.revision));

  // The writer that still holds v1 loses.
  auto stale = v1;
  stale.spec = R"({"v":99})";
  auto c = ds.update(stale);
  REQUIRE(!c);
  CHECK(c.error().code == cnf::errc::conflict);
  CHECK(c.error().message.find("Node/n1") != std::string::npos);
  CHECK(ds.get({"Node", "", "n1"})->spec == R"({"v":2})");

  // An empty revision writes unconditionally.
  auto blind = v1;
  blind.revision.clear();
  blind.spec = R"({"v":3})";
  REQUIRE(ds.update(blind));
  CHECK(ds.get({"Node", "", "n1"})->spec == R"({"v":3})");

  auto nf = ds.update(res("Node", "nope"));
  REQUIRE(!nf);
  CHECK(nf.error().code == cnf::errc::not_found);
}

TEST_CASE("memory_datastore: remove with and without revision") {
  cnf::memory_datastore ds;
  auto a = ds.create(res("Node", "a")).value();
  auto a2 = ds.update(a).value();
  auto r = ds.remove(a.key(), a.revision);
  REQUIRE(!r);
  CHECK(r.error().code == cnf::errc::conflict);
  REQUIRE(ds.remove(a.key(), a2.revision));
  auto again = ds.remove(a.key(), "");
  REQUIRE(!again);
  CHECK(again.error().code == cnf::errc::not_found);

  ds.create(res("Node", "b")).value();
  REQUIRE(ds.remove({"Node", "", "b"}, ""));
  CHECK(ds.size() == 0);
}

TEST_CASE("memory_datastore: list filters by kind, namespace, prefix; pages") {
  cnf::memory_datastore ds;
  for (int i = 0; i < 25; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "x-%02d", i);
    REQUIRE(ds.create(res("WorkloadEndpoint", name, "{}", i % 2 ? "odd" : "even")));
  }
  REQUIRE(ds.create(res("WorkloadEndpoint", "y-1", "{}", "even")));
  REQUIRE(ds.create(res("Node", "x-00")));

  auto all = ds.list(lopt("WorkloadEndpoint")).value();
  CHECK(all.items.size() == 26);
  CHECK(all.revision == "27");
  CHECK(all.continue_token.empty());

  auto even = ds.list(lopt("WorkloadEndpoint", "even")).value();
  CHECK(even.items.size() == 14);
  for (auto& r : even.items) CHECK(r.ns == "even");

  auto px = ds.list(lopt("WorkloadEndpoint", "even", "x-")).value();
  CHECK(px.items.size() == 13);
  auto py = ds.list(lopt("WorkloadEndpoint", std::nullopt, "y")).value();
  REQUIRE(py.items.size() == 1);
  CHECK(py.items[0].name == "y-1");

  // Pages of 4 over one namespace and a prefix, in name order, nothing lost or repeated.
  std::vector<std::string> names;
  cnf::list_options o = lopt("WorkloadEndpoint", "odd", "x-", 4);
  int pages = 0;
  for (;;) {
    auto page = ds.list(o).value();
    ++pages;
    CHECK(page.items.size() <= 4);
    for (auto& r : page.items) names.push_back(r.name);
    if (page.continue_token.empty()) break;
    o.continue_token = page.continue_token;
  }
  CHECK(pages == 3);
  REQUIRE(names.size() == 12);
  CHECK(std::is_sorted(names.begin(), names.end()));
  CHECK(std::set<std::string>(names.begin(), names.end()).size() == 12);

  cnf::any_datastore any = ds;
  auto joined = any.list_all(lopt("WorkloadEndpoint", std::nullopt, "", 5)).value();
  CHECK(joined.items.size() == 26);

  auto bad = ds.list(lopt("WorkloadEndpoint", std::nullopt, "", 0, "garbage"));
  REQUIRE(!bad);
  CHECK(bad.error().code == cnf::errc::invalid);
  auto other = ds.list(lopt("WorkloadEndpoint", std::nullopt, "", 1)).value();
  auto wrong_kind = ds.list(lopt("Node", std::nullopt, "", 0, other.continue_token));
  REQUIRE(!wrong_kind);
  CHECK(wrong_kind.error().code == cnf::errc::invalid);
}

TEST_CASE("memory_datastore: copies share one store") {
  cnf::memory_datastore a;
  cnf::memory_datastore b = a;
  cnf::any_datastore any = a;
  REQUIRE(b.create(res("Node", "n")));
  CHECK(a.get({"Node", "", "n"}));
  CHECK(any.get({"Node", "", "n"}));
  cnf::memory_datastore other;
  CHECK(!other.get({"Node", "", "n"}));
}

TEST_CASE("memory_datastore: concurrent read-modify-write increments lose nothing") {
  cnf::memory_datastore ds;
  cnf::any_datastore any = ds;
  REQUIRE(ds.create(res("Counter", "c", "0")));
  constexpr int threads = 8, per_thread = 500;
  std::atomic<int> conflicts{0}, other_errors{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i) {
        for (;;) {
          auto cur = any.get({"Counter", "", "c"}).value();
          cur.spec = std::to_string(std::stoi(cur.spec) + 1);
          auto u = any.update(cur);
          if (u) break;
          if (u.error().code != cnf::errc::conflict) {
            other_errors++;
            return;
          }
          conflicts++;
        }
      }
    });
  for (auto& t : ts) t.join();
  REQUIRE(other_errors == 0);
  CHECK(ds.get({"Counter", "", "c"})->spec == std::to_string(threads * per_thread));
  // One create plus one successful update per increment: failed CAS writes leave no trace.
  CHECK(ds.status()->revision == std::to_string(1 + threads * per_thread));
  INFO("conflicts: " << conflicts.load());
  SUCCEED();
}

TEST_CASE("memory_datastore: concurrent creates of one name: exactly one wins") {
  cnf::memory_datastore ds;
  constexpr int threads = 8, names = 200;
  std::atomic<int> won{0}, lost{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < names; ++i) {
        auto r = ds.create(res("HostLocalAllocation", "a" + std::to_string(i), std::to_string(t)));
        if (r) won++;
        else if (r.error().code == cnf::errc::already_exists) lost++;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(won == names);
  CHECK(lost == names * (threads - 1));
}

TEST_CASE("memory_datastore: watch delivers state, in_sync, then changes in order (own thread)") {
  cnf::memory_datastore ds;
  REQUIRE(ds.create(res("Node", "a")));
  REQUIRE(ds.create(res("Node", "b")));
  REQUIRE(ds.create(res("IPPool", "p")));
  collector c;
  auto w = ds.watch(wopt("Node"), c.callback()).value();
  REQUIRE(c.wait_count(3));
  auto ev = c.snapshot();
  CHECK(ev[0].kind == T::added);
  CHECK(ev[0].object.name == "a");
  CHECK(ev[1].kind == T::added);
  CHECK(ev[1].object.name == "b");
  CHECK(ev[2].kind == T::in_sync);
  CHECK(ev[2].revision == "3");

  auto cur = ds.get({"Node", "", "a"}).value();
  cur.spec = R"({"x":1})";
  REQUIRE(ds.update(cur));
  REQUIRE(ds.create(res("IPPool", "q")));  // other kind: not delivered
  REQUIRE(ds.remove({"Node", "", "b"}));
  REQUIRE(ds.create(res("Node", "c")));
  REQUIRE(c.wait_count(6));
  ev = c.snapshot();
  REQUIRE(ev.size() == 6);
  CHECK(ev[3].kind == T::modified);
  CHECK(ev[3].object.spec == R"({"x":1})");
  CHECK(ev[4].kind == T::deleted);
  CHECK(ev[4].object.name == "b");
  CHECK(ev[5].kind == T::added);
  CHECK(ev[5].object.name == "c");
  CHECK(num(ev[3].revision) < num(ev[4].revision));
  CHECK(num(ev[4].revision) < num(ev[5].revision));
  for (std::size_t i = 3; i < ev.size(); ++i) CHECK(ev[i].object.revision == ev[i].revision);
  CHECK(c.threads.size() == 1);
  CHECK(c.threads.count(std::this_thread::get_id()) == 0);

  // After cancel nothing more arrives.
  w.cancel();
  REQUIRE(ds.create(res("Node", "d")));
  std::this_thread::sleep_for(50ms);
  CHECK(c.snapshot().size() == 6);
}

TEST_CASE("memory_datastore: many writers, one watch: every change once, in revision order") {
  cnf::memory_datastore ds;
  collector c;
  auto w = ds.watch(wopt("Counter"), c.callback()).value();
  REQUIRE(c.wait_count(1));
  constexpr int threads = 4, per_thread = 300;
  std::atomic<int> failed{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i)
        if (!ds.create(res("Counter", std::to_string(t) + "-" + std::to_string(i)))) failed++;
    });
  for (auto& t : ts) t.join();
  REQUIRE(failed == 0);
  REQUIRE(c.wait_count(1 + threads * per_thread));
  auto ev = c.snapshot();
  std::set<std::string> names;
  for (std::size_t i = 2; i < ev.size(); ++i) CHECK(num(ev[i - 1].revision) < num(ev[i].revision));
  for (std::size_t i = 1; i < ev.size(); ++i) names.insert(ev[i].object.name);
  CHECK(names.size() == threads * per_thread);
  CHECK(c.overlap == 0);
}

TEST_CASE("memory_datastore: watch on an executor: serial, in order, on the executor's threads") {
  pool_executor ex(2);
  cnf::memory_datastore ds(&ex);
  REQUIRE(ds.create(res("Node", "a")));
  collector c;
  auto w = ds.watch(wopt("Node"), c.callback()).value();
  constexpr int n = 500;
  std::atomic<int> failed{0};
  std::thread writer([&] {
    for (int i = 0; i < n; ++i)
      if (!ds.create(res("Node", "n" + std::to_string(i)))) failed++;
  });
  writer.join();
  REQUIRE(failed == 0);
  REQUIRE(c.wait_count(2 + n));
  auto ev = c.snapshot();
  CHECK(ev[0].kind == T::added);
  CHECK(ev[1].kind == T::in_sync);
  for (std::size_t i = 3; i < ev.size(); ++i) CHECK(num(ev[i - 1].revision) < num(ev[i].revision));
  CHECK(c.overlap == 0);
  auto ids = ex.ids();
  for (auto& id : c.threads) CHECK(ids.count(id) == 1);
  CHECK(ex.posted() >= 1);
  w.cancel();
  REQUIRE(ds.create(res("Node", "late")));
  std::this_thread::sleep_for(50ms);
  CHECK(c.snapshot().size() == 2 + n);
}

TEST_CASE("memory_datastore: watch from a revision replays what followed it") {
  cnf::memory_datastore ds;
  auto a = ds.create(res("Node", "a")).value();
  auto b = ds.create(res("Node", "b")).value();
  REQUIRE(ds.remove(a.key()));
  collector c;
  auto w = ds.watch(wopt("Node", a.revision), c.callback()).value();
  REQUIRE(c.wait_count(3));
  auto ev = c.snapshot();
  CHECK(ev[0].kind == T::added);
  CHECK(ev[0].object.name == "b");
  CHECK(ev[0].revision == b.revision);
  CHECK(ev[1].kind == T::deleted);
  CHECK(ev[1].object.name == "a");
  CHECK(ev[2].kind == T::in_sync);
  REQUIRE(ds.create(res("Node", "c")));
  REQUIRE(c.wait_count(4));
  CHECK(c.snapshot()[3].object.name == "c");

  // From the current revision: nothing to replay, just in_sync.
  collector d;
  auto w2 = ds.watch(wopt("Node", ds.status()->revision), d.callback()).value();
  REQUIRE(d.wait_count(1));
  CHECK(d.snapshot()[0].kind == T::in_sync);

  auto bad = ds.watch(wopt("Node", "12x"), d.callback());
  REQUIRE(!bad);
  CHECK(bad.error().code == cnf::errc::invalid);
}

TEST_CASE("memory_datastore: a revision older than the history gets resync_needed") {
  cnf::memory_datastore ds(mopt(4));
  auto first = ds.create(res("Node", "n0")).value();
  for (int i = 1; i < 10; ++i) REQUIRE(ds.create(res("Node", "n" + std::to_string(i))));
  collector c;
  auto w = ds.watch(wopt("Node", first.revision), c.callback()).value();
  REQUIRE(c.wait_count(1));
  std::this_thread::sleep_for(20ms);
  auto ev = c.snapshot();
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].kind == T::resync_needed);
  // The watch has ended: later writes do not reach it.
  REQUIRE(ds.create(res("Node", "after")));
  std::this_thread::sleep_for(20ms);
  CHECK(c.snapshot().size() == 1);

  // Still inside the history: fine.
  collector d;
  auto w2 = ds.watch(wopt("Node", "7"), d.callback()).value();
  REQUIRE(d.wait_count(5));  // n7, n8, n9, after, in_sync
  auto ev2 = d.snapshot();
  CHECK(ev2[0].object.name == "n7");
  CHECK(ev2[3].object.name == "after");
  CHECK(ev2[4].kind == T::in_sync);

  // Explicit compaction, as etcd would do.
  ds.compact("9");
  collector e;
  auto w3 = ds.watch(wopt("Node", "8"), e.callback()).value();
  REQUIRE(e.wait_count(1));
  CHECK(e.snapshot()[0].kind == T::resync_needed);
}

TEST_CASE("memory_datastore: a consumer too far behind gets resync_needed") {
  cnf::memory_datastore ds(mopt(10000, 10));
  std::mutex gate;
  std::unique_lock hold(gate);
  collector c;
  auto cb = c.callback();
  auto w = ds.watch(wopt("Node"), [&](const cnf::watch_event& e) {
              std::lock_guard l(gate);  // blocks until the writer is done
              cb(e);
            }).value();
  for (int i = 0; i < 50; ++i) REQUIRE(ds.create(res("Node", "n" + std::to_string(i))));
  hold.unlock();
  REQUIRE(c.wait([](auto& ev) { return !ev.empty() && ev.back().kind == T::resync_needed; }));
  auto ev = c.snapshot();
  CHECK(ev.size() <= 12);
}

TEST_CASE("memory_datastore: a callback may cancel its own watch and use the store") {
  cnf::memory_datastore ds;
  collector c;
  cnf::watch_handle w;
  std::mutex wm;
  std::atomic<bool> created_inside{false};
  auto cb = c.callback();
  {
    std::lock_guard l(wm);
    w = ds.watch(wopt("Node"), [&](const cnf::watch_event& e) {
           cb(e);
           if (e.kind == T::added && e.object.name == "stop") {
             created_inside = static_cast<bool>(ds.create(res("Node", "from-callback")));
             std::lock_guard l2(wm);
             w.cancel();
           }
         }).value();
  }
  REQUIRE(c.wait_count(1));
  REQUIRE(ds.create(res("Node", "stop")));
  REQUIRE(c.wait_count(2));
  std::this_thread::sleep_for(50ms);
  auto ev = c.snapshot();
  CHECK(ev.size() == 2);
  CHECK(created_inside);
  CHECK(ds.get({"Node", "", "from-callback"}));
  std::lock_guard l(wm);
  CHECK(!w.active());
}

TEST_CASE("memory_datastore: watch filters by namespace and name prefix") {
  cnf::memory_datastore ds;
  collector c;
  auto w = ds.watch(wopt("WorkloadEndpoint", "", "a", "web-"), c.callback()).value();
  REQUIRE(c.wait_count(1));
  REQUIRE(ds.create(res("WorkloadEndpoint", "web-1", "{}", "a")));
  REQUIRE(ds.create(res("WorkloadEndpoint", "web-2", "{}", "b")));
  REQUIRE(ds.create(res("WorkloadEndpoint", "db-1", "{}", "a")));
  REQUIRE(ds.create(res("WorkloadEndpoint", "web-3", "{}", "a")));
  REQUIRE(c.wait_count(3));
  std::this_thread::sleep_for(20ms);
  auto ev = c.snapshot();
  REQUIRE(ev.size() == 3);
  CHECK(ev[1].object.name == "web-1");
  CHECK(ev[2].object.name == "web-3");
}

TEST_CASE("memory_datastore: a watch outliving its store stops cleanly") {
  collector c;
  cnf::watch_handle w;
  {
    cnf::memory_datastore ds;
    REQUIRE(ds.create(res("Node", "a")));
    w = ds.watch(wopt("Node"), c.callback()).value();
    REQUIRE(c.wait_count(2));
  }
  CHECK(w.active());
  w.cancel();
  CHECK(!w.active());
}

#ifdef CNF_HAVE_CONFORMANCE
namespace {
// The conformance suite's hooks get any_datastore; compaction needs the memory store behind it.
cnf_test::datastore_backend memory_backend(const char* name, cnf::executor* exec,
                                           std::shared_ptr<std::vector<cnf::memory_datastore>> made) {
  cnf_test::datastore_backend b;
  b.name = name;
  b.make_fresh = [exec, made] {
    made->emplace_back(exec);
    return cnf::any_datastore(made->back());
  };
  b.open_peer = [](const cnf::any_datastore& ds) { return ds; };
  // The suite compacts the store it made last (each section makes a fresh one).
  b.forget_history = [made](const cnf::any_datastore&, const std::string& rev) { made->back().compact(rev); };
  return b;
}
}  // namespace

TEST_CASE("memory_datastore: shared datastore conformance suite (own watch threads)") {
  auto made = std::make_shared<std::vector<cnf::memory_datastore>>();
  cnf_test::datastore_conformance(memory_backend("memory", nullptr, made));
}

TEST_CASE("memory_datastore: shared datastore conformance suite (executor delivery)") {
  pool_executor ex(2);
  auto made = std::make_shared<std::vector<cnf::memory_datastore>>();
  cnf_test::datastore_conformance(memory_backend("memory+executor", &ex, made));
}
#endif
