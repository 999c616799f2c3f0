// host-local IPAM: assign + release cycles per second, in process, on memory_datastore (CPU
// cost alone) and on the local datastore plugin (fsync on, and off), with the datastore
// round trips each cycle costs. The peer, measured in the same run, is the reference CNI
// host-local plugin (/usr/lib/cni/host-local, files under a lock in a temp dataDir) doing
// the same ADD + DEL, exec'd as a container runtime would.
//
//   host_local_bench [--cycles N] [--peer-cycles N] [--threads T] [--dir /tmp/x]
#include <cnf/loader.hpp>
#include <cnf/memory_datastore.hpp>
#include <cnf/plugins/host-local.hpp>

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

using steady = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

// Forwards to a datastore and counts calls: the round trips an IPAM operation costs.
struct counting_datastore {
  cnf::any_datastore inner;
  std::shared_ptr<std::atomic<std::uint64_t>> calls = std::make_shared<std::atomic<std::uint64_t>>(0);
  cnf::result<cnf::resource> get(const cnf::resource_key& k) { ++*calls; return inner.get(k); }
  cnf::result<cnf::resource_list> list(const cnf::list_options& o) { ++*calls; return inner.list(o); }
  cnf::result<cnf::resource> create(const cnf::resource& r) { ++*calls; return inner.create(r); }
  cnf::result<cnf::resource> update(const cnf::resource& r) { ++*calls; return inner.update(r); }
  cnf::result<void> remove(const cnf::resource_key& k, std::string_view rev) { ++*calls; return inner.remove(k, rev); }
  cnf::result<cnf::watch_handle> watch(const cnf::watch_options& o, cnf::watch_callback cb) { return inner.watch(o, std::move(cb)); }
  cnf::result<cnf::datastore_status> status() { return inner.status(); }
};

struct figures {
  double per_second = 0;
  double median_us = 0, p99_us = 0;
  double assign_median_us = 0, release_median_us = 0;
  double assign_calls = 0, release_calls = 0;
  std::uint64_t errors = 0;
};

const char* config_text = R"([ipam]
ranges = [[{ subnet = "10.80.0.0/16" }], [{ subnet = "fd00:80::/64" }]]
)";

figures run(const cnf::any_datastore& base, int cycles, int threads, unsigned v6, bool parallel) {
  counting_datastore counted{base};
  cnf::any_datastore ds = counted;
  auto cfg = cnf::host_local::parse_config(config_text, "bench", "ipam").value();
  cfg.parallel_writes = parallel;  // explicit, to compare both on every store
  cnf::host_local_ipam ipam(ds, cfg, "bench-node");
  // Warm up: the cursor exists, files and pages are in place.
  for (int i = 0; i < 20; ++i) {
    cnf::assign_request r;
    r.handle = "warm." + std::to_string(i);
    r.num_v6 = v6;
    if (auto a = ipam.assign(r); !a) {
      fmt::print(stderr, "warm-up failed: {}\n", a.error().message);
      std::exit(1);
    }
    (void)ipam.release_handle(r.handle);
  }
  std::atomic<std::uint64_t> errors{0}, assign_calls{0}, release_calls{0};
  std::vector<std::vector<double>> lat(static_cast<std::size_t>(threads)), lat_a(lat.size()), lat_r(lat.size());
  std::vector<std::thread> ts;
  const int per_thread = cycles / threads;
  auto t0 = steady::now();
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      auto& l = lat[static_cast<std::size_t>(t)];
      l.reserve(static_cast<std::size_t>(per_thread));
      for (int i = 0; i < per_thread; ++i) {
        cnf::assign_request r;
        r.handle = "bench.t" + std::to_string(t) + "-" + std::to_string(i);
        r.num_v6 = v6;
        std::uint64_t c0 = counted.calls->load();
        auto s = steady::now();
        auto a = ipam.assign(r);
        auto m = steady::now();
        std::uint64_t c1 = counted.calls->load();
        auto rel = ipam.release_handle(r.handle);
        std::uint64_t c2 = counted.calls->load();
        auto e = steady::now();
        l.push_back(std::chrono::duration<double, std::micro>(e - s).count());
        lat_a[static_cast<std::size_t>(t)].push_back(std::chrono::duration<double, std::micro>(m - s).count());
        lat_r[static_cast<std::size_t>(t)].push_back(std::chrono::duration<double, std::micro>(e - m).count());
        if (!a || !rel) ++errors;
        if (threads == 1) {
          assign_calls += c1 - c0;
          release_calls += c2 - c1;
        }
      }
    });
  for (auto& t : ts) t.join();
  double secs = std::chrono::duration<double>(steady::now() - t0).count();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  figures f;
  const double n = static_cast<double>(all.size());
  f.per_second = n / secs;
  f.median_us = all.empty() ? 0 : all[all.size() / 2];
  f.p99_us = all.empty() ? 0 : all[std::min(all.size() - 1, all.size() * 99 / 100)];
  auto median_of = [](const std::vector<std::vector<double>>& v) {
    std::vector<double> x;
    for (auto& l : v) x.insert(x.end(), l.begin(), l.end());
    if (x.empty()) return 0.0;
    std::nth_element(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(x.size() / 2), x.end());
    return x[x.size() / 2];
  };
  f.assign_median_us = median_of(lat_a);
  f.release_median_us = median_of(lat_r);
  f.assign_calls = threads == 1 ? static_cast<double>(assign_calls) / n : 0;
  f.release_calls = threads == 1 ? static_cast<double>(release_calls) / n : 0;
  f.errors = errors;
  return f;
}

cnf::any_datastore open_local(const std::string& dir, bool fsync) {
  cnf::plugin_loader loader({CNF_BENCH_PLUGIN_DIR});
  std::string text = "[datastore]\nplugin = \"local\"\ndir = \"" + dir + "\"\nfsync = " + (fsync ? "true" : "false") + "\n";
  auto ds = loader.make<cnf::part::datastore>("local", {}, {text, "bench.toml", "datastore"});
  if (!ds) {
    fmt::print(stderr, "local datastore: {}\n", ds.error().message);
    std::exit(1);
  }
  return *ds;
}

// Runs the reference plugin once: returns its exit code.
int exec_reference(const std::string& bin, const std::string& command, const std::string& id, const std::string& conf) {
  int in[2];
  if (::pipe(in) != 0) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in[0], 0);
    ::close(in[0]);
    ::close(in[1]);
    int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    std::string e1 = "CNI_COMMAND=" + command, e2 = "CNI_CONTAINERID=" + id, e3 = "CNI_NETNS=/var/run/netns/bench",
                e4 = "CNI_IFNAME=eth0", e5 = "CNI_PATH=/usr/lib/cni";
    char* envp[] = {e1.data(), e2.data(), e3.data(), e4.data(), e5.data(), nullptr};
    char* argv[] = {const_cast<char*>(bin.c_str()), nullptr};
    ::execve(bin.c_str(), argv, envp);
    _exit(127);
  }
  ::close(in[0]);
  (void)!::write(in[1], conf.data(), conf.size());
  ::close(in[1]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

figures run_reference(const std::string& data_dir, int cycles, bool dual) {
  const std::string bin = "/usr/lib/cni/host-local";
  std::string ranges = R"([[{"subnet":"10.80.0.0/16"}])" + std::string(dual ? R"(,[{"subnet":"fd00:80::/64"}])" : "") + "]";
  std::string conf = R"({"cniVersion":"1.0.0","name":"bench","type":"bridge","ipam":{"type":"host-local","dataDir":")" + data_dir +
                     R"(","ranges":)" + ranges + "}}";
  std::vector<double> l;
  std::uint64_t errors = 0;
  auto t0 = steady::now();
  for (int i = 0; i < cycles; ++i) {
    std::string id = "bench" + std::to_string(i);
    auto s = steady::now();
    if (exec_reference(bin, "ADD", id, conf) != 0) ++errors;
    if (exec_reference(bin, "DEL", id, conf) != 0) ++errors;
    l.push_back(std::chrono::duration<double, std::micro>(steady::now() - s).count());
  }
  double secs = std::chrono::duration<double>(steady::now() - t0).count();
  std::sort(l.begin(), l.end());
  figures f;
  f.per_second = static_cast<double>(l.size()) / secs;
  f.median_us = l[l.size() / 2];
  f.p99_us = l[std::min(l.size() - 1, l.size() * 99 / 100)];
  f.errors = errors;
  return f;
}

void print(const char* what, const figures& f) {
  fmt::print("{:<48} {:>8.0f}/s  median {:>8.1f} us  p99 {:>8.1f} us", what, f.per_second, f.median_us, f.p99_us);
  if (f.assign_median_us > 0) fmt::print("  (assign {:.1f} us, release {:.1f} us)", f.assign_median_us, f.release_median_us);
  if (f.assign_calls > 0) fmt::print("  datastore calls: assign {:.1f}, release {:.1f}", f.assign_calls, f.release_calls);
  if (f.errors) fmt::print("  ERRORS {}", f.errors);
  fmt::print("\n");
}

}  // namespace

int main(int argc, char** argv) {
  int cycles = 20000, peer_cycles = 200, threads = 4;
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--cycles") cycles = std::atoi(next().c_str());
    else if (a == "--peer-cycles") peer_cycles = std::atoi(next().c_str());
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--dir") dir = next();
    else {
      fmt::print(stderr, "usage: host_local_bench [--cycles N] [--peer-cycles N] [--threads T] [--dir DIR]\n");
      return 2;
    }
  }
  bool own_dir = dir.empty();
  if (own_dir) {
    char tmpl[] = "/tmp/cnf-host-local-bench-XXXXXX";
    if (!::mkdtemp(tmpl)) return 1;
    dir = tmpl;
  }
  struct cleanup {
    std::string d;
    bool own;
    ~cleanup() {
      std::error_code ec;
      if (own) fs::remove_all(d, ec);
    }
  } clean{dir, own_dir};

  fmt::print("host-local IPAM: one assign + one release_handle per cycle (a CNI ADD's and DEL's IPAM work)\n");
  fmt::print("store dir {}; {} cycles in process, {} cycles of the reference plugin\n\n", dir, cycles, peer_cycles);

  auto mem1 = run(cnf::memory_datastore(), cycles, 1, 0, false);
  print("memory, IPv4, 1 thread", mem1);
  print("memory, dual stack, 1 thread", run(cnf::memory_datastore(), cycles, 1, 1, false));
  print("memory, dual stack, 1 thread, parallel writes", run(cnf::memory_datastore(), cycles, 1, 1, true));
  print(fmt::format("memory, IPv4, {} threads", threads).c_str(), run(cnf::memory_datastore(), cycles, threads, 0, false));

  const int local_cycles = std::max(200, cycles / 10);
  auto loc_nosync = run(open_local(dir + "/nosync", false), local_cycles, 1, 0, false);
  print("local fsync off, IPv4, 1 thread", loc_nosync);
  auto loc1 = run(open_local(dir + "/sync1", true), local_cycles, 1, 0, true);
  print("local fsync on, IPv4, 1 thread, parallel writes", loc1);
  print("local fsync on, IPv4, 1 thread, serial writes", run(open_local(dir + "/sync1s", true), local_cycles, 1, 0, false));
  print("local fsync on, dual stack, parallel writes", run(open_local(dir + "/sync2", true), local_cycles, 1, 1, true));
  print("local fsync on, dual stack, serial writes", run(open_local(dir + "/sync2s", true), local_cycles, 1, 1, false));
  print(fmt::format("local fsync on, IPv4, {} threads, parallel", threads).c_str(),
        run(open_local(dir + "/sync3", true), local_cycles, threads, 0, true));

  if (::access("/usr/lib/cni/host-local", X_OK) == 0) {
    fs::create_directories(dir + "/reference");
    auto ref = run_reference(dir + "/reference", peer_cycles, false);
    print("peer: reference host-local, exec ADD+DEL, IPv4", ref);
    fmt::print("\nratio (in-process cycles per reference cycle): memory {:.0f}x, local fsync off {:.0f}x, local fsync on (parallel) {:.1f}x\n",
               mem1.per_second / ref.per_second, loc_nosync.per_second / ref.per_second, loc1.per_second / ref.per_second);
    fmt::print("(the reference figure includes two fork+exec of a Go binary; a CNI ADD of cnf pays its own exec too)\n");
  } else {
    fmt::print("\npeer: /usr/lib/cni/host-local is not installed (apt-get install containernetworking-plugins); no ratio\n");
  }
  return 0;
}
