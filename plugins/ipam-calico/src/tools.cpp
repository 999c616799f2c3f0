// calico-ipam functions for the `cnf ipam` tool: usage, lookup, check, release, configure.
#include "internal.hpp"

#include <cnf/model/workload_endpoint.hpp>

#include <algorithm>

CNF_BEGIN_NAMESPACE
namespace calico_ipam {

namespace json = boost::json;
using namespace detail;

namespace {
result<std::vector<resource>> list(const any_datastore& ds, std::string_view kind) {
  list_options lo;
  lo.kind = std::string(kind);
  auto l = ds.list_all(lo);
  if (!l) return error(l.error().code, "listing " + std::string(kind) + "s: " + l.error().message);
  return std::move(l->items);
}

struct parsed_blocks {
  std::vector<std::pair<resource, block>> ok;
  std::vector<error> bad;
};

result<parsed_blocks> blocks_of(const any_datastore& ds) {
  auto l = list(ds, kinds::ipam_block);
  if (!l) return l.error();
  parsed_blocks out;
  for (auto& r : *l) {
    auto b = parse_block(r);
    if (!b) out.bad.push_back(b.error());
    else if (!b->deleted) out.ok.emplace_back(std::move(r), std::move(*b));
  }
  std::sort(out.ok.begin(), out.ok.end(), [](auto& a, auto& b) { return a.second.cidr < b.second.cidr; });
  return out;
}

result<std::vector<pool>> pools_of(const any_datastore& ds, std::vector<error>* problems = nullptr) {
  auto l = list(ds, kinds::ip_pool);
  if (!l) return l.error();
  std::vector<pool> valid;
  auto p = validate_pools(*l, &valid);
  if (problems) *problems = std::move(p);
  return valid;
}

std::uint32_t borrowed_in(const block& b) {
  std::string owner = b.affinity_node();
  std::uint32_t n = 0;
  for (auto& a : b.allocations) {
    if (!a) continue;
    if (auto n_ = b.attributes[*a].node(); !n_.empty() && n_ != owner) ++n;
  }
  return n;
}
}  // namespace

result<ipam_config> read_config(const any_datastore& ds) {
  auto g = ds.get({std::string(kinds::ipam_config), "", std::string(config_name)});
  if (!g) {
    if (g.error().code == errc::not_found) return ipam_config{};
    return g.error();
  }
  return parse_config(*g);
}

result<ipam_config> change_config(const any_datastore& ds, const config_change& c) {
  resource_key key{std::string(kinds::ipam_config), "", std::string(config_name)};
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto g = ds.get(key);
    ipam_config cur;
    json::object spec;
    if (g) {
      auto p = parse_config(*g);
      if (!p) return p.error();
      cur = *p;
      auto o = spec_object(*g);
      if (o) spec = std::move(*o);  // keep fields cnf does not know
    } else if (g.error().code != errc::not_found) {
      return g.error();
    }
    if (c.strict_affinity) cur.strict_affinity = *c.strict_affinity;
    if (c.auto_allocate_blocks) cur.auto_allocate_blocks = *c.auto_allocate_blocks;
    if (c.max_blocks_per_host) cur.max_blocks_per_host = *c.max_blocks_per_host;
    spec["strictAffinity"] = cur.strict_affinity;
    spec["autoAllocateBlocks"] = cur.auto_allocate_blocks;
    spec["maxBlocksPerHost"] = cur.max_blocks_per_host;
    resource r;
    r.kind = key.kind;
    r.name = key.name;
    r.spec = json::serialize(spec);
    result<resource> w = g ? [&] { r.revision = g->revision; r.labels = g->labels; return ds.update(r); }() : ds.create(r);
    if (w) return cur;
    if (w.error().code != errc::conflict && w.error().code != errc::already_exists && w.error().code != errc::not_found) return w.error();
  }
  return error(errc::unavailable, "IPAMConfig/default: gave up after 100 attempts (it keeps changing)");
}

result<ipam_usage> usage(const any_datastore& ds) {
  auto pools = pools_of(ds);
  if (!pools) return pools.error();
  auto blocks = blocks_of(ds);
  if (!blocks) return blocks.error();
  ipam_usage u;
  for (auto& p : *pools) {
    pool_usage pu;
    pu.cidr = p.cidr;
    pu.name = p.name;
    pu.total = p.cidr.size();
    for (auto& [r, b] : blocks->ok) {
      if (!p.cidr.contains(b.cidr)) continue;
      block_usage bu;
      bu.cidr = b.cidr;
      bu.affinity = b.affinity.value_or("");
      bu.total = b.size();
      bu.in_use = b.in_use();
      bu.borrowed = borrowed_in(b);
      pu.in_use += bu.in_use;
      pu.blocks.push_back(std::move(bu));
    }
    u.pools.push_back(std::move(pu));
  }
  std::sort(u.pools.begin(), u.pools.end(), [](auto& a, auto& b) { return a.cidr < b.cidr; });
  return u;
}

result<std::vector<borrowed_address>> borrowed(const any_datastore& ds) {
  auto blocks = blocks_of(ds);
  if (!blocks) return blocks.error();
  std::vector<borrowed_address> out;
  for (auto& [r, b] : blocks->ok) {
    std::string owner = b.affinity_node();
    for (std::uint32_t o = 0; o < b.size(); ++o) {
      if (!b.allocations[o]) continue;
      auto n = b.attributes[*b.allocations[o]].node();
      if (n.empty() || n == owner) continue;
      out.push_back({b.address(o), b.cidr, owner, b.handle_of(o), n});
    }
  }
  return out;
}

result<address_info> lookup(const any_datastore& ds, const ip_address& a) {
  address_info info;
  info.address = a;
  auto pools = pools_of(ds);
  if (!pools) return pools.error();
  for (auto& p : *pools)
    if (p.cidr.contains(a)) info.in_pool = p;
  auto rs = list(ds, kinds::ip_reservation);
  if (!rs) return rs.error();
  for (auto& r : *rs)
    if (auto p = parse_reservation(r))
      for (auto& c : p->cidrs)
        if (c.contains(a)) info.reserved = true;
  auto blocks = blocks_of(ds);
  if (!blocks) return blocks.error();
  for (auto& [r, b] : blocks->ok) {
    auto o = b.ordinal(a);
    if (!o) continue;
    info.block = b.cidr;
    info.block_affinity = b.affinity.value_or("");
    if (b.allocations[*o]) {
      info.allocated = true;
      info.handle = b.handle_of(*o);
      info.attributes = b.attributes[*b.allocations[*o]].secondary;
    }
    break;
  }
  return info;
}

result<release_report> release_addresses(const any_datastore& ds, std::span<const ip_address> addresses) {
  std::vector<release_item> items;
  for (auto& a : addresses) items.push_back({a, {}});
  return release_addresses(ds, items);
}

result<release_report> release_addresses(const any_datastore& ds, std::span<const release_item> items) {
  detail::state st(ds, "", {}, nullptr);
  st.opts.cache_ttl = std::chrono::milliseconds(0);
  return st.release_addresses(items);
}

std::string_view to_string(problem::kind k) noexcept {
  switch (k) {
    case problem::kind::leaked_address: return "leaked-address";
    case problem::kind::endpoint_without_allocation: return "endpoint-without-allocation";
    case problem::kind::handle_without_addresses: return "handle-without-addresses";
    case problem::kind::block_outside_pools: return "block-outside-pools";
    case problem::kind::affinity_to_missing_node: return "affinity-to-missing-node";
    case problem::kind::stale_affinity: return "stale-affinity";
    case problem::kind::invalid_resource: return "invalid-resource";
    case problem::kind::duplicate_address: return "duplicate-address";
  }
  return "?";
}

std::string check_report::to_json() const {
  json::object o;
  o["addressesInUse"] = addresses_in_use;
  o["blocks"] = blocks;
  o["handles"] = handles;
  json::array ps;
  for (auto& p : problems) {
    json::object po;
    po["kind"] = to_string(p.what);
    po["resource"] = p.resource;
    po["message"] = p.message;
    if (p.address) po["address"] = p.address->to_string();
    if (!p.handle.empty()) po["handle"] = p.handle;
    ps.emplace_back(std::move(po));
  }
  o["problems"] = std::move(ps);
  return json::serialize(o);
}

result<check_report> parse_check_report(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return error(errc::invalid, "check report: not a JSON object" + (ec ? " (" + ec.message() + ")" : std::string()));
  auto& o = v.as_object();
  check_report rep;
  auto count = [&](const char* k) -> std::uint64_t {
    auto* x = o.if_contains(k);
    return x && x->is_int64() && x->as_int64() >= 0 ? static_cast<std::uint64_t>(x->as_int64()) : (x && x->is_uint64() ? x->as_uint64() : 0);
  };
  rep.addresses_in_use = count("addressesInUse");
  rep.blocks = count("blocks");
  rep.handles = count("handles");
  auto* ps = o.if_contains("problems");
  if (!ps || !ps->is_array()) return error(errc::invalid, "check report: 'problems' must be an array");
  std::size_t i = 0;
  for (auto& p : ps->as_array()) {
    std::string where_ = "check report: problems[" + std::to_string(i++) + "]";
    if (!p.is_object()) return error(errc::invalid, where_ + ": expected an object");
    auto& po = p.as_object();
    auto str = [&](const char* k) -> std::string {
      auto* x = po.if_contains(k);
      return x && x->is_string() ? std::string(x->as_string()) : std::string();
    };
    problem pr;
    std::string kind = str("kind");
    bool known = false;
    for (int k = 0; k <= static_cast<int>(problem::kind::duplicate_address); ++k)
      if (to_string(static_cast<problem::kind>(k)) == kind) {
        pr.what = static_cast<problem::kind>(k);
        known = true;
      }
    if (!known) return error(errc::invalid, where_ + ".kind: '" + kind + "' is not a problem kind");
    pr.resource = str("resource");
    pr.message = str("message");
    pr.handle = str("handle");
    if (auto a = str("address"); !a.empty()) {
      auto ip = ip_address::parse(a);
      if (!ip) return error(errc::invalid, where_ + ".address: " + ip.error().message);
      pr.address = *ip;
    }
    rep.problems.push_back(std::move(pr));
  }
  return rep;
}

namespace {
std::string resource_of(const std::string& message) {
  auto c = message.find(':');
  return c == std::string::npos ? std::string() : message.substr(0, c);
}
}  // namespace

result<check_report> check(const any_datastore& ds, const check_options& opt) {
  check_report rep;
  auto add = [&](problem::kind k, std::string res, std::string msg, std::optional<ip_address> a = std::nullopt, std::string h = {}) {
    rep.problems.push_back({k, std::move(res), std::move(msg), a, std::move(h)});
  };

  std::vector<error> pool_problems;
  auto pools = pools_of(ds, &pool_problems);
  if (!pools) return pools.error();
  for (auto& e : pool_problems) add(problem::kind::invalid_resource, resource_of(e.message), e.message);
  std::vector<pool> all_pools = *pools;

  auto rs = list(ds, kinds::ip_reservation);
  if (!rs) return rs.error();
  std::vector<reservation> reservations;
  for (auto& r : *rs) {
    auto p = parse_reservation(r);
    if (!p) add(problem::kind::invalid_resource, where(r), p.error().message);
    else reservations.push_back(std::move(*p));
  }
  for (auto& e : validate_reservations(reservations, all_pools)) add(problem::kind::invalid_resource, resource_of(e.message), e.message);

  std::set<std::string> nodes;
  bool know_nodes = false;
  if (opt.check_nodes) {
    auto ns = list(ds, kinds::node);
    if (!ns) return ns.error();
    for (auto& n : *ns) nodes.insert(n.name);
    know_nodes = !nodes.empty();
  }

  auto blocks = blocks_of(ds);
  if (!blocks) return blocks.error();
  for (auto& e : blocks->bad) add(problem::kind::invalid_resource, resource_of(e.message), e.message);
  rep.blocks = blocks->ok.size() + blocks->bad.size();

  struct holder {
    std::string block;
    std::string handle;
  };
  std::map<ip_address, holder> in_use;
  std::map<std::string, std::map<std::string, std::uint32_t>> held;  // handle -> block cidr -> count
  const block* prev = nullptr;
  for (auto& [r, b] : blocks->ok) {
    if (prev && prev->cidr.overlaps(b.cidr))
      add(problem::kind::duplicate_address, where(r),
          where(r) + ": spec.cidr: " + b.cidr.to_string() + " overlaps block " + prev->cidr.to_string() + "; addresses may be handed out twice");
    prev = &b;
    if (std::none_of(all_pools.begin(), all_pools.end(), [&](const pool& p) { return p.cidr.contains(b.cidr); }))
      add(problem::kind::block_outside_pools, where(r), where(r) + ": " + b.cidr.to_string() + " is in no (valid) IPPool");
    std::string owner = b.affinity_node();
    if (know_nodes && !owner.empty() && !nodes.count(owner))
      add(problem::kind::affinity_to_missing_node, where(r), where(r) + ": spec.affinity: node " + owner + " does not exist");
    for (std::uint32_t o = 0; o < b.size(); ++o) {
      if (!b.allocations[o]) continue;
      auto a = b.address(o);
      auto h = b.handle_of(o);
      auto [it, fresh] = in_use.emplace(a, holder{where(r), h});
      if (!fresh)
        add(problem::kind::duplicate_address, where(r), a.to_string() + " is allocated in " + it->second.block + " and " + where(r), a, h);
      ++held[h][b.cidr.to_string()];
    }
  }
  rep.addresses_in_use = in_use.size();

  auto hs = list(ds, kinds::ipam_handle);
  if (!hs) return hs.error();
  rep.handles = hs->size();
  for (auto& r : *hs) {
    auto p = parse_handle(r);
    if (!p) {
      add(problem::kind::invalid_resource, where(r), p.error().message);
      continue;
    }
    auto& actual = held[p->handle_id];
    for (auto& [cidr, count] : p->blocks) {
      auto it = actual.find(cidr);
      if (it == actual.end())
        add(problem::kind::handle_without_addresses, where(r),
            where(r) + ": spec.block: names " + cidr + " (" + std::to_string(count) + "), which holds no address of handle '" + p->handle_id + "'",
            std::nullopt, p->handle_id);
    }
  }

  auto affs = list(ds, kinds::block_affinity);
  if (!affs) return affs.error();
  std::map<std::string, const block*> by_cidr;
  for (auto& [r, b] : blocks->ok) by_cidr[b.cidr.to_string()] = &b;
  std::set<std::string> affine_pairs;  // "<node>/<block cidr>" of every BlockAffinity
  for (auto& r : *affs) {
    auto a = parse_affinity(r);
    if (!a) {
      add(problem::kind::invalid_resource, where(r), a.error().message);
      continue;
    }
    affine_pairs.insert(a->node + "/" + a->cidr.to_string());
    if (know_nodes && !nodes.count(a->node))
      add(problem::kind::affinity_to_missing_node, where(r), where(r) + ": spec.node: node " + a->node + " does not exist");
    auto it = by_cidr.find(a->cidr.to_string());
    if (a->state != "confirmed")
      add(problem::kind::stale_affinity, where(r), where(r) + ": spec.state is " + a->state + " (a claim or release in progress, or interrupted: the node's next IPAM operation or gc settles it)");
    else if (it == by_cidr.end())
      add(problem::kind::stale_affinity, where(r), where(r) + ": block " + a->cidr.to_string() + " does not exist");
    else if (it->second->affinity != "host:" + a->node)
      add(problem::kind::stale_affinity, where(r),
          where(r) + ": block " + a->cidr.to_string() + " is affine to '" + it->second->affinity.value_or("") + "', not host:" + a->node);
  }

  // A block of a node without its BlockAffinity: releases that look through the node's
  // affinities would miss it (gc writes the affinity back).
  for (auto& [r, b] : blocks->ok) {
    std::string owner = b.affinity_node();
    if (!owner.empty() && !b.deleted && !affine_pairs.count(owner + "/" + b.cidr.to_string()))
      add(problem::kind::stale_affinity, where(r),
          where(r) + ": spec.affinity names node " + owner + ", which has no BlockAffinity for it (gc writes it back)");
  }

  // Leaks: addresses nobody owns.
  if (opt.live_handles) {
    for (auto& [a, h] : in_use)
      if (!is_tunnel_handle(h.handle) && !opt.live_handles->count(h.handle))
        add(problem::kind::leaked_address, h.block, a.to_string() + " is held by handle '" + h.handle + "', which is not live", a, h.handle);
  } else {
    std::vector<resource> eps;
    if (opt.endpoints) eps = *opt.endpoints;
    else {
      auto l = list(ds, kinds::workload_endpoint);
      if (!l) return l.error();
      eps = std::move(*l);
    }
    std::map<ip_address, std::string> owned;  // address -> endpoint
    for (auto& e : eps) {
      auto w = model::parse_workload_endpoint(e);  // the framework's one WorkloadEndpoint model
      if (!w) {
        add(problem::kind::invalid_resource, where(e), w.error().message);
        continue;
      }
      for (auto& net : w->ip_networks) {
        const ip_address addr = net.address();
        owned[addr] = where(e);
        bool pooled = std::any_of(all_pools.begin(), all_pools.end(), [&](const pool& p) { return p.cidr.contains(addr); });
        if (pooled && !in_use.count(addr))
          add(problem::kind::endpoint_without_allocation, where(e), where(e) + ": " + addr.to_string() + " is not allocated in IPAM", addr);
      }
    }
    for (auto& [a, h] : in_use) {
      if (owned.count(a)) continue;
      if (is_tunnel_handle(h.handle)) {
        auto dash = h.handle.find("-addr-");
        std::string n = h.handle.substr(dash + 6);
        if (!know_nodes || nodes.count(n)) continue;
        add(problem::kind::leaked_address, h.block, a.to_string() + " is the tunnel address of node " + n + ", which does not exist", a, h.handle);
        continue;
      }
      add(problem::kind::leaked_address, h.block, a.to_string() + " (handle '" + h.handle + "') has no workload endpoint", a, h.handle);
    }
  }
  return rep;
}

}  // namespace calico_ipam
CNF_END_NAMESPACE
