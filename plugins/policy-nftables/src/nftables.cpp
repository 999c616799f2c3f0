#include <cnf/plugins/policy_nftables.hpp>

#include <nftables/libnftables.h>

#include <algorithm>
#include <optional>
#include <sstream>
#include <tuple>

CNF_BEGIN_NAMESPACE
namespace nftables_policy {

using netpol::chain_difference;
using netpol::chain_name;
using netpol::policy_display_name;
using netpol::protocol_name;
using netpol::rule_in_family;
using netpol::short_hash;

namespace {

std::string set_name(std::string_view id, ip_family f) {
  return (f == ip_family::v4 ? "cali40" : "cali60") + std::string(id.substr(0, 1)) + "-" + std::string(id.substr(2));
}

std::string element(const ip_prefix& a) {
  return a.length() == (a.family() == ip_family::v4 ? 32 : 128) ? a.address().to_string() : a.to_string();
}

chain render_chain(std::string name, const std::vector<std::string>& bodies) {
  chain c;
  c.name = std::move(name);
  std::string prev;
  for (auto& b : bodies) {
    auto h = short_hash(c.name + "\n" + prev + "\n" + b, 16);
    c.hashes.push_back(h);
    c.rules.push_back(b + (b.empty() ? "" : " ") + "comment \"cali:" + h + "\"");
    prev = h;
  }
  return c;
}

std::string anon(const std::vector<std::string>& items) {
  if (items.size() == 1) return items[0];
  std::string s = "{ ";
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + items[i];
  return s + " }";
}

std::vector<std::string> of_family(const std::vector<ip_prefix>& nets, ip_family f) {
  std::vector<std::string> o;
  for (auto& n : nets)
    if (n.family() == f) o.push_back(element(n));
  return o;
}

std::vector<std::string> ports(const std::vector<port_range>& ps) {
  std::vector<std::string> o;
  for (auto& p : ps) o.push_back(p.first == p.last ? std::to_string(p.first) : std::to_string(p.first) + "-" + std::to_string(p.last));
  return o;
}

}  // namespace

dataplane::dataplane(options o) : opt_(std::move(o)) {}
dataplane::~dataplane() = default;
dataplane::dataplane(dataplane&&) noexcept = default;
dataplane& dataplane::operator=(dataplane&&) noexcept = default;

result<std::string> dataplane::run(const std::string& cmds, bool want_output) {
  // A context per call: its netlink socket opens in the calling thread's network namespace.
  std::unique_ptr<nft_ctx, void (*)(nft_ctx*)> ctx(nft_ctx_new(NFT_CTX_DEFAULT), nft_ctx_free);
  if (!ctx) return cnf::error(errc::io, "nftables: nft_ctx_new failed");
  nft_ctx_buffer_output(ctx.get());
  nft_ctx_buffer_error(ctx.get());
  if (nft_run_cmd_from_buffer(ctx.get(), cmds.c_str()) != 0) {
    std::string err = nft_ctx_get_error_buffer(ctx.get());
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return cnf::error(errc::io, "nftables refused the change, nothing applied: " + err);
  }
  return want_output ? std::string(nft_ctx_get_output_buffer(ctx.get())) : std::string();
}

std::vector<ip_family> dataplane::families() const {
  if (opt_.ipv6) return {ip_family::v4, ip_family::v6};
  return {ip_family::v4};
}

std::string dataplane::table(ip_family f) const { return (f == ip_family::v4 ? "ip " : "ip6 ") + opt_.table; }

std::vector<std::string> dataplane::render_rules(const std::vector<policy_rule>& rules, ip_family f) const {
  std::vector<std::string> out;
  const bool v6 = f == ip_family::v6;
  const std::string ip = v6 ? " ip6" : " ip";
  for (const auto& r : rules) {
    if (!rule_in_family(r, f)) continue;  // matches nothing in this family
    std::string m;
    if (r.protocol) {
      if (r.not_protocol == r.protocol) continue;
      m += " meta l4proto " + protocol_name(*r.protocol);
    } else if (r.not_protocol && *r.not_protocol != (v6 ? 1 : 58)) {  // not the other family's ICMP: always true
      m += " meta l4proto != " + protocol_name(*r.not_protocol);
    }
    auto src = of_family(r.source_nets, f), dst = of_family(r.destination_nets, f);
    if (!src.empty()) m += ip + " saddr " + anon(src);
    if (auto n = of_family(r.not_source_nets, f); !n.empty()) m += ip + " saddr != " + anon(n);
    if (!dst.empty()) m += ip + " daddr " + anon(dst);
    if (auto n = of_family(r.not_destination_nets, f); !n.empty()) m += ip + " daddr != " + anon(n);
    for (auto& id : r.source_ip_sets) m += ip + " saddr @" + set_name(id, f);
    for (auto& id : r.not_source_ip_sets) m += ip + " saddr != @" + set_name(id, f);
    for (auto& id : r.destination_ip_sets) m += ip + " daddr @" + set_name(id, f);
    for (auto& id : r.not_destination_ip_sets) m += ip + " daddr != @" + set_name(id, f);
    if (!r.source_ports.empty()) m += " th sport " + anon(ports(r.source_ports));
    if (!r.not_source_ports.empty()) m += " th sport != " + anon(ports(r.not_source_ports));
    if (!r.destination_ports.empty()) m += " th dport " + anon(ports(r.destination_ports));
    if (!r.not_destination_ports.empty()) m += " th dport != " + anon(ports(r.not_destination_ports));
    const std::string icmp = v6 ? " icmpv6" : " icmp";
    if (r.icmp_type) m += icmp + " type " + std::to_string(*r.icmp_type) + (r.icmp_code ? icmp + " code " + std::to_string(*r.icmp_code) : "");
    if (r.not_icmp_type) m += icmp + " type != " + std::to_string(*r.not_icmp_type);
    switch (r.action) {
      case policy_rule::action_type::allow: m += " meta mark set meta mark | 0x10000 return"; break;
      case policy_rule::action_type::pass: m += " meta mark set meta mark | 0x20000 return"; break;
      case policy_rule::action_type::deny: m += " drop"; break;
      case policy_rule::action_type::log: m += " log prefix \"calico-packet: \" level notice"; break;
    }
    out.push_back(m.substr(1));
  }
  return out;
}

result<void> dataplane::upsert_endpoint(const workload_endpoint& e) {
  if (e.interface_name.empty()) return cnf::error(errc::invalid, "WorkloadEndpoint/" + e.key() + ": spec.interfaceName: missing (the policy chains are per interface)");
  auto& slot = eps_[e.key()];
  if (slot == e) return {};
  slot = e;
  ++pending_;
  return {};
}

result<void> dataplane::remove_endpoint(std::string_view key) {
  if (eps_.erase(std::string(key))) ++pending_;
  return {};
}

void dataplane::drop_chains(const std::string& key) {
  if (auto it = chains_of_.find(key); it != chains_of_.end())
    for (auto& c : it->second) {
      for (auto& pc : policy_chains_) pc.erase(c);
      dirty_chains_.insert(c);
    }
}

/// The chains of one policy or profile (key), in every family, and the sets they use.
void dataplane::render_owner(const std::string& key, const std::string& in_name, const std::string& out_name, const std::vector<policy_rule>* in,
                             const std::vector<policy_rule>* out) {
  drop_chains(key);
  std::vector<std::string> names;
  for (auto [rules, name] : {std::pair{in, &in_name}, std::pair{out, &out_name}}) {
    if (!rules) continue;
    names.push_back(*name);
    dirty_chains_.insert(*name);
    for (auto f : families()) policy_chains_[fi(f)][*name] = render_chain(*name, render_rules(*rules, f));
    for (auto& r : *rules)
      for (auto* ids : {&r.source_ip_sets, &r.destination_ip_sets, &r.not_source_ip_sets, &r.not_destination_ip_sets})
        for (auto& id : *ids) sets_.try_emplace(id), sets_to_delete_.erase(id);
  }
  chains_of_[key] = std::move(names);
}

result<void> dataplane::upsert_policy(const network_policy& p) {
  const auto key = p.key();
  if (auto it = pols_.find(key); it != pols_.end() && it->second == p) return {};
  if (auto it = pols_.find(key); it != pols_.end())
    for (auto& e : it->second.endpoints) pols_of_ep_[e].erase(key);
  for (auto& e : p.endpoints) pols_of_ep_[e].insert(key);
  render_owner(key, chain_name("cali-pi-", policy_display_name(p)), chain_name("cali-po-", policy_display_name(p)), p.ingress_applies ? &p.ingress : nullptr,
               p.egress_applies ? &p.egress : nullptr);
  pols_[key] = p;
  ++pending_;
  return {};
}

result<void> dataplane::remove_policy(std::string_view key) {
  auto it = pols_.find(std::string(key));
  if (it == pols_.end()) return {};
  for (auto& e : it->second.endpoints) pols_of_ep_[e].erase(it->first);
  drop_chains(it->first);
  chains_of_.erase(it->first);
  pols_.erase(it);
  ++pending_;
  return {};
}

result<void> dataplane::upsert_profile(const policy_profile& p) {
  if (auto it = profiles_.find(p.name); it != profiles_.end() && it->second == p) return {};
  render_owner("profile:" + p.name, chain_name("cali-pri-", p.name), chain_name("cali-pro-", p.name), &p.ingress, &p.egress);
  profiles_[p.name] = p;
  ++pending_;
  return {};
}

result<void> dataplane::remove_profile(std::string_view name) {
  auto it = profiles_.find(std::string(name));
  if (it == profiles_.end()) return {};
  drop_chains("profile:" + it->first);
  chains_of_.erase("profile:" + it->first);
  profiles_.erase(it);
  ++pending_;
  return {};
}

result<void> dataplane::add_ip_set_members(std::string_view id, std::span<const ip_prefix> m) {
  sets_to_delete_.erase(std::string(id));
  sets_[std::string(id)].add(m, opt_.ipv6);
  ++pending_;
  return {};
}

result<void> dataplane::remove_ip_set_members(std::string_view id, std::span<const ip_prefix> m) {
  auto it = sets_.find(std::string(id));
  if (it == sets_.end()) return {};
  it->second.remove(m);
  ++pending_;
  return {};
}

result<void> dataplane::remove_ip_set(std::string_view id) {
  if (sets_.erase(std::string(id))) sets_to_delete_.insert(std::string(id));
  ++pending_;
  return {};
}

chain dataplane::endpoint_chain(const workload_endpoint& e, bool ingress) const {
  std::vector<std::string> r{"ct state established,related accept", "ct state invalid drop", "meta mark set meta mark & 0xfffcffff"};
  std::vector<const network_policy*> pols;
  const auto key = e.key();
  if (auto it = pols_of_ep_.find(key); it != pols_of_ep_.end())
    for (auto& k : it->second)
      if (auto p = pols_.find(k); p != pols_.end() && (ingress ? p->second.ingress_applies : p->second.egress_applies)) pols.push_back(&p->second);
  std::sort(pols.begin(), pols.end(), [](auto* a, auto* b) { return std::tie(a->order, a->kind, a->ns, a->name) < std::tie(b->order, b->kind, b->ns, b->name); });
  if (!pols.empty()) {
    r.push_back("meta mark set meta mark & 0xfffdffff");
    for (auto* p : pols) {
      r.push_back("meta mark & 0x20000 == 0 jump " + chain_name(ingress ? "cali-pi-" : "cali-po-", policy_display_name(*p)));
      r.push_back("meta mark & 0x10000 == 0x10000 return");
    }
    r.push_back("meta mark & 0x20000 == 0 drop");
  }
  for (auto& prof : e.profiles) {
    if (!profiles_.contains(prof)) continue;
    r.push_back("jump " + chain_name(ingress ? "cali-pri-" : "cali-pro-", prof));
    r.push_back("meta mark & 0x10000 == 0x10000 return");
  }
  r.push_back("drop");
  return render_chain((ingress ? "cali-tw-" : "cali-fw-") + e.interface_name, r);
}

std::map<std::string, chain> dataplane::desired(ip_family f) const {
  auto out = dynamic_chains(f);
  out.insert(policy_chains_[fi(f)].begin(), policy_chains_[fi(f)].end());
  return out;
}

std::map<std::string, chain> dataplane::dynamic_chains(ip_family f) const {
  std::map<std::string, chain> out;
  for (auto& [k, e] : eps_) {
    auto tw = endpoint_chain(e, true), fw = endpoint_chain(e, false);
    out[tw.name] = std::move(tw);
    out[fw.name] = std::move(fw);
  }
  out["cali-from-wl-dispatch"] = render_chain("cali-from-wl-dispatch", {"iifname vmap @cali-from-wl-map", "drop"});
  out["cali-to-wl-dispatch"] = render_chain("cali-to-wl-dispatch", {"oifname vmap @cali-to-wl-map", "drop"});
  const std::string any = "\"" + opt_.interface_prefix + "*\"";
  out["cali-INPUT"] = render_chain("cali-INPUT", {"iifname " + any + " goto cali-wl-to-host"});
  std::vector<std::string> to_host;
  // IPv6: router and neighbour discovery between a workload and its host pass before the
  // workload's egress policy (Felix's rules), or a default-deny egress cuts the pod off.
  if (f == ip_family::v6) to_host.push_back("icmpv6 type { 130, 131, 132, 133, 135, 136 } accept");
  to_host.push_back("jump cali-from-wl-dispatch");
  to_host.push_back(opt_.endpoint_to_host_action);
  out["cali-wl-to-host"] = render_chain("cali-wl-to-host", to_host);
  out["cali-FORWARD"] = render_chain("cali-FORWARD", {"meta mark set meta mark & 0xfffcffff", "iifname " + any + " jump cali-from-wl-dispatch",
                                                      "oifname " + any + " jump cali-to-wl-dispatch", "meta mark & 0x10000 == 0x10000 accept"});
  return out;
}

/// One family's part of the transaction; `written`, `stale` and `dyn` say what it changes.
std::string dataplane::transaction(ip_family f, std::vector<const chain*>& written, std::vector<std::string>& stale, std::map<std::string, chain>& dyn) {
  const auto i = fi(f);
  const std::string t = table(f);
  auto& kernel = kernel_[i];
  std::string tx;
  if (!table_made_[i]) {
    // The first apply replaces whatever a previous run left, in the same transaction.
    tx += "add table " + t + "\ndelete table " + t + "\nadd table " + t + "\n";
    tx += "add map " + t + " cali-from-wl-map { type ifname : verdict; }\nadd map " + t + " cali-to-wl-map { type ifname : verdict; }\n";
    kernel.clear();
    kernel_maps_[i][0].clear();
    kernel_maps_[i][1].clear();
  }
  auto joined = [&](const std::set<ip_prefix>& m) {
    std::string x;
    for (auto& a : m)
      if (a.family() == f) x += (x.empty() ? "" : ", ") + element(a);
    return x;
  };
  const std::string type = f == ip_family::v4 ? "ipv4_addr" : "ipv6_addr";
  for (auto& [id, s] : sets_) {
    const auto n = set_name(id, f);
    if (s.fresh[i] || !table_made_[i]) {
      tx += "add set " + t + " " + n + " { type " + type + "; flags interval; }\nflush set " + t + " " + n + "\n";
      if (auto x = joined(s.members); !x.empty()) tx += "add element " + t + " " + n + " { " + x + " }\n";
    } else {
      if (auto x = joined(s.removed); !x.empty()) tx += "delete element " + t + " " + n + " { " + x + " }\n";
      if (auto x = joined(s.added); !x.empty()) tx += "add element " + t + " " + n + " { " + x + " }\n";
    }
  }
  dyn = dynamic_chains(f);
  const auto& pchains = policy_chains_[i];
  std::string decl, fill, dels;
  auto consider = [&](const chain& c) {
    auto k = kernel.find(c.name);
    if (k != kernel.end() && k->second == c.hashes) return;
    if (k == kernel.end())
      decl += "add chain " + t + " " + c.name + (c.name == "cali-FORWARD"  ? " { type filter hook forward priority filter; policy accept; }"
                                        : c.name == "cali-INPUT" ? " { type filter hook input priority filter; policy accept; }"
                                                                 : "") + "\n";
    else
      fill += "flush chain " + t + " " + c.name + "\n";
    for (auto& r : c.rules) fill += "add rule " + t + " " + c.name + " " + r + "\n";
    written.push_back(&c);
  };
  if (compare_all_ || !table_made_[i])
    for (auto& [name, c] : pchains) consider(c);
  else
    for (auto& name : dirty_chains_)
      if (auto it = pchains.find(name); it != pchains.end()) consider(it->second);
  for (auto& [name, c] : dyn) consider(c);
  // Dispatch maps: interface -> goto the endpoint's chain.
  std::string maps;
  for (int dir = 0; dir < 2; ++dir) {
    std::map<std::string, std::string> m;
    for (auto& [k, e] : eps_) m[e.interface_name] = (dir == 0 ? "cali-fw-" : "cali-tw-") + e.interface_name;
    const char* map = dir == 0 ? "cali-from-wl-map" : "cali-to-wl-map";
    for (auto& [ifc, ch] : kernel_maps_[i][dir])
      if (!m.contains(ifc) || m[ifc] != ch) maps += "delete element " + t + " " + map + " { \"" + ifc + "\" }\n";
    for (auto& [ifc, ch] : m)
      if (auto it = kernel_maps_[i][dir].find(ifc); it == kernel_maps_[i][dir].end() || it->second != ch)
        maps += "add element " + t + " " + map + " { \"" + ifc + "\" : goto " + ch + " }\n";
  }
  for (auto& [name, h] : kernel)
    if (!pchains.contains(name) && !dyn.contains(name)) {
      fill += "flush chain " + t + " " + name + "\n";
      dels += "delete chain " + t + " " + name + "\n";
      stale.push_back(name);
    }
  std::string sets_gone;
  if (table_made_[i])
    for (auto& id : sets_to_delete_) sets_gone += "delete set " + t + " " + set_name(id, f) + "\n";
  // Order: sets and chains exist before rules and map elements refer to them; what goes
  // goes after the last reference to it.
  return tx + decl + maps + fill + dels + sets_gone;
}

result<void> dataplane::apply() {
  std::vector<const chain*> written[2];
  std::vector<std::string> stale[2];
  std::map<std::string, chain> dyn[2];
  std::string tx;
  for (auto f : families()) tx += transaction(f, written[fi(f)], stale[fi(f)], dyn[fi(f)]);
  if (tx.empty()) {
    dirty_chains_.clear();
    compare_all_ = false;
    pending_ = 0;
    return {};
  }
  last_ = tx;
  if (auto r = run(tx); !r) return r.error();
  for (auto f : families()) {
    const auto i = fi(f);
    table_made_[i] = true;
    for (auto* c : written[i]) kernel_[i][c->name] = c->hashes;
    for (auto& n : stale[i]) kernel_[i].erase(n);
    for (int dir = 0; dir < 2; ++dir) {
      kernel_maps_[i][dir].clear();
      for (auto& [k, e] : eps_) kernel_maps_[i][dir][e.interface_name] = (dir == 0 ? "cali-fw-" : "cali-tw-") + e.interface_name;
    }
  }
  dirty_chains_.clear();
  compare_all_ = false;
  for (auto& [id, s] : sets_) s.applied();
  sets_to_delete_.clear();
  pending_ = 0;
  return {};
}

namespace {

/// The table as `nft list table` prints it: chains with their rules' hashes ("?" for a rule
/// without one), sets and maps with their elements.
struct listed_table {
  std::map<std::string, std::vector<std::string>> chains;
  std::map<std::string, std::set<std::string>> sets;
  std::map<std::string, std::map<std::string, std::string>> maps;  // map -> key -> verdict
};

listed_table parse_listing(const std::string& text, const std::string& host_len) {
  listed_table t;
  std::istringstream in(text);
  std::string line, cur, elements;
  enum { none, in_chain, in_set, in_map } where = none;
  bool collecting = false;
  auto finish_elements = [&] {
    // "a, b, c" (sets) or "\"k\" : goto c, ..." (maps), braces already stripped.
    std::size_t b = 0;
    while (b < elements.size()) {
      auto e = elements.find(',', b);
      if (e == std::string::npos) e = elements.size();
      auto item = elements.substr(b, e - b);
      auto f = item.find_first_not_of(" \t"), l = item.find_last_not_of(" \t");
      if (f != std::string::npos) {
        item = item.substr(f, l - f + 1);
        if (where == in_set) {
          t.sets[cur].insert(item.find('/') == std::string::npos ? item + host_len : item);
        } else if (auto c = item.find(" : "); c != std::string::npos) {
          auto key = item.substr(0, c);
          if (key.size() >= 2 && key.front() == '"') key = key.substr(1, key.size() - 2);
          t.maps[cur][key] = item.substr(c + 3);
        }
      }
      b = e + 1;
    }
    elements.clear();
    collecting = false;
  };
  while (std::getline(in, line)) {
    auto p = line.find_first_not_of(" \t");
    if (p == std::string::npos) continue;
    std::string_view l(line.c_str() + p);
    if (collecting) {
      auto close = l.find('}');
      elements += " " + std::string(l.substr(0, close));
      if (close != std::string_view::npos) finish_elements();
      continue;
    }
    auto block = [&](std::string_view kw) {
      return l.starts_with(kw) ? std::optional<std::string>(std::string(l.substr(kw.size(), l.find(' ', kw.size()) - kw.size()))) : std::nullopt;
    };
    if (auto n = block("chain ")) {
      cur = *n, where = in_chain;
      t.chains[cur];
    } else if (auto n2 = block("set ")) {
      cur = *n2, where = in_set;
      t.sets[cur];
    } else if (auto n3 = block("map ")) {
      cur = *n3, where = in_map;
      t.maps[cur];
    } else if (l == "}") {
      where = none;
      cur.clear();
    } else if ((where == in_set || where == in_map) && l.starts_with("elements = {")) {
      auto body = l.substr(12);
      auto close = body.find('}');
      elements = std::string(body.substr(0, close));
      collecting = true;
      if (close != std::string_view::npos) finish_elements();
    } else if (where == in_chain) {
      if (auto c = l.find("comment \"cali:"); c != std::string_view::npos) t.chains[cur].push_back(std::string(l.substr(c + 14, 16)));
      else if (!l.starts_with("type ") && !l.starts_with("policy ")) t.chains[cur].push_back("?");
    }
  }
  return t;
}


}  // namespace

/// One family's table listed and compared; what differs is marked for the repair's apply.
result<void> dataplane::drift_family(ip_family f, policy_drift& d) {
  const auto i = fi(f);
  const std::string t = table(f);
  // IPv4 objects are named as they are; IPv6 ones say so.
  const std::string fam = f == ip_family::v4 ? "" : " (ip6)";
  auto listing = run("list table " + t, true);
  if (!listing) {
    // The whole table is gone (nft says "No such file or directory"): the next apply makes it again.
    auto tables = run(std::string("list tables ") + (f == ip_family::v4 ? "ip" : "ip6"), true);
    if (!tables || tables->find("table " + t + "\n") != std::string::npos) return listing.error();
    ++d.checked;
    d.repaired.push_back({"table " + t, "missing"});
    table_made_[i] = false;
    return {};
  }
  const auto seen = parse_listing(*listing, f == ip_family::v4 ? "/32" : "/128");
  const auto want = desired(f);
  for (auto& [name, c] : want) {
    ++d.checked;
    auto it = seen.chains.find(name);
    if (it == seen.chains.end()) {
      d.repaired.push_back({"chain " + name + fam, "missing"});
      kernel_[i].erase(name);
    } else if (it->second != c.hashes) {
      d.repaired.push_back({"chain " + name + fam, chain_difference(it->second, c.hashes)});
      kernel_[i][name] = it->second;
    }
  }
  for (auto& [name, h] : seen.chains)
    if (!want.contains(name)) {
      d.repaired.push_back({"chain " + name + fam, "not cnf's: deleted"});
      kernel_[i][name] = h;
    }
  for (auto& [id, st] : sets_) {
    ++d.checked;
    const auto n = set_name(id, f);
    auto it = seen.sets.find(n);
    if (it == seen.sets.end()) {
      d.repaired.push_back({"set " + n, "missing"});
      st.fresh[i] = true;
      continue;
    }
    if (auto diff = netpol::set_difference(st.members, f, it->second); !diff.empty()) {
      st.fresh[i] = true;  // flushed and refilled in the repair's transaction
      d.repaired.push_back({"set " + n, diff});
    }
  }
  for (int dir = 0; dir < 2; ++dir) {
    ++d.checked;
    const std::string map = dir == 0 ? "cali-from-wl-map" : "cali-to-wl-map";
    auto it = seen.maps.find(map);
    std::map<std::string, std::string> have;
    if (it != seen.maps.end())
      for (auto& [k, v] : it->second)
        if (v.starts_with("goto ")) have[k] = v.substr(5);
    if (it == seen.maps.end()) {
      d.repaired.push_back({"map " + map + fam, "missing"});
      table_made_[i] = false;  // a map cannot be re-added alone under the chains that use it: the table is rebuilt
    } else if (have != kernel_maps_[i][dir]) {
      d.repaired.push_back({"map " + map + fam, std::to_string(have.size()) + " of " + std::to_string(kernel_maps_[i][dir].size()) +
                                                    " entries, some not as programmed"});
      kernel_maps_[i][dir] = std::move(have);
    }
  }
  return {};
}

result<policy_drift> dataplane::check_drift() {
  // What was recorded and not applied yet is not drift: apply it first.
  bool made = true;
  for (auto f : families()) made = made && table_made_[fi(f)];
  if (!made || pending_ || !dirty_chains_.empty())
    if (auto r = apply(); !r) return r.error();
  policy_drift d;
  for (auto f : families())
    if (auto r = drift_family(f, d); !r) return r.error();
  if (d.repaired.empty()) return d;
  compare_all_ = true;
  if (auto r = apply(); !r) return r.error();
  return d;
}

result<policy_status> dataplane::status() {
  policy_status s;
  s.endpoints = eps_.size();
  s.policies = pols_.size();
  s.profiles = profiles_.size();
  s.ip_sets = sets_.size();
  for (auto f : families()) {
    for (auto& [n, c] : policy_chains_[fi(f)]) s.rules += c.rules.size();
    for (auto& [n, c] : dynamic_chains(f)) s.rules += c.rules.size();
  }
  s.pending = pending_;
  s.dataplane = "nftables";
  return s;
}

result<void> dataplane::stop() { return {}; }

}  // namespace nftables_policy
CNF_END_NAMESPACE
