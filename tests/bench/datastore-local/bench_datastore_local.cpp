// CAS updates per second of the `local` datastore with fsync on (the real setting), for 1
// and 8 processes, each process doing get + update (compare-and-swap) in a loop:
//   own     every process updates its own resource (IPAM blocks of different nodes)
//   shared  every process updates the same resource (conflicts; counts only the wins)
// Peers measured in the same run, on the same file system:
//   fsync   append 200 bytes + fdatasync in a loop: the bound for one durable write
//   naive   the textbook file store: flock, read, write a temp file, fsync, rename over
//           the resource file, unlock (one fsync per write too, but under the lock)
// Also gets per second (lock-free reads).
//
//   bench_datastore_local [--seconds S] [--dir DIR] [--no-fsync]
#include <cnf/plugins/local.hpp>

#include <boost/json.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using clk = std::chrono::steady_clock;

namespace {

double seconds = 3.0;
bool use_fsync = true;

std::int64_t value_of(const cnf::resource& r) { return boost::json::parse(r.spec).at("value").to_number<std::int64_t>(); }

struct run_result {
  double ops_per_s = 0;
  std::uint64_t ops = 0, conflicts = 0;
};

// Forks `procs` children running `work(index, deadline) -> {ops, conflicts}` from the same
// start signal; returns the aggregate rate.
run_result fork_run(int procs, const std::function<std::pair<std::uint64_t, std::uint64_t>(int, clk::time_point)>& work) {
  int go[2], res[2];
  if (::pipe(go) != 0 || ::pipe(res) != 0) std::exit(1);
  std::vector<pid_t> kids;
  for (int p = 0; p < procs; ++p) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(go[1]);
      ::close(res[0]);
      char c;
      if (::read(go[0], &c, 1) != 1) ::_exit(1);
      auto deadline = clk::now() + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(seconds));
      auto [ops, conflicts] = work(p, deadline);
      std::uint64_t out[2] = {ops, conflicts};
      if (::write(res[1], out, sizeof out) != sizeof out) ::_exit(1);
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  ::close(go[0]);
  ::close(res[1]);
  auto t0 = clk::now();
  std::string start(static_cast<std::size_t>(procs), 'g');
  if (::write(go[1], start.data(), start.size()) != static_cast<ssize_t>(start.size())) std::exit(1);
  run_result r;
  for (int p = 0; p < procs; ++p) {
    std::uint64_t in[2] = {0, 0};
    if (::read(res[0], in, sizeof in) != sizeof in) {
      std::fprintf(stderr, "a worker failed\n");
      std::exit(1);
    }
    r.ops += in[0];
    r.conflicts += in[1];
  }
  double dt = std::chrono::duration<double>(clk::now() - t0).count();
  for (auto pid : kids) ::waitpid(pid, nullptr, 0);
  ::close(go[1]);
  ::close(res[0]);
  r.ops_per_s = static_cast<double>(r.ops) / dt;
  return r;
}

cnf::local_datastore open_store(const std::string& dir) {
  cnf::local_datastore_options o;
  o.dir = dir;
  o.fsync = use_fsync;
  auto ds = cnf::local_datastore::open(o);
  if (!ds) {
    std::fprintf(stderr, "open %s: %s\n", dir.c_str(), ds.error().message.c_str());
    std::exit(1);
  }
  return std::move(*ds);
}

run_result bench_local(const std::string& dir, int procs, bool shared) {
  fs::remove_all(dir);
  {
    auto ds = open_store(dir);
    for (int p = 0; p < (shared ? 1 : procs); ++p)
      ds.create({"IPAMBlock", "", "block-" + std::to_string(p), {}, R"({"value":0,"cidr":"10.0.0.0/26","allocations":[]})"}).value();
  }
  return fork_run(procs, [&](int p, clk::time_point deadline) {
    auto ds = open_store(dir);
    cnf::resource_key key{"IPAMBlock", "", "block-" + std::to_string(shared ? 0 : p)};
    std::uint64_t ops = 0, conflicts = 0;
    while (clk::now() < deadline) {
      auto cur = ds.get(key).value();
      auto v = value_of(cur);
      cur.spec = "{\"value\":" + std::to_string(v + 1) + R"(,"cidr":"10.0.0.0/26","allocations":[])" + "}";
      auto u = ds.update(cur);
      if (u) ++ops;
      else if (u.error().code == cnf::errc::conflict) ++conflicts;
      else {
        std::fprintf(stderr, "update: %s\n", u.error().message.c_str());
        ::_exit(1);
      }
    }
    return std::pair{ops, conflicts};
  });
}

run_result bench_gets(const std::string& dir, int procs) {
  fs::remove_all(dir);
  {
    auto ds = open_store(dir);
    for (int i = 0; i < 100; ++i) ds.create({"IPAMBlock", "", "b" + std::to_string(i), {}, R"({"value":0})"}).value();
  }
  return fork_run(procs, [&](int, clk::time_point deadline) {
    auto ds = open_store(dir);
    std::uint64_t ops = 0;
    while (clk::now() < deadline) {
      ds.get({"IPAMBlock", "", "b" + std::to_string(ops % 100)}).value();
      ++ops;
    }
    return std::pair{ops, std::uint64_t{0}};
  });
}

// What a CNI invocation pays: a new program (this one, exec'd again) opens the store and
// does one get, or one get + CAS update. Mean microseconds per exec, wait included.
std::string self_path;

double bench_exec(const std::string& dir, const char* mode, int n) {
  auto t0 = clk::now();
  for (int i = 0; i < n; ++i) {
    std::string idx = std::to_string(i % 200);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::execl(self_path.c_str(), self_path.c_str(), "--child", mode, dir.c_str(), idx.c_str(), use_fsync ? "1" : "0",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "a child (%s) failed\n", mode);
      std::exit(1);
    }
  }
  return std::chrono::duration<double, std::micro>(clk::now() - t0).count() / n;
}

int child(const std::string& mode, const std::string& dir, const std::string& idx) {
  if (mode == "noop") return 0;
  auto ds = open_store(dir);
  cnf::resource_key k{"IPAMHandle", "", "h" + idx};
  auto cur = ds.get(k);
  if (!cur) return 1;
  if (mode == "update") {
    cur->spec = "{\"value\":" + std::to_string(value_of(*cur) + 1) + "}";
    if (!ds.update(*cur)) return 1;
  }
  return 0;
}

run_result bench_fsync(const std::string& dir) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  return fork_run(1, [&](int, clk::time_point deadline) {
    int fd = ::open((dir + "/log").c_str(), O_CREAT | O_WRONLY | O_APPEND | O_CLOEXEC, 0600);
    char buf[200];
    std::memset(buf, 'x', sizeof buf);
    std::uint64_t ops = 0;
    while (clk::now() < deadline) {
      if (::write(fd, buf, sizeof buf) != sizeof buf) ::_exit(1);
      if (use_fsync) ::fdatasync(fd);
      ++ops;
    }
    ::close(fd);
    return std::pair{ops, std::uint64_t{0}};
  });
}

// The textbook store: one JSON file per resource, flock around read-compare-write,
// temp file + fsync + rename.
run_result bench_naive(const std::string& dir, int procs) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (int p = 0; p < procs; ++p) {
    std::FILE* f = std::fopen((dir + "/block-" + std::to_string(p) + ".json").c_str(), "w");
    std::fprintf(f, R"({"revision":1,"value":0})");
    std::fclose(f);
  }
  return fork_run(procs, [&](int p, clk::time_point deadline) {
    int lock = ::open((dir + "/lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    std::string path = dir + "/block-" + std::to_string(p) + ".json", tmp = path + ".tmp";
    std::uint64_t ops = 0;
    char buf[4096];
    while (clk::now() < deadline) {
      // get (no lock), then CAS under the lock
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      ssize_t n = ::read(fd, buf, sizeof buf);
      ::close(fd);
      auto v = boost::json::parse(std::string_view(buf, static_cast<std::size_t>(n)));
      auto rev = v.at("revision").to_number<std::int64_t>();
      auto val = v.at("value").to_number<std::int64_t>();
      ::flock(lock, LOCK_EX);
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      n = ::read(fd, buf, sizeof buf);
      ::close(fd);
      auto now = boost::json::parse(std::string_view(buf, static_cast<std::size_t>(n)));
      if (now.at("revision").to_number<std::int64_t>() == rev) {
        std::string out = "{\"revision\":" + std::to_string(rev + 1) + ",\"value\":" + std::to_string(val + 1) + "}";
        fd = ::open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
        if (::write(fd, out.data(), out.size()) != static_cast<ssize_t>(out.size())) ::_exit(1);
        if (use_fsync) ::fdatasync(fd);
        ::close(fd);
        ::rename(tmp.c_str(), path.c_str());
        ++ops;
      }
      ::flock(lock, LOCK_UN);
    }
    return std::pair{ops, std::uint64_t{0}};
  });
}

}  // namespace

int main(int argc, char** argv) {
  self_path = fs::canonical("/proc/self/exe").string();
  if (argc == 6 && std::string(argv[1]) == "--child") {
    use_fsync = std::string(argv[5]) == "1";
    return child(argv[2], argv[3], argv[4]);
  }
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) seconds = std::atof(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--no-fsync") use_fsync = false;
    else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--dir DIR] [--no-fsync]\n", argv[0]);
      return 2;
    }
  }
  bool own_dir = dir.empty();
  if (own_dir) {
    char t[] = "/var/tmp/cnf-bench-local-XXXXXX";
    if (!::mkdtemp(t)) return 1;
    dir = t;
  }
  std::printf("local datastore benchmark: %s, fsync %s, %.1f s per run, %ld cores\n", dir.c_str(), use_fsync ? "on" : "off",
              seconds, ::sysconf(_SC_NPROCESSORS_ONLN));
  auto fs1 = bench_fsync(dir + "/fsync");
  std::printf("%-44s %10.0f /s  (%.3f ms each)\n", "peer: append + fdatasync, 1 process", fs1.ops_per_s, 1000.0 / fs1.ops_per_s);
  auto n1 = bench_naive(dir + "/naive", 1);
  auto n8 = bench_naive(dir + "/naive", 8);
  std::printf("%-44s %10.0f /s\n", "peer: naive flock+tmp+fsync+rename, 1 proc", n1.ops_per_s);
  std::printf("%-44s %10.0f /s\n", "peer: naive flock+tmp+fsync+rename, 8 procs", n8.ops_per_s);
  auto l1 = bench_local(dir + "/local", 1, false);
  auto l8 = bench_local(dir + "/local", 8, false);
  auto s8 = bench_local(dir + "/local", 8, true);
  std::printf("%-44s %10.0f /s\n", "local: CAS updates, 1 process", l1.ops_per_s);
  std::printf("%-44s %10.0f /s\n", "local: CAS updates, 8 processes (own keys)", l8.ops_per_s);
  std::printf("%-44s %10.0f /s  (%llu conflicts lost)\n", "local: CAS updates, 8 processes (one key)", s8.ops_per_s,
              static_cast<unsigned long long>(s8.conflicts));
  auto g1 = bench_gets(dir + "/gets", 1);
  auto g8 = bench_gets(dir + "/gets", 8);
  std::printf("%-44s %10.0f /s\n", "local: gets, 1 process", g1.ops_per_s);
  std::printf("%-44s %10.0f /s\n", "local: gets, 8 processes", g8.ops_per_s);
  fs::remove_all(dir + "/exec");
  {
    auto ds = open_store(dir + "/exec");
    for (int i = 0; i < 200; ++i) ds.create({"IPAMHandle", "", "h" + std::to_string(i), {}, R"({"value":0})"}).value();
  }
  double exec_noop = bench_exec(dir + "/exec", "noop", 200);
  double exec_get = bench_exec(dir + "/exec", "get", 200);
  double exec_put = bench_exec(dir + "/exec", "update", 200);
  std::printf("%-44s %10.0f us\n", "peer: exec of this program doing nothing", exec_noop);
  std::printf("%-44s %10.0f us  (+%.0f us)\n", "local: exec, open + get", exec_get, exec_get - exec_noop);
  std::printf("%-44s %10.0f us  (+%.0f us)\n", "local: exec, open + get + CAS update", exec_put, exec_put - exec_noop);
  std::printf("ratios: local 8 procs / 1 proc = %.2f; local / naive = %.2f (1 proc), %.2f (8 procs); "
              "local 1 proc / fdatasync bound = %.2f\n",
              l8.ops_per_s / l1.ops_per_s, l1.ops_per_s / n1.ops_per_s, l8.ops_per_s / n8.ops_per_s, l1.ops_per_s / fs1.ops_per_s);
  if (own_dir) fs::remove_all(dir);
  return 0;
}
