// calico-ipam throughput: assign + release cycles per second, in process, on the local
// datastore with fsync on (and on memory_datastore for the CPU cost alone). The peer,
// measured in the same run on the same store, is the raw rate of fsync'd single-resource
// compare-and-swap writes from the same number of threads: the disk's bound.
//
//   calico_bench [--seconds S per scenario] [--rounds N] [--dir /tmp/x] [--no-fsync]
#include <cnf/loader.hpp>
#include <cnf/memory_datastore.hpp>
#include <cnf/plugins/calico_ipam.hpp>

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
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
  double limit = 6;
  int rounds = 3;
  bool fsync = true;
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) limit = std::atof(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--no-fsync") fsync = false;
    else if (a == "--rounds" && i + 1 < argc) rounds = std::max(1, std::atoi(argv[++i]));
    else {
      fmt::print(stderr, "usage: {} [--seconds S per scenario] [--rounds N] [--dir DIR] [--no-fsync]\n", argv[0]);
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
  fmt::print("calico-ipam in-process assign+release cycles; {} rounds of {:.1f}s per scenario, interleaved; {} cores; local datastore fsync={}\n",
             rounds, limit / rounds, std::thread::hardware_concurrency(), fsync);
  // Scenarios run in turn, round after round, so a disk that slows down or speeds up (the
  // machine is shared) affects all of them alike; figures add up the rounds.
  struct scenario {
    const char* store;
    std::string what;
    std::function<figures(double, const std::string&)> run;
    figures total{};
    int peer = -1;  ///< index of the raw-write scenario it is compared with
  };
  std::vector<scenario> sc;
  sc.push_back({"local", "raw CAS writes, 1 thread", [&](double t, const std::string& tag) { return run_raw(*local, 1, t, tag); }});
  sc.push_back({"local", "raw CAS writes, 8 threads", [&](double t, const std::string& tag) { return run_raw(*local, 8, t, tag); }});
  sc.push_back({"local", "1 node, 1 thread", [&](double t, const std::string& tag) { return run_ipam(*local, 1, 1, t, tag); }, {}, 0});
  sc.push_back({"local", "8 nodes, 1 thread each", [&](double t, const std::string& tag) { return run_ipam(*local, 8, 1, t, tag); }, {}, 1});
  sc.push_back({"local", "1 node, 8 threads", [&](double t, const std::string& tag) { return run_ipam(*local, 1, 8, t, tag); }, {}, 1});
  sc.push_back({"local", "8 nodes, 8 threads each", [&](double t, const std::string& tag) { return run_ipam(*local, 8, 8, t, tag); }, {}, 1});
  sc.push_back({"memory", "1 node, 1 thread", [&](double t, const std::string& tag) { return run_ipam(mem, 1, 1, t / 2, tag); }});
  sc.push_back({"memory", "8 nodes, 1 thread each", [&](double t, const std::string& tag) { return run_ipam(mem, 8, 1, t / 2, tag); }});
  for (int round = 0; round < rounds; ++round)
    for (std::size_t i = 0; i < sc.size(); ++i) {
      auto f = sc[i].run(limit / rounds, fmt::format("r{}s{}", round, i));
      auto& t = sc[i].total;
      t.ops += f.ops;
      t.errors += f.errors;
      t.seconds += f.seconds;
      t.stats.block_writes += f.stats.block_writes;
      t.stats.handle_writes += f.stats.handle_writes;
      t.stats.block_conflicts += f.stats.block_conflicts;
      t.stats.block_reads += f.stats.block_reads;
      t.stats.scans += f.stats.scans;
    }
  std::uint64_t errors = 0;
  for (auto& x : sc) {
    x.total.per_second = x.total.seconds > 0 ? static_cast<double>(x.total.ops) / x.total.seconds : 0;
    errors += x.total.errors;
  }
  for (auto& x : sc) {
    if (x.what.starts_with("raw")) fmt::print("{:<7} {:<34} {:>9.0f} writes/s\n", x.store, x.what, x.total.per_second);
    else print(x.store, x.what, x.total, x.peer >= 0 ? &sc[static_cast<std::size_t>(x.peer)].total : nullptr);
  }
  fmt::print("local   8 contending nodes / 1 node: {:.2f}x with 1 thread per node, {:.2f}x with 8 threads per node\n",
             sc[3].total.per_second / std::max(1.0, sc[2].total.per_second), sc[5].total.per_second / std::max(1.0, sc[4].total.per_second));
  return errors ? 1 : 0;
}
