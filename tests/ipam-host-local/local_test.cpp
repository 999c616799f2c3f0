// host-local IPAM on the `local` datastore plugin (loaded through cnf::plugin_loader, fsync
// on): the same behaviour cases as on memory_datastore, the host-local plugin itself loaded
// through the loader, and forked processes sharing one store directory, as concurrent CNI
// ADDs on one node do.
#include "../support/process.hpp"

#include <cnf/loader.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

namespace {

using cnf_test::temp_dir;  // a directory under /tmp, removed on every way out of its scope
constexpr const char* dir_prefix = "/tmp/cnf-host-local-";

// Stores made by new_store() live until the end of the test program; their directories go
// with them (static destruction, also after a failed test case).
std::vector<std::unique_ptr<temp_dir>>& store_dirs() {
  static std::vector<std::unique_ptr<temp_dir>> dirs;
  return dirs;
}

cnf::result<cnf::any_datastore> open_local(const std::string& dir) {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  std::string text = "[datastore]\nplugin = \"local\"\ndir = \"" + dir + "\"\nfsync = true\n";
  return loader.make<cnf::part::datastore>("local", {}, {text, "test.toml", "datastore"});
}

cnf::any_datastore new_store() {
  store_dirs().push_back(std::make_unique<temp_dir>(dir_prefix));
  auto ds = open_local((store_dirs().back()->path / "store").string());
  if (!ds) throw std::runtime_error("opening the local datastore: " + ds.error().message);
  return *ds;
}

}  // namespace

#define HL_BACKEND "local"
#define HL_EXPECT_PARALLEL true
#include "ipam_cases.hpp"

namespace {

std::string ipam_profile(const std::string& body) { return "[ipam]\nplugin = \"host-local\"\n" + body; }

cnf::result<cnf::any_ipam> load_ipam(const cnf::any_datastore& ds, const std::string& text, const std::string& node = "node-1") {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  cnf::plugin_context ctx;
  ctx.node_name = node;
  ctx.datastore = ds;
  return loader.make<cnf::part::ipam>("host-local", ctx, {text, "profile.toml", "ipam"});
}

}  // namespace

TEST_CASE("host-local plugin through the loader: assigns, and reports settings errors with their key") {
  auto ds = new_store();
  auto ipam = load_ipam(ds, ipam_profile(R"(ranges = [[{ subnet = "10.30.0.0/24" }], [{ subnet = "fd00:30::/64" }]])"));
  REQUIRE(ipam);
  auto a = ipam->assign(req("net.loader", 1, 1));
  REQUIRE(a);
  CHECK(addresses(*a) == std::vector<std::string>{"10.30.0.2", "fd00:30::2"});
  REQUIRE(ipam->release_handle("net.loader"));
  CHECK(ipam->allocations().value().empty());

  auto bad = load_ipam(ds, ipam_profile(R"(ranges = [[{ subnet = "10.30.0.0/24", rangeStart = "10.31.0.1" }]]
reserve = ["10.30.0.9"])"));
  REQUIRE(!bad);
  CHECK(bad.error().code == cnf::errc::invalid);
  INFO(bad.error().message);
  CHECK(bad.error().message.find("profile.toml:3:") != std::string::npos);
  CHECK(bad.error().message.find("ipam.ranges[0][0].rangeStart: 10.31.0.1 is outside subnet 10.30.0.0/24") != std::string::npos);
  CHECK(bad.error().message.find("ipam.reserve: unknown key; did you mean 'reserved'?") != std::string::npos);

  auto nods = load_ipam(cnf::any_datastore(), ipam_profile(R"(ranges = [[{ subnet = "10.30.0.0/24" }]])"));
  REQUIRE(!nods);
  CHECK(nods.error().message.find("no datastore") != std::string::npos);
}

namespace {

// One forked process: opens the store and the IPAM through the loader (as a CNI binary
// does), waits for the start signal, then assigns `count` handles (holding all of them) and
// writes "<handle> <address>" lines to its result file. Never returns.
[[noreturn]] void assign_child(const std::string& store, const std::string& out, int idx, int count, int start_fd) {
  std::FILE* f = std::fopen(out.c_str(), "w");
  if (!f) _exit(3);
  auto ds = open_local(store);
  if (!ds) {
    std::fprintf(f, "E %s\n", ds.error().message.c_str());
    std::fclose(f);
    _exit(4);
  }
  auto ipam = load_ipam(*ds, ipam_profile(R"(ranges = [[{ subnet = "10.40.0.0/24" }], [{ subnet = "fd00:40::/120" }]])"));
  if (!ipam) {
    std::fprintf(f, "E %s\n", ipam.error().message.c_str());
    std::fclose(f);
    _exit(5);
  }
  char go;
  (void)!::read(start_fd, &go, 1);  // returns when the parent closes its end
  int rc = 0;
  for (int i = 0; i < count; ++i) {
    std::string h = "net.p" + std::to_string(idx) + "-" + std::to_string(i);
    auto a = ipam->assign(req(h, 1, 1));
    if (!a) {
      std::fprintf(f, "E %s\n", a.error().message.c_str());
      rc = 6;
      break;
    }
    for (auto& x : *a) std::fprintf(f, "%s %s\n", h.c_str(), x.address.address().to_string().c_str());
  }
  std::fclose(f);
  _exit(rc);
}

[[noreturn]] void release_child(const std::string& store, int idx, int count, int start_fd) {
  auto ds = open_local(store);
  if (!ds) _exit(4);
  auto ipam = load_ipam(*ds, ipam_profile(R"(ranges = [[{ subnet = "10.40.0.0/24" }], [{ subnet = "fd00:40::/120" }]])"));
  if (!ipam) _exit(5);
  char go;
  (void)!::read(start_fd, &go, 1);
  for (int i = 0; i < count; ++i) {
    std::string h = "net.p" + std::to_string(idx) + "-" + std::to_string(i);
    if (!ipam->release_handle(h)) _exit(6);
    if (!ipam->release_handle(h)) _exit(7);  // a repeated CNI DEL
  }
  _exit(0);
}

// Forks `n` children running `body(i, start_fd)`, releases them at once, and returns their
// exit codes. Children that outlive a failing parent are reaped here on every path.
template <class F>
std::vector<int> run_children(int n, F body) {
  int p[2];
  REQUIRE(::pipe(p) == 0);
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(p[1]);
      body(i, p[0]);
    }
    pids.push_back(pid);
  }
  ::close(p[0]);
  ::close(p[1]);  // start: every child's read() returns now
  std::vector<int> codes;
  for (pid_t pid : pids) {
    int st = 0;
    ::waitpid(pid, &st, 0);
    codes.push_back(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  }
  return codes;
}

}  // namespace

TEST_CASE("host-local on local: forked processes assign at once: no duplicates, all released afterwards") {
  temp_dir dir(dir_prefix);
  const std::string store = (dir.path / "store").string();
  constexpr int procs = 6, each = 40;  // 240 of 253 IPv4 and 254 IPv6 addresses
  auto codes = run_children(procs, [&](int i, int fd) {
    assign_child(store, (dir.path / ("out-" + std::to_string(i))).string(), i, each, fd);
  });
  std::map<std::string, std::string> owner;  // address -> handle
  int duplicates = 0, lines = 0;
  for (int i = 0; i < procs; ++i) {
    std::ifstream in((dir.path / ("out-" + std::to_string(i))).string());
    std::string h, a;
    while (in >> h >> a) {
      INFO("child " << i << ": " << h << " " << a);
      REQUIRE(h != "E");
      ++lines;
      if (!owner.emplace(a, h).second) ++duplicates;
    }
    INFO("child " << i << " exit code " << codes[static_cast<std::size_t>(i)]);
    CHECK(codes[static_cast<std::size_t>(i)] == 0);
  }
  CHECK(duplicates == 0);
  CHECK(lines == procs * each * 2);

  // The store agrees with what the processes were told.
  auto ds = open_local(store).value();
  cnf::host_local_ipam ipam(ds, cfg(R"(ranges = [[{ subnet = "10.40.0.0/24" }], [{ subnet = "fd00:40::/120" }]])"), "node-1");
  auto all = ipam.allocations().value();
  CHECK(all.size() == static_cast<std::size_t>(procs * each * 2));
  for (auto& al : all) {
    auto it = owner.find(al.address.to_string());
    REQUIRE(it != owner.end());
    CHECK(it->second == al.handle);
  }
  CHECK(count_kind(ds, hl::handle_kind) == static_cast<std::size_t>(procs * each));

  // Every process releases its handles (twice, like a repeated DEL), all at once.
  auto rel = run_children(procs, [&](int i, int fd) { release_child(store, i, each, fd); });
  for (int c : rel) CHECK(c == 0);
  CHECK(ipam.allocations().value().empty());
  CHECK(count_kind(ds, hl::handle_kind) == 0);
  auto u = ipam.usage().value();
  for (auto& p : u.pools) CHECK(p.in_use == 0);
}
