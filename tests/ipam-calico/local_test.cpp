// calico-ipam on the `local` datastore plugin (fsync on): threads and forked processes of
// 8 simulated nodes contending, and processes killed with SIGKILL mid-assign followed by
// gc with the true live set.
#include "support.hpp"

#include <cnf/loader.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace ipam_test;
using Catch::Matchers::Contains;

namespace {

struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/cnf-ipam-calico-XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

std::string datastore_profile(const std::string& dir) {
  return "[datastore]\nplugin = \"local\"\ndir = \"" + dir + "/store\"\nfsync = true\n";
}

cnf::result<cnf::any_datastore> open_local(const std::string& dir) {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  std::string text = datastore_profile(dir);
  return loader.make<cnf::part::datastore>("local", {}, {text, "test.toml", "datastore"});
}

/// Every process opens the store and the IPAM through the plugin loader, as the CNI
/// binary does.
cnf::result<cnf::any_ipam> open_ipam(const cnf::any_datastore& ds, const std::string& node) {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  cnf::plugin_context ctx;
  ctx.node_name = node;
  ctx.datastore = ds;
  std::string text = "[ipam]\nplugin = \"calico-ipam\"\ncache_ttl_ms = 0\n";
  return loader.make<cnf::part::ipam>("calico-ipam", ctx, {text, "test.toml", "ipam"});
}

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

/// One line per event, written with a single write(2) so a SIGKILL never leaves half a line.
void note(int fd, const std::string& line) {
  std::string l = line + "\n";
  (void)!::write(fd, l.data(), l.size());
}

/// A child process: assigns and releases `cycles` times for `node`, holding up to `keep`.
/// With cycles < 0 it runs until killed. Never returns.
[[noreturn]] void child(const std::string& dir, const std::string& node, int idx, int cycles, int keep, unsigned block_size) {
  std::string logname = dir + "/events-" + node + "-" + std::to_string(idx);
  int fd = ::open(logname.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) _exit(3);
  auto ds = open_local(dir);
  if (!ds) {
    note(fd, "E open " + ds.error().message);
    _exit(4);
  }
  auto ipam = open_ipam(*ds, node);
  if (!ipam) {
    note(fd, "E ipam " + ipam.error().message);
    _exit(5);
  }
  std::mt19937 rng(static_cast<unsigned>(getpid()));
  std::vector<std::pair<std::string, std::string>> held;
  int rc = 0;
  auto drop = [&](std::size_t k) {
    auto [h, a] = held[k];
    held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
    note(fd, "D " + h + " " + a + " " + std::to_string(now_ns()));
    auto r = ipam->release_handle(h);
    if (!r) {
      note(fd, "E release " + h + " " + r.error().message);
      rc = 6;
    } else {
      note(fd, "R " + h);
    }
  };
  for (int c = 0; cycles < 0 || c < cycles; ++c) {
    std::string h = "k8s-pod-network." + node + "-" + std::to_string(idx) + "-" + std::to_string(getpid()) + "-" + std::to_string(c);
    note(fd, "B " + h);
    auto got = ipam->assign(request(h, node));
    if (!got) {
      note(fd, "E assign " + h + " " + got.error().message);
      rc = 7;
      continue;
    }
    auto a = got->front().address.address();
    note(fd, "H " + h + " " + a.to_string() + " " + std::to_string(now_ns()));
    // The block this came from must be the node's own (the pool is large).
    auto blk = ds->get({"IPAMBlock", "", ci::block_name(cnf::ip_prefix(a, block_size).canonical())});
    auto parsed = blk ? ci::parse_block(*blk) : cnf::result<ci::block>(blk.error());
    if (!parsed || parsed->affinity != "host:" + node) note(fd, "F " + h + " " + a.to_string());
    held.emplace_back(h, a.to_string());
    if (static_cast<int>(held.size()) > keep) drop(rng() % held.size());
  }
  while (!held.empty()) drop(held.size() - 1);
  ::close(fd);
  _exit(rc);
}

struct hold {
  std::string handle;
  std::int64_t from = 0, to = INT64_MAX;
};

struct event_summary {
  std::set<std::string> live;                  ///< held and never dropped
  std::map<std::string, std::vector<hold>> by_address;
  std::vector<std::string> errors, foreign;
  std::size_t assigned = 0, released = 0;
};

event_summary read_events(const std::string& dir) {
  event_summary s;
  std::map<std::string, std::pair<std::string, std::size_t>> open_holds;  // handle -> address, index
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().filename().string().rfind("events-", 0) != 0) continue;
    std::ifstream in(e.path());
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      std::string kind, h, a;
      std::int64_t t = 0;
      ls >> kind >> h;
      if (kind == "H") {
        ls >> a >> t;
        ++s.assigned;
        s.by_address[a].push_back({h, t, INT64_MAX});
        open_holds[h] = {a, s.by_address[a].size() - 1};
        s.live.insert(h);
      } else if (kind == "D") {
        ls >> a >> t;
        auto it = open_holds.find(h);
        if (it != open_holds.end()) s.by_address[it->second.first][it->second.second].to = t;
        s.live.erase(h);
      } else if (kind == "R") {
        ++s.released;
      } else if (kind == "E") {
        s.errors.push_back(line);
      } else if (kind == "F") {
        s.foreign.push_back(line);
      }
    }
  }
  return s;
}

/// Two handles holding one address at overlapping times.
std::vector<std::string> overlaps(const event_summary& s) {
  std::vector<std::string> out;
  for (auto [addr, holds] : s.by_address) {
    std::sort(holds.begin(), holds.end(), [](const hold& a, const hold& b) { return a.from < b.from; });
    for (std::size_t i = 1; i < holds.size(); ++i)
      if (holds[i].from < holds[i - 1].to) out.push_back(addr + " held by " + holds[i - 1].handle + " and " + holds[i].handle);
  }
  return out;
}

std::vector<pid_t> spawn(const std::string& dir, int nodes, int per_node, int cycles, int keep, unsigned block_size) {
  std::vector<pid_t> pids;
  for (int n = 0; n < nodes; ++n)
    for (int i = 0; i < per_node; ++i) {
      pid_t p = fork();
      REQUIRE(p >= 0);
      if (p == 0) child(dir, "node-" + std::to_string(n), i, cycles, keep, block_size);
      pids.push_back(p);
    }
  return pids;
}

/// Kills (if asked) and reaps every child, whatever happens in the test.
struct reaper {
  std::vector<pid_t> pids;
  ~reaper() {
    for (auto p : pids) ::kill(p, SIGKILL);
    for (auto p : pids) ::waitpid(p, nullptr, 0);
  }
};

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
  r.pids = spawn(dir.path, 8, 6, 12, 3, 27);
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
    r.pids = spawn(dir.path, 8, 4, -1, 2, 29);
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
