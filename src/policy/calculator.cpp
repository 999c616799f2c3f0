#include <cnf/netlink/sha1.hpp>
#include <cnf/policy/calculator.hpp>

#include <algorithm>

CNF_BEGIN_NAMESPACE
namespace netpol {

// ---- label_index --------------------------------------------------------------------

void label_index::join(entry& e, const std::string& key, const member& m) {
  e.members.insert(key);
  for (auto& a : m.addrs) ++e.addrs[a];
}

void label_index::leave(entry& e, const std::string& key, const member& m) {
  e.members.erase(key);
  for (auto& a : m.addrs)
    if (auto it = e.addrs.find(a); it != e.addrs.end() && --it->second == 0) e.addrs.erase(it);
}

void label_index::add_selector(const selector& s) {
  auto [it, fresh] = sels_.try_emplace(s.to_string());
  ++it->second.users;
  if (!fresh) return;
  it->second.sel = s;
  for (auto& [k, m] : members_)
    if (s.matches(m.labels)) join(it->second, k, m);
}

void label_index::release_selector(const std::string& text) {
  auto it = sels_.find(text);
  if (it != sels_.end() && --it->second.users <= 0) sels_.erase(it);
}

void label_index::set_member(const std::string& key, const label_map& labels, const std::vector<ip_prefix>& addrs) {
  member fresh{labels, addrs};
  auto old = members_.find(key);
  for (auto& [text, e] : sels_) {
    const bool was = old != members_.end() && e.members.contains(key);
    const bool now = e.sel.matches(labels);
    if (!was && !now) continue;
    if (was && now && old->second.addrs == addrs) continue;
    if (was) leave(e, key, old->second);
    if (now) join(e, key, fresh);
    if (on_change) on_change(text);
  }
  members_[key] = std::move(fresh);
}

void label_index::remove_member(const std::string& key) {
  auto old = members_.find(key);
  if (old == members_.end()) return;
  for (auto& [text, e] : sels_)
    if (e.members.contains(key)) {
      leave(e, key, old->second);
      if (on_change) on_change(text);
    }
  members_.erase(old);
}

std::set<std::string> label_index::members(const std::string& text) const {
  auto it = sels_.find(text);
  return it == sels_.end() ? std::set<std::string>{} : it->second.members;
}

std::vector<ip_prefix> label_index::addresses(const std::string& text) const {
  std::vector<ip_prefix> out;
  if (auto it = sels_.find(text); it != sels_.end())
    for (auto& [a, n] : it->second.addrs) out.push_back(a);
  return out;
}

std::string ip_set_id(const selector& s) {
  static constexpr char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  auto h = netlink::detail::sha1(s.to_string());
  std::string out = "s:";
  std::uint32_t acc = 0;
  int bits = 0;
  for (auto b : h) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6 && out.size() < 24) {
      out += abc[(acc >> (bits - 6)) & 63];
      bits -= 6;
    }
  }
  return out;
}

// ---- calculator ---------------------------------------------------------------------

namespace {
constexpr const char* ns_label = "projectcalico.org/namespace";
constexpr const char* sa_label = "projectcalico.org/serviceaccount";
std::string ep_member(std::string_view key) { return "ep:" + std::string(key); }
}  // namespace

calculator::calculator(std::string node) : node_(std::move(node)) {
  index_.on_change = [this](const std::string& text) {
    dirty_sets_.insert(text);
    // A policy changes with the members of its own selector (its endpoints) or, with named
    // ports, of any; for its rules' selectors only the IP sets change.
    if (auto it = users_.find(text); it != users_.end())
      for (auto& k : it->second)
        if (auto p = pols_.find(k); p != pols_.end() && (p->second.named_ports || p->second.sels.front() == text)) dirty_pols_.insert(k);
  };
}

label_map calculator::endpoint_labels(std::string_view key) const {
  auto it = eps_.find(std::string(key));
  if (it == eps_.end()) return {};
  const auto& w = it->second.wep;
  const pod_info* pod = pod_of(w);
  label_map l;
  if (pod) {
    // The Pod's labels are the truth; of the endpoint's copy keep only what Calico adds.
    for (auto& [k, v] : w.labels)
      if (k.starts_with("projectcalico.org/")) l[k] = v;
    for (auto& [k, v] : pod->labels) l[k] = v;
  } else {
    l = w.labels;
  }
  l[ns_label] = w.ns;
  if (!w.orchestrator.empty()) l["projectcalico.org/orchestrator"] = w.orchestrator;
  if (auto n = namespaces_.find(w.ns); n != namespaces_.end())
    for (auto& [k, v] : n->second) l["pcns." + k] = v;
  l["pcns.projectcalico.org/name"] = w.ns;
  l["pcns.kubernetes.io/metadata.name"] = w.ns;  // set by the API server; here on every datastore
  const std::string& sa = !w.service_account_name.empty() || !pod ? w.service_account_name : pod->service_account;
  if (!sa.empty()) {
    l[sa_label] = sa;
    if (auto s = service_accounts_.find(w.ns + "/" + sa); s != service_accounts_.end())
      for (auto& [k, v] : s->second) l["pcsa." + k] = v;
    l["pcsa.projectcalico.org/name"] = sa;
  }
  return l;
}

const calculator::pod_info* calculator::pod_of(const workload_endpoint& w) const {
  if (w.pod.empty()) return nullptr;
  auto it = pods_.find(w.ns + "/" + w.pod);
  return it == pods_.end() ? nullptr : &it->second;
}

bool calculator::local(const std::string& member_key) const {
  if (!member_key.starts_with("ep:")) return false;
  auto it = eps_.find(member_key.substr(3));
  return it != eps_.end() && it->second.wep.node == node_;
}

void calculator::refresh_endpoint(const std::string& key) {
  index_.set_member(ep_member(key), endpoint_labels(key), eps_.at(key).wep.ip_networks);
}

void calculator::upsert_endpoint(const workload_endpoint& e, std::vector<named_port> ports) {
  const auto key = e.key();
  auto& slot = eps_[key];
  const bool ports_changed = slot.ports != ports;
  const bool was_local = slot.wep.node == node_;
  slot.wep = e;
  slot.ports = std::move(ports);
  refresh_endpoint(key);
  if (e.node == node_ || was_local) dirty_eps_.insert(key);
  if (ports_changed)
    for (auto& [k, p] : pols_)
      if (p.named_ports) dirty_pols_.insert(k);
  dirty_profiles_ = true;
}

void calculator::remove_endpoint(std::string_view key) {
  auto it = eps_.find(std::string(key));
  if (it == eps_.end()) return;
  const bool named = !it->second.ports.empty();
  index_.remove_member(ep_member(key));
  dirty_eps_.insert(std::string(key));
  eps_.erase(it);
  if (named)
    for (auto& [k, p] : pols_)
      if (p.named_ports) dirty_pols_.insert(k);
  dirty_profiles_ = true;
}

void calculator::upsert_namespace(const std::string& name, const label_map& labels) {
  namespaces_[name] = labels;
  for (auto& [k, e] : eps_)
    if (e.wep.ns == name) refresh_endpoint(k);
  for (auto& [k, s] : sets_)
    if (s.ns == name) upsert_network_set(s);
  dirty_profiles_ = true;
}

void calculator::remove_namespace(const std::string& name) {
  namespaces_.erase(name);
  for (auto& [k, e] : eps_)
    if (e.wep.ns == name) refresh_endpoint(k);
  dirty_profiles_ = true;
}

void calculator::upsert_service_account(const std::string& ns, const std::string& name, const label_map& labels) {
  service_accounts_[ns + "/" + name] = labels;
  for (auto& [k, e] : eps_)
    if (e.wep.ns == ns && (e.wep.service_account_name == name || e.wep.service_account_name.empty())) refresh_endpoint(k);
  dirty_profiles_ = true;
}

void calculator::remove_service_account(const std::string& ns, const std::string& name) {
  service_accounts_.erase(ns + "/" + name);
  for (auto& [k, e] : eps_)
    if (e.wep.ns == ns && (e.wep.service_account_name == name || e.wep.service_account_name.empty())) refresh_endpoint(k);
  dirty_profiles_ = true;
}

void calculator::refresh_pod(const std::string& ns, const std::string& name) {
  for (auto& [k, e] : eps_)
    if (e.wep.ns == ns && e.wep.pod == name) refresh_endpoint(k);
}

void calculator::upsert_pod(const std::string& ns, const std::string& name, const label_map& labels, const std::string& service_account) {
  auto& slot = pods_[ns + "/" + name];
  slot.labels = labels;
  slot.service_account = service_account;
  refresh_pod(ns, name);
}

void calculator::remove_pod(const std::string& ns, const std::string& name) {
  if (pods_.erase(ns + "/" + name)) refresh_pod(ns, name);
}

void calculator::upsert_network_set(const network_set& n) {
  const auto key = n.key();
  sets_[key] = n;
  label_map l = n.labels;
  if (!n.ns.empty()) {
    l[ns_label] = n.ns;
    if (auto it = namespaces_.find(n.ns); it != namespaces_.end())
      for (auto& [k, v] : it->second) l["pcns." + k] = v;
    l["pcns.projectcalico.org/name"] = n.ns;
    l["pcns.kubernetes.io/metadata.name"] = n.ns;
  }
  index_.set_member("ns:" + key, l, n.nets);
}

void calculator::remove_network_set(std::string_view key) {
  sets_.erase(std::string(key));
  index_.remove_member("ns:" + std::string(key));
}

selector calculator::entity_selector(const policy_def& p, const entity_rule& e, bool negated, bool& any) const {
  const auto& base = negated ? e.not_sel : e.sel;
  any = false;
  if (negated ? !e.not_sel : (!e.sel && !e.namespace_sel && !e.service_account_sel)) {
    any = true;
    return selector();
  }
  selector s = base ? *base : selector();
  if (e.namespace_sel)
    s = selector::both(s, e.namespace_sel->prefixed("pcns.", ns_label));
  else if (!p.ns.empty())
    s = selector::both(s, selector::label_equals(ns_label, p.ns));
  if (e.service_account_sel && !negated) s = selector::both(s, *e.service_account_sel);
  return s;
}

void calculator::upsert_policy(const policy_def& def) {
  const auto key = def.key();
  if (auto it = pols_.find(key); it != pols_.end()) {
    if (it->second.def == def) return;
    for (auto& t : it->second.sels) {
      users_[t].erase(key);
      if (users_[t].empty()) users_.erase(t);
      index_.release_selector(t);
    }
  }
  pol p;
  p.def = def;
  if (!def.ns.empty()) {
    p.applies = selector::both(def.sel, selector::label_equals(ns_label, def.ns));
  } else {
    p.applies = def.sel;
    if (def.namespace_sel) p.applies = selector::both(p.applies, def.namespace_sel->prefixed("pcns.", ns_label));
  }
  if (def.service_account_sel) p.applies = selector::both(p.applies, def.service_account_sel->prefixed("pcsa.", sa_label));
  std::vector<selector> sels{p.applies};
  for (auto* rules : {&def.ingress_rules, &def.egress_rules})
    for (auto& r : *rules)
      for (auto* e : {&r.source, &r.destination}) {
        for (bool neg : {false, true}) {
          bool any = false;
          auto s = entity_selector(def, *e, neg, any);
          if (!any) sels.push_back(s);
        }
        for (auto* ports : {&e->ports, &e->not_ports})
          for (auto& sp : *ports)
            if (!sp.name.empty()) p.named_ports = true;
      }
  for (auto& s : sels) {
    index_.add_selector(s);
    users_[s.to_string()].insert(key);
    p.sels.push_back(s.to_string());
  }
  pols_[key] = std::move(p);
  dirty_pols_.insert(key);
}

void calculator::remove_policy(std::string_view key) {
  auto it = pols_.find(std::string(key));
  if (it == pols_.end()) return;
  for (auto& t : it->second.sels) {
    if (auto u = users_.find(t); u != users_.end()) {
      u->second.erase(it->first);
      if (u->second.empty()) users_.erase(u);
    }
    index_.release_selector(t);
  }
  dirty_pols_.insert(it->first);
  pols_.erase(it);
}

std::map<std::uint16_t, std::vector<ip_prefix>> calculator::split_named_destination(const pol& p, const rule& r, const std::string& dst_text,
                                                                                  bool ingress) const {
  std::map<std::uint16_t, std::vector<ip_prefix>> by_port;
  std::set<std::set<std::uint16_t>> seen;
  bool named = false;
  for (auto& sp : r.destination.ports) named = named || !sp.name.empty();
  if (!named) return {};
  std::set<std::string> owners;
  if (ingress) owners = index_.members(p.applies.to_string());
  else if (!dst_text.empty()) owners = index_.members(dst_text);
  else
    for (auto& [k, e] : eps_) owners.insert(ep_member(k));
  for (auto& m : owners) {
    if (!m.starts_with("ep:")) continue;
    auto it = eps_.find(m.substr(3));
    if (it == eps_.end()) continue;
    std::set<std::uint16_t> nums;
    for (auto& sp : r.destination.ports)
      for (auto& np : it->second.ports)
        if (!sp.name.empty() && np.name == sp.name && (!r.protocol || np.protocol == *r.protocol)) nums.insert(np.port);
    seen.insert(nums);
    for (auto n : nums)
      for (auto& a : it->second.wep.ip_networks) by_port[n].push_back(a);
  }
  if (seen.size() <= 1) return {};  // every endpoint agrees: the plain port list is exact
  return by_port;
}

std::vector<policy_rule> calculator::resolve_rules(const pol& p, bool ingress) const {
  std::vector<policy_rule> out;
  const auto& def = p.def;
  for (auto& r : ingress ? def.ingress_rules : def.egress_rules) {
    policy_rule o;
    o.action = r.action;
    o.protocol = r.protocol;
    o.not_protocol = r.not_protocol;
    o.family = r.family;
    if (r.icmp) o.icmp_type = r.icmp->type, o.icmp_code = r.icmp->code;
    if (r.not_icmp) o.not_icmp_type = r.not_icmp->type, o.not_icmp_code = r.not_icmp->code;
    o.source_nets = r.source.nets;
    o.not_source_nets = r.source.not_nets;
    o.destination_nets = r.destination.nets;
    o.not_destination_nets = r.destination.not_nets;
    std::string src_text, dst_text;
    bool any = false;
    if (auto s = entity_selector(def, r.source, false, any); !any) o.source_ip_sets = {ip_set_id(s)}, src_text = s.to_string();
    if (auto s = entity_selector(def, r.source, true, any); !any) o.not_source_ip_sets = {ip_set_id(s)};
    if (auto s = entity_selector(def, r.destination, false, any); !any) o.destination_ip_sets = {ip_set_id(s)}, dst_text = s.to_string();
    if (auto s = entity_selector(def, r.destination, true, any); !any) o.not_destination_ip_sets = {ip_set_id(s)};
    // Named ports resolve against the endpoints on that side of the rule.
    auto resolve_ports = [&](const std::vector<port_spec>& in, const std::string& side_text, bool local_side) {
      std::vector<port_range> ranges;
      std::set<std::string> owners;
      bool owners_known = false;
      for (auto& sp : in) {
        if (sp.name.empty()) {
          ranges.push_back(sp.range);
          continue;
        }
        if (!owners_known) {
          owners_known = true;
          if (local_side) owners = index_.members(p.applies.to_string());
          else if (!side_text.empty()) owners = index_.members(side_text);
          else
            for (auto& [k, e] : eps_) owners.insert(ep_member(k));
        }
        std::set<std::uint16_t> nums;
        for (auto& m : owners) {
          if (!m.starts_with("ep:")) continue;
          auto it = eps_.find(m.substr(3));
          if (it == eps_.end()) continue;
          for (auto& np : it->second.ports)
            if (np.name == sp.name && (!r.protocol || np.protocol == *r.protocol)) nums.insert(np.port);
        }
        for (auto n : nums) ranges.push_back({n, n});
      }
      std::sort(ranges.begin(), ranges.end(), [](auto& a, auto& b) { return a.first != b.first ? a.first < b.first : a.last < b.last; });
      ranges.erase(std::unique(ranges.begin(), ranges.end()), ranges.end());
      return ranges;
    };
    o.source_ports = resolve_ports(r.source.ports, src_text, !ingress);
    o.not_source_ports = resolve_ports(r.source.not_ports, src_text, !ingress);
    o.destination_ports = resolve_ports(r.destination.ports, dst_text, ingress);
    o.not_destination_ports = resolve_ports(r.destination.not_ports, dst_text, ingress);
    // Ports that were asked for but resolve to none: the rule matches nothing.
    if ((!r.source.ports.empty() && o.source_ports.empty()) || (!r.destination.ports.empty() && o.destination_ports.empty())) continue;
    // A destination port name is a number per endpoint ("web" may be 80 on one pod and 81 on
    // another): where the endpoints disagree, one copy of the rule per number, limited to
    // the addresses of the endpoints that give the name that number (numbered ports keep a
    // copy of their own). Calico matches (address, port) in a named-port IP set instead. A
    // rule with destination nets of its own keeps the union of the numbers (not split).
    if (auto split = split_named_destination(p, r, dst_text, ingress); !split.empty() && r.destination.nets.empty()) {
      std::vector<port_range> numbered;
      for (auto& sp : r.destination.ports)
        if (sp.name.empty()) numbered.push_back(sp.range);
      if (!numbered.empty()) {
        auto c = o;
        c.destination_ports = numbered;
        out.push_back(std::move(c));
      }
      for (auto& [port, nets] : split) {
        auto c = o;
        c.destination_ports = {{port, port}};
        c.destination_nets = nets;
        out.push_back(std::move(c));
      }
      continue;
    }
    out.push_back(std::move(o));
  }
  return out;
}

network_policy calculator::resolve(const pol& p) const {
  network_policy np;
  np.kind = p.def.kind;
  np.ns = p.def.ns;
  np.name = p.def.name;
  np.order = p.def.order;
  for (auto& m : index_.members(p.applies.to_string()))
    if (local(m)) np.endpoints.push_back(m.substr(3));
  np.ingress_applies = p.def.ingress;
  np.egress_applies = p.def.egress;
  if (np.endpoints.empty()) return np;
  if (np.ingress_applies) np.ingress = resolve_rules(p, true);
  if (np.egress_applies) np.egress = resolve_rules(p, false);
  return np;
}

std::vector<policy_update> calculator::take_updates() {
  std::vector<policy_update> head, profiles_up, pol_up, ep_up, ep_rm, pol_rm, prof_rm, set_rm;

  // Profiles: kns.<ns> for every namespace known or used here, ksa.<ns>.<sa> likewise.
  if (dirty_profiles_) {
    dirty_profiles_ = false;
    std::map<std::string, policy_profile> want;
    auto kns = [&](const std::string& ns) {
      policy_profile p;
      p.name = "kns." + ns;
      if (auto it = namespaces_.find(ns); it != namespaces_.end())
        for (auto& [k, v] : it->second) p.labels_to_apply["pcns." + k] = v;
      p.labels_to_apply["pcns.projectcalico.org/name"] = ns;
      p.ingress = {policy_rule{}};
      p.egress = {policy_rule{}};
      want[p.name] = std::move(p);
    };
    auto ksa = [&](const std::string& ns, const std::string& sa) {
      policy_profile p;
      p.name = "ksa." + ns + "." + sa;
      if (auto it = service_accounts_.find(ns + "/" + sa); it != service_accounts_.end())
        for (auto& [k, v] : it->second) p.labels_to_apply["pcsa." + k] = v;
      p.labels_to_apply["pcsa.projectcalico.org/name"] = sa;
      want[p.name] = std::move(p);
    };
    for (auto& [ns, l] : namespaces_) kns(ns);
    for (auto& [k, l] : service_accounts_) ksa(k.substr(0, k.find('/')), k.substr(k.find('/') + 1));
    for (auto& [k, e] : eps_) {
      if (e.wep.node != node_) continue;
      if (e.wep.k8s()) kns(e.wep.ns);
      if (!e.wep.service_account_name.empty()) ksa(e.wep.ns, e.wep.service_account_name);
    }
    for (auto& [name, p] : want)
      if (auto it = out_profiles_.find(name); it == out_profiles_.end() || !(it->second == p)) profiles_up.push_back(update::profile_upsert{p});
    for (auto& [name, p] : out_profiles_)
      if (!want.contains(name)) prof_rm.push_back(update::profile_removal{name});
    out_profiles_ = std::move(want);
  }

  // Policies touched since the last call. The IP sets programmed policies use are reference
  // counted by selector text: a set comes when its first user does and goes with its last.
  std::set<std::string> fresh_sets, gone_sets;
  auto recount = [&](const std::string& key, const pol* p) {
    auto& held = out_pol_sets_[key];
    std::vector<std::string> now;
    if (p) now.assign(p->sels.begin() + 1, p->sels.end());  // [0] is the policy's own selector
    for (auto& t : now)
      if (set_refs_[t]++ == 0) fresh_sets.insert(t), gone_sets.erase(t);
    for (auto& t : held)
      if (--set_refs_[t] == 0) set_refs_.erase(t), gone_sets.insert(t), fresh_sets.erase(t);
    if (p) held = std::move(now);
    else out_pol_sets_.erase(key);
  };
  for (auto& key : dirty_pols_) {
    auto it = pols_.find(key);
    std::optional<network_policy> np;
    if (it != pols_.end()) {
      np = resolve(it->second);
      if (np->endpoints.empty()) np.reset();
    }
    auto out = out_pols_.find(key);
    if (np) {
      if (out == out_pols_.end() || !(out->second == *np)) {
        recount(key, &it->second);
        pol_up.push_back(update::policy_upsert{*np});
        out_pols_[key] = std::move(*np);
      }
    } else if (out != out_pols_.end()) {
      recount(key, nullptr);
      pol_rm.push_back(update::policy_removal{key});
      out_pols_.erase(out);
    }
  }
  dirty_pols_.clear();

  // IP sets: new ones in full, changed ones by difference, unused ones removed.
  auto id_of = [&](const std::string& t) -> const std::string& {
    auto& id = set_ids_[t];
    if (id.empty()) id = ip_set_id(parse_selector(t).value());
    return id;
  };
  std::set<std::string> examine = fresh_sets;
  for (auto& t : dirty_sets_)
    if (set_refs_.contains(t)) examine.insert(t);
  for (auto& text : examine) {
    const auto id = id_of(text);
    auto out = out_sets_.find(id);
    auto want_v = index_.addresses(text);
    std::set<ip_prefix> want(want_v.begin(), want_v.end());
    update::ip_set_members d{id, {}, {}};
    auto& have = out_sets_[id];
    for (auto& a : want)
      if (!have.contains(a)) d.added.push_back(a);
    for (auto& a : have)
      if (!want.contains(a)) d.removed.push_back(a);
    if (!d.added.empty() || !d.removed.empty() || out == out_sets_.end()) head.push_back(std::move(d));
    have = std::move(want);
  }
  for (auto& text : gone_sets) {
    const auto id = id_of(text);
    if (out_sets_.erase(id)) set_rm.push_back(update::ip_set_removal{id});
    set_ids_.erase(text);
  }
  dirty_sets_.clear();

  // This node's endpoints.
  for (auto& key : dirty_eps_) {
    auto it = eps_.find(key);
    auto out = out_eps_.find(key);
    if (it != eps_.end() && it->second.wep.node == node_) {
      if (out == out_eps_.end() || !(out->second == it->second.wep)) {
        ep_up.push_back(update::endpoint_upsert{it->second.wep});
        out_eps_[key] = it->second.wep;
      }
    } else if (out != out_eps_.end()) {
      ep_rm.push_back(update::endpoint_removal{key});
      out_eps_.erase(out);
    }
  }
  dirty_eps_.clear();

  std::vector<policy_update> all = std::move(head);
  for (auto* v : {&profiles_up, &pol_up, &ep_up, &ep_rm, &pol_rm, &prof_rm, &set_rm})
    for (auto& u : *v) all.push_back(std::move(u));
  return all;
}

result<void> calculator::flush(const any_policy& plugin) {
  for (auto& u : take_updates()) {
    auto r = std::visit(
        [&](auto& x) -> result<void> {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, update::endpoint_upsert>) return plugin.upsert_endpoint(x.endpoint);
          else if constexpr (std::is_same_v<T, update::endpoint_removal>) return plugin.remove_endpoint(x.key);
          else if constexpr (std::is_same_v<T, update::policy_upsert>) return plugin.upsert_policy(x.policy);
          else if constexpr (std::is_same_v<T, update::policy_removal>) return plugin.remove_policy(x.key);
          else if constexpr (std::is_same_v<T, update::profile_upsert>) return plugin.upsert_profile(x.profile);
          else if constexpr (std::is_same_v<T, update::profile_removal>) return plugin.remove_profile(x.name);
          else if constexpr (std::is_same_v<T, update::ip_set_members>) {
            if (auto a = plugin.add_ip_set_members(x.id, x.added); !a) return a;
            if (x.removed.empty()) return {};
            return plugin.remove_ip_set_members(x.id, x.removed);
          } else {
            return plugin.remove_ip_set(x.id);
          }
        },
        u);
    if (!r) return r;
  }
  return plugin.apply();
}

}  // namespace netpol
CNF_END_NAMESPACE
