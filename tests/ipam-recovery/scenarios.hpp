// Crash-point scenarios for calico-ipam, run against any datastore: each operation is
// interrupted at every one of its writes (k = 1..N) in every fault_store mode, then the
// next operations run as a container runtime would run them (a DEL of the failed ADD, a
// new ADD, its DEL; a GC again), each in a new IPAM instance (a new process), and the
// invariants are checked after each step.
#pragma once
#include "fault_store.hpp"

#include <cnf/plugins/calico_ipam.hpp>

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace recovery_test {

namespace ci = cnf::calico_ipam;

inline cnf::ip_address ip(std::string_view s) { return cnf::ip_address::parse(s).value(); }

struct env {
  cnf::any_datastore ds;  ///< the real store, no faults
  std::string lock_dir;

  ci::options opts() const {
    ci::options o;
    o.cache_ttl = std::chrono::milliseconds(0);
    o.empty_block_grace = std::chrono::seconds(0);
    o.reclaim_age = std::chrono::seconds(3600);
    o.lock_dir = lock_dir;
    return o;
  }
  ci::ipam make(const std::string& node) const { return ci::ipam(ds, node, opts()); }
};

inline cnf::assign_request add_request(const std::string& handle, const std::string& node) {
  cnf::assign_request r;
  r.handle = handle;
  r.node = node;
  r.attributes = {{"namespace", "default"}, {"pod", handle}};
  r.num_v4 = 1;
  return r;
}

inline void put_pool(const cnf::any_datastore& ds, const std::string& name, const std::string& cidr, unsigned block_size) {
  cnf::resource r;
  r.kind = "IPPool";
  r.name = name;
  r.spec = "{\"cidr\":\"" + cidr + "\",\"blockSize\":" + std::to_string(block_size) + "}";
  REQUIRE(ds.create(r));
}

/// Removes every IPAM resource: each run starts from an empty store.
inline void wipe(const cnf::any_datastore& ds) {
  for (auto kind : {cnf::kinds::ipam_block, cnf::kinds::block_affinity, cnf::kinds::ipam_handle, cnf::kinds::ip_pool,
                    cnf::kinds::ipam_config, cnf::kinds::ip_reservation}) {
    cnf::list_options lo;
    lo.kind = std::string(kind);
    auto l = ds.list_all(lo);
    REQUIRE(l);
    for (auto& r : l->items) {
      auto rm = ds.remove(r.key(), "");
      REQUIRE((rm || rm.error().code == cnf::errc::not_found));
    }
  }
}

/// The invariants, with `live` the handles that should hold addresses now:
/// no address held by a handle that is not live, every live handle holds an address, no
/// address twice, every borrowed address named by its IPAMHandle, no IPAMHandle of a
/// handle that is not live or naming a block without its address, no unconfirmed
/// BlockAffinity, and `cnf ipam check` clean.
inline void audit(const cnf::any_datastore& ds, const std::set<std::string>& live, const std::string& where) {
  INFO(where);
  cnf::list_options lo;
  lo.kind = "IPAMBlock";
  auto blocks = ds.list_all(lo);
  REQUIRE(blocks);
  std::map<cnf::ip_address, std::string> held;
  std::map<std::string, std::set<std::string>> blocks_of;  // handle -> block CIDRs
  std::set<std::pair<std::string, std::string>> borrowed;  // handle, block CIDR
  for (auto& r : blocks->items) {
    auto b = ci::parse_block(r);
    REQUIRE(b);
    for (std::uint32_t o = 0; o < b->size(); ++o) {
      if (!b->allocations[o]) continue;
      auto h = b->handle_of(o);
      auto [it, fresh] = held.emplace(b->address(o), h);
      CHECK(fresh);  // no address twice
      CHECK(live.count(h) == 1);  // no address without a live handle
      blocks_of[h].insert(b->cidr.to_string());
      auto node = b->attributes[*b->allocations[o]].node();
      if (b->affinity != "host:" + node) borrowed.insert({h, b->cidr.to_string()});
    }
  }
  for (auto& h : live) CHECK(blocks_of.count(h) == 1);
  lo.kind = "IPAMHandle";
  auto handles = ds.list_all(lo);
  REQUIRE(handles);
  std::set<std::pair<std::string, std::string>> recorded;
  for (auto& r : handles->items) {
    auto p = ci::parse_handle(r);
    REQUIRE(p);
    CHECK(live.count(p->handle_id) == 1);  // no handle without its address
    for (auto& [cidr, n] : p->blocks) {
      recorded.insert({p->handle_id, cidr});
      CHECK(blocks_of[p->handle_id].count(cidr) == 1);
    }
  }
  for (auto& b : borrowed) CHECK(recorded.count(b) == 1);  // a borrowed address is found by its handle
  lo.kind = "BlockAffinity";
  auto affs = ds.list_all(lo);
  REQUIRE(affs);
  for (auto& r : affs->items) {
    auto a = ci::parse_affinity(r);
    REQUIRE(a);
    INFO("BlockAffinity/" + r.name);
    CHECK(a->state == "confirmed");
  }
  ci::check_options co;
  co.live_handles = live;
  auto rep = ci::check(ds, co);
  REQUIRE(rep);
  for (auto& p : rep->problems) UNSCOPED_INFO(std::string(ci::to_string(p.what)) + ": " + p.message);
  CHECK(rep->problems.empty());
}

/// One interrupted operation and what the runtime does after it.
struct scenario {
  std::string name;
  std::function<void(const env&)> setup;
  std::string node;  ///< of the interrupted instance ("" for an unscoped one)
  std::function<cnf::result<void>(ci::ipam&)> op;
  std::function<void(const env&)> recover;
};

inline void must(const cnf::result<void>& r, const std::string& what) {
  INFO(what + ": " + (r ? std::string("ok") : r.error().message));
  REQUIRE(r);
}

inline std::vector<scenario> scenarios() {
  std::vector<scenario> out;
  // An ADD that claims a block: pending affinity, block, confirmed affinity, allocation.
  out.push_back({"ADD claiming a block",
                 [](const env& e) { put_pool(e.ds, "p", "10.230.0.0/28", 30); },
                 "n1",
                 [](ci::ipam& i) -> cnf::result<void> {
                   auto r = i.assign(add_request("k8s-pod-network.h1", "n1"));
                   if (!r) return r.error();
                   return {};
                 },
                 [](const env& e) {
                   must(e.make("n1").release_handle("k8s-pod-network.h1"), "DEL h1");
                   audit(e.ds, {}, "after the DEL of the interrupted ADD");
                   auto i = e.make("n1");
                   must(i.assign(add_request("k8s-pod-network.h2", "n1")) ? cnf::result<void>() : cnf::result<void>(cnf::error(cnf::errc::internal, "ADD h2 failed")), "ADD h2");
                   audit(e.ds, {"k8s-pod-network.h2"}, "after the next ADD");
                   must(e.make("n1").release_handle("k8s-pod-network.h2"), "DEL h2");
                   audit(e.ds, {}, "after its DEL");
                 }});
  // An ADD that borrows: the only block is n1's; n2 writes its IPAMHandle, then the block.
  out.push_back({"ADD borrowing from another node's block",
                 [](const env& e) {
                   put_pool(e.ds, "p", "10.231.0.0/30", 30);
                   auto a = e.make("n1").assign(add_request("k8s-pod-network.a1", "n1"));
                   REQUIRE(a);
                 },
                 "n2",
                 [](ci::ipam& i) -> cnf::result<void> {
                   auto r = i.assign(add_request("k8s-pod-network.b1", "n2"));
                   if (!r) return r.error();
                   return {};
                 },
                 [](const env& e) {
                   must(e.make("n2").release_handle("k8s-pod-network.b1"), "DEL b1");
                   audit(e.ds, {"k8s-pod-network.a1"}, "after the DEL of the interrupted ADD");
                   auto got = e.make("n2").assign(add_request("k8s-pod-network.b2", "n2"));
                   INFO((got ? std::string("ok") : got.error().message));
                   REQUIRE(got);
                   audit(e.ds, {"k8s-pod-network.a1", "k8s-pod-network.b2"}, "after the next ADD");
                   must(e.make("n2").release_handle("k8s-pod-network.b2"), "DEL b2");
                   audit(e.ds, {"k8s-pod-network.a1"}, "after its DEL");
                 }});
  // A DEL that empties a block (grace 0): the block write, then the release of the block
  // (pendingDeletion, block removed, affinity removed).
  out.push_back({"DEL emptying a block",
                 [](const env& e) {
                   put_pool(e.ds, "p", "10.232.0.0/28", 30);
                   REQUIRE(e.make("n1").assign(add_request("k8s-pod-network.h1", "n1")));
                 },
                 "n1",
                 [](ci::ipam& i) { return i.release_handle("k8s-pod-network.h1"); },
                 [](const env& e) {
                   must(e.make("n1").release_handle("k8s-pod-network.h1"), "DEL h1 again");
                   audit(e.ds, {}, "after the retried DEL");
                   auto got = e.make("n1").assign(add_request("k8s-pod-network.h2", "n1"));
                   REQUIRE(got);
                   audit(e.ds, {"k8s-pod-network.h2"}, "after the next ADD");
                   must(e.make("n1").release_handle("k8s-pod-network.h2"), "DEL h2");
                   audit(e.ds, {}, "after its DEL");
                 }});
  // A GC (no node: every node's) with one live attachment: addresses in two blocks, a
  // borrowed address with its IPAMHandle, a pending affinity of an interrupted claim, and
  // a block that empties (grace 0).
  out.push_back({"GC",
                 [](const env& e) {
                   put_pool(e.ds, "p", "10.233.0.0/28", 30);
                   auto n1 = e.make("n1");
                   for (int i = 1; i <= 5; ++i) REQUIRE(n1.assign(add_request("k8s-pod-network.g" + std::to_string(i), "n1")));
                   // n2 takes an address of n1's second block by asking for it (an IPAMHandle first).
                   auto r = add_request("k8s-pod-network.b1", "n2");
                   auto g5 = e.make("n1").addresses_of("k8s-pod-network.g5");
                   REQUIRE(g5);
                   REQUIRE(g5->size() == 1);
                   r.requested = {(*g5)[0].offset(1)};
                   r.num_v4 = 0;
                   auto b1 = e.make("n2").assign(r);
                   INFO((b1 ? std::string("ok") : b1.error().message));
                   REQUIRE(b1);
                   // An interrupted claim of n3: its pending affinity, no block.
                   ci::block_affinity a;
                   a.name = ci::affinity_name("n3", cnf::ip_prefix::parse("10.233.0.12/30").value());
                   a.state = "pending";
                   a.node = "n3";
                   a.cidr = cnf::ip_prefix::parse("10.233.0.12/30").value();
                   REQUIRE(e.ds.create(ci::to_resource(a)));
                 },
                 "",
                 [](ci::ipam& i) -> cnf::result<void> {
                   auto r = i.gc("k8s-pod-network.", {"k8s-pod-network.g1"});
                   if (!r) return r.error();
                   return {};
                 },
                 [](const env& e) {
                   auto r = e.make("").gc("k8s-pod-network.", {"k8s-pod-network.g1"});
                   INFO((r ? std::string("ok") : r.error().message));
                   REQUIRE(r);
                   audit(e.ds, {"k8s-pod-network.g1"}, "after the next GC");
                 }});
  return out;
}

/// How a backend opens its store; `reopen` (optional) opens a new handle on the same
/// store from a forked child (a real kill there).
struct backend {
  std::string name;
  cnf::any_datastore ds;
  std::function<cnf::result<cnf::any_datastore>()> reopen;
};

struct counts {
  std::size_t runs = 0, forked = 0;
};

inline counts run_scenarios(const backend& b, const std::string& lock_dir) {
  counts c;
  env e{b.ds, lock_dir};
  const fault_store::mode modes[] = {fault_store::mode::die_before, fault_store::mode::die_after, fault_store::mode::fail_once};
  const char* mode_names[] = {"die_before", "die_after", "fail_once"};
  for (auto& sc : scenarios()) {
    // The writes the operation makes when nothing fails.
    wipe(e.ds);
    sc.setup(e);
    fault_store counting(e.ds);
    {
      ci::ipam i(cnf::any_datastore(counting), sc.node, e.opts());
      must(sc.op(i), sc.name + " without faults");
    }
    const std::uint64_t n = counting.writes();
    INFO(b.name + ": " + sc.name);
    REQUIRE(n > 0);
    std::printf("%s: %s: %llu writes\n", b.name.c_str(), sc.name.c_str(), static_cast<unsigned long long>(n));
    for (std::uint64_t k = 1; k <= n; ++k)
      for (int m = 0; m < 3; ++m) {
        // Dying before write k leaves what dying after write k-1 leaves: only k = 1 adds a state.
        if (modes[m] == fault_store::mode::die_before && k > 1) continue;
        INFO(b.name + ": " + sc.name + ": interrupted at write " + std::to_string(k) + " of " + std::to_string(n) + " (" + mode_names[m] + ")");
        wipe(e.ds);
        sc.setup(e);
        fault_store f(e.ds);
        f.arm(k, modes[m]);
        {
          ci::ipam victim(cnf::any_datastore(f), sc.node, e.opts());
          (void)sc.op(victim);
        }
        CHECK(f.fired());
        sc.recover(e);
        ++c.runs;
      }
    if (!b.reopen) continue;
    // A real kill: a forked child runs the operation and _exits right after its k-th write.
    for (std::uint64_t k = 1; k <= n; ++k) {
      INFO(b.name + ": " + sc.name + ": process killed after write " + std::to_string(k));
      wipe(e.ds);
      sc.setup(e);
      std::fflush(nullptr);
      pid_t pid = ::fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        auto ds = b.reopen();
        if (!ds) ::_exit(2);
        fault_store f(*ds);
        f.arm(k, fault_store::mode::exit_after);
        ci::ipam victim(cnf::any_datastore(f), sc.node, e.opts());
        (void)sc.op(victim);
        ::_exit(3);  // the k-th write never came
      }
      int st = 0;
      REQUIRE(::waitpid(pid, &st, 0) == pid);
      CHECK(WIFEXITED(st));
      CHECK(WEXITSTATUS(st) == 137);
      sc.recover(e);
      ++c.forked;
    }
  }
  return c;
}

/// Issue 19's reproduction: a claim's affinity put back to pending, an ADD from that
/// block, both DELs: nothing in use, check clean.
inline void reproduction(const cnf::any_datastore& ds, const std::string& lock_dir) {
  env e{ds, lock_dir};
  wipe(ds);
  put_pool(ds, "p", "10.234.0.0/24", 30);
  REQUIRE(e.make("n1").assign(add_request("k8s-pod-network.p1", "n1")));
  cnf::list_options lo;
  lo.kind = "BlockAffinity";
  auto affs = ds.list_all(lo);
  REQUIRE(affs);
  REQUIRE(affs->items.size() == 1);
  auto a = ci::parse_affinity(affs->items[0]);
  REQUIRE(a);
  REQUIRE(a->state == "confirmed");
  a->state = "pending";
  auto next = ci::to_resource(*a);
  next.revision = affs->items[0].revision;
  REQUIRE(ds.update(next));
  auto p2 = e.make("n1").assign(add_request("k8s-pod-network.p2", "n1"));
  REQUIRE(p2);
  must(e.make("n1").release_handle("k8s-pod-network.p2"), "DEL p2");
  must(e.make("n1").release_handle("k8s-pod-network.p1"), "DEL p1");
  auto u = ci::usage(ds);
  REQUIRE(u);
  std::uint64_t in_use = 0;
  for (auto& p : u->pools) in_use += p.in_use;
  CHECK(in_use == 0);
  audit(ds, {}, "the reproduction of issue 19");
}

}  // namespace recovery_test
