// tests/datastore/conformance.hpp — one conformance suite for every cnf datastore.
//
// Every backend (local, etcd, kubernetes, memory) runs the same checks of the semantics
// <cnf/datastore.hpp> promises. A backend's test file fills in a `datastore_backend` and
// calls the suite from one TEST_CASE; the suite's checks are Catch2 SECTIONs, so Catch2
// runs the test case once per section and each section gets a fresh store:
//
//   #include "../datastore/conformance.hpp"      // link Boost::json and Threads
//   TEST_CASE("etcd: conformance") {
//     cnf_test::datastore_backend b;
//     b.name = "etcd";
//     b.make_fresh = [&] { return cnf::any_datastore(open_with_new_prefix()); };
//     b.open_peer = [&](const cnf::any_datastore&) { return cnf::any_datastore(open_same_prefix()); };
//     b.forget_history = [&](const cnf::any_datastore&, const std::string& rev) { compact(rev); };
//     cnf_test::datastore_conformance(b);
//   }
//
// What each hook must provide:
//   make_fresh      (required) a store that is empty and shared with nothing else the suite
//                   touches: a new directory (local), a new key prefix (etcd), a new
//                   namespace/group or a wiped server (kubernetes). Called once per section
//                   (a few times in some). Throw (e.g. via result::value()) when it fails.
//   open_peer       (optional) a second, independent client of the same store as `ds`: another
//                   handle on the directory, another connection pool with the same prefix.
//                   CAS, list and watch are then checked across clients, as separate
//                   processes and nodes use them. Default: the same handle.
//   forget_history  (optional) makes every revision up to and including `revision`
//                   unavailable to watches: etcd compaction, rolling the local log past its
//                   retained segments, memory_datastore::compact(). A watch from an older
//                   revision must then deliver resync_needed. Leave empty when the backend
//                   cannot do that on demand (the Kubernetes API server): the section says so
//                   with a WARN.
//   rev_less        (optional) orders two revisions of the store. Default: as decimal numbers
//                   (etcd, local, memory and the API server over etcd all use them).
//   many            resources for the list/pagination section (at least 1,000 by default).
//   writers, increments, rounds  size of the concurrent-writers section.
//   timeout         how long to wait for a watch event before failing.
//
// What the suite assumes of every backend (all of it from <cnf/datastore.hpp>, made
// precise): revisions are decimal numbers unless rev_less says otherwise; a resource's
// revision is the store revision of its last write, an event's revision that of its write
// (for a removal: status().revision right after it, when nothing else was written); the
// initial `added` events carry the object's revision; in_sync may also follow the replay
// of a watch that resumes from a revision (the suite ignores it there). It never relies on
// an update that changes nothing (the API server drops those), puts only WorkloadEndpoint,
// NetworkPolicy and NetworkSet in namespaces (the rest is cluster-scoped, as in Calico),
// and uses specs without nulls.
//
// What the suite checks: create/get/update/remove; already_exists, not_found and invalid
// keys; compare-and-swap (a stale revision loses, a fresh one wins, remove with a revision);
// labels and spec round trip (spec compared as JSON values, not text); `many` resources
// listed whole and in pages (no duplicates, nothing missing, page sizes, continue tokens);
// namespace and prefix filters; a list's revision is a watch start point; watch: initial
// state as `added` then `in_sync`, then every write as added/modified/deleted in revision
// order with the revision the write returned, nothing for other kinds or namespaces;
// resuming from a revision delivers exactly the later writes (no gap, no duplicate), twice
// in a row; resync_needed after forget_history; no callback after the handle is gone, and
// cancelling from inside a callback; N threads doing read-modify-CAS increments on one
// counter (final value == successful updates, revisions unique), and rounds where all
// threads CAS from the same revision (exactly one winner per round); status().
#pragma once
#include <cnf/datastore.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace cnf_test {

struct datastore_backend {
  std::string name = "datastore";
  std::function<cnf::any_datastore()> make_fresh;
  std::function<cnf::any_datastore(const cnf::any_datastore&)> open_peer;
  std::function<void(const cnf::any_datastore&, const std::string& revision)> forget_history;
  std::function<bool(const std::string&, const std::string&)> rev_less;
  std::size_t many = 1000;
  int writers = 8;
  int increments = 20;
  int rounds = 10;
  std::chrono::milliseconds timeout{15000};
};

namespace conformance {

inline cnf::resource res(std::string kind, std::string name, std::string spec = "{}", std::string ns = "",
                         std::map<std::string, std::string> labels = {}) {
  cnf::resource r;
  r.kind = std::move(kind);
  r.ns = std::move(ns);
  r.name = std::move(name);
  r.labels = std::move(labels);
  r.spec = std::move(spec);
  return r;
}

inline cnf::list_options lopt(std::string kind, std::optional<std::string> ns = std::nullopt, std::string prefix = {},
                              std::size_t limit = 0, std::string token = {}) {
  cnf::list_options o;
  o.kind = std::move(kind);
  o.ns = std::move(ns);
  o.name_prefix = std::move(prefix);
  o.limit = limit;
  o.continue_token = std::move(token);
  return o;
}

inline cnf::watch_options wopt(std::string kind, std::string revision = {}, std::optional<std::string> ns = std::nullopt,
                               std::string prefix = {}) {
  cnf::watch_options o;
  o.kind = std::move(kind);
  o.revision = std::move(revision);
  o.ns = std::move(ns);
  o.name_prefix = std::move(prefix);
  return o;
}

/// Two spec texts hold the same JSON value.
inline bool same_json(const std::string& a, const std::string& b) {
  boost::system::error_code ea, eb;
  auto va = boost::json::parse(a.empty() ? std::string("{}") : a, ea);
  auto vb = boost::json::parse(b.empty() ? std::string("{}") : b, eb);
  return !ea && !eb && va == vb;
}

inline std::int64_t spec_int(const cnf::resource& r, const char* field) {
  auto v = boost::json::parse(r.spec);
  return v.as_object().at(field).to_number<std::int64_t>();
}

inline bool decimal_less(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return a.size() < b.size();
  return a < b;
}

/// Collects watch events from any thread; wait() blocks until a predicate holds.
struct collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<cnf::watch_event> events;
  std::atomic<int> in_callback{0};
  std::atomic<int> overlaps{0};

  cnf::watch_callback callback() {
    return [this](const cnf::watch_event& e) {
      if (in_callback.fetch_add(1) != 0) overlaps++;
      {
        std::lock_guard l(mu);
        events.push_back(e);
      }
      in_callback.fetch_sub(1);
      cv.notify_all();
    };
  }
  bool wait(const std::function<bool(const std::vector<cnf::watch_event>&)>& pred, std::chrono::milliseconds t) {
    std::unique_lock l(mu);
    return cv.wait_for(l, t, [&] { return pred(events); });
  }
  std::vector<cnf::watch_event> snapshot() {
    std::lock_guard l(mu);
    return events;
  }
  /// Events other than in_sync and error (errors are reported, not fatal: watches retry).
  std::vector<cnf::watch_event> changes() { return changes_in(snapshot()); }
  static std::vector<cnf::watch_event> changes_in(const std::vector<cnf::watch_event>& ev) {
    std::vector<cnf::watch_event> out;
    for (auto& e : ev)
      if (e.kind != cnf::watch_event::type::in_sync && e.kind != cnf::watch_event::type::error) out.push_back(e);
    return out;
  }
  /// For wait() predicates, which run with the collector locked.
  static std::size_t count_changes(const std::vector<cnf::watch_event>& ev) { return changes_in(ev).size(); }
};

inline std::size_t count_kind(const std::vector<cnf::watch_event>& ev, cnf::watch_event::type t) {
  return static_cast<std::size_t>(std::count_if(ev.begin(), ev.end(), [t](auto& e) { return e.kind == t; }));
}

struct expected_event {
  cnf::watch_event::type type;
  std::string name;
  std::string revision;
};

inline std::string describe(const cnf::watch_event& e) {
  return std::string(cnf::to_string(e.kind)) + " " + e.object.key().to_string() + " @" + e.revision +
         (e.kind == cnf::watch_event::type::error ? " (" + e.err.message + ")" : std::string());
}

/// The change events must be exactly `want`, in order.
inline void check_events(const std::vector<cnf::watch_event>& got, const std::vector<expected_event>& want) {
  std::string seen;
  for (auto& e : got) seen += describe(e) + "\n";
  INFO("events delivered:\n" << seen);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("event " << i);
    CHECK(got[i].kind == want[i].type);
    CHECK(got[i].object.name == want[i].name);
    CHECK(got[i].revision == want[i].revision);
  }
}

}  // namespace conformance

/// Runs the suite's sections against one backend; call it from one TEST_CASE.
inline void datastore_conformance(const datastore_backend& b) {
  using namespace conformance;
  using namespace std::chrono_literals;
  using T = cnf::watch_event::type;
  REQUIRE(b.make_fresh);
  auto less = b.rev_less ? b.rev_less : decimal_less;
  auto peer = [&](const cnf::any_datastore& ds) { return b.open_peer ? b.open_peer(ds) : ds; };
  INFO("backend: " << b.name);

  SECTION("create, get, update, remove") {
    auto ds = b.make_fresh();
    auto c = ds.create(res("IPPool", "pool-a", R"({"cidr":"10.0.0.0/16","blockSize":26})", "", {{"tier", "gold"}}));
    REQUIRE(c);
    CHECK(!c->revision.empty());
    CHECK(c->kind == "IPPool");
    CHECK(c->name == "pool-a");
    CHECK(c->ns.empty());
    CHECK(c->labels == std::map<std::string, std::string>{{"tier", "gold"}});
    CHECK(same_json(c->spec, R"({"cidr":"10.0.0.0/16","blockSize":26})"));

    auto g = ds.get({"IPPool", "", "pool-a"});
    REQUIRE(g);
    CHECK(g->revision == c->revision);
    CHECK(g->labels == c->labels);
    CHECK(same_json(g->spec, c->spec));

    auto changed = *g;
    changed.spec = R"({"cidr":"10.0.0.0/16","blockSize":28,"nested":{"a":[1,2,3],"s":"x"}})";
    changed.labels["tier"] = "silver";
    auto u = ds.update(changed);
    REQUIRE(u);
    CHECK(u->revision != c->revision);
    CHECK(less(c->revision, u->revision));
    auto g2 = peer(ds).get({"IPPool", "", "pool-a"});
    REQUIRE(g2);
    CHECK(g2->revision == u->revision);
    CHECK(g2->labels.at("tier") == "silver");
    CHECK(same_json(g2->spec, changed.spec));

    REQUIRE(ds.remove({"IPPool", "", "pool-a"}, u->revision));
    auto gone = ds.get({"IPPool", "", "pool-a"});
    REQUIRE(!gone);
    CHECK(gone.error().code == cnf::errc::not_found);
    // A name can be created again after removal, with a newer revision.
    auto again = ds.create(res("IPPool", "pool-a"));
    REQUIRE(again);
    CHECK(less(u->revision, again->revision));
    // remove() without a revision removes whatever is there.
    REQUIRE(ds.remove({"IPPool", "", "pool-a"}));
    CHECK(ds.get({"IPPool", "", "pool-a"}).error().code == cnf::errc::not_found);
  }

  SECTION("already_exists, not_found, invalid keys") {
    auto ds = b.make_fresh();
    REQUIRE(ds.create(res("Node", "node-1", R"({"asn":64512})")));
    auto dup = ds.create(res("Node", "node-1"));
    REQUIRE(!dup);
    CHECK(dup.error().code == cnf::errc::already_exists);
    CHECK(dup.error().message.find("node-1") != std::string::npos);
    CHECK(spec_int(ds.get({"Node", "", "node-1"}).value(), "asn") == 64512);  // the failed create changed nothing

    auto missing = ds.get({"Node", "", "node-2"});
    REQUIRE(!missing);
    CHECK(missing.error().code == cnf::errc::not_found);
    CHECK(missing.error().message.find("node-2") != std::string::npos);

    auto r = res("Node", "node-2");
    r.revision = ds.get({"Node", "", "node-1"}).value().revision;
    auto upd = ds.update(r);
    REQUIRE(!upd);
    CHECK(upd.error().code == cnf::errc::not_found);
    auto rm = ds.remove({"Node", "", "node-2"});
    REQUIRE(!rm);
    CHECK(rm.error().code == cnf::errc::not_found);
    CHECK(ds.get({"Node", "", "node-2"}).error().code == cnf::errc::not_found);  // update did not create it

    auto noname = ds.create(res("Node", ""));
    REQUIRE(!noname);
    CHECK(noname.error().code == cnf::errc::invalid);
    auto nokind = ds.create(res("", "x"));
    REQUIRE(!nokind);
    CHECK(nokind.error().code == cnf::errc::invalid);

    // Kind and namespace are part of the key.
    REQUIRE(ds.create(res("BGPPeer", "node-1", R"({"asNumber":1})")));
    CHECK(spec_int(ds.get({"Node", "", "node-1"}).value(), "asn") == 64512);
    CHECK(spec_int(ds.get({"BGPPeer", "", "node-1"}).value(), "asNumber") == 1);
    REQUIRE(ds.create(res("NetworkPolicy", "np", R"({"order":1})", "ns-a")));
    REQUIRE(ds.create(res("NetworkPolicy", "np", R"({"order":2})", "ns-b")));
    CHECK(spec_int(ds.get({"NetworkPolicy", "ns-a", "np"}).value(), "order") == 1);
    CHECK(spec_int(ds.get({"NetworkPolicy", "ns-b", "np"}).value(), "order") == 2);
    CHECK(ds.get({"NetworkPolicy", "ns-c", "np"}).error().code == cnf::errc::not_found);
  }

  SECTION("compare-and-swap: a stale revision loses, a fresh one wins") {
    auto a = b.make_fresh();
    auto p = peer(a);
    auto created = a.create(res("IPAMBlock", "10-0-0-0-26", R"({"allocations":[-1,-1]})")).value();
    auto mine = a.get(created.key()).value();
    auto theirs = p.get(created.key()).value();
    REQUIRE(mine.revision == theirs.revision);

    mine.spec = R"({"allocations":[0,-1]})";
    auto won = a.update(mine);
    REQUIRE(won);
    theirs.spec = R"({"allocations":[-1,1]})";
    auto lost = p.update(theirs);
    REQUIRE(!lost);
    CHECK(lost.error().code == cnf::errc::conflict);
    CHECK(lost.error().message.find("10-0-0-0-26") != std::string::npos);
    // The loser re-reads, sees the winner's write, and wins on the fresh revision.
    auto fresh = p.get(created.key()).value();
    CHECK(fresh.revision == won->revision);
    CHECK(same_json(fresh.spec, mine.spec));
    fresh.spec = R"({"allocations":[0,1]})";
    auto second = p.update(fresh);
    REQUIRE(second);
    CHECK(less(won->revision, second->revision));
    // The first writer's revision is stale now, for update and for remove.
    mine.spec = "{}";
    CHECK(a.update(mine).error().code == cnf::errc::conflict);
    auto stale_rm = a.remove(created.key(), won->revision);
    REQUIRE(!stale_rm);
    CHECK(stale_rm.error().code == cnf::errc::conflict);
    CHECK(same_json(a.get(created.key()).value().spec, R"({"allocations":[0,1]})"));
    REQUIRE(a.remove(created.key(), second->revision));
    CHECK(p.get(created.key()).error().code == cnf::errc::not_found);
    // An update of a resource removed meanwhile: not_found.
    CHECK(a.update(fresh).error().code == cnf::errc::not_found);
  }

  SECTION("many resources: list whole, in pages, by namespace and by prefix") {
    auto ds = b.make_fresh();
    const std::vector<std::string> nss = {"ns-a", "ns-b", "ns-c"};
    std::set<std::string> all;
    for (std::size_t i = 0; i < b.many; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "%s-%05zu", i % 2 ? "odd" : "even", i);
      auto ns = nss[i % nss.size()];
      REQUIRE(ds.create(res("WorkloadEndpoint", name, "{\"i\":" + std::to_string(i) + "}", ns)));
      all.insert(ns + "/" + name);
    }
    // Other kinds must not show up.
    REQUIRE(ds.create(res("NetworkPolicy", "even-policy", "{}", "ns-a")));
    REQUIRE(ds.create(res("HostEndpoint", "odd-host")));

    auto p = peer(ds);
    auto whole = p.list(lopt("WorkloadEndpoint"));
    REQUIRE(whole);
    CHECK(whole->items.size() == b.many);
    CHECK(whole->continue_token.empty());
    CHECK(!whole->revision.empty());
    std::set<std::string> seen;
    for (auto& r : whole->items) {
      CHECK(r.kind == "WorkloadEndpoint");
      seen.insert(r.ns + "/" + r.name);
    }
    CHECK(seen == all);

    // Pages: no duplicates, nothing missing, none larger than the limit.
    for (std::size_t limit : {std::size_t{1}, std::size_t{7}, std::size_t{100}, b.many - 1, b.many, b.many + 5}) {
      if (limit == 1 && b.many > 200) {
        // One item per page over 1,000 resources is slow for remote backends: only the first pages.
        auto first = p.list(lopt("WorkloadEndpoint", std::nullopt, "", 1)).value();
        REQUIRE(first.items.size() == 1);
        REQUIRE(!first.continue_token.empty());
        auto second = p.list(lopt("WorkloadEndpoint", std::nullopt, "", 1, first.continue_token)).value();
        REQUIRE(second.items.size() == 1);
        CHECK(second.items[0].key() != first.items[0].key());
        continue;
      }
      INFO("limit " << limit);
      std::set<std::string> paged;
      std::size_t pages = 0, total = 0;
      std::string token;
      do {
        auto page = p.list(lopt("WorkloadEndpoint", std::nullopt, "", limit, token));
        REQUIRE(page);
        CHECK(page->items.size() <= limit);
        CHECK(!page->revision.empty());
        if (!page->continue_token.empty()) CHECK(page->items.size() == limit);
        for (auto& r : page->items) {
          CHECK(paged.insert(r.ns + "/" + r.name).second);
          ++total;
        }
        token = page->continue_token;
        ++pages;
        REQUIRE(pages <= b.many + 2);
      } while (!token.empty());
      CHECK(total == b.many);
      CHECK(paged == all);
      CHECK(pages >= (b.many + limit - 1) / limit);
      CHECK(pages <= (b.many + limit - 1) / limit + 1);
    }
    // list_all() (pages glued together) agrees.
    auto glued = p.list_all(lopt("WorkloadEndpoint", std::nullopt, "", 250));
    REQUIRE(glued);
    CHECK(glued->items.size() == b.many);

    // By namespace, by prefix, both.
    auto in_b = p.list(lopt("WorkloadEndpoint", "ns-b")).value();
    std::size_t expect_b = 0, expect_odd = 0, expect_b_even = 0;
    for (std::size_t i = 0; i < b.many; ++i) {
      expect_b += i % 3 == 1;
      expect_odd += i % 2 == 1;
      expect_b_even += (i % 3 == 1) && (i % 2 == 0);
    }
    CHECK(in_b.items.size() == expect_b);
    for (auto& r : in_b.items) CHECK(r.ns == "ns-b");
    auto odd = p.list(lopt("WorkloadEndpoint", std::nullopt, "odd-")).value();
    CHECK(odd.items.size() == expect_odd);
    for (auto& r : odd.items) CHECK(r.name.rfind("odd-", 0) == 0);
    auto b_even = p.list_all(lopt("WorkloadEndpoint", "ns-b", "even-", 10)).value();
    CHECK(b_even.items.size() == expect_b_even);
    for (auto& r : b_even.items) CHECK((r.ns == "ns-b" && r.name.rfind("even-", 0) == 0));
    auto none = p.list(lopt("WorkloadEndpoint", "no-such-ns"));
    REQUIRE(none);
    CHECK(none->items.empty());
    CHECK(!none->revision.empty());
    CHECK(p.list(lopt("WorkloadEndpoint", std::nullopt, "zzz")).value().items.empty());
    auto cluster = p.list(lopt("HostEndpoint")).value();
    REQUIRE(cluster.items.size() == 1);
    CHECK(cluster.items[0].name == "odd-host");
    CHECK(cluster.items[0].ns.empty());
    // A spec read back from a list is the one written.
    for (auto& r : in_b.items) {
      auto idx = std::stoul(r.name.substr(r.name.find('-') + 1));
      CHECK(spec_int(r, "i") == static_cast<std::int64_t>(idx));
    }
  }

  SECTION("a list's revision is a watch start point") {
    auto ds = b.make_fresh();
    REQUIRE(ds.create(res("Node", "n1")));
    REQUIRE(ds.create(res("Node", "n2")));
    auto l = ds.list(lopt("Node")).value();
    REQUIRE(l.items.size() == 2);
    auto w = ds.create(res("Node", "n3")).value();
    auto n1 = ds.get({"Node", "", "n1"}).value();
    n1.spec = R"({"changed":true})";
    auto u = ds.update(n1).value();
    collector c;
    auto h = peer(ds).watch(wopt("Node", l.revision), c.callback());
    REQUIRE(h);
    REQUIRE(c.wait([](auto& ev) { return count_kind(ev, T::added) + count_kind(ev, T::modified) >= 2; }, b.timeout));
    check_events(c.changes(), {{T::added, "n3", w.revision}, {T::modified, "n1", u.revision}});
  }

  SECTION("watch: initial state, in_sync, then every write in revision order") {
    // A namespaced kind, watched in one namespace: other namespaces and kinds stay out.
    const std::string ns = "ns-w";
    auto ds = b.make_fresh();
    auto n1 = ds.create(res("NetworkPolicy", "policy-1", R"({"order":1})", ns)).value();
    auto n2 = ds.create(res("NetworkPolicy", "policy-2", "{}", ns)).value();
    REQUIRE(ds.create(res("NetworkPolicy", "policy-x", "{}", "ns-x")));
    REQUIRE(ds.create(res("NetworkSet", "policy-1", "{}", ns)));
    collector c;
    auto h = peer(ds).watch(wopt("NetworkPolicy", {}, ns), c.callback());
    REQUIRE(h);
    REQUIRE(c.wait([](auto& ev) { return count_kind(ev, T::in_sync) >= 1; }, b.timeout));
    {
      auto ev = c.snapshot();
      std::size_t sync_at = 0;
      while (ev[sync_at].kind != T::in_sync) ++sync_at;
      CHECK(sync_at == 2);
      std::map<std::string, std::string> initial;
      for (std::size_t i = 0; i < sync_at; ++i) {
        CHECK(ev[i].kind == T::added);
        CHECK(ev[i].revision == ev[i].object.revision);
        initial[ev[i].object.name] = ev[i].object.revision;
      }
      CHECK(initial == std::map<std::string, std::string>{{"policy-1", n1.revision}, {"policy-2", n2.revision}});
      CHECK(!ev[sync_at].revision.empty());
    }
    // A scripted run of writes, including other kinds and namespaces that must not show.
    std::vector<expected_event> want;
    auto a = ds.create(res("NetworkPolicy", "policy-3", "{}", ns)).value();
    want.push_back({T::added, "policy-3", a.revision});
    REQUIRE(ds.create(res("NetworkSet", "policy-3", "{}", ns)));
    auto m = ds.get({"NetworkPolicy", ns, "policy-1"}).value();
    m.spec = R"({"order":2})";
    auto u = ds.update(m).value();
    want.push_back({T::modified, "policy-1", u.revision});
    REQUIRE(ds.create(res("NetworkPolicy", "policy-9", "{}", "ns-x")));
    REQUIRE(ds.remove({"NetworkPolicy", ns, "policy-2"}));
    auto after_rm = ds.status().value().revision;  // the removal's revision: nothing was written since
    want.push_back({T::deleted, "policy-2", after_rm});
    u.spec = R"({"order":3})";
    auto u2 = ds.update(u).value();
    want.push_back({T::modified, "policy-1", u2.revision});
    for (int i = 0; i < 10; ++i) {
      auto x = ds.create(res("NetworkPolicy", "burst-" + std::to_string(i), "{}", ns)).value();
      want.push_back({T::added, x.name, x.revision});
    }
    REQUIRE(c.wait([&](auto& ev) { return collector::count_changes(ev) >= 2 + want.size(); }, b.timeout));
    std::this_thread::sleep_for(200ms);  // nothing more may arrive
    auto ev = c.changes();
    ev.erase(ev.begin(), ev.begin() + 2);  // the initial state
    check_events(ev, want);
    for (std::size_t i = 1; i < ev.size(); ++i) CHECK(less(ev[i - 1].revision, ev[i].revision));
    for (auto& e : ev) CHECK(e.object.ns == ns);
    CHECK(ev[1].object.revision == u.revision);
    CHECK(spec_int(ev[1].object, "order") == 2);
    CHECK(ev[2].object.key() == cnf::resource_key{"NetworkPolicy", ns, "policy-2"});
    CHECK(spec_int(ev[3].object, "order") == 3);
    CHECK(c.overlaps == 0);
  }

  SECTION("watch from a revision resumes without gaps or duplicates") {
    auto ds = b.make_fresh();
    REQUIRE(ds.create(res("IPAMHandle", "before")));
    auto start = ds.status().value().revision;
    std::vector<expected_event> want;
    for (int i = 0; i < 20; ++i) {
      auto name = "h-" + std::to_string(i % 7);
      auto cur = ds.get({"IPAMHandle", "", name});
      if (!cur) {
        auto x = ds.create(res("IPAMHandle", name, "{\"n\":" + std::to_string(i) + "}")).value();
        want.push_back({T::added, name, x.revision});
      } else if (i % 3 == 0) {
        REQUIRE(ds.remove(cur->key(), cur->revision));
        want.push_back({T::deleted, name, ds.status().value().revision});
      } else {
        cur->spec = "{\"n\":" + std::to_string(i) + "}";
        auto x = ds.update(*cur).value();
        want.push_back({T::modified, name, x.revision});
      }
    }
    collector c;
    auto h = peer(ds).watch(wopt("IPAMHandle", start), c.callback());
    REQUIRE(h);
    REQUIRE(c.wait([&](auto& ev) { return collector::count_changes(ev) >= want.size(); }, b.timeout));
    // Later writes follow on the same watch.
    for (int i = 0; i < 5; ++i) {
      auto x = ds.create(res("IPAMHandle", "late-" + std::to_string(i))).value();
      want.push_back({T::added, x.name, x.revision});
    }
    REQUIRE(c.wait([&](auto& ev) { return collector::count_changes(ev) >= want.size(); }, b.timeout));
    std::this_thread::sleep_for(200ms);
    check_events(c.changes(), want);
    h->cancel();

    // Resume again from the middle: exactly the rest.
    collector c2;
    auto mid = want[9].revision;
    auto h2 = ds.watch(wopt("IPAMHandle", mid), c2.callback());
    REQUIRE(h2);
    std::vector<expected_event> rest(want.begin() + 10, want.end());
    REQUIRE(c2.wait([&](auto& ev) { return collector::count_changes(ev) >= rest.size(); }, b.timeout));
    std::this_thread::sleep_for(200ms);
    check_events(c2.changes(), rest);
  }

  SECTION("watch from a forgotten revision: resync_needed") {
    if (!b.forget_history) {
      WARN(b.name << ": no forget_history hook; resync_needed is not checked for this backend");
      return;
    }
    auto ds = b.make_fresh();
    REQUIRE(ds.create(res("Node", "n0")));
    auto old = ds.status().value().revision;
    for (int i = 0; i < 5; ++i) REQUIRE(ds.create(res("Node", "n" + std::to_string(i + 1))));
    auto now = ds.status().value().revision;
    b.forget_history(ds, now);
    collector c;
    auto h = ds.watch(wopt("Node", old), c.callback());
    REQUIRE(h);
    REQUIRE(c.wait([](auto& ev) { return count_kind(ev, T::resync_needed) >= 1; }, b.timeout));
    auto ev = c.snapshot();
    CHECK(count_kind(ev, T::added) == 0);
    CHECK(count_kind(ev, T::modified) == 0);
    // The consumer lists again and watches from the list's revision: it sees later writes.
    auto l = ds.list(lopt("Node")).value();
    CHECK(l.items.size() == 6);
    collector c2;
    auto h2 = ds.watch(wopt("Node", l.revision), c2.callback());
    REQUIRE(h2);
    auto x = ds.create(res("Node", "n-after")).value();
    REQUIRE(c2.wait([&](auto& ev) { return collector::count_changes(ev) >= 1; }, b.timeout));
    check_events(c2.changes(), {{T::added, "n-after", x.revision}});
  }

  SECTION("watch: no callback after the handle is gone; cancel from inside a callback") {
    auto ds = b.make_fresh();
    collector c;
    std::optional<cnf::watch_handle> h;
    {
      auto w = ds.watch(wopt("Node"), c.callback());
      REQUIRE(w);
      h.emplace(std::move(*w));
    }
    REQUIRE(c.wait([](auto& ev) { return count_kind(ev, T::in_sync) >= 1; }, b.timeout));
    REQUIRE(ds.create(res("Node", "a")));
    REQUIRE(c.wait([&](auto& ev) { return collector::count_changes(ev) >= 1; }, b.timeout));
    h.reset();
    auto n = c.snapshot().size();
    for (int i = 0; i < 5; ++i) REQUIRE(ds.create(res("Node", "after-" + std::to_string(i))));
    std::this_thread::sleep_for(300ms);
    CHECK(c.snapshot().size() == n);

    // A callback that cancels its own watch.
    std::mutex mu;
    std::condition_variable cv;
    cnf::watch_handle self;
    std::atomic<int> calls{0};
    bool done = false;
    {
      std::lock_guard l(mu);
      auto w = ds.watch(wopt("Node"), [&](const cnf::watch_event& e) {
        calls++;
        if (e.kind == T::in_sync) {
          std::lock_guard l2(mu);
          self.cancel();
          done = true;
          cv.notify_all();
        }
      });
      REQUIRE(w);
      self = std::move(*w);
    }
    std::unique_lock l(mu);
    REQUIRE(cv.wait_for(l, b.timeout, [&] { return done; }));
    l.unlock();
    auto at = calls.load();
    REQUIRE(ds.create(res("Node", "after-cancel")));
    std::this_thread::sleep_for(300ms);
    CHECK(calls.load() == at);
  }

  SECTION("concurrent writers: read-modify-CAS increments on one counter") {
    auto ds = b.make_fresh();
    auto key = cnf::resource_key{"IPAMConfig", "", "counter"};
    REQUIRE(ds.create(res(key.kind, key.name, R"({"value":0})")));
    std::vector<cnf::any_datastore> clients;
    for (int t = 0; t < b.writers; ++t) clients.push_back(peer(ds));
    std::atomic<int> successes{0}, conflicts{0}, failures{0};
    std::mutex rmu;
    std::vector<std::string> revisions;
    std::string first_error;
    std::vector<std::thread> threads;
    for (int t = 0; t < b.writers; ++t) {
      threads.emplace_back([&, t] {
        auto& c = clients[static_cast<std::size_t>(t)];
        for (int done = 0; done < b.increments;) {
          auto cur = c.get(key);
          if (!cur) {
            failures++;
            std::lock_guard l(rmu);
            if (first_error.empty()) first_error = cur.error().message;
            return;
          }
          auto v = spec_int(*cur, "value");
          cur->spec = "{\"value\":" + std::to_string(v + 1) + "}";
          auto u = c.update(*cur);
          if (u) {
            ++done;
            successes++;
            std::lock_guard l(rmu);
            revisions.push_back(u->revision);
          } else if (u.error().code == cnf::errc::conflict) {
            conflicts++;
          } else {
            failures++;
            std::lock_guard l(rmu);
            if (first_error.empty()) first_error = u.error().message;
            return;
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    INFO("first error: " << first_error);
    REQUIRE(failures == 0);
    CHECK(successes == b.writers * b.increments);
    auto final_value = spec_int(ds.get(key).value(), "value");
    CHECK(final_value == successes.load());
    std::set<std::string> unique(revisions.begin(), revisions.end());
    CHECK(unique.size() == revisions.size());
    INFO("conflicts: " << conflicts.load());

    // Rounds: every writer reads the same revision, then all CAS at once: one winner.
    for (int round = 0; round < b.rounds; ++round) {
      auto base = ds.get(key).value();
      std::atomic<int> won{0}, lost{0}, other{0};
      std::barrier sync(b.writers);
      std::vector<std::thread> ts;
      for (int t = 0; t < b.writers; ++t) {
        ts.emplace_back([&, t] {
          auto& c = clients[static_cast<std::size_t>(t)];
          auto mine = c.get(key);
          sync.arrive_and_wait();
          if (!mine || mine->revision != base.revision) {
            other++;
            return;
          }
          mine->spec = "{\"value\":" + std::to_string(spec_int(*mine, "value") + 1) + ",\"by\":" + std::to_string(t) + "}";
          auto u = c.update(*mine);
          if (u) won++;
          else if (u.error().code == cnf::errc::conflict) lost++;
          else other++;
        });
      }
      for (auto& th : ts) th.join();
      INFO("round " << round);
      CHECK(other == 0);
      CHECK(won == 1);
      CHECK(lost == b.writers - 1);
    }
    CHECK(spec_int(ds.get(key).value(), "value") == successes.load() + b.rounds);
  }

  SECTION("status") {
    auto ds = b.make_fresh();
    auto s0 = ds.status();
    REQUIRE(s0);
    CHECK(!s0->backend.empty());
    CHECK(!s0->revision.empty());
    auto w = ds.create(res("Node", "s")).value();
    auto s1 = ds.status().value();
    CHECK(!less(s1.revision, w.revision));
    CHECK(less(s0->revision, s1.revision));
  }
}

}  // namespace cnf_test
