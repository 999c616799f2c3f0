// calico-ipam on a real etcd (Debian's etcd-server, started by each test on 127.0.0.1 with
// free ports and a temp dir, stopped by PID): the contention and crash runs of the local
// datastore tests, over the etcd datastore plugin.
#include "etcd_server.hpp"
#include "process_support.hpp"

using namespace ipam_test;
using cnf_test::etcd_server;

namespace {
struct skip_without_etcd {
  skip_without_etcd() {
    if (auto why = etcd_server::unavailable_reason()) {
      std::printf("skipped: %s\n", why->c_str());
      std::fflush(stdout);
      std::_Exit(77);
    }
  }
} skip_check;

std::string etcd_profile(const etcd_server& e) {
  return "[datastore]\nplugin = \"etcd\"\nendpoints = [\"" + e.endpoint() + "\"]\ntimeout_ms = 10000\n";
}
}  // namespace

TEST_CASE("etcd: threads of 8 nodes contend, no duplicates, own blocks only", "[etcd]") {
  etcd_server etcd;
  auto ds = open_datastore("etcd", etcd_profile(etcd));
  REQUIRE(ds);
  add_pool(*ds, "big", "10.220.0.0/16", 26);
  contention_result res;
  contention(*ds, 8, 1, 3, 10, 3, res);
  for (auto& m : res.messages) UNSCOPED_INFO(m);
  CHECK(res.errors == 0);
  CHECK(res.duplicates == 0);
  CHECK(res.foreign == 0);
  CHECK(res.assigned == 8u * 3 * 10);
  CHECK(borrowed_count(*ds) == 0);
  CHECK(problems(*ds, {}) == 0);
}

TEST_CASE("etcd: forked processes of 8 nodes, then SIGKILLs and gc with the live set", "[etcd]") {
  etcd_server etcd;
  temp_dir dir;
  std::string profile = etcd_profile(etcd);
  {
    auto ds = open_datastore("etcd", profile);
    REQUIRE(ds);
    add_pool(*ds, "big", "10.221.0.0/20", 28);
  }
  {
    reaper r;
    r.pids = spawn("etcd", profile, dir.path, 8, 4, 8, 2, 28);
    int failed = 0;
    for (auto p : r.pids) {
      int st = 0;
      REQUIRE(::waitpid(p, &st, 0) == p);
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ++failed;
    }
    r.pids.clear();
    CHECK(failed == 0);
  }
  auto first = read_events(dir.path);
  for (auto& e : first.errors) UNSCOPED_INFO(e);
  CHECK(first.errors.empty());
  CHECK(first.foreign.empty());
  CHECK(first.assigned == 8u * 4 * 8);
  CHECK(first.live.empty());

  std::mt19937 rng(7);
  {
    reaper r;
    r.pids = spawn("etcd", profile, dir.path, 8, 3, -1, 2, 28);
    std::vector<pid_t> order = r.pids;
    std::shuffle(order.begin(), order.end(), rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    for (auto p : order) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10 + rng() % 40));
      ::kill(p, SIGKILL);
    }
  }
  auto s = read_events(dir.path);
  for (auto& e : s.errors) UNSCOPED_INFO(e);
  CHECK(s.errors.empty());
  auto dup = overlaps(s);
  for (auto& d : dup) UNSCOPED_INFO(d);
  CHECK(dup.empty());
  CHECK(s.assigned > first.assigned);

  auto ds = open_datastore("etcd", profile);
  REQUIRE(ds);
  ci::ipam gc_ipam(*ds, "", test_options());
  auto rep = gc_ipam.gc("k8s-pod-network.", s.live);
  REQUIRE(rep);
  auto all = gc_ipam.allocations();
  REQUIRE(all);
  std::set<std::string> holders;
  for (auto& a : *all) holders.insert(a.handle);
  CHECK(holders == s.live);
  CHECK(problems(*ds, s.live) == 0);
  std::printf("etcd SIGKILL run: %zu assigned, %zu live, gc released %llu addresses\n", s.assigned, s.live.size(),
              static_cast<unsigned long long>(rep->released_addresses));
}
