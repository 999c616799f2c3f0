// Helpers shared by the calico-ipam tests: pools, configuration, and a contention run
// that any datastore can be put through.
#pragma once
#include <cnf/plugins/calico_ipam.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace ipam_test {

namespace ci = cnf::calico_ipam;

inline cnf::ip_address ip(std::string_view s) { return cnf::ip_address::parse(s).value(); }
inline cnf::ip_prefix cidr(std::string_view s) { return cnf::ip_prefix::parse(s).value(); }

inline void add_pool(const cnf::any_datastore& ds, std::string name, std::string_view c, unsigned block_size, std::string extra = {}) {
  cnf::resource r;
  r.kind = "IPPool";
  r.name = std::move(name);
  r.spec = "{\"cidr\":\"" + std::string(c) + "\",\"blockSize\":" + std::to_string(block_size) + extra + "}";
  auto made = ds.create(r);
  REQUIRE(made);
}

inline void configure(const cnf::any_datastore& ds, std::optional<bool> strict, std::optional<std::uint32_t> max_blocks = {}) {
  ci::config_change c;
  c.strict_affinity = strict;
  c.max_blocks_per_host = max_blocks;
  auto r = ci::change_config(ds, c);
  REQUIRE(r);
}

inline cnf::assign_request request(std::string handle, std::string node, unsigned v4 = 1, unsigned v6 = 0) {
  cnf::assign_request r;
  r.handle = std::move(handle);
  r.node = std::move(node);
  r.attributes = {{"namespace", "default"}, {"pod", "pod-" + r.handle}};
  r.num_v4 = v4;
  r.num_v6 = v6;
  return r;
}

/// Options for tests: no caching of pools/config, so a change is seen at once.
inline ci::options test_options() {
  ci::options o;
  o.cache_ttl = std::chrono::milliseconds(0);
  o.lock_dir = "/tmp/cnf-ipam-test-locks";  // not the host's /run/cnf
  return o;
}

/// Every block affinity field and allocation agree: returns the number of addresses in
/// blocks affine to another node than the one they were assigned for.
inline std::uint64_t borrowed_count(const cnf::any_datastore& ds) {
  auto b = ci::borrowed(ds);
  REQUIRE(b);
  return b->size();
}

inline std::size_t problems(const cnf::any_datastore& ds, const std::set<std::string>& live) {
  ci::check_options o;
  o.live_handles = live;
  auto r = ci::check(ds, o);
  REQUIRE(r);
  for (auto& p : r->problems) UNSCOPED_INFO(std::string(ci::to_string(p.what)) + ": " + p.message);
  return r->problems.size();
}

/// Tracks which addresses are held, to catch one address handed out twice while held.
class holder_map {
 public:
  /// Returns the handle that already holds `a`, or empty when it was free.
  std::string take(const cnf::ip_address& a, const std::string& handle) {
    std::lock_guard lk(mu_);
    auto [it, fresh] = held_.emplace(a, handle);
    return fresh ? std::string() : it->second;
  }
  void give_back(const cnf::ip_address& a) {
    std::lock_guard lk(mu_);
    held_.erase(a);
  }
  std::size_t size() {
    std::lock_guard lk(mu_);
    return held_.size();
  }

 private:
  std::mutex mu_;
  std::map<cnf::ip_address, std::string> held_;
};

struct contention_result {
  std::atomic<std::uint64_t> assigned{0}, released{0}, errors{0}, duplicates{0}, foreign{0};
  std::uint64_t writes = 0, conflicts = 0;  ///< block writes and lost compare-and-swaps, all instances
  std::mutex mu;
  std::vector<std::string> messages;
  void note(std::string m) {
    std::lock_guard lk(mu);
    if (messages.size() < 20) messages.push_back(std::move(m));
  }
};

/// `nodes` simulated nodes, each with `instances` independent ipam objects (as separate
/// processes would have) and `threads` threads per instance; each thread assigns and
/// releases `cycles` times, keeping up to `keep` addresses. Checks every address against
/// the holder map and against the block it came from (must be affine to its node while
/// the node's blocks have room: the pool is big enough here that they always do).
inline void contention(const cnf::any_datastore& ds, int nodes, int instances, int threads, int cycles, int keep,
                       contention_result& res, bool expect_affine = true, unsigned block_size = 26) {
  holder_map held;
  std::vector<std::thread> ts;
  std::vector<ci::ipam> ipams;
  for (int n = 0; n < nodes; ++n)
    for (int i = 0; i < instances; ++i) ipams.emplace_back(ds, "node-" + std::to_string(n), test_options());
  for (int n = 0; n < nodes; ++n)
    for (int i = 0; i < instances; ++i)
      for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, n, i, t] {
          ci::ipam& me = ipams[static_cast<std::size_t>(n * instances + i)];
          std::string node = "node-" + std::to_string(n);
          std::mt19937 rng(static_cast<unsigned>(n * 1000 + i * 100 + t));
          std::vector<std::pair<std::string, cnf::ip_address>> mine;
          auto release_one = [&](std::size_t k) {
            auto [h, a] = mine[k];
            mine.erase(mine.begin() + static_cast<std::ptrdiff_t>(k));
            held.give_back(a);
            auto r = me.release_handle(h);
            if (!r) {
              ++res.errors;
              res.note("release " + h + ": " + r.error().message);
            } else {
              ++res.released;
            }
          };
          for (int c = 0; c < cycles; ++c) {
            std::string h = "k8s-pod-network." + node + "-" + std::to_string(i) + "-" + std::to_string(t) + "-" + std::to_string(c);
            auto got = me.assign(request(h, node));
            if (!got) {
              ++res.errors;
              res.note("assign " + h + ": " + got.error().message);
              continue;
            }
            ++res.assigned;
            auto a = got->front().address.address();
            auto other = held.take(a, h);
            if (!other.empty()) {
              ++res.duplicates;
              res.note(a.to_string() + " handed to " + h + " while " + other + " holds it");
            }
            if (expect_affine) {
              auto blk = ds.get({"IPAMBlock", "", ci::block_name(cnf::ip_prefix(a, block_size).canonical())});
              auto b = blk ? ci::parse_block(*blk) : cnf::result<ci::block>(blk.error());
              if (!b || b->affinity != "host:" + node) {
                ++res.foreign;
                res.note(a.to_string() + " for " + node + " came from a block affine to '" + (b ? b->affinity.value_or("") : "?") + "'");
              }
            }
            mine.emplace_back(h, a);
            if (static_cast<int>(mine.size()) > keep) release_one(rng() % mine.size());
          }
          while (!mine.empty()) release_one(mine.size() - 1);
        });
  for (auto& t : ts) t.join();
  for (auto& i : ipams) {
    auto st = i.statistics();
    res.writes += st.block_writes;
    res.conflicts += st.block_conflicts;
  }
}

}  // namespace ipam_test
