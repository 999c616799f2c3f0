// calico-ipam on the `local` datastore plugin (fsync on): threads and forked processes of
// 8 simulated nodes contending, and processes killed with SIGKILL mid-assign followed by
// gc with the true live set.
#include "process_support.hpp"

using namespace ipam_test;
using Catch::Matchers::Contains;

namespace {

std::string local_profile(const std::string& dir) {
  return "[datastore]\nplugin = \"local\"\ndir = \"" + dir + "/store\"\nfsync = true\n";
}

cnf::result<cnf::any_datastore> open_local(const std::string& dir) { return open_datastore("local", local_profile(dir)); }

}  // namespace

TEST_CASE("local: threads of 8 nodes contend on one store") {
  temp_dir dir;
  auto ds = open_local(dir.path);
  REQUIRE(ds);
  add_pool(*ds, "big", "10.210.0.0/16", 26);
  contention_result res;
  contention(*ds, 8, 1, 3, 15, 4, res);
  for (auto& m : res.messages) UNSCOPED_INFO(m);
  CHECK(res.errors == 0);
  CHECK(res.duplicates == 0);
  CHECK(res.foreign == 0);
  CHECK(res.assigned == 8u * 3 * 15);
  CHECK(borrowed_count(*ds) == 0);
  CHECK(problems(*ds, {}) == 0);
}

TEST_CASE("local: exhaustion of a /28 pool of /30 blocks names the pool") {
  temp_dir dir;
  auto ds = open_local(dir.path);
  REQUIRE(ds);
  add_pool(*ds, "tiny", "10.211.0.0/28", 30);
  auto ipam = open_ipam(*ds, "node-1");
  REQUIRE(ipam);
  for (int i = 0; i < 16; ++i) REQUIRE(ipam->assign(request("net.e" + std::to_string(i), "node-1")));
  auto r = ipam->assign(request("net.e16", "node-1", 2));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cnf::errc::exhausted);
  CHECK_THAT(r.error().message, Contains("IPPool/tiny") && Contains("10.211.0.0/28"));
  auto all = ipam->allocations();
  REQUIRE(all);
  CHECK(all->size() == 16);
  for (int i = 0; i < 16; ++i) REQUIRE(ipam->release_handle("net.e" + std::to_string(i)));
  CHECK(problems(*ds, {}) == 0);
}

TEST_CASE("local: forked processes of 8 nodes, no duplicates, addresses from the node's own blocks") {
  temp_dir dir;
  {
    auto ds = open_local(dir.path);
    REQUIRE(ds);
    add_pool(*ds, "big", "10.212.0.0/16", 27);
  }
  reaper r;
  r.pids = spawn("local", local_profile(dir.path), dir.path, 8, 6, 12, 3, 27);
  int failed = 0;
  for (auto p : r.pids) {
    int st = 0;
    REQUIRE(::waitpid(p, &st, 0) == p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ++failed;
  }
  r.pids.clear();
  auto s = read_events(dir.path);
  for (auto& e : s.errors) UNSCOPED_INFO(e);
  for (auto& e : s.foreign) UNSCOPED_INFO(e);
  CHECK(failed == 0);
  CHECK(s.errors.empty());
  CHECK(s.assigned == 8u * 6 * 12);
  CHECK(s.released == s.assigned);
  auto dup = overlaps(s);
  for (auto& d : dup) UNSCOPED_INFO(d);
  CHECK(dup.empty());
  CHECK(s.foreign.empty());
  auto ds = open_local(dir.path);
  REQUIRE(ds);
  CHECK(borrowed_count(*ds) == 0);
  CHECK(problems(*ds, {}) == 0);
}

TEST_CASE("local: SIGKILL mid-assign, then gc with the true live set: no leaks, no duplicates") {
  temp_dir dir;
  {
    auto ds = open_local(dir.path);
    REQUIRE(ds);
    // Small blocks, so processes are often killed in the middle of claiming one.
    add_pool(*ds, "big", "10.213.0.0/20", 29);
  }
  std::mt19937 rng(42);
  for (int round = 0; round < 3; ++round) {
    reaper r;
    r.pids = spawn("local", local_profile(dir.path), dir.path, 8, 4, -1, 2, 29);
    // Kill every process at a random moment, one at a time, while the rest keep going.
    std::vector<pid_t> order = r.pids;
    std::shuffle(order.begin(), order.end(), rng);
    for (auto p : order) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10 + rng() % 50));
      ::kill(p, SIGKILL);
    }
    for (auto p : r.pids) ::waitpid(p, nullptr, 0);
    r.pids.clear();
  }

  auto s = read_events(dir.path);
  for (auto& e : s.errors) UNSCOPED_INFO(e);
  CHECK(s.errors.empty());
  CHECK(s.assigned > 96);  // the processes got going before they died
  auto dup = overlaps(s);
  for (auto& d : dup) UNSCOPED_INFO(d);
  CHECK(dup.empty());

  auto ds = open_local(dir.path);
  REQUIRE(ds);
  ci::check_options co;
  co.live_handles = s.live;
  auto before = ci::check(*ds, co);
  REQUIRE(before);
  std::map<std::string, int> kinds;
  for (auto& p : before->problems) ++kinds[std::string(ci::to_string(p.what))];
  ci::ipam gc_ipam(*ds, "", test_options());
  auto rep = gc_ipam.gc("k8s-pod-network.", s.live);
  REQUIRE(rep);
  std::string found;
  for (auto& [k, n] : kinds) found += " " + k + "=" + std::to_string(n);
  std::printf("SIGKILL run: %zu assigned, %zu live at the end; before gc:%s; gc released %llu addresses of %zu handles\n",
              s.assigned, s.live.size(), found.empty() ? " no problems" : found.c_str(),
              static_cast<unsigned long long>(rep->released_addresses), rep->released_handles.size());
  auto all = gc_ipam.allocations();
  REQUIRE(all);
  std::set<std::string> holders;
  std::set<cnf::ip_address> addrs;
  for (auto& a : *all) {
    holders.insert(a.handle);
    CHECK(addrs.insert(a.address).second);
  }
  CHECK(holders == s.live);  // every live pod keeps its address; nothing else is held
  CHECK(problems(*ds, s.live) == 0);
  INFO("live " << s.live.size() << ", assigned " << s.assigned << ", gc released " << rep->released_addresses);
  // And everything can be given back cleanly.
  for (auto& h : s.live) REQUIRE(gc_ipam.release_handle(h));
  CHECK(problems(*ds, {}) == 0);
}

TEST_CASE("local: 50 processes per node on 8 nodes at once", "[stress]") {
  temp_dir dir;
  {
    auto ds = open_local(dir.path);
    REQUIRE(ds);
    add_pool(*ds, "big", "10.214.0.0/16", 26);
  }
  reaper r;
  auto t0 = std::chrono::steady_clock::now();
  r.pids = spawn("local", local_profile(dir.path), dir.path, 8, 50, 2, 1, 26);
  int failed = 0;
  for (auto p : r.pids) {
    int st = 0;
    REQUIRE(::waitpid(p, &st, 0) == p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ++failed;
  }
  r.pids.clear();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto s = read_events(dir.path);
  std::printf("400 processes: %zu assigned, %zu errors, %.1fs\n", s.assigned, s.errors.size(), secs);
  for (auto& e : s.errors) UNSCOPED_INFO(e);
  CHECK(failed == 0);
  CHECK(s.errors.empty());
  CHECK(s.assigned == 800u);
  CHECK(overlaps(s).empty());
  CHECK(s.foreign.empty());
  auto ds = open_local(dir.path);
  REQUIRE(ds);
  CHECK(problems(*ds, {}) == 0);
}
