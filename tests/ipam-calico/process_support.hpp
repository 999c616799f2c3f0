// Forked processes for the calico-ipam tests: each opens the datastore and the IPAM
// through the plugin loader (as the CNI binary does) and logs its events to a file, one
// write(2) per line, so a SIGKILL never leaves half a line.
#pragma once
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

namespace ipam_test {


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

/// Opens a datastore plugin from a profile's [datastore] section (plugin = "...").
inline cnf::result<cnf::any_datastore> open_datastore(const std::string& plugin, const std::string& profile) {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  return loader.make<cnf::part::datastore>(plugin, {}, {profile, "test.toml", "datastore"});
}

/// Every process opens the store and the IPAM through the plugin loader, as the CNI
/// binary does.
inline cnf::result<cnf::any_ipam> open_ipam(const cnf::any_datastore& ds, const std::string& node) {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  cnf::plugin_context ctx;
  ctx.node_name = node;
  ctx.datastore = ds;
  std::string text = "[ipam]\nplugin = \"calico-ipam\"\ncache_ttl_ms = 0\n";
  return loader.make<cnf::part::ipam>("calico-ipam", ctx, {text, "test.toml", "ipam"});
}

inline std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

/// One line per event, written with a single write(2) so a SIGKILL never leaves half a line.
inline void note(int fd, const std::string& line) {
  std::string l = line + "\n";
  (void)!::write(fd, l.data(), l.size());
}

/// A child process: assigns and releases `cycles` times for `node`, holding up to `keep`.
/// With cycles < 0 it runs until killed. Never returns.
[[noreturn]] inline void child(const std::string& plugin, const std::string& profile, const std::string& dir, const std::string& node,
                               int idx, int cycles, int keep, unsigned block_size) {
  std::string logname = dir + "/events-" + node + "-" + std::to_string(idx);
  int fd = ::open(logname.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) _exit(3);
  auto ds = open_datastore(plugin, profile);
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

inline event_summary read_events(const std::string& dir) {
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
inline std::vector<std::string> overlaps(const event_summary& s) {
  std::vector<std::string> out;
  for (auto [addr, holds] : s.by_address) {
    std::sort(holds.begin(), holds.end(), [](const hold& a, const hold& b) { return a.from < b.from; });
    for (std::size_t i = 1; i < holds.size(); ++i)
      if (holds[i].from < holds[i - 1].to) out.push_back(addr + " held by " + holds[i - 1].handle + " and " + holds[i].handle);
  }
  return out;
}

inline std::vector<pid_t> spawn(const std::string& plugin, const std::string& profile, const std::string& dir, int nodes, int per_node,
                                int cycles, int keep, unsigned block_size) {
  std::vector<pid_t> pids;
  for (int n = 0; n < nodes; ++n)
    for (int i = 0; i < per_node; ++i) {
      pid_t p = fork();
      REQUIRE(p >= 0);
      if (p == 0) child(plugin, profile, dir, "node-" + std::to_string(n), i, cycles, keep, block_size);
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

}  // namespace ipam_test
