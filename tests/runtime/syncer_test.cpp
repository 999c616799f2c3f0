// cnf::syncer against the three real datastores: the local one (files), a real etcd started
// by the test, and the Kubernetes stand-in API server. Each backend runs the same core
// checks (initial sync, live changes, no callback after destruction); then what each one
// can force: 410 Gone (stand-in: compact + drop-watches) -> resyncing -> in_sync with only
// the differences delivered; etcd killed (datastore_down, cache kept) and restarted on the
// same data dir and port, with writes and a compaction meanwhile -> caught up by diff.
#include <cnf/event_loop.hpp>
#include <cnf/plugins/etcd.hpp>
#include <cnf/plugins/local.hpp>
#include <cnf/syncer.hpp>

#include "../datastore-kubernetes/standin.hpp"
#include <etcd_server.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using U = cnf::sync_update::type;
using S = cnf::sync_status;

namespace {

cnf::resource make(std::string kind, std::string name, std::string spec = "{}") {
  cnf::resource r;
  r.kind = std::move(kind);
  r.name = std::move(name);
  r.spec = std::move(spec);
  return r;
}

// A syncer on an event loop of its own thread, recording what it delivers.
struct rig {
  cnf::event_loop loop;
  std::thread t{[this] { loop.run(); }};
  std::unique_ptr<cnf::syncer> s;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<U, cnf::resource>> updates;
  std::vector<S> statuses;

  rig(cnf::any_datastore ds, std::vector<std::string> kinds, std::chrono::milliseconds retry = 200ms) {
    s = std::make_unique<cnf::syncer>(std::move(ds), loop, cnf::syncer::options{.kinds = std::move(kinds), .retry = retry});
    s->on_update([this](const cnf::sync_update& u) {
      CHECK(loop.running_in_this_thread());
      std::lock_guard l(mu);
      updates.emplace_back(u.kind, u.object);
      cv.notify_all();
    });
    s->on_status([this](S st) {
      std::lock_guard l(mu);
      statuses.push_back(st);
      cv.notify_all();
    });
    s->start();
  }
  template <class F>
  auto on_loop(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    loop.post([&] { task(); });
    if (fut.wait_for(30s) != std::future_status::ready) FAIL("the loop did not run a posted function within 30 s");
    return fut.get();
  }
  ~rig() {
    on_loop([&] {
      s.reset();
      return true;
    });
    loop.stop();
    t.join();
  }
  // Waits (bounded only against a hang) until pred holds over what was delivered.
  bool wait(const std::function<bool()>& pred, std::chrono::seconds limit = 30s) {
    std::unique_lock l(mu);
    return cv.wait_for(l, limit, pred);
  }
  bool wait_status(S st) {
    return wait([&] { return !statuses.empty() && statuses.back() == st; });
  }
  bool wait_update(U k, const std::string& name) {
    return wait([&] {
      for (auto& [t, r] : updates)
        if (t == k && r.name == name) return true;
      return false;
    });
  }
  std::size_t mark() {
    std::lock_guard l(mu);
    return updates.size();
  }
  std::vector<std::pair<U, std::string>> since(std::size_t from) {
    std::lock_guard l(mu);
    std::vector<std::pair<U, std::string>> out;
    for (std::size_t i = from; i < updates.size(); ++i) out.emplace_back(updates[i].first, updates[i].second.name);
    return out;
  }
  // The cache of kind, read on the loop, as name -> spec.
  std::map<std::string, std::string> cache(const std::string& kind) {
    return on_loop([&] {
      std::map<std::string, std::string> out;
      for (auto& [k, r] : s->cache(kind)) out.emplace(r.name, r.spec);
      return out;
    });
  }
};

std::map<std::string, std::string> store_view(const cnf::any_datastore& ds, const std::string& kind) {
  std::map<std::string, std::string> out;
  for (auto& r : ds.list_all({.kind = kind}).value().items) out.emplace(r.name, r.spec);
  return out;
}

// Specs compared as the store gives them back (the API server may reformat JSON).
std::string spec_of(const cnf::any_datastore& ds, const std::string& kind, const std::string& name) {
  return ds.get({kind, "", name}).value().spec;
}

// The checks every backend passes.
void core_checks(const cnf::any_datastore& ds) {
  REQUIRE(ds.create(make("IPPool", "pool-a", R"({"cidr":"10.1.0.0/16"})")));
  REQUIRE(ds.create(make("IPPool", "pool-b", R"({"cidr":"10.2.0.0/16"})")));
  REQUIRE(ds.create(make("Node", "node-1")));

  rig r(ds, {"IPPool", "Node"});
  REQUIRE(r.wait_status(S::in_sync));
  CHECK(r.s->in_sync());
  CHECK(r.s->status() == S::in_sync);
  {
    std::lock_guard l(r.mu);
    // starting first (or straight to in_sync), never down or resyncing on a clean start.
    for (auto st : r.statuses) CHECK((st == S::starting || st == S::in_sync));
  }
  auto initial = r.since(0);
  CHECK(initial.size() == 3);
  for (auto& [k, n] : initial) CHECK(k == U::added);
  CHECK(r.cache("IPPool") == store_view(ds, "IPPool"));
  CHECK(r.cache("Node").size() == 1);
  CHECK(r.cache("BGPPeer").empty());  // a kind it does not sync

  // Live changes arrive as added / modified / deleted, in order, and the cache follows.
  auto m = r.mark();
  auto a = ds.get({"IPPool", "", "pool-a"}).value();
  a.spec = R"({"cidr":"10.1.0.0/16","disabled":true})";
  REQUIRE(ds.update(a));
  REQUIRE(ds.create(make("IPPool", "pool-c", R"({"cidr":"10.3.0.0/16"})")));
  REQUIRE(ds.remove({"IPPool", "", "pool-b"}));
  REQUIRE(ds.create(make("BGPPeer", "ignored")));  // not synced: nothing delivered
  REQUIRE(r.wait_update(U::deleted, "pool-b"));
  CHECK(r.since(m) == std::vector<std::pair<U, std::string>>{{U::modified, "pool-a"}, {U::added, "pool-c"}, {U::deleted, "pool-b"}});
  CHECK(r.cache("IPPool") == store_view(ds, "IPPool"));
  CHECK(r.cache("IPPool").at("pool-a") == spec_of(ds, "IPPool", "pool-a"));
  CHECK(r.s->status() == S::in_sync);
}

// Changes made while the syncer cannot see them: one modified, one added, one removed,
// one untouched. After it catches up it must deliver exactly those three.
struct offline_changes {
  void before(const cnf::any_datastore& ds) {
    REQUIRE(ds.create(make("IPPool", "keep", R"({"cidr":"10.10.0.0/16"})")));
    REQUIRE(ds.create(make("IPPool", "change", R"({"cidr":"10.11.0.0/16"})")));
    REQUIRE(ds.create(make("IPPool", "drop", R"({"cidr":"10.12.0.0/16"})")));
  }
  void during(const cnf::any_datastore& ds) {
    auto c = ds.get({"IPPool", "", "change"}).value();
    c.spec = R"({"cidr":"10.11.0.0/16","disabled":true})";
    REQUIRE(ds.update(c));
    REQUIRE(ds.create(make("IPPool", "new", R"({"cidr":"10.13.0.0/16"})")));
    REQUIRE(ds.remove({"IPPool", "", "drop"}));
  }
  void check(rig& r, std::size_t m, const cnf::any_datastore& ds) {
    REQUIRE(r.wait_update(U::deleted, "drop"));
    REQUIRE(r.wait_update(U::added, "new"));
    REQUIRE(r.wait_update(U::modified, "change"));
    auto got = r.since(m);
    std::sort(got.begin(), got.end());
    CHECK(got == std::vector<std::pair<U, std::string>>{{U::added, "new"}, {U::modified, "change"}, {U::deleted, "drop"}});
    CHECK(r.cache("IPPool") == store_view(ds, "IPPool"));
  }
};

struct skip_without_etcd {
  skip_without_etcd() {
    if (auto why = cnf_test::etcd_server::unavailable_reason()) {
      std::printf("skipped: %s\n", why->c_str());
      std::fflush(stdout);
      std::_Exit(77);
    }
  }
} skip_check;

}  // namespace

TEST_CASE("syncer: local datastore: initial sync, live changes", "[syncer][local]") {
  k8s_test::temp_dir dir;
  cnf::local_datastore_options o;
  o.dir = dir.path().string();
  o.fsync = false;
  auto ds = cnf::local_datastore::open(o);
  REQUIRE(ds);
  core_checks(cnf::any_datastore(std::move(*ds)));
}

TEST_CASE("syncer: local datastore: stop, changes, start again: only the differences", "[syncer][local]") {
  k8s_test::temp_dir dir;
  cnf::local_datastore_options o;
  o.dir = dir.path().string();
  o.fsync = false;
  cnf::any_datastore ds(cnf::local_datastore::open(o).value());
  offline_changes oc;
  oc.before(ds);
  rig r(ds, {"IPPool"});
  REQUIRE(r.wait_status(S::in_sync));
  r.s->stop();
  r.on_loop([] {});  // the stop ran
  auto m = r.mark();
  oc.during(ds);
  r.s->start();
  oc.check(r, m, ds);
}

TEST_CASE("syncer: etcd: initial sync, live changes", "[syncer][etcd]") {
  cnf_test::etcd_server etcd;
  core_checks(cnf::any_datastore(cnf::etcd_datastore::open(cnf::etcd_config{.endpoints = {etcd.endpoint()}, .timeout = 2000ms}).value()));
}

TEST_CASE("syncer: etcd down and back on the same data dir: cache kept, caught up by diff", "[syncer][etcd]") {
  cnf_test::etcd_server etcd;
  cnf::any_datastore ds(cnf::etcd_datastore::open(cnf::etcd_config{.endpoints = {etcd.endpoint()}, .timeout = 1000ms}).value());
  offline_changes oc;
  oc.before(ds);
  rig r(ds, {"IPPool"}, 300ms);
  REQUIRE(r.wait_status(S::in_sync));
  auto before = r.cache("IPPool");

  etcd.kill();  // SIGKILL by PID
  REQUIRE(r.wait_status(S::datastore_down));
  CHECK(r.s->in_sync());              // reached once: stays true
  CHECK(r.cache("IPPool") == before);  // nothing downstream changes while it is down
  auto m = r.mark();
  CHECK(r.since(m).empty());

  etcd.start();  // same data dir and ports
  // Writes and a compaction of their history before the syncer's next attempt (or the
  // plugin's watch) reach the store again: nothing to replay, so a list and a diff.
  oc.during(ds);
  etcd.compact(etcd.revision());
  REQUIRE(r.wait_status(S::in_sync));
  oc.check(r, m, ds);
  {
    std::lock_guard l(r.mu);
    CHECK(std::count(r.statuses.begin(), r.statuses.end(), S::datastore_down) >= 1);
  }
  // And it watches again.
  auto m2 = r.mark();
  REQUIRE(ds.create(make("IPPool", "after", R"({"cidr":"10.20.0.0/16"})")));
  REQUIRE(r.wait_update(U::added, "after"));
  CHECK(r.since(m2) == std::vector<std::pair<U, std::string>>{{U::added, "after"}});
}

TEST_CASE("syncer: kubernetes stand-in: initial sync, live changes", "[syncer][kubernetes]") {
  k8s_test::standin s;
  core_checks(cnf::any_datastore(cnf::kubernetes::datastore::open(s.options()).value()));
}

TEST_CASE("syncer: kubernetes 410 Gone: resyncing, list again, only the differences", "[syncer][kubernetes]") {
  k8s_test::standin s;
  cnf::any_datastore ds(cnf::kubernetes::datastore::open(s.options()).value());
  cnf::any_datastore writer(cnf::kubernetes::datastore::open(s.options()).value());
  offline_changes oc;
  oc.before(writer);
  rig r(ds, {"IPPool"});
  REQUIRE(r.wait_status(S::in_sync));
  REQUIRE(k8s_test::eventually([&] { return s.active_watches() == 1; }));
  // The stream stalls (no events reach it), the changes happen, their history is
  // compacted, then the stream is cut: the watch's resume revision is gone (410), so the
  // syncer must list again and deliver only the differences.
  s.command("gone-mode http");
  auto m = r.mark();
  s.command("freeze-watches");
  oc.during(writer);
  s.command("compact");
  CHECK(r.since(m).empty());
  s.command("drop-watches");
  oc.check(r, m, writer);
  REQUIRE(r.wait_status(S::in_sync));
  std::lock_guard l(r.mu);
  INFO("statuses seen: " << r.statuses.size());
  CHECK(std::count(r.statuses.begin(), r.statuses.end(), S::resyncing) >= 1);
}
