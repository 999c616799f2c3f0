// calico-ipam: assignment, release and garbage collection over compare-and-swap writes.
#include "internal.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

CNF_BEGIN_NAMESPACE
namespace calico_ipam {

namespace json = boost::json;
using namespace detail;

namespace detail {
namespace {

using steady = std::chrono::steady_clock;

resource_key block_key(const std::string& name) { return {std::string(kinds::ipam_block), "", name}; }
resource_key affinity_key(const std::string& node, const ip_prefix& cidr) {
  return {std::string(kinds::block_affinity), "", affinity_name(node, cidr)};
}
resource_key handle_key(const std::string& h) { return {std::string(kinds::ipam_handle), "", handle_name(h)}; }

bool retryable(const error& e) { return e.code == errc::conflict || e.code == errc::not_found; }

void backoff(std::uint32_t attempt) {
  if (attempt < 2) return;
  thread_local std::minstd_rand rng(static_cast<unsigned>(std::hash<std::thread::id>{}(std::this_thread::get_id()) ^
                                                          static_cast<std::size_t>(steady::now().time_since_epoch().count())));
  std::uint32_t span = std::min<std::uint32_t>(attempt, 20) * 250;
  std::this_thread::sleep_for(std::chrono::microseconds(rng() % (span + 1)));
}

error with_context(const error& e, const std::string& what) { return error(e.code, what + ": " + e.message); }

bool is_plain(std::string_view node) { return affinity_name(node, ip_prefix::parse("10.0.0.0/26").value()).starts_with(std::string(node) + "-"); }

}  // namespace

// ---- snapshot of pools, IPAMConfig, reservations -----------------------------------------

result<std::shared_ptr<const snapshot>> state::load(bool force) {
  auto now = steady::now();
  {
    std::lock_guard lk(snap_mu);
    if (!force && snap && opts.cache_ttl.count() > 0 && now - snap->fetched < opts.cache_ttl) return snap;
  }
  auto sn = std::make_shared<snapshot>();
  list_options lo;
  lo.kind = std::string(kinds::ip_pool);
  auto pools = ds.list_all(lo);
  if (!pools) return with_context(pools.error(), "listing IPPools");
  // The profile's pools are made for each family that has none yet, as Calico's node creates
  // its default IPv4 and IPv6 pools. Per family, not "when there are no pools at all": nodes
  // start together, and a node that listed after another made the IPv4 pool but before it
  // made the IPv6 one would otherwise never have an IPv6 pool (a dual-stack ADD would fail).
  // A pool whose cidr cannot be read counts for both families, so nothing is made beside it.
  auto has_family = [&](ip_family f) {
    for (auto& r : pools->items) {
      auto spec = spec_object(r);
      const auto* c = spec ? spec->if_contains("cidr") : nullptr;
      auto cidr = c && c->is_string() ? ip_prefix::parse(std::string_view(c->get_string()), true) : result<ip_prefix>(error(errc::invalid, "no cidr"));
      if (!cidr || cidr->family() == f) return true;
    }
    return false;
  };
  const bool have_v4 = has_family(ip_family::v4), have_v6 = has_family(ip_family::v6);
  if (std::any_of(opts.default_pools.begin(), opts.default_pools.end(),
                  [&](const pool& p) { return !(p.cidr.family() == ip_family::v4 ? have_v4 : have_v6); })) {
    for (auto& p : opts.default_pools) {
      if (p.cidr.family() == ip_family::v4 ? have_v4 : have_v6) continue;
      auto c = ds.create(to_resource(p));
      if (!c && c.error().code != errc::already_exists) return with_context(c.error(), "creating default IPPool/" + p.name);
      if (c) log->info("calico-ipam: created IPPool/" + p.name + " (" + p.cidr.to_string() + ", blockSize " + std::to_string(p.block_size) + ")");
    }
    pools = ds.list_all(lo);
    if (!pools) return with_context(pools.error(), "listing IPPools");
  }
  sn->pool_problems = validate_pools(pools->items, &sn->pools);
  for (auto& r : pools->items)
    if (std::none_of(sn->pools.begin(), sn->pools.end(), [&](const pool& p) { return p.name == r.name; }))
      sn->invalid_pool_names.push_back(r.name);
  for (auto& e : sn->pool_problems) log->warn("calico-ipam: skipping pool: " + e.message);

  auto cfg = ds.get({std::string(kinds::ipam_config), "", std::string(config_name)});
  if (cfg) {
    auto c = parse_config(*cfg);
    if (!c) return c.error();
    sn->config = *c;
  } else if (cfg.error().code != errc::not_found) {
    return with_context(cfg.error(), "reading IPAMConfig/default");
  }

  lo.kind = std::string(kinds::ip_reservation);
  auto rs = ds.list_all(lo);
  if (!rs) return with_context(rs.error(), "listing IPReservations");
  sn->reserved = std::make_shared<reserved_set>();
  std::vector<reservation> parsed;
  for (auto& r : rs->items) {
    auto p = parse_reservation(r);
    if (!p) {
      // A reservation we cannot read might cover anything: refuse to guess.
      return error(errc::invalid, p.error().message + " (fix or delete the IPReservation; no address is assigned until then)");
    }
    for (auto& c : p->cidrs) sn->reserved->cidrs.emplace_back(c, r.name);
    parsed.push_back(std::move(*p));
  }
  for (auto& e : validate_reservations(parsed, sn->pools)) log->warn("calico-ipam: " + e.message);
  sn->fetched = now;
  std::lock_guard lk(snap_mu);
  snap = sn;
  return std::shared_ptr<const snapshot>(sn);
}

result<std::map<std::string, std::string>> state::labels_of(const std::string& n) {
  auto now = steady::now();
  {
    std::lock_guard lk(snap_mu);
    auto it = node_labels.find(n);
    if (it != node_labels.end() && opts.cache_ttl.count() > 0 && now - it->second.second < opts.cache_ttl) return it->second.first;
  }
  std::map<std::string, std::string> labels;
  auto g = ds.get({std::string(kinds::node), "", n});
  if (g) labels = g->labels;
  else if (g.error().code != errc::not_found) return with_context(g.error(), "reading Node/" + n);
  std::lock_guard lk(snap_mu);
  node_labels[n] = {labels, now};
  return labels;
}

// ---- the node lock ------------------------------------------------------------------------

namespace {
/// Lock files this thread holds, by path, with their depth: a holder that takes its own
/// node's lock again (a repair inside a claim) must not wait for itself.
thread_local std::map<std::string, int> held_locks;

std::string default_lock_dir() {
  std::error_code ec;
  std::filesystem::create_directories("/run/cnf", ec);
  if (!ec && ::access("/run/cnf", W_OK) == 0) return "/run/cnf";
  return (std::filesystem::temp_directory_path(ec) / ("cnf-ipam-locks-" + std::to_string(::getuid()))).string();
}
}  // namespace

result<node_lock> node_lock::acquire(const std::string& dir, const std::string& node, std::chrono::milliseconds timeout) {
  std::string path = dir + "/ipam-" + handle_name(node.empty() ? std::string_view("-") : std::string_view(node)) + ".lock";
  node_lock l;
  if (auto it = held_locks.find(path); it != held_locks.end()) {
    ++it->second;
    l.key_ = path;
    return l;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return error(errc::unavailable, "calico-ipam: cannot open the node lock file " + path + ": " + std::strerror(errno) +
                                        " (set [ipam] lock_dir to a writable directory)");
  auto give_up = steady::now() + timeout;
  for (std::uint32_t round = 0;; ++round) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) break;
    if (errno != EWOULDBLOCK && errno != EINTR) {
      int e = errno;
      ::close(fd);
      return error(errc::unavailable, "calico-ipam: flock " + path + ": " + std::strerror(e));
    }
    if (steady::now() >= give_up) {
      ::close(fd);
      return error(errc::unavailable, "calico-ipam: waited " + std::to_string(timeout.count()) + " ms for " + path +
                                          ": other processes of node " + node +
                                          " held it all that time (assignments or block claims in progress); try again");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::min<std::uint32_t>(200u + round * 200u, 20000u)));
  }
  l.fd_ = fd;
  l.key_ = path;
  held_locks[path] = 1;
  return l;
}

void node_lock::release() noexcept {
  if (key_.empty()) return;
  auto it = held_locks.find(key_);
  if (it != held_locks.end() && --it->second <= 0) held_locks.erase(it);
  if (fd_ >= 0) ::close(fd_);  // closing the only descriptor releases the flock
  fd_ = -1;
  key_.clear();
}

result<node_lock> state::lock(const std::string& n) {
  std::string dir;
  {
    std::lock_guard lk(snap_mu);
    if (opts.lock_dir.empty()) opts.lock_dir = default_lock_dir();
    dir = opts.lock_dir;
  }
  return node_lock::acquire(dir, n, opts.lock_timeout);
}

// ---- the node's blocks ------------------------------------------------------------------

result<std::vector<ip_prefix>> state::affine_blocks(const std::string& n, bool refresh) {
  if (!refresh) {
    std::lock_guard lk(affine_mu);
    auto it = affine.find(n);
    if (it != affine.end() && it->second.valid) return it->second.blocks;
  }
  list_options lo;
  lo.kind = std::string(kinds::block_affinity);
  if (is_plain(n)) lo.name_prefix = n + "-";
  auto l = ds.list_all(lo);
  if (!l) return with_context(l.error(), "listing BlockAffinities of node " + n);
  std::vector<ip_prefix> out;
  for (auto& r : l->items) {
    auto a = parse_affinity(r);
    if (!a) {
      log->debug("calico-ipam: ignoring " + a.error().message);
      continue;
    }
    if (a->node != n || a->deleted) continue;
    // Not confirmed: a claim or a release in progress or interrupted. Wait for the first
    // (its claimer holds the lock), finish or undo the second.
    if (a->state != "confirmed") return settle(n);
    out.push_back(a->cidr);
  }
  std::sort(out.begin(), out.end());
  std::lock_guard lk(affine_mu);
  affine[n] = {out, true};
  return out;
}

result<std::vector<ip_prefix>> state::settle(const std::string& n) {
  auto held = lock(n);
  if (!held) return held.error();
  // A write that finds the affinity changed since it was listed (the claimer that held the
  // lock before finished it, or this process's list was older than the store) lists again.
  for (int attempt = 1;; ++attempt) {
    auto r = settle_locked(n);
    if (r || r.error().code != errc::conflict || attempt == 5) return r;
    log->debug("calico-ipam: settling node " + n + ": " + r.error().message + "; listing again");
  }
}

result<std::vector<ip_prefix>> state::settle_locked(const std::string& n) {
  list_options lo;
  lo.kind = std::string(kinds::block_affinity);
  if (is_plain(n)) lo.name_prefix = n + "-";
  auto l = ds.list_all(lo);
  if (!l) return with_context(l.error(), "listing BlockAffinities of node " + n);
  std::vector<ip_prefix> out;
  for (auto& r : l->items) {
    auto a = parse_affinity(r);
    if (!a || a->node != n || a->deleted) continue;
    if (a->state == "confirmed") {
      out.push_back(a->cidr);
      continue;
    }
    std::string name = block_name(a->cidr);
    auto gb = ds.get(block_key(name));
    if (!gb && gb.error().code != errc::not_found) return with_context(gb.error(), "reading IPAMBlock/" + name);
    std::optional<block> pb;
    if (gb) {
      auto p = parse_block(*gb);
      if (!p) {
        // Which node it names is unknown: leave the affinity for a person to look at.
        log->error("calico-ipam: not settling " + where(r) + ": " + p.error().message);
        out.push_back(a->cidr);
        continue;
      }
      pb = std::move(*p);
    }
    const std::string was = a->state;
    if (pb && !pb->deleted && pb->affinity == "host:" + n) {
      a->state = "confirmed";
      auto next = to_resource(*a);
      next.name = r.name;
      next.revision = r.revision;
      next.labels = r.labels;
      auto u = ds.update(next);
      if (!u) return with_context(u.error(), "confirming " + where(r));
      log->info("calico-ipam: " + where(r) + " was " + was + " and its block names node " + n + ": confirmed (" +
                (was == "pending" ? "an interrupted claim finished" : "an interrupted release undone") + ")");
      out.push_back(a->cidr);
    } else {
      auto rm = ds.remove(r.key(), r.revision);
      if (!rm && rm.error().code != errc::not_found) return with_context(rm.error(), "removing " + where(r));
      log->info("calico-ipam: " + where(r) + " was " + was + " and " +
                (pb ? "its block names " + pb->affinity.value_or("no node") : std::string("its block does not exist")) + ": removed (" +
                (was == "pending" ? "an interrupted claim undone" : "an interrupted release finished") + ")");
    }
  }
  std::sort(out.begin(), out.end());
  if (n == node) unsettled = false;
  std::lock_guard lk(affine_mu);
  affine[n] = {out, true};
  return out;
}

void state::forget_affine(const std::string& n) {
  std::lock_guard lk(affine_mu);
  affine[n].valid = false;
}

void state::remember_handle(const std::string& h, std::vector<ip_prefix> blocks) {
  std::lock_guard lk(mine_mu);
  if (mine.size() >= 200000) mine.clear();
  auto& v = mine[h];
  for (auto& b : blocks)
    if (std::find(v.begin(), v.end(), b) == v.end()) v.push_back(b);
}

std::optional<std::vector<ip_prefix>> state::take_handle(const std::string& h) {
  std::lock_guard lk(mine_mu);
  auto it = mine.find(h);
  if (it == mine.end()) return std::nullopt;
  auto v = std::move(it->second);
  mine.erase(it);
  return v;
}

// ---- block slots and the write combiner -------------------------------------------------------

std::shared_ptr<block_slot> state::slot(const std::string& name) {
  std::lock_guard lk(slots_mu);
  auto& s = slots[name];
  if (!s) s = std::make_shared<block_slot>();
  return s;
}

void state::remember(block_slot& s, const resource& r) {
  ++s.version;
  s.missing = false;
  s.res = r;
  auto p = parse_block(r);
  if (p) {
    s.parsed = std::move(*p);
    s.corrupt.reset();
  } else {
    s.parsed.reset();
    s.corrupt = p.error();
  }
}

void state::drop_locked(block_slot& s, bool missing) {
  ++s.version;
  s.res.reset();
  s.parsed.reset();
  s.corrupt.reset();
  s.missing = missing;
}

void state::forget(block_slot& s) {
  std::lock_guard lk(s.mu);
  drop_locked(s, false);
}

std::optional<block> state::cached(const std::string& name) {
  auto s = slot(name);
  std::lock_guard lk(s->mu);
  if (s->parsed && !s->missing) return s->parsed;
  return std::nullopt;
}

std::optional<std::uint32_t> state::cached_free(const std::string& name, const reserved_set& reserved) {
  auto s = slot(name);
  std::lock_guard lk(s->mu);
  if (s->parsed && !s->missing && !s->parsed->deleted) return reserved.free_in(*s->parsed);
  return std::nullopt;
}

result<std::vector<listed_block>> state::list_blocks() {
  ++stats.block_lists;
  list_options lo;
  lo.kind = std::string(kinds::ipam_block);
  auto l = ds.list_all(lo);
  if (!l) return with_context(l.error(), "listing IPAMBlocks");
  std::vector<listed_block> out;
  out.reserve(l->items.size());
  for (auto& r : l->items) {
    listed_block lb;
    lb.name = r.name;
    lb.revision = r.revision;
    auto s = slot(r.name);
    {
      std::lock_guard lk(s->mu);
      if (!(s->res && s->res->revision == r.revision && !s->missing)) remember(*s, r);
      lb.parsed = s->parsed;
      lb.problem = s->corrupt;
    }
    lb.spec = std::move(r.spec);
    out.push_back(std::move(lb));
  }
  return out;
}

namespace {
bool apply(block& b, block_op& op) {
  op.out = block_op::outcome::ok;
  op.got.clear();
  op.already.clear();
  op.released.clear();
  switch (op.what) {
    case block_op::kind::allocate: {
      if (!op.affine_to.empty() && b.affinity != "host:" + op.affine_to) {
        op.out = block_op::outcome::affinity_mismatch;
        return false;
      }
      static const reserved_set none;
      auto ords = take(b, op.want, op.handle, op.secondary, op.reserved ? *op.reserved : none);
      for (auto o : ords) op.got.push_back(b.address(o));
      return !ords.empty();
    }
    case block_op::kind::claim_exact: {
      if (!op.affine_to.empty() && b.affinity != "host:" + op.affine_to) {
        op.out = block_op::outcome::affinity_mismatch;
        return false;
      }
      block trial = b;
      bool changed = false;
      for (auto& a : op.addresses) {
        auto o = trial.ordinal(a);
        if (!o) {
          op.out = block_op::outcome::failed;
          op.err = error(errc::invalid, a.to_string() + " is not in block " + trial.cidr.to_string());
        } else if (trial.allocations[*o]) {
          auto h = trial.handle_of(*o);
          if (h == op.handle) {
            op.already.push_back(a);
            continue;
          }
          op.out = block_op::outcome::failed;
          op.err = error(errc::already_exists, a.to_string() + " is already assigned (handle '" + h + "', IPAMBlock/" + block_name(trial.cidr) + ")");
        } else if (const std::string* r = op.reserved ? op.reserved->holder(a) : nullptr) {
          op.out = block_op::outcome::failed;
          op.err = error(errc::invalid, a.to_string() + " is reserved by IPReservation/" + *r);
        } else {
          take_ordinal(trial, *o, op.handle, op.secondary);
          op.got.push_back(a);
          changed = true;
          continue;
        }
        op.got.clear();
        op.already.clear();
        return false;
      }
      if (changed) b = std::move(trial);
      return changed;
    }
    case block_op::kind::release_handles:
    case block_op::kind::release_addresses: {
      std::vector<std::uint32_t> ords;
      auto consider = [&](std::uint32_t o) {
        if (!b.allocations[o]) return;
        auto h = b.handle_of(o);
        if (op.what == block_op::kind::release_handles ? op.handles.count(h) == 0 : (!op.only_handle.empty() && h != op.only_handle)) return;
        if (!op.only_node.empty() && b.attributes[*b.allocations[o]].node() != op.only_node) return;
        if (auto it = op.expected.find(b.address(o)); it != op.expected.end() && !it->second.empty() && it->second != h) return;
        ords.push_back(o);
        op.released.emplace_back(b.address(o), h);
      };
      if (op.what == block_op::kind::release_handles) {
        for (std::uint32_t o = 0; o < b.size(); ++o) consider(o);
      } else {
        for (auto& a : op.addresses)
          if (auto o = b.ordinal(a)) consider(*o);
      }
      if (ords.empty()) return false;
      free_ordinals(b, ords);
      return true;
    }
  }
  return false;
}

void finish(std::vector<std::shared_ptr<block_op>>& batch, block_op::outcome out, const error& e = {}) {
  for (auto& op : batch) {
    op->out = out;
    op->err = e;
    op->got.clear();
    op->already.clear();
    op->released.clear();
  }
}
}  // namespace

void state::run(const std::string& name, const std::shared_ptr<block_op>& op) {
  auto s = slot(name);
  std::unique_lock lk(s->mu);
  s->queue.push_back(op);
  while (!op->done) {
    if (s->busy) {
      s->cv.wait(lk);
      continue;
    }
    s->busy = true;
    auto batch = std::move(s->queue);
    s->queue.clear();
    lk.unlock();
    try {
      process(name, *s, batch);
    } catch (const std::exception& e) {
      forget(*s);  // it may hold changes that were never written
      finish(batch, block_op::outcome::failed, error(errc::internal, std::string("IPAMBlock/") + name + ": " + e.what()));
    }
    lk.lock();
    for (auto& o : batch) o->done = true;
    s->busy = false;
    s->cv.notify_all();
  }
}

void state::process(const std::string& name, block_slot& s, std::vector<std::shared_ptr<block_op>>& batch) {
  bool fresh = false, need_read = false;
  for (std::uint32_t attempt = 0;; ++attempt) {
    {
      std::lock_guard lk(s.mu);
      if (!s.res && !s.missing) need_read = true;
    }
    if (need_read) {
      ++stats.block_reads;
      auto g = ds.get(block_key(name));
      std::lock_guard lk(s.mu);
      if (g) {
        remember(s, *g);
      } else if (g.error().code == errc::not_found) {
        drop_locked(s, true);
      } else {
        finish(batch, block_op::outcome::failed, with_context(g.error(), "reading IPAMBlock/" + name));
        return;
      }
      fresh = true;
      need_read = false;
    }
    resource cur;  // everything but the spec, which is rewritten
    bool changed = false;
    std::uint64_t version = 0;
    {
      std::lock_guard lk(s.mu);
      if (s.missing || (s.parsed && s.parsed->deleted)) {
        if (!fresh) {
          need_read = true;
          continue;
        }
        finish(batch, block_op::outcome::gone);
        return;
      }
      if (s.corrupt) {
        if (!fresh) {
          need_read = true;
          continue;
        }
        log->error("calico-ipam: not using " + s.corrupt->message);
        finish(batch, block_op::outcome::corrupt, *s.corrupt);
        return;
      }
      cur.kind = s.res->kind;
      cur.ns = s.res->ns;
      cur.name = s.res->name;
      cur.labels = s.res->labels;
      cur.revision = s.res->revision;
      // The ops change the cached block in place: copying a block of 64 allocations for
      // every assignment was a tenth of the agent's CPU per IPAM ADD. Until the write
      // below succeeds the cache holds changes nobody has stored (harmless to this
      // process's other readers: they only choose blocks, and every change is a
      // compare-and-swap against the datastore). A failed write drops the cache, and so
      // does a successful one if anything replaced the copy meanwhile (s.version).
      for (auto& op : batch) changed = apply(*s.parsed, *op) || changed;
      if (changed) cur.spec = to_json(*s.parsed);
      version = s.version;
    }
    if (!changed) {
      if (fresh) return;
      need_read = true;  // a cached copy may be stale: decide on the current one
      continue;
    }
    ++stats.block_writes;
    auto u = ds.update(cur);
    if (u) {
      stats.combined_ops += batch.size();
      std::lock_guard lk(s.mu);
      // The cache is what was written, unless another thread of this process replaced
      // or dropped it meanwhile (a list, a read for a requested address): then whatever
      // it holds may not match any revision, and it is read again when next needed.
      if (s.version == version) s.res = std::move(*u);
      else drop_locked(s, false);
      return;
    }
    forget(s);
    if (!retryable(u.error())) {
      finish(batch, block_op::outcome::failed, with_context(u.error(), "writing IPAMBlock/" + name));
      return;
    }
    ++stats.block_conflicts;
    if (attempt + 1 >= retries()) {
      finish(batch, block_op::outcome::failed,
             error(errc::unavailable, "IPAMBlock/" + name + ": gave up after " + std::to_string(retries()) +
                                          " compare-and-swap attempts (others keep changing it); try again"));
      return;
    }
    fresh = false;
    need_read = true;
    backoff(attempt);
  }
}

// ---- claiming and releasing blocks -----------------------------------------------------------

result<void> state::confirm_affinity(const resource& pending) {
  resource r = pending;
  for (std::uint32_t attempt = 0; attempt < retries(); ++attempt) {
    auto a = parse_affinity(r);
    if (!a) return a.error();
    if (a->state == "confirmed") return {};
    a->state = "confirmed";
    auto next = to_resource(*a);
    next.revision = r.revision;
    next.labels = r.labels;
    auto u = ds.update(next);
    if (u) return {};
    if (u.error().code == errc::not_found) {
      // Someone (gc) removed the pending claim between our writes; the block is ours, so
      // write the affinity back.
      next.revision.clear();
      auto c = ds.create(next);
      if (c || c.error().code == errc::already_exists) {
        if (c) return {};
      } else {
        return c.error();
      }
    } else if (u.error().code != errc::conflict) {
      return u.error();
    }
    auto g = ds.get(r.key());
    if (!g) {
      if (g.error().code == errc::not_found) continue;
      return g.error();
    }
    r = *g;
    backoff(attempt);
  }
  return error(errc::unavailable, "BlockAffinity/" + pending.name + ": could not confirm the claim (too much contention)");
}

result<bool> state::try_claim(const ip_prefix& cidr, const std::string& n) {
  block_affinity a;
  a.name = affinity_name(n, cidr);
  a.state = "pending";
  a.node = n;
  a.cidr = cidr;
  resource pending;
  auto c = ds.create(to_resource(a));
  if (c) {
    pending = *c;
  } else if (c.error().code == errc::already_exists) {
    auto g = ds.get(affinity_key(n, cidr));
    if (!g) return g.error().code == errc::not_found ? result<bool>(false) : result<bool>(g.error());
    auto pa = parse_affinity(*g);
    if (!pa) {
      log->error("calico-ipam: not claiming " + cidr.to_string() + ": " + pa.error().message);
      return false;
    }
    if (pa->state == "confirmed") {
      auto gb = ds.get(block_key(block_name(cidr)));
      if (gb) {
        auto pb = parse_block(*gb);
        return pb && pb->affinity == "host:" + n && !pb->deleted;
      }
    }
    pa->state = "pending";
    auto next = to_resource(*pa);
    next.revision = g->revision;
    next.labels = g->labels;
    auto u = ds.update(next);
    if (!u) {
      if (!retryable(u.error())) unsettled = true;  // it may have been written
      return retryable(u.error()) ? result<bool>(false) : result<bool>(u.error());
    }
    pending = *u;
  } else {
    return with_context(c.error(), "claiming block " + cidr.to_string() + " for node " + n);
  }

  // From here until the affinity is confirmed or removed, an interruption leaves a pending
  // affinity: the next operation of this node settles it (see settle).
  auto abandon = [&] {
    forget_affine(n);
    auto rm = ds.remove(pending.key(), pending.revision);
    if (!rm && rm.error().code != errc::not_found) unsettled = true;
  };
  block b = block::make(cidr, "host:" + n);
  auto cb = ds.create(to_resource(b));
  if (cb) {
    ++stats.blocks_claimed;
    {
      auto s = slot(cb->name);
      std::lock_guard lk(s->mu);
      remember(*s, *cb);
    }
    log->info("calico-ipam: node " + n + " claimed block " + cidr.to_string());
    forget_affine(n);
    if (auto k = confirm_affinity(pending); !k) {
      unsettled = true;
      log->warn("calico-ipam: claimed " + cidr.to_string() + " but " + k.error().message + " (the next operation of node " + n + " confirms it)");
    }
    return true;
  }
  if (cb.error().code == errc::already_exists) {
    auto g = ds.get(block_key(block_name(cidr)));
    if (g) {
      auto pb = parse_block(*g);
      if (pb && pb->affinity == "host:" + n && !pb->deleted) {
        forget_affine(n);
        if (auto k = confirm_affinity(pending); !k) {
          unsettled = true;
          return k.error();
        }
        return true;
      }
    }
    abandon();
    return false;
  }
  // The create may have been applied (an etcd timeout): settle decides by the block.
  unsettled = true;
  abandon();
  return with_context(cb.error(), "creating IPAMBlock/" + block_name(cidr));
}

result<bool> state::release_affinity(const ip_prefix& cidr, const std::string& n, bool require_empty, const std::string& expected_revision) {
  std::optional<resource> aff;
  auto ga = ds.get(affinity_key(n, cidr));
  if (ga) {
    auto pa = parse_affinity(*ga);
    if (!pa) return pa.error();
    pa->state = "pendingDeletion";
    auto next = to_resource(*pa);
    next.revision = ga->revision;
    auto u = ds.update(next);
    if (!u) {
      if (!retryable(u.error())) unsettled = true;  // it may have been written
      return retryable(u.error()) ? result<bool>(false) : result<bool>(u.error());
    }
    aff = *u;
  } else if (ga.error().code != errc::not_found) {
    return ga.error();
  }
  // From here until the block and the affinity are gone, or the affinity is confirmed
  // again, an interruption leaves it pendingDeletion: settle finishes or undoes it.
  auto revert = [&] {
    forget_affine(n);
    if (!aff) return;
    auto pa = parse_affinity(*aff);
    if (!pa) return;
    pa->state = "confirmed";
    auto next = to_resource(*pa);
    next.revision = aff->revision;
    if (!ds.update(next)) unsettled = true;
  };
  std::string name = block_name(cidr);
  auto gb = ds.get(block_key(name));
  if (!gb) {
    if (gb.error().code != errc::not_found) {
      revert();
      return gb.error();
    }
  } else {
    auto pb = parse_block(*gb);
    if (!pb) {
      revert();
      return false;
    }
    if (pb->affinity != "host:" + n) {
      // The block belongs elsewhere now; our affinity is stale.
      if (aff) (void)ds.remove(aff->key(), aff->revision);
      forget_affine(n);
      return false;
    }
    if ((require_empty && !pb->empty()) || (!expected_revision.empty() && gb->revision != expected_revision)) {
      revert();
      return false;
    }
    auto r = ds.remove(gb->key(), gb->revision);
    if (!r && r.error().code != errc::not_found) {
      revert();
      return retryable(r.error()) ? result<bool>(false) : result<bool>(r.error());
    }
    auto s = slot(name);
    std::lock_guard lk(s->mu);
    drop_locked(*s, true);
  }
  if (aff) {
    auto rm = ds.remove(aff->key(), aff->revision);
    if (!rm && rm.error().code == errc::conflict) {
      // Changed meanwhile (gc, or a new claim of the same block by this node): remove it
      // only if it still points at no block of this node.
      auto again = ds.get(aff->key());
      auto blk = ds.get(block_key(name));
      bool claimed_again = blk && [&] { auto p = parse_block(*blk); return p && p->affinity == "host:" + n; }();
      if (again && !claimed_again) (void)ds.remove(again->key(), again->revision);
    } else if (!rm && rm.error().code != errc::not_found) {
      unsettled = true;
    }
  }
  forget_affine(n);
  log->info("calico-ipam: released block " + cidr.to_string() + " of node " + n);
  return true;
}

result<void> state::adjust_handle(const std::string& h, const ip_prefix& b, int delta, const std::string& owner) {
  if (delta == 0) return {};
  auto key = handle_key(h);
  std::string cidr = b.to_string();
  for (std::uint32_t attempt = 0; attempt < retries(); ++attempt) {
    auto g = ds.get(key);
    if (!g) {
      if (g.error().code != errc::not_found) return with_context(g.error(), "reading IPAMHandle/" + key.name);
      if (delta < 0) return {};
      handle_record rec;
      rec.handle_id = h;
      rec.blocks[cidr] = static_cast<std::uint32_t>(delta);
      ++stats.handle_writes;
      auto res = to_resource(rec);
      if (!owner.empty()) res.labels[std::string(node_label)] = owner;  // whose GC may remove it
      auto c = ds.create(res);
      if (c) return {};
      if (c.error().code == errc::already_exists) continue;
      return with_context(c.error(), "creating IPAMHandle/" + key.name);
    }
    auto rec = parse_handle(*g);
    if (!rec) return rec.error();
    if (rec->handle_id != h)
      return error(errc::internal, "IPAMHandle/" + key.name + " holds handle '" + rec->handle_id + "', not '" + h + "' (name collision)");
    std::int64_t now = static_cast<std::int64_t>(rec->blocks[cidr]) + delta;
    if (now <= 0) rec->blocks.erase(cidr);
    else rec->blocks[cidr] = static_cast<std::uint32_t>(now);
    ++stats.handle_writes;
    result<void> w;
    if (rec->blocks.empty()) {
      w = ds.remove(key, g->revision);
    } else {
      auto next = to_resource(*rec);
      next.revision = g->revision;
      next.labels = g->labels;
      auto u = ds.update(next);
      if (!u) w = u.error();
    }
    if (w) return {};
    if (!retryable(w.error())) return with_context(w.error(), "writing IPAMHandle/" + key.name);
    backoff(attempt);
  }
  return error(errc::unavailable, "IPAMHandle/" + key.name + ": gave up after " + std::to_string(retries()) + " attempts");
}

// ---- assignment ------------------------------------------------------------------------------

namespace {
struct progress {
  std::vector<assigned_address> out;
  std::vector<std::pair<ip_address, ip_prefix>> got;  ///< address, block
  std::map<ip_prefix, int> record;                      ///< IPAMHandle counts this request added
};

const pool* pool_of(const std::vector<pool>& pools, const ip_prefix& b) {
  for (auto& p : pools)
    if (p.cidr.contains(b)) return &p;
  return nullptr;
}
const pool* pool_of(const std::vector<pool>& pools, const ip_address& a) {
  for (auto& p : pools)
    if (p.cidr.contains(a)) return &p;
  return nullptr;
}

std::string describe(const pool& p) { return "IPPool/" + p.name + " (" + p.cidr.to_string() + ")"; }
}  // namespace

struct assigner {
  state& st;
  const snapshot& sn;
  const assign_request& req;
  std::string node;
  std::map<std::string, std::string> secondary;
  progress pr;
  std::vector<std::string> notes;  ///< why the node could not get more (for the exhaustion message)

  result<std::vector<pool>> eligible(ip_family f, const std::vector<ip_prefix>& hints) {
    std::vector<pool> out;
    if (!hints.empty()) {
      for (auto& h : hints) {
        if (h.family() != f) continue;
        auto it = std::find_if(sn.pools.begin(), sn.pools.end(), [&](const pool& p) { return p.cidr == h.canonical(); });
        if (it == sn.pools.end()) {
          std::string m = "requested pool " + h.to_string() + " is not a usable IPPool";
          for (auto& e : sn.pool_problems) m += "; " + e.message;
          return error(errc::invalid, m);
        }
        if (it->disabled) return error(errc::invalid, "requested " + describe(*it) + " is disabled (spec.disabled)");
        out.push_back(*it);
      }
      if (out.empty()) return error(errc::invalid, "the requested pools name no " + family_name(f) + " pool");
      return out;
    }
    std::vector<std::string> why;
    for (auto& p : sn.pools) {
      if (p.cidr.family() != f) continue;
      if (p.disabled) {
        why.push_back(describe(p) + " is disabled");
        continue;
      }
      if (p.node_selector != "all()") {
        auto labels = st.labels_of(node);
        if (!labels) return labels.error();
        auto m = selector_matches(p.node_selector, *labels);
        if (!m) return error(errc::invalid, "IPPool/" + p.name + ": spec.nodeSelector: " + m.error().message);
        if (!*m) {
          why.push_back(describe(p) + " nodeSelector '" + p.node_selector + "' does not match node " + node);
          continue;
        }
      }
      out.push_back(p);
    }
    if (out.empty()) {
      std::string m = "no " + family_name(f) + " IPPool is usable for node " + node;
      if (why.empty() && sn.pool_problems.empty()) m += ": there is no " + family_name(f) + " IPPool";
      for (auto& w : why) m += "; " + w;
      for (auto& e : sn.pool_problems) m += "; " + e.message;
      return error(errc::invalid, m);
    }
    return out;
  }

  /// Runs one op on a block and records what it got.
  result<block_op::outcome> from_block(const ip_prefix& b, const pool& p, std::uint32_t want, bool affine, std::uint32_t& need) {
    auto op = std::make_shared<block_op>();
    op->what = block_op::kind::allocate;
    op->want = want;
    op->handle = req.handle;
    op->secondary = secondary;
    op->affine_to = affine ? node : std::string();
    op->reserved = sn.reserved;
    st.run(block_name(b), op);
    if (op->out == block_op::outcome::failed) return op->err;
    for (auto& a : op->got) {
      pr.out.push_back({ip_prefix(a, a.bits()), std::nullopt, p.cidr.to_string()});
      pr.got.emplace_back(a, b);
    }
    need -= static_cast<std::uint32_t>(std::min<std::size_t>(need, op->got.size()));
    return op->out;
  }

  result<std::uint32_t> count_affine(ip_family f) {
    auto a = st.affine_blocks(node, true);
    if (!a) return a.error();
    return static_cast<std::uint32_t>(std::count_if(a->begin(), a->end(), [&](const ip_prefix& p) { return p.family() == f; }));
  }

  /// Whether `b` is a live block of this node, in `pools`, with an address to give.
  bool own_with_room(const block& b, const std::vector<pool>& pools) const {
    return !b.deleted && b.affinity == "host:" + node && pool_of(pools, b.cidr) && sn.reserved->free_in(b) > 0;
  }

  /// Block `name` read afresh: its CIDR when it is own_with_room.
  std::optional<ip_prefix> reread_own_with_room(const std::string& name, const std::vector<pool>& pools) {
    auto g = st.ds.get(block_key(name));
    if (!g) return std::nullopt;
    auto b = parse_block(*g);
    if (!b || !own_with_room(*b, pools)) return std::nullopt;
    st.forget_affine(node);
    return b->cidr;
  }

  /// A block for this node to allocate from: one of its own with room that the cached
  /// affinity list missed (one another process of this node claimed while this one waited
  /// for the lock, say), a new one, or a reclaimed empty one of another node. Called with
  /// the node's lock held.
  result<std::optional<ip_prefix>> claim(const std::vector<pool>& pools) {
    auto all = st.list_blocks();
    if (!all) return all.error();
    std::unordered_map<std::string, const listed_block*> by_name;
    for (auto& lb : *all) by_name[lb.name] = &lb;
    for (auto& lb : *all)
      if (lb.parsed && own_with_room(*lb.parsed, pools)) {
        st.forget_affine(node);
        return std::optional<ip_prefix>(lb.parsed->cidr);
      }

    std::uint64_t seed = fnv1a(node);
    for (auto& p : pools) {
      unsigned bits = p.cidr.address().bits();
      unsigned span = p.block_size - p.cidr.length();
      u128 count = u128(1) << std::min(span, 127u);
      u128 start = u128(seed) % count;
      std::vector<ip_prefix> odd;  // existing blocks of another size inside this pool
      std::size_t taken = 0;
      for (auto& lb : *all) {
        if (!lb.parsed || !p.cidr.contains(lb.parsed->cidr)) continue;
        ++taken;
        if (lb.parsed->cidr.length() != p.block_size) odd.push_back(lb.parsed->cidr);
      }
      // Walk from this node's starting point; stop after every existing block could have
      // been passed once (plus reserved ones, bounded).
      u128 limit = std::min<u128>(count, u128(taken + all->size() + 65536));
      for (u128 i = 0; i < limit; ++i) {
        u128 idx = (start + i) % count;
        ip_prefix cand(add(p.cidr.network(), idx << (bits - p.block_size)), p.block_size);
        std::string name = block_name(cand);
        if (by_name.count(name)) continue;
        if (sn.reserved->covers(cand)) continue;
        if (std::any_of(odd.begin(), odd.end(), [&](const ip_prefix& o) { return o.overlaps(cand); })) continue;
        auto c = st.try_claim(cand, node);
        if (!c) return c.error();
        if (*c) return std::optional<ip_prefix>(cand);
        // Taken since the listing: by another process of this same node (the walk starts
        // at the same place for all of them), it is ours to use.
        if (auto own = reread_own_with_room(name, pools)) return std::optional<ip_prefix>(*own);
      }
    }

    // No unclaimed block left: take over an empty block another node claimed long ago.
    auto now = sys_clock::now();
    for (auto& lb : *all) {
      if (!lb.parsed || lb.parsed->deleted || !pool_of(pools, lb.parsed->cidr) || !lb.parsed->empty()) continue;
      std::string owner = lb.parsed->affinity_node();
      if (owner == node) continue;
      auto claimed = parse_time(lb.parsed->affinity_claim_time);
      if (claimed && now - *claimed < st.opts.reclaim_age) continue;
      if (sn.reserved->covers(lb.parsed->cidr)) continue;
      if (!owner.empty()) {
        auto r = st.release_affinity(lb.parsed->cidr, owner, true, lb.revision);
        if (!r) return r.error();
        if (!*r) continue;
      } else {
        auto r = st.ds.remove(block_key(lb.name), lb.revision);
        if (!r) continue;
      }
      st.log->info("calico-ipam: node " + node + " reclaims empty block " + lb.parsed->cidr.to_string() + " from " +
                   (owner.empty() ? std::string("no node") : "node " + owner));
      auto c = st.try_claim(lb.parsed->cidr, node);
      if (!c) return c.error();
      if (*c) return std::optional<ip_prefix>(lb.parsed->cidr);
    }
    return std::optional<ip_prefix>();
  }

  result<void> auto_assign(ip_family f, std::uint32_t n, const std::vector<ip_prefix>& hints) {
    auto pools = eligible(f, hints);
    if (!pools) return pools.error();
    std::uint32_t need = n;

    // 1. the node's own blocks
    std::set<ip_prefix> tried;
    for (int pass = 0; pass < 2 && need > 0; ++pass) {
      auto blocks = st.affine_blocks(node, pass == 1 || (node == st.node && st.unsettled));
      if (!blocks) return blocks.error();
      // Blocks this process last saw full go last: a full block is read again before it
      // is passed over (the copy may be stale), which a long-lived process (the agent)
      // with many full blocks would otherwise pay on every assignment.
      std::stable_partition(blocks->begin(), blocks->end(),
                            [&](const ip_prefix& b) { return st.cached_free(block_name(b), *sn.reserved).value_or(1) > 0; });
      for (auto& b : *blocks) {
        if (need == 0) break;
        const pool* p = pool_of(*pools, b);
        if (!p || !tried.insert(b).second) continue;
        auto o = from_block(b, *p, need, true, need);
        if (!o) return o.error();
        if (*o == block_op::outcome::gone || *o == block_op::outcome::affinity_mismatch) st.forget_affine(node);
      }
    }

    // 2. new blocks
    for (std::uint32_t round = 0; need > 0 && round < st.retries(); ++round) {
      if (!sn.config.auto_allocate_blocks) {
        notes.push_back("autoAllocateBlocks is false");
        break;
      }
      // One claim at a time per node on this machine: a process that waited here finds
      // the block its sibling just claimed (claim lists the blocks first) instead of
      // claiming another, and any unconfirmed affinity it sees afterwards is an
      // interrupted one.
      auto held = st.lock(node);
      if (!held) return held.error();
      if (sn.config.max_blocks_per_host) {
        auto have = count_affine(f);
        if (!have) return have.error();
        if (*have >= sn.config.max_blocks_per_host) {
          notes.push_back("node " + node + " has maxBlocksPerHost=" + std::to_string(sn.config.max_blocks_per_host) + " " +
                          family_name(f) + " blocks");
          break;
        }
      }
      auto c = claim(*pools);
      if (!c) return c.error();
      if (!*c) {
        notes.push_back("no unclaimed block is left");
        break;
      }
      const pool* p = pool_of(*pools, **c);
      auto o = from_block(**c, *p, need, true, need);
      if (!o) return o.error();
    }

    // 2b. Before borrowing or refusing: the node's own blocks as they are now. Other
    // processes of this node free addresses in them concurrently, and when no claim was
    // allowed (maxBlocksPerHost, autoAllocateBlocks) step 1's copy may be out of date.
    if (need > 0) {
      auto all = st.list_blocks();
      if (!all) return all.error();
      for (auto& lb : *all) {
        if (need == 0) break;
        if (!lb.parsed || !own_with_room(*lb.parsed, *pools)) continue;
        auto o = from_block(lb.parsed->cidr, *pool_of(*pools, lb.parsed->cidr), need, true, need);
        if (!o) return o.error();
      }
    }

    // 3. borrow
    if (need > 0 && sn.config.strict_affinity) notes.push_back("strictAffinity is true, so no address is borrowed from other nodes' blocks");
    if (need > 0 && !sn.config.strict_affinity) {
      auto all = st.list_blocks();
      if (!all) return all.error();
      std::vector<const listed_block*> cands;
      for (auto& lb : *all)
        if (lb.parsed && !lb.parsed->deleted && lb.parsed->affinity != "host:" + node && pool_of(*pools, lb.parsed->cidr) &&
            sn.reserved->free_in(*lb.parsed) > 0)
          cands.push_back(&lb);
      if (!cands.empty()) std::rotate(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(fnv1a(node) % cands.size()), cands.end());
      for (auto* lb : cands) {
        if (need == 0) break;
        const pool* p = pool_of(*pools, lb->parsed->cidr);
        std::uint32_t k = std::min(need, sn.reserved->free_in(*lb->parsed));
        // The handle record first: a crash after it leaves a record gc can trim, never an
        // address that release_handle cannot find.
        if (auto w = st.adjust_handle(req.handle, lb->parsed->cidr, static_cast<int>(k), node); !w) return w.error();
        pr.record[lb->parsed->cidr] += static_cast<int>(k);
        std::uint32_t before = need;
        auto o = from_block(lb->parsed->cidr, *p, k, false, need);
        if (!o) return o.error();
        std::uint32_t got = before - need;
        st.stats.borrowed += got;
        if (got < k) {
          if (auto w = st.adjust_handle(req.handle, lb->parsed->cidr, static_cast<int>(got) - static_cast<int>(k)); !w) return w.error();
          pr.record[lb->parsed->cidr] -= static_cast<int>(k - got);
        }
      }
    }
    if (need > 0) return exhausted(f, n, need, *pools);
    return {};
  }

  error exhausted(ip_family f, std::uint32_t n, std::uint32_t need, const std::vector<pool>& pools) {
    std::string m = "no free " + family_name(f) + " address for node " + node + " (handle '" + req.handle + "', wanted " +
                    std::to_string(n) + ", " + std::to_string(n - need) + " found)";
    auto all = st.list_blocks();
    for (auto& p : pools) {
      std::uint64_t used = 0;
      if (all)
        for (auto& lb : *all)
          if (lb.parsed && p.cidr.contains(lb.parsed->cidr)) used += lb.parsed->in_use();
      m += "; " + describe(p) + " has " + std::to_string(used) + " of " + std::to_string(p.cidr.size()) + " addresses in use";
    }
    for (auto& x : notes) m += "; " + x;
    return error(errc::exhausted, m);
  }

  result<void> exact(const ip_address& a) {
    const pool* p = pool_of(sn.pools, a);
    if (!p) return error(errc::invalid, "requested address " + a.to_string() + " is not in any usable IPPool");
    if (p->disabled) return error(errc::invalid, "requested address " + a.to_string() + " is in " + describe(*p) + ", which is disabled");
    auto& hints = a.is_v4() ? req.pools_v4 : req.pools_v6;
    if (!hints.empty() && std::none_of(hints.begin(), hints.end(), [&](const ip_prefix& h) { return h.contains(a); }))
      return error(errc::invalid, "requested address " + a.to_string() + " is outside the requested pools");
    ip_prefix b = ip_prefix(a, p->block_size).canonical();
    std::string name = block_name(b);
    for (std::uint32_t attempt = 0; attempt < st.retries(); ++attempt) {
      auto blk = st.cached(name);
      if (!blk) {
        auto g = st.ds.get(block_key(name));
        if (g) {
          auto s = st.slot(name);
          std::lock_guard lk(s->mu);
          st.remember(*s, *g);
          if (s->corrupt) return *s->corrupt;
          blk = s->parsed;
        } else if (g.error().code == errc::not_found) {
          if (!sn.config.auto_allocate_blocks)
            return error(errc::invalid, "requested address " + a.to_string() + " is in block " + b.to_string() +
                                            ", which no node has claimed, and autoAllocateBlocks is false");
          auto held = st.lock(node);
          if (!held) return held.error();
          auto c = st.try_claim(b, node);
          if (!c) return c.error();
          continue;
        } else {
          return g.error();
        }
      }
      bool affine = blk->affinity == "host:" + node;
      if (!affine) {
        if (auto w = st.adjust_handle(req.handle, b, 1, node); !w) return w.error();
      }
      auto op = std::make_shared<block_op>();
      op->what = block_op::kind::claim_exact;
      op->addresses = {a};
      op->handle = req.handle;
      op->secondary = secondary;
      op->reserved = sn.reserved;
      // Decided on a cached copy: the write must see the same affinity, or the IPAMHandle
      // that a foreign block needs could be missing.
      op->affine_to = affine ? node : std::string();
      st.run(name, op);
      bool taken = op->out == block_op::outcome::ok && !op->got.empty();
      bool held = op->out == block_op::outcome::ok && !op->already.empty();  // by this handle already
      if (!affine && !taken) (void)st.adjust_handle(req.handle, b, -1);
      if (taken || held) {
        if (!affine && taken) pr.record[b] += 1;
        pr.out.push_back({ip_prefix(a, a.bits()), std::nullopt, p->cidr.to_string()});
        if (taken) pr.got.emplace_back(a, b);  // only what this request took is rolled back
        return {};
      }
      if (op->out == block_op::outcome::failed || op->out == block_op::outcome::corrupt) return op->err;
      backoff(attempt);
    }
    return error(errc::unavailable, "requested address " + a.to_string() + ": gave up after " + std::to_string(st.retries()) + " attempts");
  }

  void undo() {
    std::map<ip_prefix, std::vector<ip_address>> by_block;
    for (auto& [a, b] : pr.got) by_block[b].push_back(a);
    for (auto& [b, addrs] : by_block) {
      auto op = std::make_shared<block_op>();
      op->what = block_op::kind::release_addresses;
      op->addresses = addrs;
      op->only_handle = req.handle;
      st.run(block_name(b), op);
      if (op->out != block_op::outcome::ok)
        st.log->error("calico-ipam: rolling back " + req.handle + " in " + b.to_string() + ": " + op->err.message + " (gc releases it)");
    }
    for (auto& [b, d] : pr.record)
      if (d > 0)
        if (auto w = st.adjust_handle(req.handle, b, -d); !w) st.log->error("calico-ipam: rolling back IPAMHandle of " + req.handle + ": " + w.error().message);
    pr.out.clear();
    pr.got.clear();
  }
};

result<std::vector<assigned_address>> state::assign(const assign_request& r) {
  if (r.handle.empty()) return error(errc::invalid, "assign: the handle is empty");
  std::string n = r.node.empty() ? node : r.node;
  if (n.empty()) return error(errc::invalid, "assign: no node name (neither the request nor the plugin names one)");
  if (r.num_v4 > 4096 || r.num_v6 > 4096) return error(errc::invalid, "assign: at most 4096 addresses per family in one request");
  auto sn = load();
  if (!sn) return sn.error();
  assigner a{*this, **sn, r, n, r.attributes, {}, {}};
  a.secondary["node"] = n;
  result<void> res;
  if (!r.requested.empty()) {
    for (auto& addr : r.requested) {
      res = a.exact(addr);
      if (!res) break;
    }
  } else {
    if (r.num_v4) res = a.auto_assign(ip_family::v4, r.num_v4, r.pools_v4);
    if (res && r.num_v6) res = a.auto_assign(ip_family::v6, r.num_v6, r.pools_v6);
  }
  if (!res) {
    a.undo();
    return res.error();
  }
  std::vector<ip_prefix> blocks;
  for (auto& [addr, b] : a.pr.got) blocks.push_back(b);
  remember_handle(r.handle, std::move(blocks));
  return std::move(a.pr.out);
}

// ---- release ---------------------------------------------------------------------------------

result<std::uint32_t> state::release_handle(std::string_view hv) {
  std::string h(hv);
  if (h.empty()) return error(errc::invalid, "release: the handle is empty");
  auto key = handle_key(h);
  std::optional<resource> rec_res;
  std::optional<handle_record> rec;
  auto g = ds.get(key);
  if (g) {
    auto p = parse_handle(*g);
    if (!p) log->warn("calico-ipam: " + p.error().message + " (looking for the handle's addresses without it)");
    else if (p->handle_id == h) {
      rec = std::move(*p);
      rec_res = std::move(*g);
    }
  } else if (g.error().code != errc::not_found) {
    return with_context(g.error(), "reading IPAMHandle/" + key.name);
  }

  std::set<std::string> tried;
  std::uint32_t released = 0;
  auto try_block = [&](const std::string& name) -> result<void> {
    if (!tried.insert(name).second) return {};
    auto op = std::make_shared<block_op>();
    op->what = block_op::kind::release_handles;
    op->handles = {h};
    run(name, op);
    if (op->out == block_op::outcome::failed)
      return error(op->err.code == errc::not_found || op->err.code == errc::conflict ? errc::unavailable : op->err.code,
                   "releasing handle " + h + ": " + op->err.message);
    if (op->out == block_op::outcome::corrupt) {
      // A block that does not parse is never rewritten. If its text names the handle, the
      // handle holds an address there that this release cannot free: say so (the caller
      // tries again later) rather than report the handle released.
      auto g = ds.get(block_key(name));
      if (!g || g->spec.find("\"" + h + "\"") != std::string::npos)
        return error(errc::unavailable, "cannot release handle " + h + " from " + op->err.message + " (fix or delete the block)");
      log->error("calico-ipam: not looking for handle " + h + " in " + op->err.message);
    }
    released += static_cast<std::uint32_t>(op->released.size());
    return {};
  };
  auto try_record = [&](const handle_record& hr) -> result<void> {
    for (auto& [cidr, count] : hr.blocks) {
      auto p = ip_prefix::parse(cidr);
      if (!p) continue;
      if (auto t = try_block(block_name(*p)); !t) return t;
    }
    return {};
  };
  if (rec)
    if (auto t = try_record(*rec); !t) return t.error();
  auto known = take_handle(h);
  if (known) {
    // This process assigned the handle: its blocks are known.
    for (auto& b : *known)
      if (auto t = try_block(block_name(b)); !t) {
        remember_handle(h, *known);
        return t.error();
      }
  }
  if (!node.empty() && (!known || unsettled)) {
    // Another process assigned it: this node's blocks as they are now, whatever state
    // their affinities are in (settled on the way).
    auto blocks = affine_blocks(node, true);
    if (!blocks) return blocks.error();
    for (auto& b : *blocks)
      if (auto t = try_block(block_name(b)); !t) return t.error();
  }
  if (!released && !rec && (node.empty() || opts.release_scan)) {
    // The handle was assigned elsewhere (another node, a block that changed hands): scan
    // every block's text for the handle before parsing any.
    ++stats.scans;
    list_options lo;
    lo.kind = std::string(kinds::ipam_block);
    auto all = ds.list_all(lo);
    if (!all) return with_context(all.error(), "listing IPAMBlocks");
    // Handles of plain characters appear verbatim in any writer's JSON; others may be
    // escaped differently, so every block is tried.
    bool plain = std::all_of(h.begin(), h.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' || c == ':'; });
    std::string needle = "\"" + h + "\"";
    for (auto& r : all->items)
      if (!plain || r.spec.find(needle) != std::string::npos)
        if (auto t = try_block(r.name); !t) return t.error();
  }
  if (rec_res) {
    for (std::uint32_t attempt = 0; attempt < retries(); ++attempt) {
      auto rm = ds.remove(rec_res->key(), rec_res->revision);
      ++stats.handle_writes;
      if (rm || rm.error().code == errc::not_found) break;
      if (rm.error().code != errc::conflict) return with_context(rm.error(), "deleting IPAMHandle/" + key.name);
      auto again = ds.get(key);
      if (!again) break;
      auto p = parse_handle(*again);
      if (!p) break;
      if (auto t = try_record(*p); !t) return t.error();
      rec_res = std::move(*again);
    }
  }
  maybe_sweep();
  return released;
}

result<release_report> state::release_addresses(std::span<const release_item> items) {
  release_report rep;
  auto sn = load();
  if (!sn) return sn.error();
  std::map<ip_address, std::string> expected;
  for (auto& it : items) expected[it.address] = it.handle;
  std::map<std::string, std::vector<ip_address>> by_block;
  std::vector<ip_address> unresolved;
  for (auto& [a, h] : expected) {
    if (const pool* p = pool_of((*sn)->pools, a)) by_block[block_name(ip_prefix(a, p->block_size).canonical())].push_back(a);
    else unresolved.push_back(a);
  }
  std::map<std::pair<std::string, ip_prefix>, int> per_handle;
  auto release_in = [&](const std::string& name, const std::vector<ip_address>& list, std::vector<ip_address>* gone) -> result<void> {
    auto op = std::make_shared<block_op>();
    op->what = block_op::kind::release_addresses;
    op->addresses = list;
    for (auto& a : list) op->expected[a] = expected[a];
    run(name, op);
    if (op->out == block_op::outcome::failed) return op->err;
    if (op->out == block_op::outcome::corrupt) return op->err;
    if (op->out == block_op::outcome::gone) {
      if (gone) gone->insert(gone->end(), list.begin(), list.end());
      else rep.not_allocated.insert(rep.not_allocated.end(), list.begin(), list.end());
      return {};
    }
    auto blk = cached(name);
    for (auto& [a, h] : op->released) {
      rep.released.emplace_back(a, h);
      if (!h.empty() && blk) per_handle[{h, blk->cidr}] += 1;
    }
    for (auto& a : list) {
      if (std::any_of(op->released.begin(), op->released.end(), [&](auto& x) { return x.first == a; })) continue;
      auto o = blk ? blk->ordinal(a) : std::nullopt;
      if (blk && o && blk->allocations[*o]) rep.held_by_other.emplace_back(a, blk->handle_of(*o));
      else rep.not_allocated.push_back(a);
    }
    return {};
  };
  for (auto& [name, list] : by_block)
    if (auto r = release_in(name, list, &unresolved); !r) return r.error();
  if (!unresolved.empty()) {
    auto all = list_blocks();
    if (!all) return all.error();
    std::map<std::string, std::vector<ip_address>> second;
    for (auto& a : unresolved) {
      auto it = std::find_if(all->begin(), all->end(), [&](const listed_block& lb) { return lb.parsed && lb.parsed->cidr.contains(a); });
      if (it == all->end()) rep.not_allocated.push_back(a);
      else second[it->name].push_back(a);
    }
    for (auto& [name, list] : second)
      if (auto r = release_in(name, list, nullptr); !r) return r.error();
  }
  for (auto& [k, count] : per_handle)
    if (auto w = adjust_handle(k.first, k.second, -count); !w) log->warn("calico-ipam: " + w.error().message);
  return rep;
}

result<std::vector<std::pair<ip_address, ip_prefix>>> state::find_handle(const std::string& h) {
  std::vector<std::pair<ip_address, ip_prefix>> out;
  std::set<std::string> names;
  {
    std::lock_guard lk(mine_mu);
    if (auto it = mine.find(h); it != mine.end())
      for (auto& b : it->second) names.insert(block_name(b));
  }
  auto g = ds.get(handle_key(h));
  if (g)
    if (auto p = parse_handle(*g); p && p->handle_id == h)
      for (auto& [cidr, c] : p->blocks)
        if (auto b = ip_prefix::parse(cidr)) names.insert(block_name(*b));
  if (!node.empty()) {
    auto blocks = affine_blocks(node, true);
    if (!blocks) return blocks.error();
    for (auto& b : *blocks) names.insert(block_name(b));
  }
  auto look = [&](const block& b) {
    for (std::uint32_t o = 0; o < b.size(); ++o)
      if (b.allocations[o] && b.handle_of(o) == h) out.emplace_back(b.address(o), b.cidr);
  };
  for (auto& n : names) {
    auto r = ds.get(block_key(n));
    if (!r) continue;
    if (auto b = parse_block(*r)) look(*b);
  }
  if (out.empty() && (node.empty() || opts.release_scan)) {
    auto all = list_blocks();
    if (!all) return all.error();
    for (auto& lb : *all)
      if (lb.parsed && !names.count(lb.name)) look(*lb.parsed);
  }
  return out;
}

// ---- empty blocks, gc ---------------------------------------------------------------------------

result<std::uint32_t> state::release_empty(const std::string& n, bool all_nodes) {
  if (opts.empty_block_grace.count() < 0) return 0u;
  auto now = sys_clock::now();
  auto due = [&](const block& b) {
    if (b.deleted || !b.empty() || b.affinity_node().empty()) return false;
    auto since = parse_time(!b.empty_since.empty() ? b.empty_since : b.affinity_claim_time);
    return since && now - *since >= opts.empty_block_grace;
  };
  std::vector<std::tuple<ip_prefix, std::string, std::string>> todo;  // block, node, revision
  if (all_nodes) {
    auto all = list_blocks();
    if (!all) return all.error();
    for (auto& lb : *all)
      if (lb.parsed && due(*lb.parsed)) todo.emplace_back(lb.parsed->cidr, lb.parsed->affinity_node(), lb.revision);
  } else {
    auto blocks = affine_blocks(n, true);
    if (!blocks) return blocks.error();
    for (auto& b : *blocks) {
      auto c = cached(block_name(b));
      if (c && !due(*c)) continue;  // in use according to our copy: not worth a read
      auto r = ds.get(block_key(block_name(b)));
      if (!r) continue;
      auto p = parse_block(*r);
      if (p && due(*p)) todo.emplace_back(b, n, r->revision);
    }
  }
  std::uint32_t count = 0;
  for (auto& [b, owner, rev] : todo) {
    // The owner's claims and releases are serialized on its machine; one lock at a time.
    auto held = lock(owner);
    if (!held) return held.error();
    auto r = release_affinity(b, owner, true, rev);
    if (!r) return r.error();
    if (*r) ++count;
  }
  return count;
}

void state::maybe_sweep() {
  if (opts.empty_block_grace.count() < 0 || node.empty()) return;
  auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch()).count();
  auto interval = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::clamp<std::chrono::seconds>(opts.empty_block_grace / 2, std::chrono::seconds(1), std::chrono::seconds(60)))
                      .count();
  auto last = last_sweep_ns.load();
  if (last != 0 && now - last < interval) return;
  if (!last_sweep_ns.compare_exchange_strong(last, now)) return;
  if (auto r = release_empty(node, false); !r) log->warn("calico-ipam: releasing empty blocks: " + r.error().message);
}

result<gc_report> state::gc(std::string_view prefix, const std::set<std::string>& valid) {
  gc_report rep;
  std::set<std::string> released_handles;
  auto stale = [&](const std::string& h) { return h.starts_with(prefix) && !valid.count(h); };
  // With a node name, gc collects that node's: `valid` lists the attachments of that
  // node only (what its runtime knows), so only addresses assigned for it (attribute
  // "node") and the records of its handles are released; other nodes' are theirs to
  // collect. Without one, every handle is considered. The repairs below (affinities of
  // interrupted claims, empty blocks past the grace) release no address and are done for
  // every node.
  const bool scoped = !node.empty();
  std::set<std::string> foreign;  // handles holding addresses assigned for another node

  auto all = list_blocks();
  if (!all) return all.error();
  for (auto& lb : *all) {
    if (!lb.parsed || lb.parsed->deleted) continue;
    std::set<std::string> hs;
    for (auto& at : lb.parsed->attributes) {
      if (!at.handle_id) continue;
      const bool mine = !scoped || at.node() == node;
      if (!mine) foreign.insert(*at.handle_id);
      if (mine && stale(*at.handle_id)) hs.insert(*at.handle_id);
    }
    if (hs.empty()) continue;
    auto op = std::make_shared<block_op>();
    op->what = block_op::kind::release_handles;
    op->handles = hs;
    op->only_node = scoped ? node : std::string();
    run(lb.name, op);
    if (op->out == block_op::outcome::failed) return op->err;
    for (auto& [a, h] : op->released) {
      ++rep.released_addresses;
      released_handles.insert(h);
    }
  }
  // Affinities first, then the blocks as they are now: a block is created before its
  // affinity is confirmed and deleted after it is marked pendingDeletion, so a confirmed
  // affinity seen here always has its block in the list below.
  list_options lo;
  lo.kind = std::string(kinds::block_affinity);
  auto affs = ds.list_all(lo);
  if (!affs) return with_context(affs.error(), "listing BlockAffinities");
  all = list_blocks();
  if (!all) return all.error();
  std::map<std::string, const block*> blocks;
  for (auto& lb : *all)
    if (lb.parsed && !lb.parsed->deleted) blocks[lb.name] = &*lb.parsed;

  lo.kind = std::string(kinds::ipam_handle);
  auto handles = ds.list_all(lo);
  if (!handles) return with_context(handles.error(), "listing IPAMHandles");
  for (auto& r : handles->items) {
    auto p = parse_handle(r);
    if (!p) {
      log->warn("calico-ipam: gc: " + p.error().message);
      continue;
    }
    // Only records of released handles go. A live handle's record may name a block its
    // address is still being written to (the record is written first), and naming a
    // block too many costs nothing: release_handle removes the record either way.
    if (!stale(p->handle_id)) continue;
    // Another node's (it holds addresses assigned for another node, or another node
    // wrote it: a borrow in progress there) is that node's to remove. Records without the
    // label come from older writers and go when nothing of another node holds them.
    if (scoped) {
      auto lab = r.labels.find(std::string(node_label));
      if (foreign.count(p->handle_id) || (lab != r.labels.end() && lab->second != node)) continue;
    }
    auto rm = ds.remove(r.key(), r.revision);
    if (rm) released_handles.insert(p->handle_id);
  }

  // The repairs that are safe from anywhere are done here, each a compare-and-swap on
  // the revision listed: confirming an affinity whose block names its node, removing one
  // whose block names another node or, unless it is pending, does not exist. A pending
  // affinity without its block may be a claim in progress: only its node's lock holder
  // may undo it (settle, one node at a time).
  std::set<std::string> to_settle;
  std::set<std::string> with_affinity;  // node/block pairs with a BlockAffinity
  for (auto& r : affs->items) {
    auto a = parse_affinity(r);
    if (!a) {
      log->warn("calico-ipam: gc: " + a.error().message);
      continue;
    }
    with_affinity.insert(a->node + "/" + block_name(a->cidr));
    auto it = blocks.find(block_name(a->cidr));
    bool ours = it != blocks.end() && it->second->affinity == "host:" + a->node;
    if (ours && a->state != "confirmed") {
      a->state = "confirmed";
      auto next = to_resource(*a);
      next.name = r.name;
      next.revision = r.revision;
      next.labels = r.labels;
      (void)ds.update(next);
      forget_affine(a->node);
    } else if (!ours && (it != blocks.end() || a->state != "pending")) {
      (void)ds.remove(r.key(), r.revision);
      forget_affine(a->node);
    } else if (!ours) {
      to_settle.insert(a->node);
    }
  }
  // A block naming a node that had no affinity when they were listed (before the blocks):
  // the affinity was removed under a claim in progress that then stopped. Write it back,
  // or releases that look through the node's affinities would miss the block.
  for (auto& [name, b] : blocks) {
    std::string owner = b->affinity_node();
    if (owner.empty() || with_affinity.count(owner + "/" + name)) continue;
    block_affinity a;
    a.name = affinity_name(owner, b->cidr);
    a.state = "confirmed";
    a.node = owner;
    a.cidr = b->cidr;
    if (ds.create(to_resource(a))) log->info("calico-ipam: gc: IPAMBlock/" + name + " names node " + owner + " but had no BlockAffinity: written");
    forget_affine(owner);
  }
  for (auto& n : to_settle)
    if (auto st = settle(n); !st) log->warn("calico-ipam: gc: settling the affinities of node " + n + ": " + st.error().message);

  if (auto e = release_empty("", true); !e) log->warn("calico-ipam: gc: releasing empty blocks: " + e.error().message);
  rep.released_handles.assign(released_handles.begin(), released_handles.end());
  return rep;
}

}  // namespace detail

// ---- the public class ---------------------------------------------------------------------------

ipam::ipam(any_datastore ds, std::string node, options o, logger* log)
    : s_(std::make_shared<detail::state>(std::move(ds), std::move(node), std::move(o), log)) {}

result<std::vector<assigned_address>> ipam::assign(const assign_request& r) { return s_->assign(r); }

result<void> ipam::release_handle(std::string_view handle) {
  auto r = s_->release_handle(handle);
  if (!r) return r.error();
  return {};
}

result<void> ipam::release_addresses(std::span<const ip_address> addresses) {
  std::vector<release_item> items;
  for (auto& a : addresses) items.push_back({a, {}});
  auto r = s_->release_addresses(items);
  if (!r) return r.error();
  return {};
}

result<ipam_usage> ipam::usage() { return calico_ipam::usage(s_->ds); }

result<std::vector<allocation>> ipam::allocations() {
  auto all = s_->list_blocks();
  if (!all) return all.error();
  std::vector<allocation> out;
  for (auto& lb : *all) {
    if (!lb.parsed || lb.parsed->deleted) continue;
    auto& b = *lb.parsed;
    for (std::uint32_t o = 0; o < b.size(); ++o)
      if (b.allocations[o]) out.push_back({b.address(o), b.handle_of(o), b.attributes[*b.allocations[o]].secondary});
  }
  return out;
}

result<gc_report> ipam::gc(std::string_view prefix, const std::set<std::string>& valid) { return s_->gc(prefix, valid); }

result<assigned_address> ipam::assign_tunnel_address(tunnel_kind k, ip_family f) {
  if (s_->node.empty()) return error(errc::invalid, "tunnel address: the plugin has no node name");
  std::string h = tunnel_handle(k, s_->node);
  auto have = s_->find_handle(h);
  if (!have) return have.error();
  auto sn = s_->load();
  if (!sn) return sn.error();
  for (auto& [a, b] : *have)
    if (a.family() == f) {
      auto it = std::find_if((*sn)->pools.begin(), (*sn)->pools.end(), [&](const pool& p) { return p.cidr.contains(a); });
      return assigned_address{ip_prefix(a, a.bits()), std::nullopt, it != (*sn)->pools.end() ? it->cidr.to_string() : b.to_string()};
    }
  assign_request r;
  r.handle = h;
  r.node = s_->node;
  r.attributes = {{"node", s_->node}, {"type", k == tunnel_kind::ipip ? "ipipTunnelAddress" : "vxlanTunnelAddress"}};
  r.num_v4 = f == ip_family::v4 ? 1 : 0;
  r.num_v6 = f == ip_family::v6 ? 1 : 0;
  std::vector<ip_prefix>& hints = f == ip_family::v4 ? r.pools_v4 : r.pools_v6;
  for (auto& p : (*sn)->pools)
    if (p.cidr.family() == f && !p.disabled && (k == tunnel_kind::ipip ? p.ipip_mode : p.vxlan_mode) != "Never") hints.push_back(p.cidr);
  auto got = s_->assign(r);
  if (!got) return got.error();
  return got->front();
}

result<std::vector<ip_address>> ipam::addresses_of(std::string_view handle) {
  if (handle.empty()) return error(errc::invalid, "addresses_of: the handle is empty");
  auto found = s_->find_handle(std::string(handle));
  if (!found) return found.error();
  std::vector<ip_address> out;
  for (auto& [a, b] : *found) out.push_back(a);
  std::sort(out.begin(), out.end());
  return out;
}

result<void> ipam::release_tunnel_address(tunnel_kind k) { return release_handle(tunnel_handle(k, s_->node)); }

result<std::uint32_t> ipam::release_empty_blocks() {
  if (s_->node.empty()) return error(errc::invalid, "release_empty_blocks: the plugin has no node name");
  return s_->release_empty(s_->node, false);
}

const std::string& ipam::node() const noexcept { return s_->node; }

result<node_release_report> release_node(const any_datastore& ds, const std::string& n) {
  if (n.empty()) return error(errc::invalid, "release_node: the node name is empty");
  detail::state st(ds, "", options{}, nullptr);
  node_release_report rep;
  // 1. Addresses assigned for the node, wherever they are (borrowed ones too).
  auto all = st.list_blocks();
  if (!all) return all.error();
  std::set<std::string> handles;
  for (auto& lb : *all) {
    if (!lb.parsed || lb.parsed->deleted) continue;
    std::set<std::string> hs;
    for (auto& at : lb.parsed->attributes)
      if (at.handle_id && at.node() == n) hs.insert(*at.handle_id);
    if (hs.empty()) continue;
    auto op = std::make_shared<block_op>();
    op->what = block_op::kind::release_handles;
    op->handles = hs;
    op->only_node = n;
    st.run(lb.name, op);
    if (op->out == block_op::outcome::failed || op->out == block_op::outcome::corrupt) return op->err;
    rep.addresses += op->released.size();
    handles.insert(hs.begin(), hs.end());
  }
  // 2. Their IPAMHandles, and any the node wrote (a borrow in progress there).
  list_options lo;
  lo.kind = std::string(kinds::ipam_handle);
  auto hl = ds.list_all(lo);
  if (!hl) return with_context(hl.error(), "listing IPAMHandles");
  for (auto& r : hl->items) {
    auto p = parse_handle(r);
    auto lab = r.labels.find(std::string(node_label));
    if (!(p && handles.count(p->handle_id)) && !(lab != r.labels.end() && lab->second == n)) continue;
    auto rm = ds.remove(r.key(), r.revision);
    if (rm) ++rep.handles;
    else if (rm.error().code != errc::not_found) return with_context(rm.error(), "removing " + where(r));
  }
  // 3. Its blocks: removed when empty, else (other nodes' addresses) left without affinity.
  all = st.list_blocks();
  if (!all) return all.error();
  for (auto& lb : *all) {
    if (!lb.parsed || lb.parsed->deleted || lb.parsed->affinity != "host:" + n) continue;
    std::string rev = lb.revision;
    block b = *lb.parsed;
    for (std::uint32_t attempt = 0;; ++attempt) {
      result<void> w;
      if (b.empty()) {
        w = ds.remove(block_key(lb.name), rev);
        if (w) ++rep.blocks;
      } else {
        b.affinity.reset();
        auto next = to_resource(b);
        next.revision = rev;
        auto u = ds.update(next);
        if (u) ++rep.blocks_kept;
        else w = u.error();
      }
      if (w || w.error().code == errc::not_found) break;
      if (w.error().code != errc::conflict || attempt >= 20) return with_context(w.error(), "releasing IPAMBlock/" + lb.name);
      auto g = ds.get(block_key(lb.name));
      if (!g) {
        if (g.error().code == errc::not_found) break;
        return g.error();
      }
      auto pb = parse_block(*g);
      if (!pb) return pb.error();
      if (pb->deleted || pb->affinity != "host:" + n) break;
      b = std::move(*pb);
      rev = g->revision;
    }
  }
  // 4. Its BlockAffinities (after the blocks, as a release of a block does).
  lo.kind = std::string(kinds::block_affinity);
  auto al = ds.list_all(lo);
  if (!al) return with_context(al.error(), "listing BlockAffinities");
  for (auto& r : al->items) {
    auto a = parse_affinity(r);
    if (!a || a->node != n) continue;
    auto rm = ds.remove(r.key(), r.revision);
    if (rm) ++rep.affinities;
    else if (rm.error().code != errc::not_found) return with_context(rm.error(), "removing " + where(r));
  }
  return rep;
}

ipam::stats ipam::statistics() const {
  auto& c = s_->stats;
  return {c.block_writes.load(), c.block_conflicts.load(), c.block_reads.load(), c.combined_ops.load(),
          c.handle_writes.load(), c.blocks_claimed.load(), c.borrowed.load(), c.scans.load(),
          c.block_lists.load()};
}

}  // namespace calico_ipam
CNF_END_NAMESPACE
