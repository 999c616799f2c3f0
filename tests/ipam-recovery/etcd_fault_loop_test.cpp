// Issue 19, item 5: etcd SIGKILLed while concurrent ADDs run, in a loop. Each round forks
// 16 processes that each open the etcd datastore and calico-ipam through the plugin loader
// (as the CNI binary does) and ADD pods of one node, one every 100 ms for 2.5 s; etcd is
// killed 0.3-0.6 s into the round and started again on the same data dir and port 0.3 s
// later, so ADDs run before, during and after the outage. Then every pod is
// DELeted, the failed ones too, each by a new IPAM instance, retried while it fails with
// errc::unavailable (CNI code 11), as a runtime retries. After the DELs: 0 addresses in use
// (0 leaks), no IPAMHandle, no unconfirmed BlockAffinity and `cnf ipam check` clean.
//
// CI runs 2 rounds; CNF_FAULT_ROUNDS=N runs N (tests/bench/ipam/fault_loop.sh: 10).
// etcd listens on 127.0.0.1 and is stopped by PID; workers are killed by PID on every exit.
#include "etcd_server.hpp"

#include <cnf/loader.hpp>
#include <cnf/plugins/calico_ipam.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <thread>
#include <vector>

namespace ci = cnf::calico_ipam;
using namespace std::chrono_literals;

namespace {

cnf::result<cnf::any_datastore> open_etcd(const std::string& profile) {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  return loader.make<cnf::part::datastore>("etcd", {}, {profile, "test.toml", "datastore"});
}

std::string handle_of(int round, int worker, int i) {
  return "k8s-pod-network.r" + std::to_string(round) + "-w" + std::to_string(worker) + "-" + std::to_string(i);
}

ci::options ipam_options(const std::string& lock_dir) {
  ci::options o;
  o.cache_ttl = 0ms;
  o.lock_dir = lock_dir;
  o.empty_block_grace = std::chrono::seconds(-1);  // keep blocks: the next round reuses them
  return o;
}

/// A worker process: ADDs pods until the deadline; exit status = ADDs tried, and the
/// failed ones are reported as bytes on `fail_fd`.
[[noreturn]] void worker(const std::string& profile, const std::string& lock_dir, int round, int w, int ready_fd, int fail_fd) {
  auto ds = open_etcd(profile);
  if (!ds) ::_exit(250);
  ci::ipam ipam(*ds, "node-1", ipam_options(lock_dir));
  char c = 'r';
  if (::write(ready_fd, &c, 1) != 1) ::_exit(251);
  ::close(ready_fd);
  auto deadline = std::chrono::steady_clock::now() + 2500ms;
  int i = 0;
  for (; i < 200 && std::chrono::steady_clock::now() < deadline; ++i) {
    cnf::assign_request r;
    r.handle = handle_of(round, w, i);
    r.node = "node-1";
    r.attributes = {{"namespace", "default"}, {"pod", r.handle}};
    r.num_v4 = 1;
    if (!ipam.assign(r) && ::write(fail_fd, "f", 1) != 1) ::_exit(252);
    std::this_thread::sleep_for(100ms);
  }
  ::_exit(i);
}

struct workers {
  std::vector<pid_t> pids;
  ~workers() {
    for (auto p : pids) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
  }
};

}  // namespace

TEST_CASE("etcd killed during concurrent ADDs, in a loop: 0 leaks after the DELs", "[etcd][fault]") {
  if (auto why = cnf_test::etcd_server::unavailable_reason()) {
    std::printf("skipped: %s\n", why->c_str());
    std::fflush(stdout);
    std::_Exit(77);
  }
  const int rounds = std::getenv("CNF_FAULT_ROUNDS") ? std::max(1, std::atoi(std::getenv("CNF_FAULT_ROUNDS"))) : 2;
  constexpr int n_workers = 16;
  char tmpl[] = "/tmp/cnf-ipam-fault-loop-XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  struct cleanup {
    std::string dir;
    ~cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } clean{tmpl};
  const std::string lock_dir = clean.dir + "/locks";
  cnf_test::etcd_server etcd;
  const std::string profile = "[datastore]\nplugin = \"etcd\"\nendpoints = [\"" + etcd.endpoint() + "\"]\ntimeout_ms = 1500\n";
  {
    auto ds = open_etcd(profile);
    REQUIRE(ds);
    cnf::resource r;
    r.kind = "IPPool";
    r.name = "p";
    r.spec = R"({"cidr":"10.240.0.0/20","blockSize":29})";  // 8 addresses per block: claims keep happening
    REQUIRE(ds->create(r));
  }
  std::mt19937 rng(19);
  std::uint64_t total_ok = 0, total_failed = 0, total_retries = 0, total_leaks = 0, total_problems = 0;
  for (int round = 0; round < rounds; ++round) {
    INFO("round " << round);
    auto t0 = std::chrono::steady_clock::now();
    int ok = 0, failed = 0;
    std::vector<int> tried(n_workers, 0);
    {
      workers ws;
      int pfd[2], ffd[2];
      REQUIRE(::pipe(pfd) == 0);
      REQUIRE(::pipe(ffd) == 0);
      std::fflush(nullptr);
      for (int w = 0; w < n_workers; ++w) {
        pid_t p = ::fork();
        REQUIRE(p >= 0);
        if (p == 0) {
          ::close(pfd[0]);
          ::close(ffd[0]);
          worker(profile, lock_dir, round, w, pfd[1], ffd[1]);
        }
        ws.pids.push_back(p);
      }
      ::close(pfd[1]);
      ::close(ffd[1]);
      for (int w = 0; w < n_workers; ++w) {
        char c;
        REQUIRE(::read(pfd[0], &c, 1) == 1);
      }
      ::close(pfd[0]);
      std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 300));
      etcd.kill();  // SIGKILL by PID, reaped
      std::this_thread::sleep_for(300ms);
      etcd.start();
      for (int w = 0; w < n_workers; ++w) {
        int st = 0;
        REQUIRE(::waitpid(ws.pids[static_cast<std::size_t>(w)], &st, 0) == ws.pids[static_cast<std::size_t>(w)]);
        REQUIRE(WIFEXITED(st));
        REQUIRE(WEXITSTATUS(st) <= 200);
        tried[static_cast<std::size_t>(w)] = WEXITSTATUS(st);
        ok += WEXITSTATUS(st);
      }
      ws.pids.clear();
      char buf[4096];
      for (ssize_t n; (n = ::read(ffd[0], buf, sizeof buf)) > 0;) failed += static_cast<int>(n);
      ::close(ffd[0]);
      ok -= failed;
    }
    // Every pod is DELeted, as a runtime does, until the DEL succeeds.
    auto ds = open_etcd(profile);
    REQUIRE(ds);
    std::uint64_t retries = 0;
    for (int w = 0; w < n_workers; ++w)
      for (int i = 0; i < tried[static_cast<std::size_t>(w)]; ++i) {
        auto h = handle_of(round, w, i);
        for (int attempt = 0;; ++attempt) {
          ci::ipam fresh(*ds, "node-1", ipam_options(lock_dir));
          auto r = fresh.release_handle(h);
          if (r) break;
          INFO("DEL " << h << ": " << r.error().message);
          REQUIRE(r.error().code == cnf::errc::unavailable);
          REQUIRE(attempt < 50);
          ++retries;
          std::this_thread::sleep_for(100ms);
        }
      }
    auto u = ci::usage(*ds);
    REQUIRE(u);
    std::uint64_t in_use = 0;
    for (auto& p : u->pools) in_use += p.in_use;
    ci::check_options co;
    co.live_handles = std::set<std::string>{};
    co.check_nodes = false;
    auto rep = ci::check(*ds, co);
    REQUIRE(rep);
    for (auto& p : rep->problems) UNSCOPED_INFO(std::string(ci::to_string(p.what)) + ": " + p.message);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    std::printf("round %d: %d ADDs ok, %d failed (etcd killed); DEL retries %llu; after the DELs: %llu in use, %zu problems (%lld ms)\n",
                round + 1, ok, failed, static_cast<unsigned long long>(retries), static_cast<unsigned long long>(in_use),
                rep->problems.size(), static_cast<long long>(ms));
    std::fflush(stdout);
    CHECK(in_use == 0);
    CHECK(rep->problems.empty());
    total_ok += static_cast<std::uint64_t>(ok);
    total_failed += static_cast<std::uint64_t>(failed);
    total_retries += retries;
    total_leaks += in_use;
    total_problems += rep->problems.size();
  }
  std::printf("%d rounds: %llu ADDs ok, %llu failed, %llu DEL retries, %llu leaked addresses, %llu check problems\n", rounds,
              static_cast<unsigned long long>(total_ok), static_cast<unsigned long long>(total_failed),
              static_cast<unsigned long long>(total_retries), static_cast<unsigned long long>(total_leaks),
              static_cast<unsigned long long>(total_problems));
}
