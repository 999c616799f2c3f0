// host-local IPAM behaviour, written once and run against each datastore backend. The
// including file defines `cnf::any_datastore new_store()` (a fresh, empty store) and
// HL_BACKEND (a name for the test case titles) before including this file.
#pragma once
#include <cnf/plugins/host-local.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace hl_test {

namespace hl = cnf::host_local;

inline cnf::ip_address ip(const char* s) { return cnf::ip_address::parse(s).value(); }
inline cnf::ip_prefix net(const char* s) { return cnf::ip_prefix::parse(s).value(); }

// The including file may add keys to every configuration (e.g. parallel_writes = false).
#ifndef HL_EXTRA_TOML
#define HL_EXTRA_TOML ""
#endif

inline hl::config cfg(const std::string& body) {
  auto c = hl::parse_config("[ipam]\n" + body + "\n" + HL_EXTRA_TOML, "test.toml", "ipam");
  if (!c) FAIL(c.error().message);
  return *c;
}

inline cnf::assign_request req(std::string handle, unsigned v4 = 1, unsigned v6 = 0) {
  cnf::assign_request r;
  r.handle = std::move(handle);
  r.node = "node-1";
  r.num_v4 = v4;
  r.num_v6 = v6;
  return r;
}

inline std::size_t count_kind(const cnf::any_datastore& ds, std::string_view kind) {
  cnf::list_options o;
  o.kind = kind;
  return ds.list_all(o).value().items.size();
}

inline std::vector<std::string> addresses(const std::vector<cnf::assigned_address>& v) {
  std::vector<std::string> out;
  for (auto& a : v) out.push_back(a.address.address().to_string());
  return out;
}

}  // namespace hl_test

#define HL_CASE(title) TEST_CASE(std::string("host-local on ") + HL_BACKEND + ": " + title)

using namespace hl_test;

HL_CASE("defaults: first address after the gateway, prefix length, gateway, pool") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.1.0.0/29" }]])"), "node-1");
  auto a = ipam.assign(req("net.c1")).value();
  REQUIRE(a.size() == 1);
  CHECK(a[0].address == cnf::ip_prefix(ip("10.1.0.2"), 29));
  REQUIRE(a[0].gateway);
  CHECK(*a[0].gateway == ip("10.1.0.1"));
  CHECK(a[0].pool == "10.1.0.0/29");
  CHECK(count_kind(ds, hl::allocation_kind) == 1);
  CHECK(count_kind(ds, hl::handle_kind) == 1);
}

HL_CASE("exhaustion names the range set; a released address comes back") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.1.0.0/29" }]])"), "node-1");
  std::set<std::string> got;
  for (int i = 0; i < 5; ++i) {  // .2 .. .6: the gateway .1 and the broadcast .7 are not handed out
    auto a = ipam.assign(req("net.c" + std::to_string(i)));
    REQUIRE(a);
    got.insert(a->at(0).address.address().to_string());
  }
  CHECK(got == std::set<std::string>{"10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"});
  auto full = ipam.assign(req("net.more"));
  REQUIRE(!full);
  CHECK(full.error().code == cnf::errc::exhausted);
  CHECK(full.error().message.find("ranges[0]") != std::string::npos);
  CHECK(full.error().message.find("10.1.0.0/29") != std::string::npos);
  // The failed attempt left nothing behind.
  CHECK(count_kind(ds, hl::allocation_kind) == 5);
  CHECK(count_kind(ds, hl::handle_kind) == 5);

  REQUIRE(ipam.release_handle("net.c2"));
  auto again = ipam.assign(req("net.more")).value();
  CHECK(again[0].address.address() == ip("10.1.0.4"));
}

HL_CASE("round robin: after a release the next address is taken, not the freed one") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.1.0.0/29" }]])"), "node-1");
  std::vector<std::string> order;
  for (int i = 0; i < 7; ++i) {
    auto a = ipam.assign(req("net.c")).value();
    order.push_back(a[0].address.address().to_string());
    REQUIRE(ipam.release_handle("net.c"));
  }
  CHECK(order == std::vector<std::string>{"10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6", "10.1.0.2", "10.1.0.3"});
}

HL_CASE("the cursor is per node: another node starts at the beginning") {
  auto ds = new_store();
  auto conf = cfg(R"(ranges = [[{ subnet = "10.1.0.0/28" }]])");
  cnf::host_local_ipam n1(ds, conf, "node-1"), n2(ds, conf, "node-2");
  CHECK(n1.assign(req("a")).value()[0].address.address() == ip("10.1.0.2"));
  CHECK(n1.assign(req("b")).value()[0].address.address() == ip("10.1.0.3"));
  // node-2 has no cursor: it probes .2 and .3 (taken) and gets .4; no duplicate.
  auto c = req("c");
  c.node.clear();  // the IPAM's own node
  CHECK(n2.assign(c).value()[0].address.address() == ip("10.1.0.4"));
  CHECK(count_kind(ds, hl::cursor_kind) == 2);
  // A request naming its node uses that node's cursor (node-1's: after .3, so .5).
  auto d = req("d");
  d.node = "node-1";
  CHECK(n2.assign(d).value()[0].address.address() == ip("10.1.0.5"));
  auto e = req("e");
  e.node = "node-3";
  CHECK(n2.assign(e).value()[0].address.address() == ip("10.1.0.6"));
  CHECK(count_kind(ds, hl::cursor_kind) == 3);
  auto all = n2.allocations().value();
  REQUIRE(all.size() == 5);
}

HL_CASE("reserved addresses and prefixes, and an explicit gateway, are never handed out") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.2.0.0/27", gateway = "10.2.0.9" }]]
reserved = ["10.2.0.3", "10.2.0.16/29"])"), "node-1");
  std::set<cnf::ip_address> got;
  for (int i = 0;; ++i) {
    auto a = ipam.assign(req("h" + std::to_string(i)));
    if (!a) {
      CHECK(a.error().code == cnf::errc::exhausted);
      break;
    }
    got.insert(a->at(0).address.address());
  }
  // .1-.30 minus the gateway .9, .3, and .16-.23: 30 - 1 - 1 - 8 = 20.
  CHECK(got.size() == 20);
  CHECK(!got.count(ip("10.2.0.9")));
  CHECK(!got.count(ip("10.2.0.3")));
  for (int i = 16; i <= 23; ++i) CHECK(!got.count(cnf::ip_address::v4((10u << 24) | (2u << 16) | static_cast<unsigned>(i))));
  CHECK(got.count(ip("10.2.0.1")));  // the default start; the gateway is elsewhere
  auto u = ipam.usage().value();
  REQUIRE(u.pools.size() == 1);
  CHECK(u.pools[0].total == 20);
  CHECK(u.pools[0].in_use == 20);
}

HL_CASE("several ranges in one set: the next range serves when one is full") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.3.0.0/30" }, { subnet = "10.4.0.0/30" }]])"), "node-1");
  // 10.3.0.0/30: .1 is the gateway, .2 usable; 10.4.0.0/30 likewise.
  auto a = ipam.assign(req("a")).value();
  auto b = ipam.assign(req("b")).value();
  CHECK(a[0].address == cnf::ip_prefix(ip("10.3.0.2"), 30));
  CHECK(b[0].address == cnf::ip_prefix(ip("10.4.0.2"), 30));
  CHECK(*b[0].gateway == ip("10.4.0.1"));
  CHECK(b[0].pool == "10.4.0.0/30");
  auto c = ipam.assign(req("c"));
  REQUIRE(!c);
  CHECK(c.error().code == cnf::errc::exhausted);
}

HL_CASE("dual stack: one address from each family's range set") {
  auto ds = new_store();
  auto conf = cfg(R"(ranges = [[{ subnet = "10.5.0.0/24" }], [{ subnet = "fd00:5::/64" }]])");
  cnf::host_local_ipam ipam(ds, conf, "node-1");
  auto a = ipam.assign(req("dual", conf.range_sets(cnf::ip_family::v4), conf.range_sets(cnf::ip_family::v6))).value();
  REQUIRE(a.size() == 2);
  CHECK(a[0].address == cnf::ip_prefix(ip("10.5.0.2"), 24));
  CHECK(a[1].address == cnf::ip_prefix(ip("fd00:5::2"), 64));
  CHECK(*a[1].gateway == ip("fd00:5::1"));
  CHECK(count_kind(ds, hl::handle_kind) == 1);
  auto v6only = ipam.assign(req("v6", 0, 1)).value();
  REQUIRE(v6only.size() == 1);
  CHECK(v6only[0].address.address() == ip("fd00:5::3"));
  REQUIRE(ipam.release_handle("dual"));
  REQUIRE(ipam.release_handle("v6"));
  CHECK(count_kind(ds, hl::allocation_kind) == 0);
  CHECK(count_kind(ds, hl::handle_kind) == 0);

  auto too_many = ipam.assign(req("x", 2, 0));
  REQUIRE(!too_many);
  CHECK(too_many.error().code == cnf::errc::invalid);
  CHECK(too_many.error().message.find("one address per range set") != std::string::npos);
  cnf::host_local_ipam v4only(ds, cfg(R"(ranges = [[{ subnet = "10.6.0.0/24" }]])"), "node-1");
  auto no6 = v4only.assign(req("y", 1, 1));
  REQUIRE(!no6);
  CHECK(no6.error().message.find("no IPv6 range") != std::string::npos);
}

HL_CASE("a failure in the middle of a dual-stack assignment gives back what it took") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.7.0.0/24" }], [{ subnet = "fd00:7::/126" }]])"), "node-1");
  // fd00:7::/126: ::1 gateway, ::2 and ::3 usable.
  REQUIRE(ipam.assign(req("a", 0, 1)));
  REQUIRE(ipam.assign(req("b", 0, 1)));
  auto r = ipam.assign(req("c", 1, 1));
  REQUIRE(!r);
  CHECK(r.error().code == cnf::errc::exhausted);
  CHECK(r.error().message.find("ranges[1]") != std::string::npos);
  auto all = ipam.allocations().value();
  CHECK(all.size() == 2);
  for (auto& al : all) CHECK(al.address.is_v6());
  CHECK(count_kind(ds, hl::handle_kind) == 2);
}

HL_CASE("requested addresses: taken exactly, checked, and combined with the other family") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.8.0.0/24", rangeEnd = "10.8.0.100" }, { subnet = "10.9.0.0/24" }],
  [{ subnet = "fd00:8::/64" }]]
reserved = ["10.8.0.50"])"), "node-1");
  auto r = req("want", 1, 1);
  r.requested = {ip("10.9.0.77")};
  auto a = ipam.assign(r).value();
  REQUIRE(a.size() == 2);
  CHECK(a[0].address == cnf::ip_prefix(ip("10.9.0.77"), 24));
  CHECK(a[0].pool == "10.9.0.0/24");
  CHECK(a[1].address.address() == ip("fd00:8::2"));

  auto again = req("other");
  again.requested = {ip("10.9.0.77")};
  auto taken = ipam.assign(again);
  REQUIRE(!taken);
  CHECK(taken.error().code == cnf::errc::already_exists);
  CHECK(taken.error().message.find("want") != std::string::npos);

  auto check_invalid = [&](const char* addr, const char* why) {
    auto q = req("q");
    q.requested = {ip(addr)};
    auto res = ipam.assign(q);
    REQUIRE(!res);
    CHECK(res.error().code == cnf::errc::invalid);
    INFO(res.error().message);
    CHECK(res.error().message.find(why) != std::string::npos);
  };
  check_invalid("10.8.0.150", "none of the ranges");  // in the subnet, past rangeEnd
  check_invalid("10.10.0.1", "none of the ranges");
  check_invalid("10.8.0.50", "reserved");
  check_invalid("10.9.0.1", "gateway");
  auto two = req("two");
  two.requested = {ip("10.8.0.20"), ip("10.9.0.20")};
  auto t = ipam.assign(two);
  REQUIRE(!t);
  CHECK(t.error().message.find("one address per range set") != std::string::npos);

  // Failure of a later requested address gives back the earlier one.
  auto mixed = req("mixed", 1, 1);
  mixed.requested = {ip("10.8.0.30"), ip("fd00:8::2")};  // fd00:8::2 is held by "want"
  auto m = ipam.assign(mixed);
  REQUIRE(!m);
  CHECK(m.error().code == cnf::errc::already_exists);
  auto all = ipam.allocations().value();
  CHECK(all.size() == 2);
  for (auto& al : all) CHECK(al.handle == "want");
}

HL_CASE("pools hints choose among range sets of a family") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.11.0.0/24" }], [{ subnet = "10.12.0.0/24" }]])"), "node-1");
  auto r = req("p");
  r.pools_v4 = {net("10.12.0.0/16")};
  auto a = ipam.assign(r).value();
  REQUIRE(a.size() == 1);
  CHECK(a[0].pool == "10.12.0.0/24");
  auto n = req("n");
  n.pools_v4 = {net("192.168.0.0/16")};
  auto bad = ipam.assign(n);
  REQUIRE(!bad);
  CHECK(bad.error().code == cnf::errc::invalid);
  CHECK(bad.error().message.find("192.168.0.0/16") != std::string::npos);
  // Both range sets: two IPv4 addresses.
  auto both = ipam.assign(req("both", 2)).value();
  CHECK(both.size() == 2);
  CHECK(both[0].pool == "10.11.0.0/24");
  CHECK(both[1].pool == "10.12.0.0/24");
}

HL_CASE("a handle cannot be assigned twice; the first assignment stays intact") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.13.0.0/24" }]])"), "node-1");
  auto a = ipam.assign(req("net.dup")).value();
  auto b = ipam.assign(req("net.dup"));
  REQUIRE(!b);
  CHECK(b.error().code == cnf::errc::already_exists);
  CHECK(b.error().message.find(a[0].address.address().to_string()) != std::string::npos);
  CHECK(ipam.allocations().value().size() == 1);
  REQUIRE(ipam.release_handle("net.dup"));
  CHECK(ipam.allocations().value().empty());
  auto empty = ipam.assign(req(""));
  REQUIRE(!empty);
  CHECK(empty.error().code == cnf::errc::invalid);
  auto nothing = ipam.assign(req("net.none", 0, 0));
  REQUIRE(!nothing);
  CHECK(nothing.error().code == cnf::errc::invalid);
  CHECK(count_kind(ds, hl::handle_kind) == 0);
}

HL_CASE("release_handle is idempotent; release_addresses frees single addresses") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.14.0.0/24" }], [{ subnet = "fd00:14::/64" }]])"), "node-1");
  auto a = ipam.assign(req("net.x", 1, 1)).value();
  REQUIRE(ipam.release_handle("net.nothing"));
  REQUIRE(ipam.release_handle("net.x"));
  REQUIRE(ipam.release_handle("net.x"));
  CHECK(count_kind(ds, hl::allocation_kind) == 0);
  CHECK(count_kind(ds, hl::handle_kind) == 0);

  auto b = ipam.assign(req("net.y", 1, 1)).value();
  std::vector<cnf::ip_address> one = {b[0].address.address()};
  REQUIRE(ipam.release_addresses(one));
  REQUIRE(ipam.release_addresses(one));  // again: nothing to do
  auto left = ipam.allocations().value();
  REQUIRE(left.size() == 1);
  CHECK(left[0].address == b[1].address.address());
  CHECK(left[0].handle == "net.y");
  std::vector<cnf::ip_address> other = {b[1].address.address()};
  REQUIRE(ipam.release_addresses(other));
  CHECK(count_kind(ds, hl::allocation_kind) == 0);
  CHECK(count_kind(ds, hl::handle_kind) == 0);  // the emptied handle went too
}

HL_CASE("a stale handle never frees an address that has changed hands") {
  auto ds = new_store();
  auto conf = cfg(R"(ranges = [[{ subnet = "10.15.0.0/24" }]])");
  cnf::host_local_ipam ipam(ds, conf, "node-1");
  auto a = ipam.assign(req("old")).value();
  auto addr = a[0].address.address();
  // The allocation disappears behind the handle's back (e.g. an operator's cleanup)...
  REQUIRE(ds.remove({std::string(hl::allocation_kind), "", hl::allocation_name(conf.scope, addr)}));
  // ...and another pod gets the address.
  auto r = req("new");
  r.requested = {addr};
  REQUIRE(ipam.assign(r));
  REQUIRE(ipam.release_handle("old"));
  auto all = ipam.allocations().value();
  REQUIRE(all.size() == 1);
  CHECK(all[0].address == addr);
  CHECK(all[0].handle == "new");
}

HL_CASE("allocations and usage report what is in use") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.16.0.0/28" }, { subnet = "10.17.0.0/28", rangeStart = "10.17.0.4", rangeEnd = "10.17.0.8" }],
  [{ subnet = "fd00:16::/120" }]]
reserved = ["10.16.0.10"])"), "node-1");
  auto r = req("k8s.a", 1, 1);
  r.attributes = {{"namespace", "default"}, {"pod", "web-0"}};
  auto a = ipam.assign(r).value();
  auto r2 = req("k8s.b");
  r2.requested = {ip("10.17.0.5")};
  REQUIRE(ipam.assign(r2));
  auto all = ipam.allocations().value();
  REQUIRE(all.size() == 3);
  std::map<std::string, cnf::allocation> by;
  for (auto& al : all) by[al.address.to_string()] = al;
  CHECK(by.at("10.16.0.2").handle == "k8s.a");
  CHECK(by.at("10.16.0.2").attributes.at("pod") == "web-0");
  CHECK(by.at("fd00:16::2").attributes.at("namespace") == "default");
  CHECK(by.at("10.17.0.5").handle == "k8s.b");

  auto u = ipam.usage().value();
  REQUIRE(u.pools.size() == 3);
  CHECK(u.pools[0].cidr == net("10.16.0.0/28"));
  CHECK(u.pools[0].total == 14 - 1 - 1);  // .1-.14, minus the gateway and .10
  CHECK(u.pools[0].in_use == 1);
  CHECK(u.pools[1].total == 5);  // .4-.8; the gateway .1 is outside the range
  CHECK(u.pools[1].in_use == 1);
  CHECK(u.pools[2].total == 255 - 1);
  CHECK(u.pools[2].in_use == 1);
  CHECK(u.pools[0].name.find("ranges[0][0]") != std::string::npos);
}

HL_CASE("gc releases handles no longer valid, and old orphans; keeps the rest") {
  auto ds = new_store();
  auto conf = cfg(R"(ranges = [[{ subnet = "10.18.0.0/24" }]]
orphan_grace_seconds = 30)");
  cnf::host_local_ipam ipam(ds, conf, "node-1");
  REQUIRE(ipam.assign(req("k8s.live")));
  REQUIRE(ipam.assign(req("k8s.gone1")));
  REQUIRE(ipam.assign(req("k8s.gone2")));
  REQUIRE(ipam.assign(req("other.gone")));  // another prefix: not this gc's business
  // Orphans: allocations no handle lists (an assign that crashed before writing its handle).
  auto orphan = [&](const char* addr, const char* handle, long age) {
    cnf::resource r;
    r.kind = hl::allocation_kind;
    r.name = hl::allocation_name(conf.scope, ip(addr));
    auto created = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count() - age;
    r.spec = std::string(R"({"address":")") + addr + R"(","handle":")" + handle + R"(","node":"node-1","created":")" +
             std::to_string(created) + R"("})";
    REQUIRE(ds.create(r));
  };
  orphan("10.18.0.200", "k8s.live", 3600);  // a live handle's leftover, old: released
  orphan("10.18.0.201", "k8s.live", 0);     // a live handle's, fresh: maybe in flight, kept
  orphan("10.18.0.202", "k8s.crashed", 3600);  // no longer valid, old: released
  orphan("10.18.0.203", "k8s.new", 0);         // unknown to the caller but fresh: maybe in flight, kept

  auto rep = ipam.gc("k8s.", {"k8s.live"}).value();
  std::set<std::string> handles(rep.released_handles.begin(), rep.released_handles.end());
  CHECK(handles == std::set<std::string>{"k8s.gone1", "k8s.gone2", "k8s.crashed"});
  CHECK(rep.released_addresses == 4);
  std::set<std::string> left;
  auto now_held = ipam.allocations().value();
  for (auto& al : now_held) left.insert(al.handle + "@" + al.address.to_string());
  CHECK(left == std::set<std::string>{"k8s.live@10.18.0.2", "k8s.live@10.18.0.201", "k8s.new@10.18.0.203", "other.gone@10.18.0.5"});
  // Nothing more to do the second time.
  auto rep2 = ipam.gc("k8s.", {"k8s.live"}).value();
  CHECK(rep2.released_handles.empty());
  CHECK(rep2.released_addresses == 0);
}

HL_CASE("scopes keep separate allocations over one datastore") {
  auto ds = new_store();
  cnf::host_local_ipam a(ds, cfg(R"(ranges = [[{ subnet = "10.19.0.0/24" }]]
scope = "net-a")"), "node-1");
  cnf::host_local_ipam b(ds, cfg(R"(ranges = [[{ subnet = "10.19.0.0/24" }]]
scope = "net-b")"), "node-1");
  CHECK(a.assign(req("x")).value()[0].address.address() == ip("10.19.0.2"));
  CHECK(b.assign(req("x")).value()[0].address.address() == ip("10.19.0.2"));
  CHECK(a.allocations().value().size() == 1);
  REQUIRE(a.release_handle("x"));
  CHECK(b.allocations().value().size() == 1);
}

HL_CASE("concurrent assign and release from many threads: never a duplicate") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.20.0.0/26" }], [{ subnet = "fd00:20::/122" }]])"), "node-1");
  constexpr int threads = 8, rounds = 60;
  std::mutex mu;
  std::set<cnf::ip_address> held;
  std::atomic<int> duplicates{0}, failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < rounds; ++i) {
        std::string h = "net.t" + std::to_string(t) + "-" + std::to_string(i);
        auto a = ipam.assign(req(h, 1, 1));
        if (!a) {
          failures++;
          continue;
        }
        {
          std::lock_guard l(mu);
          for (auto& x : *a)
            if (!held.insert(x.address.address()).second) duplicates++;
        }
        std::this_thread::yield();
        {
          std::lock_guard l(mu);
          for (auto& x : *a) held.erase(x.address.address());
        }
        if (!ipam.release_handle(h)) failures++;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(duplicates == 0);
  CHECK(failures == 0);
  CHECK(count_kind(ds, hl::allocation_kind) == 0);
  CHECK(count_kind(ds, hl::handle_kind) == 0);
}

HL_CASE("concurrent assignment until exhaustion: every address exactly once") {
  auto ds = new_store();
  // 10.21.0.0/27: .2-.30 = 29 addresses (the gateway .1 is skipped).
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.21.0.0/27" }]])"), "node-1");
  constexpr int threads = 8;
  std::mutex mu;
  std::vector<cnf::ip_address> got;
  std::atomic<int> other_errors{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0;; ++i) {
        auto a = ipam.assign(req("x" + std::to_string(t) + "." + std::to_string(i)));
        if (!a) {
          if (a.error().code != cnf::errc::exhausted) other_errors++;
          return;
        }
        std::lock_guard l(mu);
        got.push_back(a->at(0).address.address());
      }
    });
  for (auto& t : ts) t.join();
  CHECK(other_errors == 0);
  CHECK(got.size() == 29);
  CHECK(std::set<cnf::ip_address>(got.begin(), got.end()).size() == 29);
  CHECK(count_kind(ds, hl::handle_kind) == 29);
  auto rep = ipam.gc("x", {}).value();
  CHECK(rep.released_handles.size() == 29);
  CHECK(count_kind(ds, hl::allocation_kind) == 0);
}

HL_CASE("a configuration built in code is checked") {
  auto ds = new_store();
  hl::config c;
  CHECK_THROWS_AS(cnf::host_local_ipam(ds, c, "n"), cnf::error_exception);
  hl::range r;
  r.subnet = net("10.23.0.0/24");
  r.range_start = ip("10.23.0.10");
  r.range_end = ip("10.24.0.10");
  r.gateway = ip("10.23.0.1");
  c.ranges.push_back({{r}});
  auto bad = hl::check_config(c);
  REQUIRE(!bad);
  CHECK(bad.error().message.find("ranges[0][0].rangeEnd") != std::string::npos);
  c.ranges[0].ranges[0].range_end = ip("10.23.0.20");
  CHECK(hl::check_config(c));
  cnf::host_local_ipam ok(ds, c, "n");
  CHECK(ok.assign(req("built")).value()[0].address.address() == ip("10.23.0.10"));
  CHECK_THROWS_AS(cnf::host_local_ipam(cnf::any_datastore(), c, "n"), cnf::error_exception);
}

HL_CASE("parallel writes: on by default, off over a memory_datastore, as configured otherwise") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.24.0.0/24" }]])"), "node-1");
  CHECK(ipam.writes_in_parallel() == HL_EXPECT_PARALLEL);
  auto off = cfg(R"(ranges = [[{ subnet = "10.24.0.0/24" }]])");
  off.parallel_writes = false;
  CHECK(!cnf::host_local_ipam(ds, off, "n").writes_in_parallel());
  off.parallel_writes = true;
  CHECK(cnf::host_local_ipam(ds, off, "n").writes_in_parallel());
}

HL_CASE("through any_ipam, as the CNI plugin holds it") {
  auto ds = new_store();
  cnf::any_ipam any = cnf::host_local_ipam(ds, cfg(R"(ranges = [[{ subnet = "10.22.0.0/24" }]])"), "node-1");
  auto a = any.assign(req("net.any")).value();
  CHECK(addresses(a) == std::vector<std::string>{"10.22.0.2"});
  REQUIRE(any.release_handle("net.any"));
  CHECK(any.allocations().value().empty());
}

HL_CASE("addresses_of lists what a handle holds; nothing for an unknown or released handle") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.1.0.0/24" }], [{ subnet = "fd00:1::/120" }]])"), "node-1");
  auto a = ipam.assign(req("net.c1", 1, 1)).value();
  REQUIRE(a.size() == 2);
  CHECK(ipam.addresses_of("net.c1").value() == std::vector<cnf::ip_address>{ip("10.1.0.2"), ip("fd00:1::2")});
  CHECK(ipam.addresses_of("net.c2").value().empty());
  CHECK_FALSE(ipam.addresses_of(""));
  REQUIRE(ipam.release_handle("net.c1"));
  CHECK(ipam.addresses_of("net.c1").value().empty());
}

HL_CASE("the tunnel address: one per node and kind, the same on every call, released by kind") {
  auto ds = new_store();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.1.0.0/24" }]])"), "node-1");
  cnf::any_ipam any(ipam);
  auto t = any.assign_tunnel_address(cnf::tunnel_kind::vxlan, cnf::ip_family::v4).value();
  CHECK(t.address == cnf::ip_prefix(ip("10.1.0.2"), 24));
  CHECK(any.assign_tunnel_address(cnf::tunnel_kind::vxlan, cnf::ip_family::v4).value() == t);
  CHECK(any.addresses_of("vxlan-tunnel-addr-node-1").value() == std::vector<cnf::ip_address>{ip("10.1.0.2")});
  auto all = any.allocations().value();
  REQUIRE(all.size() == 1);
  CHECK(all[0].attributes["type"] == "vxlanTunnelAddress");
  // Another kind is another handle; a family with no range is an error that says so.
  CHECK(any.assign_tunnel_address(cnf::tunnel_kind::ipip, cnf::ip_family::v4).value().address.address() == ip("10.1.0.3"));
  CHECK_FALSE(any.assign_tunnel_address(cnf::tunnel_kind::vxlan, cnf::ip_family::v6));
  REQUIRE(any.release_tunnel_address(cnf::tunnel_kind::vxlan));
  CHECK(any.addresses_of("vxlan-tunnel-addr-node-1").value().empty());
  CHECK(any.addresses_of("ipip-tunnel-addr-node-1").value().size() == 1);
  // Without a node name there is no handle to name.
  cnf::host_local_ipam nameless(ds, cfg(R"(ranges = [[{ subnet = "10.1.0.0/24" }]])"));
  auto e = nameless.assign_tunnel_address(cnf::tunnel_kind::vxlan, cnf::ip_family::v4);
  REQUIRE_FALSE(e);
  CHECK(e.error().message.find("node") != std::string::npos);
}
