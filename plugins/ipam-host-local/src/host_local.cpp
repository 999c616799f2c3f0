// host-local IPAM on the cnf datastore. Correctness rests on create() of one resource per
// address (only one writer can make it) and on removes that carry the revision the
// allocation was made at (a stale handle cannot free an address that changed hands).
#include <cnf/memory_datastore.hpp>
#include <cnf/plugins/host-local.hpp>

#include "detail.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <unordered_set>

CNF_BEGIN_NAMESPACE
namespace host_local {

struct state {
  any_datastore ds;
  config cfg;
  std::string node;
  logger* log = nullptr;
  std::string prefix;                 // "<scope>."
  std::string cursor_name;            // "<scope>.<node>"
  std::vector<std::string> set_keys;  // identity of each range set inside the cursor
  bool parallel = true;               // config.parallel_writes, resolved
  // Independent writes on threads, so that they share one flush; pointless (a thread
  // costs more than the write) while the datastore defers every flush to sync().
  bool write_in_parallel() const { return parallel && !ds.sync_deferred(); }
};

}  // namespace host_local

namespace {

using host_local::detail::from_u128;
using host_local::detail::to_u128;
using host_local::detail::u128;
namespace json = boost::json;

// Candidate addresses of one range set in round-robin order: from just after `after`
// (the last address handed out) to the end of the last range, then from the first range's
// start back up to where it began. Skips gateways, reserved prefixes (jumping over them,
// so a reserved /65 costs one step) and, when given, addresses known to be in use.
class walker {
 public:
  walker(const host_local::range_set& rs, const host_local::config& cfg, std::optional<ip_address> after)
      : rs_(rs), cfg_(cfg) {
    r_ = 0;
    v_ = start(0);
    if (after) {
      for (std::size_t i = 0; i < rs_.ranges.size(); ++i) {
        if (rs_.ranges[i].contains(*after)) {
          r_ = i;
          v_ = to_u128(*after);
          advance();
          if (done_ || phase_ == 1) {  // `after` was the very last address: start at the top
            done_ = false;
            phase_ = 0;
            r_ = 0;
            v_ = start(0);
          }
          break;
        }
      }
    }
    r0_ = r_;
    v0_ = v_;
  }

  std::optional<u128> next(const std::unordered_set<std::uint64_t>* in_use_v4, const std::set<u128>* in_use) {
    for (;;) {
      if (done_) return std::nullopt;
      if (phase_ == 1 && (r_ > r0_ || (r_ == r0_ && v_ >= v0_))) {
        done_ = true;
        return std::nullopt;
      }
      const auto& R = rs_.ranges[r_];
      bool skipped = false;
      for (auto& p : cfg_.reserved) {
        if (p.family() == R.subnet.family() && p.contains(from_u128(R.subnet.family(), v_))) {
          v_ = host_local::detail::last_of(p);
          skipped = true;
          break;
        }
      }
      if (!skipped && v_ == to_u128(R.gateway)) skipped = true;
      if (!skipped && in_use_v4 && in_use_v4->count(static_cast<std::uint64_t>(v_))) skipped = true;
      if (!skipped && in_use && in_use->count(v_)) skipped = true;
      u128 here = v_;
      advance();
      if (!skipped) return here;
    }
  }

 private:
  u128 start(std::size_t r) const { return to_u128(rs_.ranges[r].range_start); }
  u128 end(std::size_t r) const { return to_u128(rs_.ranges[r].range_end); }
  // One step forward from v_ (which may lie past the end after a reserved jump).
  void advance() {
    if (v_ < end(r_)) {
      ++v_;
      return;
    }
    ++r_;
    if (r_ == rs_.ranges.size()) {
      if (phase_ == 1) {
        done_ = true;
        return;
      }
      phase_ = 1;
      r_ = 0;
    }
    v_ = start(r_);
  }

  const host_local::range_set& rs_;
  const host_local::config& cfg_;
  std::size_t r_ = 0, r0_ = 0;
  u128 v_ = 0, v0_ = 0;
  int phase_ = 0;
  bool done_ = false;
};

std::string set_key(const host_local::range_set& rs) {
  std::string k;
  for (auto& r : rs.ranges) k += (k.empty() ? "" : ",") + r.range_start.to_string() + "-" + r.range_end.to_string();
  return k;
}

std::string family_name(ip_family f) { return f == ip_family::v4 ? "IPv4" : "IPv6"; }

std::string now_seconds() {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

error with_context(const error& e, const std::string& what) { return error(e.code, what + ": " + e.message); }

// The address an allocation's name stands for: "<scope>.10.0.0.5", "<scope>.fd00--5".
std::optional<ip_address> address_from_name(std::string_view name, std::string_view prefix) {
  if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
  std::string t(name.substr(prefix.size()));
  std::replace(t.begin(), t.end(), '-', ':');
  auto a = ip_address::parse(t);
  if (!a) return std::nullopt;
  return *a;
}

result<json::object> parse_spec(const resource& r) {
  json::error_code ec;
  auto v = json::parse(r.spec, ec);
  if (ec || !v.is_object())
    return error(errc::invalid, r.key().to_string() + ": spec is not a JSON object" + (ec ? " (" + ec.message() + ")" : ""));
  return std::move(v.as_object());
}

std::string get_string(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (!v || !v->is_string()) return {};
  return std::string(v->as_string());
}

struct handle_entry {
  ip_address address;
  std::string revision;
  std::string range;
};

struct handle_record {
  std::string handle;
  std::string node;
  std::vector<handle_entry> entries;
};

result<handle_record> read_handle(const resource& r) {
  auto o = parse_spec(r);
  if (!o) return o.error();
  handle_record h;
  h.handle = get_string(*o, "handle");
  h.node = get_string(*o, "node");
  auto* arr = o->if_contains("addresses");
  if (h.handle.empty() || !arr || !arr->is_array())
    return error(errc::invalid, r.key().to_string() + ": spec needs \"handle\" (string) and \"addresses\" (array)");
  std::size_t i = 0;
  for (auto& e : arr->as_array()) {
    auto* eo = e.if_object();
    auto a = eo ? ip_address::parse(get_string(*eo, "address")) : result<ip_address>(error(errc::invalid, ""));
    if (!a)
      return error(errc::invalid, r.key().to_string() + ": spec.addresses[" + std::to_string(i) + "].address is not an IP address");
    h.entries.push_back({*a, get_string(*eo, "revision"), get_string(*eo, "range")});
    ++i;
  }
  return h;
}

std::string handle_spec(const handle_record& h) {
  json::array arr;
  for (auto& e : h.entries) arr.push_back(json::object{{"address", e.address.to_string()}, {"revision", e.revision}, {"range", e.range}});
  return json::serialize(json::object{{"handle", h.handle}, {"node", h.node}, {"addresses", std::move(arr)}});
}

struct taken_address {
  std::size_t set;
  resource_key key;
  std::string revision;
  assigned_address out;
};

// Runs job(0..n-1) and returns their results in order: on threads when `parallel` and
// there is more than one (job 0 on the calling thread). Independent datastore writes
// issued at once let a store that shares one flush between concurrent writers (local)
// pay one fsync instead of several.
template <class R, class F>
std::vector<R> run_jobs(std::size_t n, bool parallel, F&& job) {
  std::vector<R> out;
  out.reserve(n);
  if (!parallel || n < 2) {
    for (std::size_t k = 0; k < n; ++k) out.push_back(job(k));
    return out;
  }
  std::vector<std::future<R>> rest;
  for (std::size_t k = 1; k < n; ++k) rest.push_back(std::async(std::launch::async, [&job, k] { return job(k); }));
  out.push_back(job(0));
  for (auto& f : rest) out.push_back(f.get());
  return out;
}

}  // namespace

host_local_ipam::host_local_ipam(any_datastore ds, host_local::config cfg, std::string node, logger* log) {
  auto s = std::make_shared<host_local::state>();
  s->ds = std::move(ds);
  s->cfg = std::move(cfg);
  s->node = std::move(node);
  s->log = log ? log : &default_logger();
  s->prefix = s->cfg.scope + ".";
  s->cursor_name = host_local::handle_name(s->cfg.scope, s->node.empty() ? "-" : s->node);
  for (auto& rs : s->cfg.ranges) s->set_keys.push_back(set_key(rs));
  if (!s->ds) throw error_exception(errc::invalid, "host-local: no datastore (the host must give the IPAM part a datastore)");
  if (auto c = host_local::check_config(s->cfg); !c) throw error_exception(c.error());
  // An in-memory store writes faster than a thread starts: no parallel writes there.
  const bool in_memory = dynamic_cast<const detail::datastore_model<memory_datastore>*>(s->ds.interface().get()) != nullptr;
  s->parallel = s->cfg.parallel_writes.value_or(!in_memory);
  s_ = std::move(s);
}

const host_local::config& host_local_ipam::configuration() const noexcept { return s_->cfg; }

bool host_local_ipam::writes_in_parallel() const noexcept { return s_->parallel; }

result<std::vector<assigned_address>> host_local_ipam::assign(const assign_request& req) const {
  const auto& st = *s_;
  const auto& cfg = st.cfg;
  const auto& ds = st.ds;
  if (req.handle.empty()) return error(errc::invalid, "assign: the handle is empty");
  const std::string who = "assign " + req.handle;
  // The request's node, when it names one, else the node this IPAM was made for.
  const std::string& node = req.node.empty() ? st.node : req.node;
  const std::string cursor_name = req.node.empty() || req.node == st.node
                                      ? st.cursor_name
                                      : host_local::handle_name(cfg.scope, req.node);

  // ---- plan: which range set gives which address (no datastore access yet) ----
  std::vector<std::optional<ip_address>> requested_in(cfg.ranges.size());
  std::vector<std::size_t> requested_range(cfg.ranges.size(), 0);
  unsigned requested_count[2] = {0, 0};
  for (auto& a : req.requested) {
    std::optional<std::pair<std::size_t, std::size_t>> at;
    for (std::size_t i = 0; i < cfg.ranges.size() && !at; ++i)
      for (std::size_t j = 0; j < cfg.ranges[i].ranges.size(); ++j)
        if (cfg.ranges[i].ranges[j].contains(a)) {
          at = {i, j};
          break;
        }
    if (!at) {
      std::string all;
      for (auto& rs : cfg.ranges) all += (all.empty() ? "" : "; ") + rs.to_string();
      return error(errc::invalid, who + ": requested address " + a.to_string() + " is in none of the ranges (" + all + ")");
    }
    auto [i, j] = *at;
    const auto& R = cfg.ranges[i].ranges[j];
    if (cfg.is_reserved(a)) return error(errc::invalid, who + ": requested address " + a.to_string() + " is reserved");
    if (a == R.gateway)
      return error(errc::invalid, who + ": requested address " + a.to_string() + " is the gateway of ranges[" + std::to_string(i) +
                                      "][" + std::to_string(j) + "] " + R.to_string());
    if (requested_in[i])
      return error(errc::invalid, who + ": requested addresses " + requested_in[i]->to_string() + " and " + a.to_string() +
                                      " are both in range set ranges[" + std::to_string(i) +
                                      "]; host-local gives one address per range set");
    requested_in[i] = a;
    requested_range[i] = j;
    ++requested_count[a.is_v4() ? 0 : 1];
  }
  std::vector<std::size_t> auto_sets;
  for (ip_family fam : {ip_family::v4, ip_family::v6}) {
    const unsigned want = fam == ip_family::v4 ? req.num_v4 : req.num_v6;
    const unsigned have = requested_count[fam == ip_family::v4 ? 0 : 1];
    if (want <= have) continue;
    const unsigned need = want - have;
    const auto& hints = fam == ip_family::v4 ? req.pools_v4 : req.pools_v6;
    unsigned of_family = 0, taken = 0;
    for (std::size_t i = 0; i < cfg.ranges.size() && taken < need; ++i) {
      const auto& rs = cfg.ranges[i];
      if (rs.family() != fam) continue;
      ++of_family;
      if (requested_in[i]) continue;
      if (!hints.empty()) {
        bool match = false;
        for (auto& r : rs.ranges)
          for (auto& h : hints) match |= r.subnet.overlaps(h);
        if (!match) continue;
      }
      auto_sets.push_back(i);
      ++taken;
    }
    if (taken < need) {
      std::string n = std::to_string(need) + " " + family_name(fam) + " address" + (need == 1 ? "" : "es");
      if (cfg.range_sets(fam) == 0) return error(errc::invalid, who + ": asked for " + n + ", but no " + family_name(fam) + " range is configured");
      std::string h;
      for (auto& p : hints) h += (h.empty() ? "" : ", ") + p.to_string();
      return error(errc::invalid, who + ": asked for " + n + (h.empty() ? "" : " from pools [" + h + "]") + ", but only " +
                                      std::to_string(taken) + " " + family_name(fam) +
                                      " range set(s) can give one (host-local gives one address per range set)");
    }
  }

  if (req.requested.empty() && auto_sets.empty())
    return error(errc::invalid, who + ": nothing to assign (num_v4 and num_v6 are 0 and no address is requested)");

  // ---- the node's cursor: where the last assignment in each range set stopped ----
  std::map<std::string, std::string> last;
  std::optional<resource> cursor;
  if (!auto_sets.empty()) {
    auto c = ds.get({std::string(host_local::cursor_kind), "", cursor_name});
    if (c) {
      cursor = *c;
      if (auto o = parse_spec(*c); o) {
        if (auto* l = o->if_contains("last"); l && l->is_object())
          for (auto& [k, v] : l->as_object())
            if (v.is_string()) last[std::string(k)] = std::string(v.as_string());
      } else {
        st.log->warn("host-local: ignoring unreadable cursor: " + o.error().message);
      }
    } else if (c.error().code != errc::not_found) {
      return with_context(c.error(), who + ": reading " + std::string(host_local::cursor_kind) + "/" + cursor_name);
    }
  }

  // ---- take the addresses: one job per range set, run at once when there are several ----
  const std::string created = now_seconds();
  json::object attrs;
  for (auto& [k, v] : req.attributes) attrs[k] = v;
  auto make_alloc = [&](const ip_address& a, const host_local::range& R) {
    resource r;
    r.kind = host_local::allocation_kind;
    r.name = host_local::allocation_name(cfg.scope, a);
    r.spec = json::serialize(json::object{{"address", a.to_string()},
                                          {"handle", req.handle},
                                          {"node", node},
                                          {"range", R.subnet.to_string()},
                                          {"attributes", attrs},
                                          {"created", created}});
    return r;
  };
  auto range_of = [&](std::size_t set, const ip_address& a) -> const host_local::range& {
    for (auto& R : cfg.ranges[set].ranges)
      if (R.contains(a)) return R;
    return cfg.ranges[set].ranges.front();
  };
  auto taken_from = [&](std::size_t set, const resource& made, const ip_address& a) {
    const auto& R = range_of(set, a);
    return taken_address{set, made.key(), made.revision, {ip_prefix(a, R.subnet.length()), R.gateway, R.subnet.to_string()}};
  };

  auto take_requested = [&](std::size_t i) -> result<taken_address> {
    const ip_address a = *requested_in[i];
    auto made = ds.create(make_alloc(a, cfg.ranges[i].ranges[requested_range[i]]));
    if (made) return taken_from(i, *made, a);
    if (made.error().code == errc::already_exists) {
      std::string holder;
      if (auto cur = ds.get({std::string(host_local::allocation_kind), "", host_local::allocation_name(cfg.scope, a)}))
        if (auto o = parse_spec(*cur)) holder = get_string(*o, "handle");
      return error(errc::already_exists,
                   who + ": requested address " + a.to_string() + " is already in use" + (holder.empty() ? "" : " by handle " + holder));
    }
    return with_context(made.error(), who + ": taking requested address " + a.to_string());
  };

  constexpr int probes = 4;  // blind attempts before reading which addresses are in use
  auto take_free = [&](std::size_t i) -> result<taken_address> {
    const auto& rs = cfg.ranges[i];
    std::optional<ip_address> after;
    if (auto it = last.find(st.set_keys[i]); it != last.end())
      if (auto a = ip_address::parse(it->second)) after = *a;
    walker w(rs, cfg, after);
    std::optional<result<taken_address>> done;
    auto attempt = [&](u128 v) {
      const ip_address a = from_u128(rs.family(), v);
      auto made = ds.create(make_alloc(a, range_of(i, a)));
      if (made) done = taken_from(i, *made, a);
      else if (made.error().code != errc::already_exists) done = with_context(made.error(), who + ": taking " + a.to_string());
    };
    for (int p = 0; p < probes && !done; ++p) {
      auto v = w.next(nullptr, nullptr);
      if (!v) break;
      attempt(*v);
    }
    if (done) return std::move(*done);
    // A busy neighbourhood: read what is in use once, then try only free-looking addresses.
    list_options lo;
    lo.kind = host_local::allocation_kind;
    lo.ns = "";
    lo.name_prefix = st.prefix;
    auto all = ds.list_all(lo);
    if (!all) return with_context(all.error(), who + ": listing " + std::string(host_local::allocation_kind));
    std::unordered_set<std::uint64_t> used4;
    std::set<u128> used6;
    for (auto& r : all->items)
      if (auto a = address_from_name(r.name, st.prefix); a && a->family() == rs.family()) {
        if (a->is_v4()) used4.insert(a->v4_host_order());
        else used6.insert(to_u128(*a));
      }
    while (!done) {
      auto v = rs.family() == ip_family::v4 ? w.next(&used4, nullptr) : w.next(nullptr, &used6);
      if (!v) break;
      attempt(*v);
    }
    if (done) return std::move(*done);
    return error(errc::exhausted, who + ": no free address in range set ranges[" + std::to_string(i) + "] (" + rs.to_string() +
                                      ", scope " + cfg.scope + ")");
  };

  std::vector<std::size_t> sets;  // requested first, then free ones, each range set once
  for (std::size_t i = 0; i < cfg.ranges.size(); ++i)
    if (requested_in[i]) sets.push_back(i);
  const std::size_t n_requested = sets.size();
  sets.insert(sets.end(), auto_sets.begin(), auto_sets.end());
  auto results = run_jobs<result<taken_address>>(sets.size(), st.write_in_parallel(), [&](std::size_t k) {
    return k < n_requested ? take_requested(sets[k]) : take_free(sets[k]);
  });

  std::vector<taken_address> taken;
  std::optional<error> failure;
  for (auto& r : results) {
    if (r) taken.push_back(*r);
    else if (!failure) failure = r.error();
  }
  auto rollback = [&] {
    run_jobs<int>(taken.size(), st.write_in_parallel(), [&](std::size_t k) {
      auto& t = taken[k];
      if (auto r = ds.remove(t.key, t.revision); !r && r.error().code != errc::not_found)
        st.log->warn("host-local: " + who + ": could not give back " + t.key.to_string() + ": " + r.error().message +
                     " (gc will release it)");
      return 0;
    });
    taken.clear();
  };
  if (failure) {
    rollback();
    return *failure;
  }

  // ---- the handle (the index that makes release cheap) and the cursor, written at once ----
  handle_record h;
  h.handle = req.handle;
  h.node = node;
  for (auto& t : taken) h.entries.push_back({t.out.address.address(), t.revision, t.out.pool});
  resource hr;
  hr.kind = host_local::handle_kind;
  hr.name = host_local::handle_name(cfg.scope, req.handle);
  hr.spec = handle_spec(h);
  // The cursor is a hint, written best-effort: losing its compare-and-swap to another
  // assign costs nothing but a probe later, and it may move even if the handle fails.
  auto move_cursor = [&] {
    json::object l;
    for (auto& [k, v] : last) l[k] = v;
    for (auto& t : taken) l[st.set_keys[t.set]] = t.out.address.address().to_string();
    resource c;
    c.kind = host_local::cursor_kind;
    c.name = cursor_name;
    c.spec = json::serialize(json::object{{"node", node}, {"last", std::move(l)}});
    result<resource> w = error(errc::internal, "");
    if (cursor) {
      c.revision = cursor->revision;
      c.labels = cursor->labels;
      w = ds.update(c);
    } else {
      w = ds.create(c);
    }
    if (!w && w.error().code != errc::conflict && w.error().code != errc::already_exists)
      st.log->debug("host-local: cursor not moved: " + w.error().message);
  };
  auto written = run_jobs<result<resource>>(auto_sets.empty() ? 1 : 2, st.write_in_parallel(), [&](std::size_t k) -> result<resource> {
    if (k == 0) return ds.create(hr);
    move_cursor();
    return resource{};
  });
  if (auto& made = written[0]; !made) {
    rollback();
    if (made.error().code == errc::already_exists) {
      std::string held;
      if (auto cur = ds.get(hr.key()))
        if (auto rec = read_handle(*cur))
          for (auto& e : rec->entries) held += (held.empty() ? "" : ", ") + e.address.to_string();
      return error(errc::already_exists, who + ": the handle already holds addresses" + (held.empty() ? "" : " (" + held + ")") +
                                             "; release it first");
    }
    return with_context(made.error(), who + ": recording " + hr.key().to_string());
  }

  std::sort(taken.begin(), taken.end(), [](const taken_address& a, const taken_address& b) { return a.set < b.set; });
  std::vector<assigned_address> out;
  out.reserve(taken.size());
  for (auto& t : taken) out.push_back(t.out);
  return out;
}

namespace {

// Releases one handle; adds to `released` the number of allocations it removed.
result<bool> release_one(const host_local::state& st, std::string_view handle, std::uint64_t& released) {
  resource_key hk{std::string(host_local::handle_kind), "", host_local::handle_name(st.cfg.scope, handle)};
  for (int attempt = 0; attempt < 16; ++attempt) {
    auto cur = st.ds.get(hk);
    if (!cur) {
      if (cur.error().code == errc::not_found) return false;
      return with_context(cur.error(), "release " + std::string(handle) + ": reading " + hk.to_string());
    }
    auto rec = read_handle(*cur);
    if (!rec) return rec.error();
    if (rec->handle != handle)
      return error(errc::invalid, hk.to_string() + " records handle '" + rec->handle + "', not '" + std::string(handle) +
                                      "' (two handles share one name); release it by hand");
    // Allocations first (at once when there are several), the handle last: a crash in
    // between leaves a handle whose stale revisions a retry skips, never a lost address.
    auto removed = run_jobs<result<bool>>(rec->entries.size(), st.write_in_parallel(), [&](std::size_t k) -> result<bool> {
      const auto& e = rec->entries[k];
      resource_key ak{std::string(host_local::allocation_kind), "", host_local::allocation_name(st.cfg.scope, e.address)};
      auto r = st.ds.remove(ak, e.revision);
      if (r) return true;
      // not_found: released already; conflict: the address changed hands since (not ours).
      if (r.error().code == errc::not_found || r.error().code == errc::conflict) return false;
      return with_context(r.error(), "release " + std::string(handle) + ": removing " + ak.to_string());
    });
    for (auto& r : removed) {
      if (!r) return r.error();
      if (*r) ++released;
    }
    auto r = st.ds.remove(hk, cur->revision);
    if (r || r.error().code == errc::not_found) return true;
    if (r.error().code != errc::conflict) return with_context(r.error(), "release " + std::string(handle) + ": removing " + hk.to_string());
    // The handle changed while we worked (release_addresses): go again with what it lists now.
  }
  return error(errc::conflict, "release " + std::string(handle) + ": " + hk.to_string() + " keeps changing; try again");
}

// Drops `address` (allocated at `revision`) from its handle's list.
result<void> drop_from_handle(const host_local::state& st, const std::string& handle, const ip_address& address,
                              const std::string& revision) {
  resource_key hk{std::string(host_local::handle_kind), "", host_local::handle_name(st.cfg.scope, handle)};
  for (int attempt = 0; attempt < 16; ++attempt) {
    auto cur = st.ds.get(hk);
    if (!cur) return cur.error().code == errc::not_found ? result<void>() : result<void>(cur.error());
    auto rec = read_handle(*cur);
    if (!rec) return rec.error();
    auto n = rec->entries.size();
    std::erase_if(rec->entries, [&](const handle_entry& e) { return e.address == address && e.revision == revision; });
    if (rec->entries.size() == n) return {};
    result<void> w;
    if (rec->entries.empty()) {
      w = st.ds.remove(hk, cur->revision);
    } else {
      auto upd = *cur;
      upd.spec = handle_spec(*rec);
      auto u = st.ds.update(upd);
      if (!u) w = u.error();
    }
    if (w || w.error().code == errc::not_found) return {};
    if (w.error().code != errc::conflict) return w.error();
  }
  return error(errc::conflict, hk.to_string() + " keeps changing; try again");
}

}  // namespace

result<void> host_local_ipam::release_handle(std::string_view handle) const {
  if (handle.empty()) return error(errc::invalid, "release: the handle is empty");
  std::uint64_t n = 0;
  auto r = release_one(*s_, handle, n);
  if (!r) return r.error();
  return {};
}

result<void> host_local_ipam::release_addresses(std::span<const ip_address> addresses) const {
  const auto& st = *s_;
  for (auto& a : addresses) {
    resource_key ak{std::string(host_local::allocation_kind), "", host_local::allocation_name(st.cfg.scope, a)};
    for (int attempt = 0;; ++attempt) {
      if (attempt == 16) return error(errc::conflict, "release " + a.to_string() + ": " + ak.to_string() + " keeps changing; try again");
      auto cur = st.ds.get(ak);
      if (!cur) {
        if (cur.error().code == errc::not_found) break;
        return with_context(cur.error(), "release " + a.to_string());
      }
      std::string handle;
      if (auto o = parse_spec(*cur)) handle = get_string(*o, "handle");
      auto r = st.ds.remove(ak, cur->revision);
      if (!r) {
        if (r.error().code == errc::not_found) break;
        if (r.error().code == errc::conflict) continue;
        return with_context(r.error(), "release " + a.to_string());
      }
      if (!handle.empty())
        if (auto d = drop_from_handle(st, handle, a, cur->revision); !d)
          st.log->warn("host-local: released " + a.to_string() + " but could not update its handle " + handle + ": " +
                       d.error().message);
      break;
    }
  }
  return {};
}

namespace {

result<std::vector<resource>> list_kind(const host_local::state& st, std::string_view kind) {
  list_options lo;
  lo.kind = kind;
  lo.ns = "";
  lo.name_prefix = st.prefix;
  auto all = st.ds.list_all(lo);
  if (!all) return with_context(all.error(), "listing " + std::string(kind));
  return std::move(all->items);
}

}  // namespace

result<std::vector<allocation>> host_local_ipam::allocations() const {
  auto items = list_kind(*s_, host_local::allocation_kind);
  if (!items) return items.error();
  std::vector<allocation> out;
  out.reserve(items->size());
  for (auto& r : *items) {
    auto o = parse_spec(r);
    if (!o) return o.error();
    auto a = ip_address::parse(get_string(*o, "address"));
    if (!a) return error(errc::invalid, r.key().to_string() + ": spec.address is not an IP address");
    allocation al;
    al.address = *a;
    al.handle = get_string(*o, "handle");
    if (auto* at = o->if_contains("attributes"); at && at->is_object())
      for (auto& [k, v] : at->as_object())
        if (v.is_string()) al.attributes[std::string(k)] = std::string(v.as_string());
    out.push_back(std::move(al));
  }
  std::sort(out.begin(), out.end(), [](const allocation& x, const allocation& y) { return x.address < y.address; });
  return out;
}

result<std::vector<ip_address>> host_local_ipam::addresses_of(std::string_view handle) const {
  if (handle.empty()) return error(errc::invalid, "addresses_of: the handle is empty");
  const auto& st = *s_;
  resource_key hk{std::string(host_local::handle_kind), "", host_local::handle_name(st.cfg.scope, handle)};
  auto cur = st.ds.get(hk);
  if (!cur) {
    if (cur.error().code == errc::not_found) return std::vector<ip_address>{};
    return with_context(cur.error(), "addresses of " + std::string(handle) + ": reading " + hk.to_string());
  }
  auto rec = read_handle(*cur);
  if (!rec) return rec.error();
  // The handle lists what it was given; an entry whose allocation is gone or changed hands
  // (a crash between the two writes of a release) is not the handle's any more.
  std::vector<ip_address> out;
  for (auto& e : rec->entries) {
    resource_key ak{std::string(host_local::allocation_kind), "", host_local::allocation_name(st.cfg.scope, e.address)};
    auto a = st.ds.get(ak);
    if (!a) {
      if (a.error().code == errc::not_found) continue;
      return with_context(a.error(), "addresses of " + std::string(handle) + ": reading " + ak.to_string());
    }
    auto o = parse_spec(*a);
    if (o && get_string(*o, "handle") == handle) out.push_back(e.address);
  }
  std::sort(out.begin(), out.end());
  return out;
}

result<assigned_address> host_local_ipam::assign_tunnel_address(tunnel_kind k, ip_family f) const {
  if (s_->node.empty()) return error(errc::invalid, "host-local: a tunnel address needs the node's name (the plugin was made without one)");
  const std::string h = tunnel_handle(k, s_->node);
  auto held = addresses_of(h);
  if (!held) return held.error();
  for (auto& a : *held)
    if (a.family() == f)
      for (auto& set : s_->cfg.ranges)
        for (auto& rg : set.ranges)
          if (rg.contains(a)) return assigned_address{ip_prefix(a, rg.subnet.length()), rg.gateway, rg.subnet.to_string()};
  if (!held->empty())
    return error(errc::already_exists, "host-local: handle " + h + " holds " + held->front().to_string() + ", not an address of the asked family");
  assign_request r;
  r.handle = h;
  r.attributes = {{"node", s_->node}, {"type", k == tunnel_kind::ipip ? "ipipTunnelAddress" : "vxlanTunnelAddress"}};
  r.num_v4 = f == ip_family::v4 ? 1 : 0;
  r.num_v6 = f == ip_family::v6 ? 1 : 0;
  auto got = assign(r);
  if (!got) return with_context(got.error(), "tunnel address for " + s_->node);
  if (got->empty()) return error(errc::exhausted, "host-local: no range of that family for the tunnel address of " + s_->node);
  return got->front();
}

result<void> host_local_ipam::release_tunnel_address(tunnel_kind k) const {
  if (s_->node.empty()) return error(errc::invalid, "host-local: a tunnel address needs the node's name (the plugin was made without one)");
  return release_handle(tunnel_handle(k, s_->node));
}

result<ipam_usage> host_local_ipam::usage() const {
  const auto& st = *s_;
  auto items = list_kind(st, host_local::allocation_kind);
  if (!items) return items.error();
  std::vector<ip_address> used;
  for (auto& r : *items)
    if (auto a = address_from_name(r.name, st.prefix)) used.push_back(*a);
  std::sort(used.begin(), used.end());
  ipam_usage u;
  for (std::size_t i = 0; i < st.cfg.ranges.size(); ++i) {
    for (std::size_t j = 0; j < st.cfg.ranges[i].ranges.size(); ++j) {
      const auto& R = st.cfg.ranges[i].ranges[j];
      const u128 lo = to_u128(R.range_start), hi = to_u128(R.range_end);
      // Addresses never handed out: the gateway and reserved prefixes, merged.
      std::vector<std::pair<u128, u128>> out_of_use;
      if (R.contains(R.gateway)) out_of_use.push_back({to_u128(R.gateway), to_u128(R.gateway)});
      for (auto& p : st.cfg.reserved) {
        if (p.family() != R.subnet.family()) continue;
        u128 a = std::max(lo, host_local::detail::first_of(p)), b = std::min(hi, host_local::detail::last_of(p));
        if (a <= b) out_of_use.push_back({a, b});
      }
      std::sort(out_of_use.begin(), out_of_use.end());
      u128 excluded = 0, covered_to = 0;
      bool any = false;
      for (auto [a, b] : out_of_use) {
        if (any && a <= covered_to) {
          if (b > covered_to) {
            excluded += b - covered_to;
            covered_to = b;
          }
        } else {
          excluded += b - a + 1;
          covered_to = b;
          any = true;
        }
      }
      pool_usage pu;
      pu.cidr = R.subnet;
      pu.name = "ranges[" + std::to_string(i) + "][" + std::to_string(j) + "] " + R.range_start.to_string() + "-" +
                R.range_end.to_string();
      pu.total = host_local::detail::saturate(hi - lo + 1 - excluded);
      auto b = std::lower_bound(used.begin(), used.end(), R.range_start);
      auto e = std::upper_bound(used.begin(), used.end(), R.range_end);
      pu.in_use = static_cast<std::uint64_t>(e - b);
      u.pools.push_back(std::move(pu));
    }
  }
  return u;
}

result<gc_report> host_local_ipam::gc(std::string_view prefix, const std::set<std::string>& valid) const {
  const auto& st = *s_;
  auto handles = list_kind(st, host_local::handle_kind);
  if (!handles) return handles.error();
  auto allocs = list_kind(st, host_local::allocation_kind);
  if (!allocs) return allocs.error();
  gc_report rep;
  std::set<std::string> released;
  auto ours = [&](const std::string& h) { return h.compare(0, prefix.size(), prefix) == 0 && !valid.count(h); };

  // Addresses that a handle lists, with the revision it holds them at.
  std::set<std::pair<std::string, std::string>> listed;  // (allocation name, revision)
  for (auto& hr : *handles) {
    auto rec = read_handle(hr);
    if (!rec) {
      st.log->warn("host-local: gc: skipping " + rec.error().message);
      continue;
    }
    if (ours(rec->handle)) {
      std::uint64_t n = 0;
      auto r = release_one(st, rec->handle, n);
      if (!r) return r.error();
      rep.released_addresses += n;
      if (released.insert(rec->handle).second) rep.released_handles.push_back(rec->handle);
      continue;
    }
    for (auto& e : rec->entries) listed.insert({host_local::allocation_name(st.cfg.scope, e.address), e.revision});
  }

  // Allocations no live handle lists: of released handles (a crash between the two writes
  // of an assign), or of live handles once older than the grace (an assign that crashed
  // before writing its handle, then was retried under the same handle).
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (auto& ar : *allocs) {
    if (listed.count({ar.name, ar.revision})) continue;
    auto o = parse_spec(ar);
    if (!o) {
      st.log->warn("host-local: gc: skipping " + o.error().message);
      continue;
    }
    std::string h = get_string(*o, "handle");
    if (h.compare(0, prefix.size(), prefix) != 0) continue;
    const bool dead = !valid.count(h);
    long long created = 0;
    try {
      created = std::stoll(get_string(*o, "created"));
    } catch (...) {
      created = 0;
    }
    if (now - created < st.cfg.orphan_grace.count()) continue;  // maybe an assign in flight
    // Only if no handle lists it now (its handle may have been written since our list).
    resource_key hk{std::string(host_local::handle_kind), "", host_local::handle_name(st.cfg.scope, h)};
    if (auto cur = st.ds.get(hk)) {
      if (auto rec = read_handle(*cur)) {
        auto a = address_from_name(ar.name, st.prefix);
        bool still = false;
        for (auto& e : rec->entries) still |= a && e.address == *a && e.revision == ar.revision;
        if (still) continue;
      }
    }
    auto r = st.ds.remove(ar.key(), ar.revision);
    if (r) {
      ++rep.released_addresses;
      if (dead && released.insert(h).second) rep.released_handles.push_back(h);
    } else if (r.error().code != errc::not_found && r.error().code != errc::conflict) {
      return with_context(r.error(), "gc: removing " + ar.key().to_string());
    }
  }
  return rep;
}

CNF_END_NAMESPACE
