// cnf::route_table in the kernel (root): each test in fresh network namespaces of its own
// (cnf-t<pid>-<n>), the route table's sockets and event loop inside them, routes checked
// with iproute2. Diff (add/replace/delete, identical untouched), batches, priorities,
// nothing before ready, the sweep of stale cnf routes at start, repair after someone
// deletes or changes a cnf route, foreign routes left alone (and reported), ECMP,
// blackhole/unreachable, IPv6, and a restarted table that changes nothing in the kernel.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../integration/netns_harness.hpp"
#include <root_gate.hpp>

#include <cnf/event_loop.hpp>
#include <cnf/netlink/netns.hpp>
#include <cnf/netlink/route.hpp>
#include <cnf/route_table.hpp>

#include <catch2/catch.hpp>

#include <libmnl/libmnl.h>
#include <linux/rtnetlink.h>

#include <chrono>
#include <future>
#include <thread>

CNF_TEST_ROOT_GATE("network namespaces and routes");

using namespace std::chrono_literals;
using cnf::route_entry;
using cnf::route_next_hop;
using cnf_test::test_netns;

namespace {

cnf::ip_prefix pfx(const char* s) { return cnf::ip_prefix::parse(s).value(); }
cnf::ip_address addr(const char* s) { return cnf::ip_address::parse(s).value(); }

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit = 20s) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

// A node namespace with two uplinks (veth pairs: this kernel may have no dummy driver); the test thread and the loop live in it.
struct env {
  test_netns ns;
  cnf::netlink::netns_guard guard = cnf::netlink::netns_guard::enter(ns.path()).value();
  bool ready = setup();  // before the loop's thread: a throw here leaves nothing running
  cnf::event_loop loop;
  std::thread t{[this] { loop.run(); }};

  bool setup() {
    REQUIRE_FALSE(cnf_test::thread_in_host_netns());
    ns.exec_or_throw(
        "ip link add d0 type veth peer name d0p && ip link add d1 type veth peer name d1p && "
        "sysctl -q -w net.ipv6.conf.d0.accept_dad=0 net.ipv6.conf.d1.accept_dad=0 && "
        "ip link set d0 up && ip link set d1 up && ip link set d0p up && ip link set d1p up && "
        "ip addr add 192.168.1.1/24 dev d0 && ip addr add 192.168.2.1/24 dev d1 && "
        "ip -6 addr add fd00:1::1/64 dev d0 nodad && ip -6 addr add fd00:2::1/64 dev d1 nodad");
    return true;
  }
  ~env() {
    loop.stop();
    t.join();
  }
  template <class F>
  auto on_loop(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    loop.post([&] { task(); });
    if (fut.wait_for(30s) != std::future_status::ready) FAIL("the loop did not run a posted function within 30 s");
    return fut.get();
  }
  // cnf's routes as iproute2 prints them (both families), one per line.
  std::string ours() const {
    return ns.ip("route show proto 80").output + ns.ip("-6 route show proto 80").output;
  }
  std::string all() const { return ns.ip("route show").output + ns.ip("-6 route show").output; }
  bool has(const std::string& line) const { return ours().find(line) != std::string::npos; }
};

cnf::route_table::options opts(bool watch = true) {
  cnf::route_table::options o;
  o.watch_kernel = watch;
  o.retry = 200ms;
  return o;
}

route_entry via(const char* dst, const char* gw, const char* dev) {
  return route_entry{.dst = pfx(dst), .next_hops = {route_next_hop{.gateway = addr(gw), .device = dev}}};
}

std::vector<route_entry> sample() {
  std::vector<route_entry> r;
  r.push_back(via("10.0.0.0/24", "192.168.1.2", "d0"));
  r.push_back({.dst = pfx("10.1.0.0/26"), .kind = route_entry::type::blackhole});
  r.push_back({.dst = pfx("10.2.0.0/24"), .device = "d1"});
  r.push_back({.dst = pfx("10.3.0.0/24"),
               .next_hops = {{.gateway = addr("192.168.1.2"), .device = "d0"}, {.gateway = addr("192.168.2.2"), .device = "d1"}}});
  r.push_back({.dst = pfx("10.4.0.0/24"), .kind = route_entry::type::unreachable});
  r.push_back(via("fd10::/64", "fd00:1::2", "d0"));
  r.push_back({.dst = pfx("fd11::/64"),
               .next_hops = {{.gateway = addr("fd00:1::2"), .device = "d0"}, {.gateway = addr("fd00:2::2"), .device = "d1"}}});
  r.push_back({.dst = pfx("fd12::/64"), .kind = route_entry::type::blackhole});
  r.push_back({.dst = pfx("10.7.0.0/24"), .next_hops = {{.gateway = addr("172.16.0.1"), .device = "d0", .onlink = true}},
               .source = addr("192.168.1.1"), .metric = 50});
  r.push_back({.dst = pfx("10.9.0.0/24"), .next_hops = {{.gateway = addr("192.168.1.2"), .device = "d0"}}, .mtu = 1480});
  return r;
}

// Counts route notifications of cnf's protocol seen in the namespace it was made in.
struct route_monitor {
  mnl_socket* nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK);
  route_monitor() {
    REQUIRE(nl);
    REQUIRE(mnl_socket_bind(nl, (1u << (RTNLGRP_IPV4_ROUTE - 1)) | (1u << (RTNLGRP_IPV6_ROUTE - 1)), MNL_SOCKET_AUTOPID) == 0);
  }
  ~route_monitor() { mnl_socket_close(nl); }
  // (added or replaced, deleted) of protocol 80 since the last call.
  std::pair<int, int> drain() {
    std::pair<int, int> n{0, 0};
    std::vector<char> buf(65536);
    for (;;) {
      ssize_t len = ::recv(mnl_socket_get_fd(nl), buf.data(), buf.size(), 0);
      if (len <= 0) return n;
      int left = static_cast<int>(len);
      for (auto* h = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(h, left); h = mnl_nlmsg_next(h, &left)) {
        const auto* rt = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(h));
        if (rt->rtm_protocol != cnf::netlink::cnf_route_protocol) continue;
        if (h->nlmsg_type == RTM_NEWROUTE) ++n.first;
        if (h->nlmsg_type == RTM_DELROUTE) ++n.second;
      }
    }
  }
};

}  // namespace

TEST_CASE("route_table: nothing before ready; then add, identical untouched, replace, delete", "[route_table]") {
  env e;
  cnf::route_table rt(e.loop, opts(false));
  rt.replace_all("routing", sample());
  std::this_thread::sleep_for(100ms);
  e.on_loop([] {});
  CHECK(e.ours().empty());  // not ready: the kernel is untouched

  auto s = e.on_loop([&] { return rt.apply_now(); });
  REQUIRE(s);
  CHECK(s->added == sample().size());
  CHECK(s->replaced == 0);
  CHECK(s->deleted == 0);
  CHECK(s->batches == 1);
  INFO(e.ours());
  CHECK(e.has("10.0.0.0/24 via 192.168.1.2 dev d0"));
  CHECK(e.has("blackhole 10.1.0.0/26"));
  CHECK(e.has("10.2.0.0/24 dev d1 scope link"));
  CHECK(e.has("10.3.0.0/24 \n\tnexthop via 192.168.1.2 dev d0 weight 1 \n\tnexthop via 192.168.2.2 dev d1 weight 1"));
  CHECK(e.has("unreachable 10.4.0.0/24"));
  CHECK(e.has("fd10::/64 via fd00:1::2 dev d0"));
  CHECK(e.has("fd11::/64 metric 1024"));
  CHECK(e.has("nexthop via fd00:2::2 dev d1 weight 1"));
  CHECK(e.has("blackhole fd12::/64"));
  CHECK(e.has("10.7.0.0/24 via 172.16.0.1 dev d0 src 192.168.1.1 metric 50 onlink"));
  CHECK(e.has("10.9.0.0/24 via 192.168.1.2 dev d0 mtu 1480"));

  // Everything identical: nothing written.
  auto again = e.on_loop([&] { return rt.apply_now(); });
  REQUIRE(again);
  CHECK(*again == cnf::route_table_stats{});

  // One changed, one withdrawn, one new (IPv6 multipath changed: delete + add).
  rt.set("routing", via("10.0.0.0/24", "192.168.2.2", "d1"));
  rt.remove("routing", pfx("10.1.0.0/26"));
  rt.set("routing", via("10.8.0.0/24", "192.168.1.9", "d0"));
  auto d = e.on_loop([&] { return rt.apply_now(); });
  REQUIRE(d);
  CHECK(d->replaced == 1);
  CHECK(d->deleted == 1);
  CHECK(d->added == 1);
  CHECK(e.has("10.0.0.0/24 via 192.168.2.2 dev d1"));
  CHECK_FALSE(e.has("10.1.0.0/26"));
  CHECK(e.has("10.8.0.0/24 via 192.168.1.9 dev d0"));
  CHECK(rt.conflicts().empty());
}

TEST_CASE("route_table: a route's MTU is set, compared and changed in place", "[route_table]") {
  env e;
  cnf::route_table rt(e.loop, opts(false));
  route_entry r{.dst = pfx("10.9.0.0/24"), .next_hops = {{.gateway = addr("192.168.1.2"), .device = "d0"}}, .mtu = 1480};
  rt.set("encap", r);
  REQUIRE(e.on_loop([&] { return rt.apply_now(); }));
  INFO(e.ours());
  CHECK(e.has("10.9.0.0/24 via 192.168.1.2 dev d0 mtu 1480"));
  auto same = e.on_loop([&] { return rt.apply_now(); });
  REQUIRE(same);
  CHECK(*same == cnf::route_table_stats{});  // the MTU read back from the kernel compares equal
  r.mtu = 1400;
  rt.set("encap", r);
  auto changed = e.on_loop([&] { return rt.apply_now(); });
  REQUIRE(changed);
  CHECK(changed->replaced == 1);
  CHECK(e.has("10.9.0.0/24 via 192.168.1.2 dev d0 mtu 1400"));
  r.mtu = 0;
  rt.set("encap", r);
  auto cleared = e.on_loop([&] { return rt.apply_now(); });
  REQUIRE(cleared);
  CHECK(cleared->replaced == 1);
  CHECK(e.has("10.9.0.0/24 via 192.168.1.2 dev d0"));
  CHECK_FALSE(e.has("mtu"));
}

TEST_CASE("route_table: owners by priority; the loser's route comes back when the winner withdraws", "[route_table]") {
  env e;
  cnf::route_table rt(e.loop, opts());
  rt.set_owner_priority("blackhole", 0);
  rt.set_owner_priority("vxlan", 10);
  rt.set("blackhole", {.dst = pfx("10.20.0.0/26"), .kind = route_entry::type::blackhole});
  rt.set("vxlan", via("10.20.0.0/26", "192.168.1.5", "d0"));
  REQUIRE(rt.desired().size() == 1);
  CHECK(rt.desired()[0].kind == route_entry::type::unicast);
  rt.set_ready(true);
  REQUIRE(eventually([&] { return e.has("10.20.0.0/26 via 192.168.1.5 dev d0"); }));
  rt.remove("vxlan", pfx("10.20.0.0/26"));
  REQUIRE(eventually([&] { return e.has("blackhole 10.20.0.0/26"); }));
  CHECK_FALSE(e.has("via 192.168.1.5"));
}

TEST_CASE("route_table: many routes go in batches, one ack per request", "[route_table]") {
  env e;
  cnf::route_table rt(e.loop, opts(false));
  std::vector<route_entry> many;
  for (int i = 0; i < 300; ++i) {
    auto p = cnf::ip_prefix(cnf::ip_address::v4((10u << 24) | (100u << 16) | (static_cast<unsigned>(i) << 8)), 24);
    many.push_back({.dst = p, .next_hops = {{.gateway = addr("192.168.1.2"), .device = "d0"}}});
  }
  rt.replace_all("routing", many);
  auto s = e.on_loop([&] { return rt.apply_now(); });
  REQUIRE(s);
  CHECK(s->added == 300);
  CHECK(s->batches == 2);  // 256 requests per batch
  CHECK(e.ns.exec_or_throw("ip route show proto 80 | wc -l").find("300") != std::string::npos);
  // A bad entry fails alone, named; the rest is applied.
  rt.set("routing", via("10.99.0.0/24", "192.168.1.2", "nosuchdev"));
  rt.remove("routing", many[0].dst);
  auto bad = e.on_loop([&] { return rt.apply_now(); });
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::Contains("10.99.0.0/24") && Catch::Contains("nosuchdev"));
  CHECK_FALSE(e.has("10.100.0.0/24 "));
  CHECK(rt.totals().deleted == 1);
}

TEST_CASE("route_table: the first apply sweeps stale cnf routes, keeps identical ones, never touches foreign ones",
          "[route_table]") {
  env e;
  // Left by an earlier agent: one still wanted (identical), one stale, one wanted with a
  // different gateway. And routes of other protocols, one on a destination cnf wants.
  e.ns.exec_or_throw(
      "ip route add 10.0.0.0/24 via 192.168.1.2 dev d0 proto 80 && "
      "ip route add 10.9.0.0/24 dev d0 proto 80 && "
      "ip route add 10.2.0.0/24 via 192.168.1.7 dev d0 proto 80 && "
      "ip -6 route add fd19::/64 via fd00:1::2 dev d0 proto 80 && "
      "ip route add 10.5.0.0/24 via 192.168.1.3 dev d0 proto static && "
      "ip route add 10.6.0.0/24 via 192.168.1.3 dev d0");
  route_monitor mon;
  cnf::route_table rt(e.loop, opts());
  rt.set("routing", via("10.0.0.0/24", "192.168.1.2", "d0"));
  rt.set("routing", via("10.2.0.0/24", "192.168.1.2", "d0"));
  rt.set("routing", via("10.5.0.0/24", "192.168.1.2", "d0"));  // held by a static route
  std::this_thread::sleep_for(100ms);
  CHECK(e.has("10.9.0.0/24"));  // not ready: nothing swept yet
  rt.set_ready(true);
  REQUIRE(eventually([&] { return !e.has("10.9.0.0/24") && !e.has("fd19::/64"); }));
  REQUIRE(eventually([&] { return e.has("10.2.0.0/24 via 192.168.1.2 dev d0"); }));
  REQUIRE(eventually([&] { return rt.conflicts() == std::vector<std::string>{"10.5.0.0/24"}; }));
  auto t = rt.totals();
  CHECK(t.deleted == 2);
  CHECK(t.replaced == 1);
  CHECK(t.added == 0);
  auto all = e.all();
  INFO(all);
  CHECK(all.find("10.0.0.0/24 via 192.168.1.2 dev d0 proto 80") != std::string::npos);
  CHECK(all.find("10.5.0.0/24 via 192.168.1.3 dev d0 proto static") != std::string::npos);
  CHECK(all.find("10.6.0.0/24 via 192.168.1.3 dev d0") != std::string::npos);
  CHECK_FALSE(e.has("10.5.0.0/24"));
  // The identical route was never rewritten: the kernel announced no change of it.
  std::this_thread::sleep_for(100ms);
  auto [news, dels] = mon.drain();
  CHECK(news == 1);  // the replace of 10.2.0.0/24
  CHECK(dels == 2);
}

TEST_CASE("route_table: a cnf route someone deletes or changes comes back", "[route_table]") {
  env e;
  cnf::route_table rt(e.loop, opts());
  rt.replace_all("routing", sample());
  rt.set_ready(true);
  REQUIRE(eventually([&] { return e.has("10.0.0.0/24 via 192.168.1.2 dev d0") && e.has("fd11::/64"); }));
  e.ns.ip("route del 10.0.0.0/24");
  REQUIRE(eventually([&] { return e.has("10.0.0.0/24 via 192.168.1.2 dev d0"); }));
  e.ns.ip("route replace 10.0.0.0/24 via 192.168.2.9 dev d1 proto 80");
  REQUIRE(eventually([&] { return e.has("10.0.0.0/24 via 192.168.1.2 dev d0"); }));
  e.ns.ip("-6 route del fd11::/64");
  REQUIRE(eventually([&] { return e.has("fd11::/64") && e.has("nexthop via fd00:2::2 dev d1"); }));
  e.ns.ip("route del blackhole 10.1.0.0/26");
  REQUIRE(eventually([&] { return e.has("blackhole 10.1.0.0/26"); }));
  // A foreign route appearing on a wanted destination: cnf steps back and says so.
  REQUIRE(e.ns.ip("route add 10.2.0.0/24 dev d0 proto static metric 5").ok());
  REQUIRE(eventually([&] { return rt.conflicts() == std::vector<std::string>{"10.2.0.0/24"}; }));
  REQUIRE(eventually([&] { return !e.has("10.2.0.0/24"); }));
  CHECK(e.all().find("10.2.0.0/24 dev d0 proto static scope link metric 5") != std::string::npos);
}

TEST_CASE("route_table: a restarted table over the same kernel state changes nothing", "[route_table]") {
  env e;
  {
    cnf::route_table first(e.loop, opts());
    first.replace_all("routing", sample());
    first.set_ready(true);
    REQUIRE(eventually([&] { return e.has("fd12::/64") && e.has("10.7.0.0/24"); }));
    e.on_loop([] {});
  }
  auto before = e.ours();
  route_monitor mon;
  cnf::route_table second(e.loop, opts());
  second.replace_all("routing", sample());
  second.set_ready(true);
  REQUIRE(eventually([&] { return second.totals().batches == 0 && e.on_loop([] { return true; }); }));
  auto s = e.on_loop([&] { return second.apply_now(); });
  REQUIRE(s);
  CHECK(*s == cnf::route_table_stats{});
  CHECK(second.totals() == cnf::route_table_stats{});
  std::this_thread::sleep_for(100ms);
  CHECK(mon.drain() == std::pair<int, int>{0, 0});
  CHECK(e.ours() == before);
}

TEST_CASE("route_table: hold_stale keeps the last run's routes until released; relearned ones stay untouched",
          "[route_table]") {
  env e;
  // The last run's routes: two still wanted (a learned one, relearned identically later, and a
  // blackhole wanted from the start), one relearned and then withdrawn, one never relearned.
  e.ns.exec_or_throw(
      "ip route add 10.0.0.0/24 via 192.168.1.2 dev d0 proto 80 && "
      "ip route add 10.8.0.0/24 via 192.168.1.2 dev d0 proto 80 && "
      "ip route add 10.9.0.0/24 via 192.168.2.2 dev d1 proto 80 && "
      "ip route add blackhole 10.1.0.0/26 proto 80");
  const auto kept = e.ns.ip("route show 10.0.0.0/24").output;
  route_monitor mon;
  cnf::route_table rt(e.loop, opts());
  rt.hold_stale(true);
  rt.set("blackhole", {.dst = pfx("10.1.0.0/26"), .kind = route_entry::type::blackhole});
  rt.set_ready(true);
  e.on_loop([] {});  // the coalesced apply posted by set_ready has run
  e.on_loop([] {});
  CHECK(rt.stale() == std::vector<cnf::ip_prefix>{pfx("10.0.0.0/24"), pfx("10.8.0.0/24"), pfx("10.9.0.0/24")});
  CHECK(e.has("10.0.0.0/24 via 192.168.1.2 dev d0"));
  CHECK(e.has("10.8.0.0/24"));
  CHECK(e.has("10.9.0.0/24"));
  CHECK(rt.totals() == cnf::route_table_stats{});

  // Relearned: held no more, and nothing written for the identical one.
  rt.set("routing", via("10.0.0.0/24", "192.168.1.2", "d0"));
  rt.set("routing", via("10.8.0.0/24", "192.168.1.2", "d0"));
  REQUIRE(eventually([&] { return rt.stale() == std::vector<cnf::ip_prefix>{pfx("10.9.0.0/24")}; }));
  // A route wanted again and then withdrawn goes at once, as one this table programmed itself.
  rt.set("routing", via("10.7.0.0/24", "192.168.1.2", "d0"));
  REQUIRE(eventually([&] { return e.has("10.7.0.0/24"); }));
  rt.remove("routing", pfx("10.8.0.0/24"));
  rt.remove("routing", pfx("10.7.0.0/24"));
  REQUIRE(eventually([&] { return !e.has("10.8.0.0/24") && !e.has("10.7.0.0/24"); }));
  e.on_loop([] {});
  CHECK(e.has("10.9.0.0/24 via 192.168.2.2 dev d1"));

  // Released: the one never relearned is swept; the rest stays as it was.
  rt.hold_stale(false);
  REQUIRE(eventually([&] { return !e.has("10.9.0.0/24"); }));
  CHECK(rt.stale().empty());
  CHECK(e.ns.ip("route show 10.0.0.0/24").output == kept);
  CHECK(e.has("blackhole 10.1.0.0/26"));
  std::this_thread::sleep_for(100ms);
  auto [news, dels] = mon.drain();
  CHECK(news == 1);  // 10.7.0.0/24 only: 10.0.0.0/24 and the blackhole were never rewritten
  CHECK(dels == 3);  // 10.7, 10.8, and 10.9 at the release
  auto t = rt.totals();
  CHECK(t.added == 1);
  CHECK(t.replaced == 0);
  CHECK(t.deleted == 3);
}
