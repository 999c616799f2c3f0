#include <cnf/bgp/rib.hpp>

#include <boost/container/small_vector.hpp>

#include <algorithm>

CNF_BEGIN_NAMESPACE
namespace bgp {

std::string_view to_string(decision_step s) noexcept {
  switch (s) {
    case decision_step::none: return "equal";
    case decision_step::local: return "originated here";
    case decision_step::local_pref: return "LOCAL_PREF";
    case decision_step::as_path: return "AS_PATH length";
    case decision_step::origin: return "ORIGIN";
    case decision_step::med: return "MED";
    case decision_step::ebgp: return "eBGP over iBGP";
    case decision_step::router_id: return "router id";
    case decision_step::cluster_list: return "CLUSTER_LIST length";
    case decision_step::peer_address: return "peer address";
  }
  return "?";
}

namespace {
template <class T>
int cmp(const T& a, const T& b) { return a < b ? -1 : b < a ? 1 : 0; }

// The steps shared by the decision and by multipath: up to and including eBGP over iBGP.
int compare_attrs(const path& a, const path& b, decision_step& step) {
  if ((a.from == local_peer) != (b.from == local_peer)) { step = decision_step::local; return a.from == local_peer ? -1 : 1; }
  const auto& x = *a.attrs;
  const auto& y = *b.attrs;
  if (int c = cmp(y.local_pref.value_or(100), x.local_pref.value_or(100))) { step = decision_step::local_pref; return c; }
  if (int c = cmp(x.as_path_length(), y.as_path_length())) { step = decision_step::as_path; return c; }
  if (int c = cmp(static_cast<int>(x.origin), static_cast<int>(y.origin))) { step = decision_step::origin; return c; }
  if (x.neighbour_as() == y.neighbour_as())
    if (int c = cmp(x.med.value_or(0), y.med.value_or(0))) { step = decision_step::med; return c; }
  if (a.ebgp != b.ebgp) { step = decision_step::ebgp; return a.ebgp ? -1 : 1; }
  return 0;
}
}  // namespace

int compare(const path& a, const path& b, decision_step* step) {
  decision_step s = decision_step::none;
  int c = compare_attrs(a, b, s);
  if (!c) {
    auto id = [](const path& p) { return p.attrs->originator_id.value_or(p.peer_router_id); };
    if ((c = cmp(id(a), id(b)))) s = decision_step::router_id;
    else if ((c = cmp(a.attrs->cluster_list.size(), b.attrs->cluster_list.size()))) s = decision_step::cluster_list;
    else if ((c = cmp(a.peer_address, b.peer_address))) s = decision_step::peer_address;
  }
  if (step) *step = s;
  return c;
}

bool multipath_equal(const path& a, const path& b) {
  if (a.from == local_peer || b.from == local_peer) return false;
  decision_step s;
  return compare_attrs(a, b, s) == 0;
}

namespace {
// What identifies a best set, without copying its paths (no allocation for the usual one
// or few paths of a prefix).
struct best_key {
  peer_id from;
  ip_address next_hop;
  const path_attributes* attrs;
};
using best_keys = boost::container::small_vector<best_key, 4>;

best_keys keys_of(const rib::entry& e) {
  best_keys k;
  for (std::size_t i = 0; i < e.multipath; ++i) k.push_back({e.paths[i].from, e.paths[i].next_hop, e.paths[i].attrs.get()});
  return k;
}

bool same_best(const rib::entry& e, const best_keys& before) {
  if (e.multipath != before.size()) return false;
  for (std::size_t i = 0; i < before.size(); ++i) {
    const auto& a = e.paths[i];
    const auto& b = before[i];
    if (a.from != b.from || a.next_hop != b.next_hop || a.attrs.get() != b.attrs) return false;
  }
  return true;
}
}  // namespace

bool rib::reselect(entry& e) {
  std::sort(e.paths.begin(), e.paths.end(), [](const path& a, const path& b) { return compare(a, b) < 0; });
  std::size_t n = e.paths.empty() ? 0 : 1;
  if (multipath_enabled)
    while (n < e.paths.size() && multipath_equal(e.paths[0], e.paths[n])) ++n;
  e.multipath = n;
  return true;
}

bool rib::update(const ip_prefix& prefix, path p) {
  auto& e = table_[prefix];
  const auto before = keys_of(e);
  auto it = std::find_if(e.paths.begin(), e.paths.end(), [&](const path& x) { return x.from == p.from; });
  if (it != e.paths.end()) *it = std::move(p);
  else e.paths.push_back(std::move(p));
  if (e.paths.size() > 1) reselect(e);
  else e.multipath = 1;
  return !same_best(e, before);
}

bool rib::withdraw(const ip_prefix& prefix, peer_id from) {
  auto t = table_.find(prefix);
  if (t == table_.end()) return false;
  auto& e = t->second;
  auto it = std::find_if(e.paths.begin(), e.paths.end(), [&](const path& x) { return x.from == from; });
  if (it == e.paths.end()) return false;
  const auto before = keys_of(e);
  e.paths.erase(it);
  reselect(e);
  bool changed = !same_best(e, before);
  if (e.paths.empty()) table_.erase(t);
  return changed;
}

std::vector<ip_prefix> rib::drop_peer(peer_id from) {
  std::vector<ip_prefix> changed, affected;
  for (auto& [p, e] : table_)
    for (auto& x : e.paths)
      if (x.from == from) { affected.push_back(p); break; }
  for (auto& p : affected)
    if (withdraw(p, from)) changed.push_back(p);
  return changed;
}

void rib::mark_stale(peer_id from) {
  for (auto& [_, e] : table_)
    for (auto& x : e.paths)
      if (x.from == from) x.stale = true;
}

std::vector<ip_prefix> rib::drop_stale(peer_id from, std::optional<ip_family> family) {
  std::vector<ip_prefix> changed, affected;
  for (auto& [p, e] : table_) {
    if (family && p.family() != *family) continue;
    for (auto& x : e.paths)
      if (x.from == from && x.stale) { affected.push_back(p); break; }
  }
  for (auto& p : affected)
    if (withdraw(p, from)) changed.push_back(p);
  return changed;
}

std::size_t rib::stale_of(peer_id from) const {
  std::size_t n = 0;
  for (auto& [_, e] : table_)
    for (auto& x : e.paths)
      if (x.from == from && x.stale) ++n;
  return n;
}

std::span<const path> rib::best(const ip_prefix& prefix) const {
  auto t = table_.find(prefix);
  if (t == table_.end()) return {};
  return std::span(t->second.paths).first(t->second.multipath);
}

const rib::entry* rib::find(const ip_prefix& prefix) const {
  auto t = table_.find(prefix);
  return t == table_.end() ? nullptr : &t->second;
}

std::size_t rib::paths_of(peer_id from) const {
  std::size_t n = 0;
  for (auto& [_, e] : table_)
    for (auto& x : e.paths)
      if (x.from == from) ++n;
  return n;
}

}  // namespace bgp
CNF_END_NAMESPACE
