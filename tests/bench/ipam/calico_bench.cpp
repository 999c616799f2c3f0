// calico-ipam throughput: assign + release cycles per second, in process, on the local
// datastore with fsync on (and on memory_datastore for the CPU cost alone). The peer,
// measured in the same run on the same store, is the raw rate of fsync'd single-resource
// compare-and-swap writes from the same number of threads: the disk's bound.
//
//   calico_bench [--cycles N] [--seconds S] [--dir /tmp/x] [--no-fsync]
#include <cnf/loader.hpp>
#include <cnf/memory_datastore.hpp>
#include <cnf/plugins/calico_ipam.hpp>

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace ci = cnf::calico_ipam;
using steady = std::chrono::steady_clock;

namespace {
struct figures {
  double per_second = 0;
  std::uint64_t ops = 0;
  std::uint64_t errors = 0;
  double seconds = 0;
  ci::ipam::stats stats{};
};

double seconds_since(steady::time_point t0) { return std::chrono::duration<double>(steady::now() - t0).count(); }

/// `nodes` ipam objects (one per simulated node, as one process per node would have), each
/// driven by `threads` threads doing assign + release until `limit` seconds pass.
figures run_ipam(const cnf::any_datastore& ds, int nodes, int threads, double limit, const std::string& tag) {
  std::vector<ci::ipam> ipams;
  ci::options o;
  for (int n = 0; n < nodes; ++n) ipams.emplace_back(ds, tag + "-node-" + std::to_string(n), o);
  // Warm up: each node claims its block, so the run measures the steady state.
  for (int n = 0; n < nodes; ++n) {
    cnf::assign_request r;
    r.handle = tag + ".warm-" + std::to_string(n);
    r.node = ipams[static_cast<std::size_t>(n)].node();
    if (auto a = ipams[static_cast<std::size_t>(n)].assign(r); !a) {
      fmt::print(stderr, "warm-up failed: {}\n", a.error().message);
      std::exit(1);
    }
    (void)ipams[static_cast<std::size_t>(n)].release_handle(r.handle);
  }
  std::atomic<std::uint64_t> ops{0}, errors{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  auto t0 = steady::now();
  for (int n = 0; n < nodes; ++n)
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, n, t] {
        auto& me = ipams[static_cast<std::size_t>(n)];
        cnf::assign_request r;
        r.node = me.node();
        r.attributes = {{"namespace", "bench"}, {"pod", "p"}};
        for (std::uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
          r.handle = fmt::format("{}.n{}-t{}-{}", tag, n, t, i);
          auto a = me.assign(r);
          if (!a) {
            if (++errors < 5) fmt::print(stderr, "assign: {}\n", a.error().message);
            continue;
          }
          if (auto rel = me.release_handle(r.handle); !rel) {
            if (++errors < 5) fmt::print(stderr, "release: {}\n", rel.error().message);
            continue;
          }
          ++ops;
        }
      });
  while (seconds_since(t0) < limit) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  stop = true;
  for (auto& t : ts) t.join();
  figures f;
  f.seconds = seconds_since(t0);
  f.ops = ops;
  f.errors = errors;
  f.per_second = static_cast<double>(ops) / f.seconds;
  for (auto& i : ipams) {
    auto s = i.statistics();
    f.stats.block_writes += s.block_writes;
    f.stats.block_conflicts += s.block_conflicts;
    f.stats.block_reads += s.block_reads;
    f.stats.combined_ops += s.combined_ops;
    f.stats.handle_writes += s.handle_writes;
    f.stats.scans += s.scans;
  }
  return f;
}

/// The peer: each thread updates its own small resource with compare-and-swap.
figures run_raw(const cnf::any_datastore& ds, int threads, double limit, const std::string& tag) {
  std::atomic<std::uint64_t> ops{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  auto t0 = steady::now();
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      cnf::resource r;
      r.kind = "BenchCounter";
      r.name = tag + "-" + std::to_string(t);
      r.spec = R"({"n":0})";
      auto c = ds.create(r);
      if (!c) return;
      r = *c;
      for (std::uint64_t i = 1; !stop.load(std::memory_order_relaxed); ++i) {
        r.spec = "{\"n\":" + std::to_string(i) + "}";
        auto u = ds.update(r);
        if (!u) continue;
        r = *u;
        ++ops;
      }
    });
  while (seconds_since(t0) < limit) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  stop = true;
  for (auto& t : ts) t.join();
  figures f;
  f.seconds = seconds_since(t0);
  f.ops = ops;
  f.per_second = static_cast<double>(ops) / f.seconds;
  return f;
}

void print(const char* store, const std::string& what, const figures& f, const figures* peer) {
  double writes_per = f.ops ? static_cast<double>(f.stats.block_writes + f.stats.handle_writes) / static_cast<double>(f.ops) : 0;
  fmt::print("{:<7} {:<34} {:>9.0f} assign+release/s  ({} in {:.1f}s, {} errors; {:.2f} writes/cycle, {} CAS conflicts, {} reads, {} scans)",
             store, what, f.per_second, f.ops, f.seconds, f.errors, writes_per, f.stats.block_conflicts, f.stats.block_reads, f.stats.scans);
  if (peer && peer->per_second > 0) fmt::print("  ratio to raw CAS writes {:.2f}", f.per_second / peer->per_second);
  fmt::print("\n");
}
}  // namespace

int main(int argc, char** argv) {
  double limit = 4;
  bool fsync = true;
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) limit = std::atof(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--no-fsync") fsync = false;
    else {
      fmt::print(stderr, "usage: {} [--seconds S] [--dir DIR] [--no-fsync]\n", argv[0]);
      return 2;
    }
  }
  bool own_dir = dir.empty();
  if (own_dir) {
    char tmpl[] = "/tmp/cnf-ipam-bench-XXXXXX";
    if (!mkdtemp(tmpl)) return 1;
    dir = tmpl;
  }
  struct cleanup {
    std::string d;
    bool own;
    ~cleanup() {
      std::error_code ec;
      if (own) std::filesystem::remove_all(d, ec);
    }
  } guard{dir, own_dir};

  cnf::plugin_loader loader({CNF_BENCH_PLUGIN_DIR});
  std::string text = "[datastore]\nplugin = \"local\"\ndir = \"" + dir + "/store\"\nfsync = " + (fsync ? "true" : "false") + "\n";
  auto local = loader.make<cnf::part::datastore>("local", {}, {text, "bench.toml", "datastore"});
  if (!local) {
    fmt::print(stderr, "cannot open the local datastore: {}\n", local.error().message);
    return 1;
  }
  cnf::any_datastore mem = cnf::memory_datastore();
  for (auto* ds : {&*local, &mem}) {
    cnf::resource p;
    p.kind = "IPPool";
    p.name = "bench";
    p.spec = R"({"cidr":"10.128.0.0/12","blockSize":26})";
    if (!ds->create(p)) return 1;
  }
  fmt::print("calico-ipam in-process assign+release cycles, {:.0f}s each, {} cores, local datastore fsync={}\n", limit,
             std::thread::hardware_concurrency(), fsync);
  auto raw1 = run_raw(*local, 1, limit, "raw1");
  fmt::print("{:<7} {:<34} {:>9.0f} writes/s\n", "local", "raw CAS writes, 1 thread", raw1.per_second);
  auto raw8 = run_raw(*local, 8, limit, "raw8");
  fmt::print("{:<7} {:<34} {:>9.0f} writes/s\n", "local", "raw CAS writes, 8 threads", raw8.per_second);
  auto one = run_ipam(*local, 1, 1, limit, "a");
  print("local", "1 node, 1 thread", one, &raw1);
  auto eight = run_ipam(*local, 8, 1, limit, "b");
  print("local", "8 nodes, 1 thread each", eight, &raw8);
  auto one8 = run_ipam(*local, 1, 8, limit, "c");
  print("local", "1 node, 8 threads", one8, &raw8);
  auto eight8 = run_ipam(*local, 8, 8, limit, "d");
  print("local", "8 nodes, 8 threads each", eight8, &raw8);
  fmt::print("local   8 contending nodes / 1 node: {:.2f}x with 1 thread per node, {:.2f}x with 8 threads per node\n",
             eight.per_second / std::max(1.0, one.per_second), eight8.per_second / std::max(1.0, one8.per_second));
  auto m1 = run_ipam(mem, 1, 1, limit / 2, "m1");
  print("memory", "1 node, 1 thread", m1, nullptr);
  auto m8 = run_ipam(mem, 8, 1, limit / 2, "m8");
  print("memory", "8 nodes, 1 thread each", m8, nullptr);
  return (one.errors + one8.errors + eight.errors + eight8.errors + m1.errors + m8.errors) ? 1 : 0;
}
