#include <cnf/plugins/direct.hpp>

#include <algorithm>
#include <set>

CNF_BEGIN_NAMESPACE
namespace direct {

decision decide(const node_info& self, const remote_node& r) {
  decision d;
  std::vector<std::string> why;
  for (auto& ra : r.addresses) {
    const ip_address a = ra.address();
    const ip_prefix* on = nullptr;
    bool mine = false;
    for (auto& s : self.addresses) {
      if (s.address() == a) mine = true;
      if (!on && s.canonical().contains(a)) on = &s;
    }
    const char* fam = a.is_v4() ? "IPv4" : "IPv6";
    if (mine) {
      why.push_back(std::string(fam) + " address " + a.to_string() + " is this node's own");
    } else if (on) {
      (a.is_v4() ? d.via_v4 : d.via_v6) = a;
    } else {
      why.push_back(a.to_string() + " is not on a subnet of this node");
    }
  }
  if (r.addresses.empty()) why.push_back("it has no address (spec.bgp.ipv4Address, ipv6Address)");
  if (!d.reachable())
    for (auto& w : why) d.reason += (d.reason.empty() ? "" : "; ") + w;
  return d;
}

std::vector<learned_route> routes_for(const remote_node& r, const decision& d) {
  std::vector<learned_route> out;
  for (auto& b : r.pod_cidrs) {
    const auto& via = b.family() == ip_family::v4 ? d.via_v4 : d.via_v6;
    if (via) out.push_back({b.canonical(), {*via}, "", r.name});
  }
  return out;
}

void routing::start(const node_info& self, routing_sink& sink) {
  self_ = self;
  sink_ = &sink;
  for (auto& [_, e] : nodes_) refresh(e);
}

void routing::set_node(const node_info& self) {
  if (self == self_) return;
  self_ = self;
  for (auto& [_, e] : nodes_) refresh(e);
}

void routing::upsert_node(const remote_node& r) {
  auto it = nodes_.find(r.name);
  if (it == nodes_.end()) it = nodes_.emplace(r.name, entry{r, {}, {}}).first;
  else if (it->second.node == r) return;
  else it->second.node = r;
  refresh(it->second);
}

void routing::remove_node(std::string_view name) {
  auto it = nodes_.find(name);
  if (it == nodes_.end()) return;
  drop(it->second);
  if (sink_) sink_->peer_removed(name);
  nodes_.erase(it);
}

// Reports only what changed: routes gone, routes new or different, the peer's state.
void routing::refresh(entry& e) {
  if (!sink_) return;
  e.d = decide(self_, e.node);
  auto next = routes_for(e.node, e.d);
  std::set<ip_prefix> keep;
  for (auto& r : next) keep.insert(r.prefix);
  for (auto& r : e.routes)
    if (!keep.count(r.prefix)) sink_->route_withdrawn(r.prefix);
  for (auto& r : next)
    if (std::find(e.routes.begin(), e.routes.end(), r) == e.routes.end()) sink_->route_learned(r);
  e.routes = std::move(next);
  auto st = status().peers;
  for (auto& p : st)
    if (p.name == e.node.name) sink_->peer_changed(p);
}

void routing::drop(entry& e) {
  if (sink_)
    for (auto& r : e.routes) sink_->route_withdrawn(r.prefix);
  e.routes.clear();
}

routing_status routing::status() const {
  routing_status s;
  s.plugin = "direct";
  std::vector<std::string> unreachable;
  for (auto& [name, e] : nodes_) {
    peer_status p;
    p.name = name;
    if (auto a = e.node.address(ip_family::v4)) p.address = *a;
    else if (auto a6 = e.node.address(ip_family::v6)) p.address = *a6;
    p.asn = e.node.asn;
    p.type = "direct";
    p.state = e.d.reachable() ? "Reachable" : "Unreachable";
    if (e.d.reachable()) {
      p.info = std::to_string(e.routes.size()) + (e.routes.size() == 1 ? " block" : " blocks") + " via " +
               (e.d.via_v4 ? e.d.via_v4->to_string() : e.d.via_v6->to_string());
    } else {
      p.info = e.d.reason;
      unreachable.push_back(name);
    }
    s.peers.push_back(std::move(p));
  }
  if (!unreachable.empty()) {
    std::string line = std::to_string(unreachable.size()) + (unreachable.size() == 1 ? " node" : " nodes") +
                       " not on a subnet of this node, not routed directly:";
    for (auto& n : unreachable) line += " " + n;
    s.notes.push_back(std::move(line));
  }
  return s;
}

void routing::stop() {
  for (auto& [_, e] : nodes_) drop(e);
  sink_ = nullptr;
}

}  // namespace direct
CNF_END_NAMESPACE
