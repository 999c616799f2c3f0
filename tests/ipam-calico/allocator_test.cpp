// calico-ipam against the in-process datastore: assignment rules, exhaustion, bad
// datastore content, crash leftovers and contention between threads of many nodes.
#include "support.hpp"

#include <cnf/loader.hpp>
#include <cnf/memory_datastore.hpp>

using namespace ipam_test;
using Catch::Matchers::Contains;

namespace {
cnf::any_datastore fresh() { return cnf::memory_datastore(); }

std::size_t count_kind(const cnf::any_datastore& ds, std::string kind) {
  cnf::list_options o;
  o.kind = std::move(kind);
  return ds.list_all(o)->items.size();
}

std::uint64_t in_use(const cnf::any_datastore& ds) {
  auto u = ci::usage(ds);
  REQUIRE(u);
  std::uint64_t n = 0;
  for (auto& p : u->pools) n += p.in_use;
  return n;
}
}  // namespace

TEST_CASE("assign: a node's block with room is used without listing every block or re-reading full ones") {
  // What each assignment reads: a long-lived instance (the agent) knows its full blocks and
  // goes to the one with room; neither it nor a fresh instance (a CNI process) lists every
  // IPAMBlock of the cluster while the node's own blocks have room.
  auto ds = fresh();
  add_pool(ds, "pool-a", "10.10.0.0/16", 30);  // 4 addresses per block
  ci::ipam other(ds, "node-2", test_options());
  REQUIRE(other.assign(request("net.o1", "node-2")));
  ci::ipam ipam(ds, "node-1", test_options());
  for (int i = 0; i < 5; ++i) REQUIRE(ipam.assign(request("net.c" + std::to_string(i), "node-1")));  // block 1 full, block 2 claimed
  auto s0 = ipam.statistics();
  auto a = ipam.assign(request("net.c5", "node-1"));
  REQUIRE(a);
  auto s1 = ipam.statistics();
  CHECK(s1.block_lists == s0.block_lists);
  CHECK(s1.block_reads == s0.block_reads);  // block 2 from its cached copy; block 1 not read again
  CHECK(s1.block_writes == s0.block_writes + 1);
  ci::ipam fresh_process(ds, "node-1", test_options());
  auto b = fresh_process.assign(request("net.c6", "node-1"));
  REQUIRE(b);
  CHECK(b->front().address.address() == a->front().address.address().offset(1));
  CHECK(fresh_process.statistics().block_lists == 0);
  CHECK(fresh_process.statistics().block_writes == 1);
}

namespace {
// Forwards to a datastore; while `fail` is set, every IPAMBlock update fails as a disk
// error would (not a conflict: nothing is retried).
struct failing_block_writes {
  cnf::any_datastore inner;
  std::shared_ptr<std::atomic<bool>> fail = std::make_shared<std::atomic<bool>>(false);
  cnf::result<cnf::resource> get(const cnf::resource_key& k) { return inner.get(k); }
  cnf::result<cnf::resource_list> list(const cnf::list_options& o) { return inner.list(o); }
  cnf::result<cnf::resource> create(const cnf::resource& r) { return inner.create(r); }
  cnf::result<cnf::resource> update(const cnf::resource& r) {
    if (*fail && r.kind == "IPAMBlock") return cnf::error(cnf::errc::io, "injected write error");
    return inner.update(r);
  }
  cnf::result<void> remove(const cnf::resource_key& k, std::string_view rev) { return inner.remove(k, rev); }
  cnf::result<cnf::watch_handle> watch(const cnf::watch_options& o, cnf::watch_callback cb) { return inner.watch(o, std::move(cb)); }
  cnf::result<cnf::datastore_status> status() { return inner.status(); }
};
}  // namespace

TEST_CASE("assign: a block write that fails leaves no trace in the instance's cached copy") {
  // A long-lived instance changes its cached copy of a block in place before writing it;
  // when the write fails, the address it was about to give must be free again, for it
  // and in what it writes next.
  failing_block_writes w{fresh()};
  cnf::any_datastore ds = w;
  add_pool(ds, "pool-a", "10.10.0.0/16", 26);
  ci::ipam ipam(ds, "node-1", test_options());
  auto a = ipam.assign(request("net.a", "node-1"));
  REQUIRE(a);
  *w.fail = true;
  auto b = ipam.assign(request("net.b", "node-1"));
  REQUIRE_FALSE(b);
  CHECK_THAT(b.error().message, Contains("injected write error"));
  *w.fail = false;
  auto c = ipam.assign(request("net.c", "node-1"));
  REQUIRE(c);
  CHECK(c->front().address.address() == a->front().address.address().offset(1));
  ci::ipam other_process(ds, "node-1", test_options());
  auto all = other_process.allocations();
  REQUIRE(all);
  std::set<std::string> handles;
  for (auto& x : *all) handles.insert(x.handle);
  CHECK(handles == std::set<std::string>{"net.a", "net.c"});
}

TEST_CASE("assign: /32 from the node's own block, FIFO reuse, release by handle") {
  auto ds = fresh();
  add_pool(ds, "pool-a", "10.10.0.0/16", 26);
  ci::ipam ipam(ds, "node-1", test_options());
  auto a = ipam.assign(request("net.c1", "node-1"));
  REQUIRE(a);
  REQUIRE(a->size() == 1);
  CHECK(a->front().address.length() == 32);
  CHECK(a->front().pool == "10.10.0.0/16");
  CHECK_FALSE(a->front().gateway);
  auto info = ci::lookup(ds, a->front().address.address());
  REQUIRE(info);
  CHECK(info->allocated);
  CHECK(info->handle == "net.c1");
  CHECK(info->block_affinity == "host:node-1");
  CHECK(info->attributes.at("node") == "node-1");
  CHECK(info->attributes.at("namespace") == "default");
  // Same block, next ordinal; a BlockAffinity confirmed for the node; no IPAMHandle needed.
  auto b = ipam.assign(request("net.c2", "node-1"));
  REQUIRE(b);
  CHECK(b->front().address.address() == a->front().address.address().offset(1));
  CHECK(count_kind(ds, "IPAMHandle") == 0);
  cnf::list_options lo;
  lo.kind = "BlockAffinity";
  auto affs = ds.list_all(lo);
  REQUIRE(affs->items.size() == 1);
  CHECK_THAT(affs->items[0].spec, Contains("\"state\":\"confirmed\"") && Contains("\"node\":\"node-1\""));
  // Released ordinals go to the back: the next assignment does not reuse c1's address.
  REQUIRE(ipam.release_handle("net.c1"));
  auto c = ipam.assign(request("net.c3", "node-1"));
  REQUIRE(c);
  CHECK(c->front().address.address() == a->front().address.address().offset(2));
  // Releasing twice is fine; the address is free.
  REQUIRE(ipam.release_handle("net.c1"));
  CHECK_FALSE(ci::lookup(ds, a->front().address.address())->allocated);
  auto all = ipam.allocations();
  REQUIRE(all);
  CHECK(all->size() == 2);
  CHECK(in_use(ds) == 2);
  // The handle's addresses, from this instance, another one of the same node (a fresh
  // process), and one without a node (which scans every block).
  std::vector<cnf::ip_address> want = {b->front().address.address()};
  CHECK(*ipam.addresses_of("net.c2") == want);
  CHECK(*ci::ipam(ds, "node-1", test_options()).addresses_of("net.c2") == want);
  CHECK(*ci::ipam(ds, "", test_options()).addresses_of("net.c2") == want);
  CHECK(ci::ipam(ds, "node-2", test_options()).addresses_of("net.c2")->empty());
  CHECK(ipam.addresses_of("net.c1")->empty());
  // A fresh instance of the node releases what another instance assigned.
  REQUIRE(ci::ipam(ds, "node-1", test_options()).release_handle("net.c2"));
  CHECK(ipam.addresses_of("net.c2")->empty());
  CHECK(in_use(ds) == 1);
}

TEST_CASE("assign: dual stack, several addresses, requested addresses") {
  auto ds = fresh();
  add_pool(ds, "v4", "10.20.0.0/16", 28);
  add_pool(ds, "v6", "fd00:20::/64", 124);
  ci::ipam ipam(ds, "node-1", test_options());
  auto r = ipam.assign(request("net.dual", "node-1", 2, 2));
  REQUIRE(r);
  REQUIRE(r->size() == 4);
  CHECK(r->at(0).address.address().is_v4());
  CHECK(r->at(2).address.address().is_v6());
  CHECK(r->at(2).address.length() == 128);
  CHECK(r->at(2).pool == "fd00:20::/64");
  // Twenty addresses span two /28 blocks of the node.
  auto many = ipam.assign(request("net.many", "node-1", 20));
  REQUIRE(many);
  CHECK(many->size() == 20);
  auto u = ci::usage(ds);
  REQUIRE(u);
  for (auto& p : u->pools)
    for (auto& b : p.blocks) CHECK(b.affinity == "host:node-1");
  REQUIRE(ipam.release_handle("net.many"));
  REQUIRE(ipam.release_handle("net.dual"));
  CHECK(in_use(ds) == 0);

  auto want = request("net.fixed", "node-1", 0);
  want.requested = {ip("10.20.200.7"), ip("fd00:20::beef")};
  auto fixed = ipam.assign(want);
  REQUIRE(fixed);
  REQUIRE(fixed->size() == 2);
  CHECK(fixed->at(0).address.address() == ip("10.20.200.7"));
  CHECK(ci::lookup(ds, ip("10.20.200.7"))->block_affinity == "host:node-1");
  auto clash = request("net.other", "node-2", 0);
  clash.requested = {ip("10.20.200.7")};
  auto e = ci::ipam(ds, "node-2", test_options()).assign(clash);
  REQUIRE_FALSE(e);
  CHECK(e.error().code == cnf::errc::already_exists);
  CHECK_THAT(e.error().message, Contains("10.20.200.7") && Contains("net.fixed"));
  // Asking again for what the handle holds is fine; a failure later in the same request
  // does not take it away.
  auto again = ipam.assign(want);
  REQUIRE(again);
  CHECK(again->size() == 2);
  auto mixed = request("net.fixed", "node-1", 0);
  mixed.requested = {ip("10.20.200.7"), ip("10.20.200.9")};
  auto other_pod = request("net.o9", "node-1", 0);
  other_pod.requested = {ip("10.20.200.9")};
  REQUIRE(ipam.assign(other_pod));
  REQUIRE_FALSE(ipam.assign(mixed));
  CHECK(ci::lookup(ds, ip("10.20.200.7"))->handle == "net.fixed");
  REQUIRE(ipam.release_handle("net.o9"));
  auto outside = request("net.out", "node-1", 0);
  outside.requested = {ip("192.168.1.1")};
  auto o = ipam.assign(outside);
  REQUIRE_FALSE(o);
  CHECK_THAT(o.error().message, Contains("192.168.1.1") && Contains("not in any"));
  // A requested address in another node's block is borrowed, and found again on release.
  auto borrow = request("net.b", "node-2", 0);
  borrow.requested = {ip("10.20.200.8")};
  ci::ipam other(ds, "node-2", test_options());
  REQUIRE(other.assign(borrow));
  CHECK(count_kind(ds, "IPAMHandle") == 1);
  REQUIRE(other.release_handle("net.b"));
  CHECK(count_kind(ds, "IPAMHandle") == 0);
  CHECK_FALSE(ci::lookup(ds, ip("10.20.200.8"))->allocated);
}

TEST_CASE("default pools are made per family: an IPv4 pool made by another node does not stop the IPv6 one") {
  auto ds = fresh();
  auto o = test_options();
  o.default_pools.push_back({"default-ipv4-ippool", cidr("10.30.0.0/16"), 26});
  o.default_pools.push_back({"default-ipv6-ippool", cidr("fd00:30::/48"), 122});
  // Another node has made the IPv4 pool and not yet the IPv6 one when this node first lists.
  add_pool(ds, "default-ipv4-ippool", "10.30.0.0/16", 26);
  ci::ipam ipam(ds, "node-1", o);
  auto r = ipam.assign(request("net.dual", "node-1", 1, 1));
  REQUIRE(r);
  REQUIRE(r->size() == 2);
  CHECK(r->at(1).pool == "fd00:30::/48");
  CHECK(count_kind(ds, "IPPool") == 2);
  // A pool of each family there: nothing more is made, and a pool whose cidr cannot be read
  // stops the defaults too (nothing is made beside what cannot be read).
  auto ds2 = fresh();
  add_pool(ds2, "mine-v6", "fd00:31::/64", 122);
  cnf::resource bad{"IPPool", "", "broken", {}, R"({"cidr": "not a cidr"})", ""};
  REQUIRE(ds2.create(bad));
  ci::ipam other(ds2, "node-2", o);
  (void)other.assign(request("net.v4", "node-2", 1, 0));
  CHECK(count_kind(ds2, "IPPool") == 2);
}

TEST_CASE("assign: pool hints, disabled pools, node selectors, reservations") {
  auto ds = fresh();
  add_pool(ds, "a", "10.30.0.0/24", 28);
  add_pool(ds, "b", "10.31.0.0/24", 28, R"(,"nodeSelector":"zone == 'east'")");
  add_pool(ds, "off", "10.32.0.0/24", 28, R"(,"disabled":true)");
  cnf::resource node;
  node.kind = "Node";
  node.name = "east-1";
  node.labels = {{"zone", "east"}};
  REQUIRE(ds.create(node));
  ci::ipam west(ds, "west-1", test_options()), east(ds, "east-1", test_options());
  for (int i = 0; i < 10; ++i) {
    auto w = west.assign(request("net.w" + std::to_string(i), "west-1"));
    REQUIRE(w);
    CHECK(w->front().pool == "10.30.0.0/24");
  }
  auto hinted = request("net.e", "east-1");
  hinted.pools_v4 = {cidr("10.31.0.0/24")};
  auto e = east.assign(hinted);
  REQUIRE(e);
  CHECK(e->front().pool == "10.31.0.0/24");
  auto off = request("net.off", "east-1");
  off.pools_v4 = {cidr("10.32.0.0/24")};
  auto d = east.assign(off);
  REQUIRE_FALSE(d);
  CHECK_THAT(d.error().message, Contains("IPPool/off") && Contains("disabled"));
  auto none = request("net.none", "east-1");
  none.pools_v4 = {cidr("10.99.0.0/24")};
  REQUIRE_FALSE(east.assign(none));

  // Reserved addresses are skipped.
  cnf::resource rsv;
  rsv.kind = "IPReservation";
  rsv.name = "keep";
  rsv.spec = R"({"reservedCIDRs":["10.30.0.240/28","10.30.0.17"]})";
  REQUIRE(ds.create(rsv));
  for (int i = 0; i < 40; ++i) {
    auto w = west.assign(request("net.r" + std::to_string(i), "west-1"));
    REQUIRE(w);
    auto a = w->front().address.address();
    CHECK_FALSE(cidr("10.30.0.240/28").contains(a));
    CHECK(a != ip("10.30.0.17"));
  }
  auto want = request("net.rq", "west-1", 0);
  want.requested = {ip("10.30.0.241")};
  auto rq = west.assign(want);
  REQUIRE_FALSE(rq);
  CHECK_THAT(rq.error().message, Contains("IPReservation/keep"));
}

TEST_CASE("exhaustion: a /28 pool of /30 blocks, nothing half-allocated") {
  auto ds = fresh();
  add_pool(ds, "tiny", "10.40.0.0/28", 30);
  ci::ipam ipam(ds, "node-1", test_options());
  std::set<cnf::ip_address> seen;
  for (int i = 0; i < 16; ++i) {
    auto r = ipam.assign(request("net.x" + std::to_string(i), "node-1"));
    REQUIRE(r);
    CHECK(seen.insert(r->front().address.address()).second);
  }
  CHECK(count_kind(ds, "IPAMBlock") == 4);
  auto full = ipam.assign(request("net.x16", "node-1"));
  REQUIRE_FALSE(full);
  CHECK(full.error().code == cnf::errc::exhausted);
  CHECK_THAT(full.error().message, Contains("IPPool/tiny") && Contains("10.40.0.0/28") && Contains("16 of 16"));

  // A request for three with two free takes none.
  REQUIRE(ipam.release_handle("net.x3"));
  REQUIRE(ipam.release_handle("net.x9"));
  auto three = ipam.assign(request("net.three", "node-1", 3));
  REQUIRE_FALSE(three);
  CHECK(three.error().code == cnf::errc::exhausted);
  CHECK(in_use(ds) == 14);
  {
    auto all = ipam.allocations();
    REQUIRE(all);
    for (auto& a : *all) CHECK(a.handle != "net.three");
  }
  CHECK(count_kind(ds, "IPAMHandle") == 0);

  // Dual stack: the IPv4 half is given back when IPv6 cannot be had.
  add_pool(ds, "tiny6", "fd00:40::/126", 126);
  REQUIRE(ipam.assign(request("net.v6", "node-1", 0, 4)));
  auto dual = ipam.assign(request("net.dual", "node-1", 1, 1));
  REQUIRE_FALSE(dual);
  CHECK_THAT(dual.error().message, Contains("IPv6") && Contains("IPPool/tiny6"));
  CHECK(in_use(ds) == 18);
  {
    auto all = ipam.allocations();
    REQUIRE(all);
    for (auto& a : *all) CHECK(a.handle != "net.dual");
  }

  for (int i = 0; i < 16; ++i) REQUIRE(ipam.release_handle("net.x" + std::to_string(i)));
  REQUIRE(ipam.release_handle("net.v6"));
  CHECK(in_use(ds) == 0);
  CHECK(problems(ds, {}) == 0);
}

TEST_CASE("strictAffinity: borrowing only when it is false") {
  for (bool strict : {true, false}) {
    DYNAMIC_SECTION("strictAffinity=" << strict) {
      auto ds = fresh();
      add_pool(ds, "tiny", "10.50.0.0/28", 30);
      configure(ds, strict);
      std::vector<ci::ipam> nodes;
      for (int n = 0; n < 8; ++n) nodes.emplace_back(ds, "node-" + std::to_string(n), test_options());
      std::map<std::string, int> got;
      int failures = 0;
      for (int round = 0; round < 3; ++round)
        for (int n = 0; n < 8; ++n) {
          std::string node = "node-" + std::to_string(n);
          auto r = nodes[static_cast<std::size_t>(n)].assign(request("net." + node + "-" + std::to_string(round), node));
          if (r) ++got[node];
          else {
            ++failures;
            CHECK(r.error().code == cnf::errc::exhausted);
            if (strict) CHECK_THAT(r.error().message, Contains("strictAffinity is true"));
          }
        }
      if (strict) {
        CHECK(borrowed_count(ds) == 0);
        CHECK(got.size() == 4);  // four blocks, four nodes
        CHECK(failures == 24 - 12);
      } else {
        CHECK(borrowed_count(ds) > 0);
        CHECK(failures == 24 - 16);
        CHECK(got.size() > 4);
      }
      CHECK(in_use(ds) == (strict ? 12u : 16u));
      for (int n = 0; n < 8; ++n)
        for (int round = 0; round < 3; ++round)
          REQUIRE(nodes[static_cast<std::size_t>(n)].release_handle("net.node-" + std::to_string(n) + "-" + std::to_string(round)));
      CHECK(in_use(ds) == 0);
      CHECK(count_kind(ds, "IPAMHandle") == 0);
      CHECK(problems(ds, {}) == 0);
    }
  }
}

TEST_CASE("maxBlocksPerHost and autoAllocateBlocks") {
  auto ds = fresh();
  add_pool(ds, "p", "10.60.0.0/24", 30);
  configure(ds, true, 2);
  ci::ipam ipam(ds, "node-1", test_options());
  for (int i = 0; i < 8; ++i) REQUIRE(ipam.assign(request("net.m" + std::to_string(i), "node-1")));
  auto r = ipam.assign(request("net.m8", "node-1"));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cnf::errc::exhausted);
  CHECK_THAT(r.error().message, Contains("maxBlocksPerHost=2"));
  // Lift the limit but turn off block allocation: still nothing for node-2.
  ci::config_change c;
  c.max_blocks_per_host = 0;
  c.auto_allocate_blocks = false;
  REQUIRE(ci::change_config(ds, c));
  auto n2 = ci::ipam(ds, "node-2", test_options()).assign(request("net.n2", "node-2"));
  REQUIRE_FALSE(n2);
  CHECK_THAT(n2.error().message, Contains("autoAllocateBlocks is false"));
  auto cfg = ci::read_config(ds);
  REQUIRE(cfg);
  CHECK(cfg->strict_affinity);
  CHECK_FALSE(cfg->auto_allocate_blocks);
  CHECK(cfg->max_blocks_per_host == 0);
}

TEST_CASE("nodes start their block search at different places") {
  auto ds = fresh();
  add_pool(ds, "p", "10.70.0.0/16", 26);
  std::set<cnf::ip_prefix> first;
  for (int n = 0; n < 8; ++n) {
    std::string node = "node-" + std::to_string(n);
    auto r = ci::ipam(ds, node, test_options()).assign(request("net." + node, node));
    REQUIRE(r);
    first.insert(cnf::ip_prefix(r->front().address.address(), 26).canonical());
  }
  CHECK(first.size() == 8);
  cnf::list_options lo;
  lo.kind = "IPAMBlock";
  // No claim lost a race here, so no node tried a block another one took first.
  CHECK(ds.list_all(lo)->items.size() == 8);
}

TEST_CASE("bad datastore content: overlapping pools, corrupt blocks are skipped and left alone") {
  auto ds = fresh();
  add_pool(ds, "a", "10.80.0.0/16", 26);
  add_pool(ds, "b", "10.80.4.0/24", 26);
  ci::ipam ipam(ds, "node-1", test_options());
  auto r = ipam.assign(request("net.o", "node-1"));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cnf::errc::invalid);
  CHECK_THAT(r.error().message, Contains("IPPool/a") && Contains("IPPool/b") && Contains("overlaps"));
  REQUIRE(ds.remove({"IPPool", "", "a"}));
  REQUIRE(ds.remove({"IPPool", "", "b"}));

  add_pool(ds, "tiny", "10.81.0.0/28", 30);
  // Two of the four blocks are corrupt; one of them even claims to be the node's.
  cnf::resource junk;
  junk.kind = "IPAMBlock";
  junk.name = "10-81-0-0-30";
  junk.spec = "{\"cidr\":\"10.81.0.0/30\",\"allocations\":[";
  auto j = ds.create(junk);
  REQUIRE(j);
  cnf::resource wrong;
  wrong.kind = "IPAMBlock";
  wrong.name = "10-81-0-8-30";
  wrong.spec = R"({"cidr":"10.81.0.8/30","affinity":"host:node-1","allocations":[null,null],"unallocated":[0,1],"attributes":[]})";
  auto w = ds.create(wrong);
  REQUIRE(w);
  cnf::resource aff;
  aff.kind = "BlockAffinity";
  aff.name = ci::affinity_name("node-1", cidr("10.81.0.8/30"));
  aff.spec = R"({"state":"confirmed","node":"node-1","cidr":"10.81.0.8/30","deleted":"false"})";
  REQUIRE(ds.create(aff));
  std::set<cnf::ip_address> got;
  for (int i = 0; i < 8; ++i) {
    auto a = ipam.assign(request("net.c" + std::to_string(i), "node-1"));
    REQUIRE(a);
    auto addr = a->front().address.address();
    CHECK(got.insert(addr).second);
    CHECK_FALSE(cidr("10.81.0.0/30").contains(addr));
    CHECK_FALSE(cidr("10.81.0.8/30").contains(addr));
  }
  auto full = ipam.assign(request("net.c8", "node-1"));
  REQUIRE_FALSE(full);
  CHECK(full.error().code == cnf::errc::exhausted);
  // Untouched.
  CHECK(ds.get(junk.key())->revision == j->revision);
  CHECK(ds.get(wrong.key())->revision == w->revision);
  ci::check_options co;
  co.live_handles = std::set<std::string>{};
  for (int i = 0; i < 8; ++i) co.live_handles->insert("net.c" + std::to_string(i));
  auto rep = ci::check(ds, co);
  REQUIRE(rep);
  std::string all;
  for (auto& p : rep->problems) all += std::string(ci::to_string(p.what)) + " " + p.message + "\n";
  CHECK_THAT(all, Contains("IPAMBlock/10-81-0-0-30") && Contains("not valid JSON"));
  CHECK_THAT(all, Contains("IPAMBlock/10-81-0-8-30") && Contains("spec.allocations") && Contains("2 entries"));
  CHECK(all.find("leaked") == std::string::npos);
  // Releases do not touch the corrupt blocks either.
  for (int i = 0; i < 8; ++i) REQUIRE(ipam.release_handle("net.c" + std::to_string(i)));
  CHECK(ds.get(wrong.key())->revision == w->revision);
  CHECK(ds.get(junk.key())->revision == j->revision);

  // A corrupt IPAMConfig stops assignment with a clear message.
  cnf::resource cfg;
  cfg.kind = "IPAMConfig";
  cfg.name = "default";
  cfg.spec = R"({"strictAffinity":"maybe"})";
  REQUIRE(ds.create(cfg));
  auto bad = ipam.assign(request("net.cfg", "node-1"));
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Contains("IPAMConfig/default") && Contains("spec.strictAffinity"));
}

TEST_CASE("gc releases what the valid list lacks and repairs crash leftovers") {
  auto ds = fresh();
  add_pool(ds, "p", "10.90.0.0/24", 28);
  ci::ipam ipam(ds, "node-1", test_options());
  for (int i = 0; i < 6; ++i) REQUIRE(ipam.assign(request("k8s-pod-network.c" + std::to_string(i), "node-1")));
  REQUIRE(ipam.assign(request("other-net.z", "node-1")));
  // Leftovers of crashes: a handle record written before its block (borrow path), a claim
  // that never got its block, and a release that deleted the block but not the affinity.
  ci::handle_record hr;
  hr.handle_id = "k8s-pod-network.crashed";
  hr.blocks["10.90.0.0/28"] = 1;
  REQUIRE(ds.create(ci::to_resource(hr)));
  ci::block_affinity pending;
  pending.state = "pending";
  pending.node = "node-1";
  pending.cidr = cidr("10.90.0.128/28");
  REQUIRE(ds.create(ci::to_resource(pending)));
  ci::block_affinity deleting;
  deleting.state = "pendingDeletion";
  deleting.node = "node-2";
  deleting.cidr = cidr("10.90.0.144/28");
  REQUIRE(ds.create(ci::to_resource(deleting)));
  // A block of node-1 whose affinity was removed under its claim (by a gc elsewhere).
  REQUIRE(ds.create(ci::to_resource(ci::block::make(cidr("10.90.0.160/28"), "host:node-1"))));
  CHECK(problems(ds, {"k8s-pod-network.c0", "k8s-pod-network.c1", "k8s-pod-network.c2", "k8s-pod-network.c3",
                      "k8s-pod-network.c4", "k8s-pod-network.c5", "other-net.z"}) == 4);

  auto rep = ipam.gc("k8s-pod-network.", {"k8s-pod-network.c1", "k8s-pod-network.c4"});
  REQUIRE(rep);
  CHECK(rep->released_addresses == 4);
  CHECK(rep->released_handles == std::vector<std::string>{"k8s-pod-network.c0", "k8s-pod-network.c2", "k8s-pod-network.c3",
                                                          "k8s-pod-network.c5", "k8s-pod-network.crashed"});
  auto left = ipam.allocations();
  REQUIRE(left);
  std::set<std::string> hs;
  for (auto& a : *left) hs.insert(a.handle);
  CHECK(hs == std::set<std::string>{"k8s-pod-network.c1", "k8s-pod-network.c4", "other-net.z"});
  CHECK(problems(ds, hs) == 0);
  CHECK(count_kind(ds, "BlockAffinity") == 2);  // node-1's first block, and the one written back
}

TEST_CASE("gc of one node releases only what was assigned for that node") {
  // CNI GC runs per node with the attachments that node's runtime knows: another node's
  // live pods are not in its list, and must keep their addresses (and borrow records).
  auto ds = fresh();
  add_pool(ds, "p", "10.91.0.0/28", 30);  // four blocks of four
  configure(ds, false);
  ci::ipam n1(ds, "node-1", test_options()), n2(ds, "node-2", test_options());
  for (int i = 0; i < 3; ++i) REQUIRE(n1.assign(request("k8s-pod-network.a" + std::to_string(i), "node-1")));
  for (int i = 0; i < 3; ++i) REQUIRE(n2.assign(request("k8s-pod-network.b" + std::to_string(i), "node-2")));
  // node-2 claims the other three blocks, fills them, and borrows node-1's last address:
  // that handle gets an IPAMHandle record naming node-1's block.
  for (int i = 3; i < 13; ++i) REQUIRE(n2.assign(request("k8s-pod-network.b" + std::to_string(i), "node-2")));
  REQUIRE(borrowed_count(ds) > 0);
  const auto handles_before = count_kind(ds, "IPAMHandle");
  REQUIRE(handles_before > 0);

  // node-1's runtime knows a0 and a2 only: a1 goes; nothing of node-2's is touched.
  auto rep = n1.gc("k8s-pod-network.", {"k8s-pod-network.a0", "k8s-pod-network.a2"});
  REQUIRE(rep);
  CHECK(rep->released_addresses == 1);
  CHECK(rep->released_handles == std::vector<std::string>{"k8s-pod-network.a1"});
  std::set<std::string> hs;
  auto left = n1.allocations();
  REQUIRE(left);
  for (auto& a : *left) hs.insert(a.handle);
  CHECK(hs.count("k8s-pod-network.a1") == 0);
  for (int i = 0; i < 13; ++i) CHECK(hs.count("k8s-pod-network.b" + std::to_string(i)) == 1);
  CHECK(count_kind(ds, "IPAMHandle") == handles_before);
  CHECK(problems(ds, hs) == 0);

  // node-2's own GC with an empty list releases node-2's, and leaves node-1's.
  auto rep2 = n2.gc("k8s-pod-network.", {});
  REQUIRE(rep2);
  CHECK(rep2->released_addresses == 13);
  hs.clear();
  left = n1.allocations();
  REQUIRE(left);
  for (auto& a : *left) hs.insert(a.handle);
  CHECK(hs == std::set<std::string>{"k8s-pod-network.a0", "k8s-pod-network.a2"});
  CHECK(count_kind(ds, "IPAMHandle") == 0);
  CHECK(problems(ds, hs) == 0);
}

TEST_CASE("release by address, tunnel addresses, empty blocks after the grace") {
  auto ds = fresh();
  add_pool(ds, "p", "10.100.0.0/24", 28, R"(,"vxlanMode":"Always")");
  add_pool(ds, "q", "10.101.0.0/24", 28);
  ci::ipam ipam(ds, "node-1", test_options());
  auto t = ipam.assign_tunnel_address(ci::tunnel_kind::vxlan, cnf::ip_family::v4);
  REQUIRE(t);
  CHECK(t->pool == "10.100.0.0/24");
  auto again = ipam.assign_tunnel_address(ci::tunnel_kind::vxlan, cnf::ip_family::v4);
  REQUIRE(again);
  CHECK(again->address == t->address);
  CHECK(ci::lookup(ds, t->address.address())->handle == "vxlan-tunnel-addr-node-1");

  auto a = ipam.assign(request("net.a", "node-1", 3));
  REQUIRE(a);
  std::vector<cnf::ip_address> addrs = {a->at(0).address.address(), a->at(2).address.address(), ip("10.100.0.250")};
  auto rel = ci::release_addresses(ds, addrs);
  REQUIRE(rel);
  CHECK(rel->released.size() == 2);
  CHECK(rel->released[0].second == "net.a");
  CHECK(rel->not_allocated == std::vector<cnf::ip_address>{ip("10.100.0.250")});
  CHECK(ci::lookup(ds, a->at(1).address.address())->allocated);
  REQUIRE(ipam.release_handle("net.a"));
  REQUIRE(ipam.release_tunnel_address(ci::tunnel_kind::vxlan));
  CHECK(in_use(ds) == 0);
  CHECK(count_kind(ds, "IPAMBlock") == 1);
  auto o = test_options();
  o.empty_block_grace = std::chrono::seconds(0);
  auto freed = ci::ipam(ds, "node-1", o).release_empty_blocks();
  REQUIRE(freed);
  CHECK(*freed == 1);
  CHECK(count_kind(ds, "IPAMBlock") == 0);
  CHECK(count_kind(ds, "BlockAffinity") == 0);
  CHECK(problems(ds, {}) == 0);
}

TEST_CASE("an empty block of another node is reclaimed when nothing else is left") {
  auto ds = fresh();
  add_pool(ds, "tiny", "10.110.0.0/29", 30);
  configure(ds, true);
  auto o = test_options();
  o.reclaim_age = std::chrono::seconds(0);
  ci::ipam a(ds, "node-a", o), b(ds, "node-b", o), c(ds, "node-c", o);
  REQUIRE(a.assign(request("net.a", "node-a")));
  REQUIRE(b.assign(request("net.b", "node-b")));
  REQUIRE_FALSE(c.assign(request("net.c", "node-c")));
  REQUIRE(a.release_handle("net.a"));
  auto r = c.assign(request("net.c", "node-c"));
  REQUIRE(r);
  CHECK(ci::lookup(ds, r->front().address.address())->block_affinity == "host:node-c");
  CHECK(problems(ds, {"net.b", "net.c"}) == 0);
}

TEST_CASE("usage and borrowed report per pool and block") {
  auto ds = fresh();
  add_pool(ds, "tiny", "10.120.0.0/29", 30);
  ci::ipam a(ds, "node-a", test_options()), b(ds, "node-b", test_options()), c(ds, "node-c", test_options());
  REQUIRE(a.assign(request("net.a", "node-a", 4)));
  REQUIRE(b.assign(request("net.b", "node-b", 2)));
  REQUIRE(c.assign(request("net.c", "node-c", 1)));  // borrows from node-b's block
  auto u = ci::usage(ds);
  REQUIRE(u);
  REQUIRE(u->pools.size() == 1);
  CHECK(u->pools[0].name == "tiny");
  CHECK(u->pools[0].total == 8);
  CHECK(u->pools[0].in_use == 7);
  REQUIRE(u->pools[0].blocks.size() == 2);
  std::uint64_t borrowed = 0;
  for (auto& bl : u->pools[0].blocks) borrowed += bl.borrowed;
  CHECK(borrowed == 1);
  auto bw = ci::borrowed(ds);
  REQUIRE(bw);
  REQUIRE(bw->size() == 1);
  CHECK(bw->front().node == "node-c");
  CHECK(bw->front().block_node == "node-b");
  CHECK(bw->front().handle == "net.c");
}

TEST_CASE("check: leaks against workload endpoints, missing nodes, handles without addresses") {
  auto ds = fresh();
  add_pool(ds, "p", "10.130.0.0/24", 28);
  ci::ipam ipam(ds, "node-1", test_options());
  auto a = ipam.assign(request("net.a", "node-1"));
  auto b = ipam.assign(request("net.b", "node-1"));
  REQUIRE(a);
  REQUIRE(b);
  cnf::resource wep;
  wep.kind = "WorkloadEndpoint";
  wep.ns = "default";
  wep.name = "node--1-k8s-pod--a-eth0";
  wep.spec = R"({"node":"node-1","containerID":"c-a","ipNetworks":[")" + a->front().address.to_string() + R"(","10.130.0.200/32"]})";
  REQUIRE(ds.create(wep));
  cnf::resource n2;
  n2.kind = "Node";
  n2.name = "node-2";
  REQUIRE(ds.create(n2));
  auto rep = ci::check(ds);
  REQUIRE(rep);
  std::map<ci::problem::kind, int> kinds;
  for (auto& p : rep->problems) ++kinds[p.what];
  CHECK(kinds[ci::problem::kind::leaked_address] == 1);               // net.b has no endpoint
  CHECK(kinds[ci::problem::kind::endpoint_without_allocation] == 1);  // 10.130.0.200
  CHECK(kinds[ci::problem::kind::affinity_to_missing_node] == 2);     // block and BlockAffinity of node-1
  CHECK(rep->addresses_in_use == 2);
  CHECK_THAT(rep->to_json(), Contains("\"kind\":\"leaked-address\""));
}

TEST_CASE("the plugin loads and assigns through the loader") {
  auto ds = fresh();
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  cnf::plugin_context ctx;
  ctx.node_name = "node-1";
  ctx.datastore = ds;
  std::string text = "[ipam]\nplugin = \"calico-ipam\"\n[[ipam.pools]]\ncidr = \"10.140.0.0/16\"\nblock_size = 28\n";
  auto ipam = loader.make<cnf::part::ipam>("calico-ipam", ctx, {text, "profile.toml", "ipam"});
  REQUIRE(ipam);
  auto r = ipam->assign(request("net.p", ""));
  REQUIRE(r);
  CHECK(r->front().pool == "10.140.0.0/16");
  CHECK(ci::lookup(ds, r->front().address.address())->block_affinity == "host:node-1");
  cnf::list_options lo;
  lo.kind = "IPPool";
  CHECK(ds.list_all(lo)->items.at(0).name == "default-ipv4-ippool");
  REQUIRE(ipam->release_handle("net.p"));
  auto bad = loader.make<cnf::part::ipam>("calico-ipam", ctx, {"[ipam]\nmax_retries = \"x\"\n", "profile.toml", "ipam"});
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Contains("ipam.max_retries"));
  cnf::plugin_context empty;
  auto nods = loader.make<cnf::part::ipam>("calico-ipam", empty, {"[ipam]\n", "profile.toml", "ipam"});
  REQUIRE_FALSE(nods);
  CHECK_THAT(nods.error().message, Contains("datastore"));
}

TEST_CASE("contention: 8 nodes x 2 instances x 4 threads, no duplicates, own blocks only") {
  auto ds = fresh();
  add_pool(ds, "big", "10.200.0.0/16", 26);
  contention_result res;
  contention(ds, 8, 2, 4, 60, 12, res);
  std::printf("memory contention: %llu cycles, %llu block writes, %llu lost compare-and-swaps\n",
              static_cast<unsigned long long>(res.assigned.load()), static_cast<unsigned long long>(res.writes),
              static_cast<unsigned long long>(res.conflicts));
  for (auto& m : res.messages) UNSCOPED_INFO(m);
  CHECK(res.errors == 0);
  CHECK(res.duplicates == 0);
  CHECK(res.foreign == 0);
  CHECK(res.assigned == 8u * 2 * 4 * 60);
  CHECK(res.released == res.assigned);
  CHECK(borrowed_count(ds) == 0);
  CHECK(in_use(ds) == 0);
  CHECK(problems(ds, {}) == 0);
}

TEST_CASE("contention in a pool too small for everyone: borrowing, never a duplicate") {
  auto ds = fresh();
  add_pool(ds, "small", "10.201.0.0/26", 29);  // 8 blocks of 8
  contention_result res;
  contention(ds, 8, 2, 3, 40, 0, res, false);  // at most 48 held at once: it fits, if nodes borrow
  for (auto& m : res.messages) UNSCOPED_INFO(m);
  CHECK(res.duplicates == 0);
  CHECK(res.errors == 0);
  CHECK(in_use(ds) == 0);
  CHECK(problems(ds, {}) == 0);
}

TEST_CASE("release from a check report leaves re-assigned addresses alone") {
  auto ds = fresh();
  add_pool(ds, "p", "10.150.0.0/24", 28);
  ci::ipam ipam(ds, "node-1", test_options());
  auto a = ipam.assign(request("net.leak1", "node-1"));
  auto b = ipam.assign(request("net.leak2", "node-1"));
  REQUIRE(a);
  REQUIRE(b);
  ci::check_options co;
  co.live_handles = std::set<std::string>{};
  auto rep = ci::check(ds, co);
  REQUIRE(rep);
  REQUIRE(rep->problems.size() == 2);
  auto back = ci::parse_check_report(rep->to_json());
  REQUIRE(back);
  REQUIRE(back->problems.size() == 2);
  CHECK(back->problems[0].what == ci::problem::kind::leaked_address);
  CHECK(back->addresses_in_use == 2);
  // Between the report and the release, leak2's address is freed and given to a new pod.
  REQUIRE(ipam.release_handle("net.leak2"));
  auto want = request("net.new", "node-1", 0);
  want.requested = {b->front().address.address()};
  REQUIRE(ipam.assign(want));
  std::vector<ci::release_item> items;
  for (auto& p : back->problems) items.push_back({*p.address, p.handle});
  auto rel = ci::release_addresses(ds, items);
  REQUIRE(rel);
  REQUIRE(rel->released.size() == 1);
  CHECK(rel->released[0].first == a->front().address.address());
  REQUIRE(rel->held_by_other.size() == 1);
  CHECK(rel->held_by_other[0].second == "net.new");
  CHECK(ci::lookup(ds, b->front().address.address())->handle == "net.new");
  auto bad = ci::parse_check_report(R"({"problems":[{"kind":"nonsense"}]})");
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Contains("problems[0].kind"));
}

TEST_CASE("release_node (cnf delete node): only that node's addresses, handles, blocks and affinities go") {
  auto ds = fresh();
  add_pool(ds, "p", "10.93.0.0/28", 30);  // 4 blocks of 4
  ci::ipam n1(ds, "node-1", test_options());
  ci::ipam n2(ds, "node-2", test_options());
  for (int i = 0; i < 5; ++i) REQUIRE(n1.assign(request("k8s-pod-network.a" + std::to_string(i), "node-1")));  // 2 blocks
  REQUIRE(n1.assign_tunnel_address(ci::tunnel_kind::vxlan, cnf::ip_family::v4));
  for (int i = 0; i < 8; ++i) REQUIRE(n2.assign(request("k8s-pod-network.b" + std::to_string(i), "node-2")));  // 2 blocks, full
  // No block is left: node-2 borrows from node-1's second block (with an IPAMHandle).
  auto borrowed = n2.assign(request("k8s-pod-network.b8", "node-2"));
  REQUIRE(borrowed);
  CHECK(borrowed_count(ds) == 1);
  std::set<std::string> n2_handles;
  for (int i = 0; i < 9; ++i) n2_handles.insert("k8s-pod-network.b" + std::to_string(i));

  auto rep = ci::release_node(ds, "node-1");
  REQUIRE(rep);
  CHECK(rep->addresses == 6);  // 5 pods and the tunnel address
  CHECK(rep->blocks == 1);       // its full block, emptied
  CHECK(rep->blocks_kept == 1);  // the block node-2 borrowed from, left without affinity
  CHECK(rep->affinities == 2);
  auto left = n2.allocations();
  REQUIRE(left);
  std::set<std::string> hs;
  for (auto& a : *left) hs.insert(a.handle);
  CHECK(hs == n2_handles);
  cnf::list_options o;
  o.kind = "BlockAffinity";
  auto affs = ds.list_all(o);
  REQUIRE(affs);
  for (auto& r : affs->items) CHECK(ci::parse_affinity(r)->node == "node-2");
  o.kind = "IPAMBlock";
  auto blocks = ds.list_all(o);
  REQUIRE(blocks);
  for (auto& r : blocks->items) CHECK(ci::parse_block(r)->affinity.value_or("") != "host:node-1");
  CHECK(problems(ds, n2_handles) == 0);
  // Again: nothing more to do.
  auto again = ci::release_node(ds, "node-1");
  REQUIRE(again);
  CHECK(again->addresses + again->handles + again->blocks + again->blocks_kept + again->affinities == 0);
  // node-2 goes on: DELs free its addresses, a new ADD can claim the freed block.
  for (auto& h : n2_handles) REQUIRE(n2.release_handle(h));
  CHECK(in_use(ds) == 0);
  CHECK(problems(ds, {}) == 0);
}
