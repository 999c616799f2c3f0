#include <cnf/plugins/vxlan.hpp>

#include <cnf/encap_decision.hpp>
#include <cnf/netlink/address.hpp>
#include <cnf/netlink/sha1.hpp>
#include <cnf/netlink/vxlan.hpp>

#include <algorithm>

CNF_BEGIN_NAMESPACE
namespace vxlan {

result<encap_mode> parse_mode(std::string_view text, std::string_view field) { return parse_encap_mode(text, field); }

mac_address derive_mac(std::string_view node_name) {
  auto h = netlink::detail::sha1(node_name);
  mac_address m;
  m.bytes[0] = 0x66;
  for (int i = 0; i < 5; ++i) m.bytes[static_cast<std::size_t>(i) + 1] = h[static_cast<std::size_t>(i)];
  return m;
}

bool cross_subnet(const node_info& self, const remote_node& r) { return crosses_subnet(self, r); }

encap_mode mode_of(const ip_prefix& block, const std::vector<encap_pool>& pools, std::optional<encap_mode> override_mode) {
  return encap_mode_of(block, pools, override_mode);
}

std::optional<remote_plan> plan(const node_info& self, const remote_node& r, const std::vector<encap_pool>& pools,
                                std::optional<encap_mode> override_mode, std::string& note) {
  note.clear();
  auto addr = r.address(ip_family::v4);
  if (!r.vxlan_tunnel_address) {
    note = "node " + r.name + " has no VXLAN tunnel address yet (spec.ipv4VXLANTunnelAddr)";
    return std::nullopt;
  }
  if (!addr) {
    note = "node " + r.name + " has no IPv4 address (spec.bgp.ipv4Address) to send VXLAN to";
    return std::nullopt;
  }
  remote_plan p{*r.vxlan_tunnel_address, r.vxlan_tunnel_mac ? *r.vxlan_tunnel_mac : derive_mac(r.name), *addr, {}};
  const bool elsewhere = cross_subnet(self, r);
  for (auto& b : r.pod_cidrs) {
    if (b.family() != ip_family::v4) continue;
    auto m = mode_of(b, pools, override_mode);
    if (encap_needed(m, elsewhere)) p.blocks.push_back(b.canonical());
  }
  std::sort(p.blocks.begin(), p.blocks.end());
  return p;
}

std::vector<kernel_op> diff(const std::string& node, const std::optional<remote_plan>& before, const std::optional<remote_plan>& after) {
  using t = kernel_op::type;
  std::vector<kernel_op> ops;
  const bool neigh_same = before && after && before->tunnel == after->tunnel && before->mac == after->mac;
  const bool fdb_same = before && after && before->mac == after->mac && before->node_address == after->node_address;
  if (before && !neigh_same && (!after || after->tunnel != before->tunnel)) ops.push_back({t::del_neigh, before->tunnel, before->mac, node});
  if (before && !fdb_same) ops.push_back({t::del_fdb, before->node_address, before->mac, node});
  if (after && !neigh_same) ops.push_back({t::set_neigh, after->tunnel, after->mac, node});
  if (after && !fdb_same) ops.push_back({t::set_fdb, after->node_address, after->mac, node});
  return ops;
}

route_entry route_for(const ip_prefix& block, const ip_address& tunnel, const std::string& device) {
  route_entry e;
  e.dst = block.canonical();
  e.next_hops.push_back({tunnel, device, true});
  return e;
}

encapsulation::encapsulation(config c, logger* log) : cfg_(std::move(c)), log_(log ? log : &default_logger()) {
  tunnel_.device = cfg_.device;
}
encapsulation::~encapsulation() = default;
encapsulation::encapsulation(encapsulation&&) noexcept = default;
encapsulation& encapsulation::operator=(encapsulation&&) noexcept = default;

bool encapsulation::active() const {
  if (cfg_.mode) return *cfg_.mode != encap_mode::never;
  return std::any_of(pools_.begin(), pools_.end(), [](auto& p) { return p.mode != encap_mode::never && p.cidr.family() == ip_family::v4; });
}

result<tunnel_info> encapsulation::start(const node_info& self, encap_sink& sink) {
  if (!sock_) {
    auto s = netlink::rtnl_socket::open();
    if (!s) return std::move(s).error();
    sock_ = std::make_unique<netlink::rtnl_socket>(std::move(*s));
  }
  self_ = self;
  sink_ = &sink;
  device_dirty_ = true;
  sweep_pending_ = true;
  for (auto& [name, _] : nodes_) dirty_.insert(name);
  if (auto r = ensure_device(); !r) return std::move(r).error();
  return tunnel_;
}

result<void> encapsulation::set_node(const node_info& self) {
  if (self == self_) return {};
  self_ = self;
  device_dirty_ = true;
  for (auto& [name, _] : nodes_) dirty_.insert(name);  // CrossSubnet depends on this node's subnets
  return {};
}

void encapsulation::upsert_node(const remote_node& r) {
  auto it = nodes_.find(r.name);
  if (it != nodes_.end() && it->second == r) return;
  nodes_[r.name] = r;
  dirty_.insert(r.name);
}

void encapsulation::remove_node(std::string_view name) {
  auto it = nodes_.find(name);
  if (it == nodes_.end()) return;
  nodes_.erase(it);
  dirty_.insert(std::string(name));
}

void encapsulation::set_pools(const std::vector<encap_pool>& pools) {
  if (pools == pools_) return;
  const bool was = active();
  pools_ = pools;
  if (was != active()) device_dirty_ = true;
  for (auto& [name, _] : nodes_) dirty_.insert(name);
}

// The device as the config and this node say, created or corrected; when it must not exist
// (no block can need it), gone with all it holds. Neighbour and FDB entries die with a
// deleted device, so every node is programmed again after a re-creation.
result<void> encapsulation::ensure_device() {
  device_dirty_ = false;
  device_note_.clear();
  if (!sock_) return {};
  auto& s = *sock_;
  auto local = [&]() -> std::optional<ip_prefix> {
    for (auto& a : self_.addresses)
      if (a.family() == ip_family::v4) return a;
    return std::nullopt;
  }();
  if (!active() || !local || !self_.vxlan_tunnel_address) {
    if (active() && !local) device_note_ = "this node has no IPv4 address: no VXLAN device";
    else if (active()) device_note_ = "waiting for this node's VXLAN tunnel address (spec.ipv4VXLANTunnelAddr)";
    return remove_device();
  }
  // The uplink: the interface holding this node's address.
  auto addrs = netlink::list_addresses(s, 0, ip_family::v4);
  if (!addrs) return std::move(addrs).error();
  int uplink = 0;
  for (auto& a : *addrs)
    if (a.prefix.address() == local->address()) uplink = a.ifindex;
  if (!uplink) return error(errc::not_found, "vxlan: no interface holds this node's address " + local->address().to_string());
  auto up = netlink::get_link(s, uplink);
  if (!up) return std::move(up).error();
  const unsigned mtu = cfg_.mtu ? cfg_.mtu : up->mtu - overhead;
  const mac_address mac = self_.vxlan_tunnel_mac ? *self_.vxlan_tunnel_mac : derive_mac(self_.name);

  auto all = netlink::list_vxlans(s);
  if (!all) return std::move(all).error();
  std::optional<netlink::vxlan_info> mine;
  for (auto& v : *all) {
    if (v.link.name == cfg_.device) { mine = v; continue; }
    if (v.vni == cfg_.vni && v.port == cfg_.port)
      return error(errc::already_exists, "vxlan: VNI " + std::to_string(cfg_.vni) + " on UDP port " + std::to_string(cfg_.port) +
                                             " is already used by device " + v.link.name +
                                             "; set [encapsulation] vni or port, or remove that device");
  }
  netlink::vxlan_spec want{cfg_.device, cfg_.vni, cfg_.port, local->address(), uplink, false, mtu, mac};
  bool created = false;
  if (mine && (mine->vni != want.vni || mine->port != want.port || mine->local != want.local || mine->link_index != want.link_index ||
               mine->learning)) {
    log_->info("vxlan: " + cfg_.device + " has other settings than wanted; re-creating it");
    if (auto r = remove_device(); !r) return r;
    mine.reset();
  }
  if (!mine) {
    netlink::request_batch b;
    b.add(netlink::new_vxlan_msg(want), "create " + cfg_.device + " (vxlan id " + std::to_string(cfg_.vni) + " dstport " +
                                            std::to_string(cfg_.port) + " local " + local->address().to_string() + ")");
    if (auto r = s.execute(b); !r) return error(r.error().code, "vxlan: " + r.error().message);
    created = true;
    auto l = netlink::get_link(s, cfg_.device);
    if (!l) return std::move(l).error();
    ifindex_ = l->index;
    applied_.clear();
    for (auto& [name, _] : nodes_) dirty_.insert(name);
  } else {
    ifindex_ = mine->link.index;
    if (mine->link.mtu != mtu || mine->link.mac != mac) {
      netlink::request_batch b;
      b.add(netlink::set_link_mtu_mac_msg(ifindex_, mtu, mac), "set " + cfg_.device + " mtu " + std::to_string(mtu) + " address " + mac.to_string());
      if (auto r = s.execute(b); !r) return error(r.error().code, "vxlan: " + r.error().message);
    }
  }
  // The tunnel address, alone on the device; then up (the UDP socket is bound here).
  const ip_prefix tun(*self_.vxlan_tunnel_address, 32);
  netlink::request_batch b;
  if (auto have = netlink::list_addresses(s, ifindex_, ip_family::v4); have) {
    for (auto& a : *have)
      if (a.prefix != tun) b.add(netlink::del_address_msg(ifindex_, a.prefix), "remove " + a.prefix.to_string() + " from " + cfg_.device);
  }
  b.add(netlink::add_address_msg(ifindex_, tun), "add " + tun.to_string() + " to " + cfg_.device);
  const std::size_t up_idx = b.add(netlink::set_link_up_msg(ifindex_), "set " + cfg_.device + " up");
  if (auto r = s.execute(b); !r) {
    auto e = b.error_of(up_idx) == EADDRINUSE
                 ? error(errc::already_exists, "vxlan: UDP port " + std::to_string(cfg_.port) + " is already in use by another socket; set [encapsulation] port")
                 : error(r.error().code, "vxlan: " + r.error().message);
    if (created) (void)remove_device();  // nothing left half-made
    return e;
  }
  tunnel_info t{cfg_.device, *self_.vxlan_tunnel_address, mac, mtu};
  if (t != tunnel_) {
    tunnel_ = t;
    log_->info("vxlan: " + cfg_.device + " (VNI " + std::to_string(cfg_.vni) + ", port " + std::to_string(cfg_.port) + ", MTU " +
               std::to_string(mtu) + ", MAC " + mac.to_string() + ") holds " + tun.to_string());
    if (sink_) sink_->tunnel_changed(tunnel_);
  }
  return {};
}

result<void> encapsulation::remove_device() {
  withdraw_all();
  applied_.clear();
  for (auto& [name, _] : nodes_) dirty_.insert(name);
  ifindex_ = 0;
  if (sock_) {
    auto l = netlink::get_link(*sock_, cfg_.device);
    if (l) {
      if (l->kind != "vxlan") return error(errc::already_exists, "vxlan: " + cfg_.device + " exists and is not a vxlan device (" + l->kind + "); left alone");
      if (auto r = netlink::delete_link(*sock_, cfg_.device); !r) return r;
      log_->info("vxlan: removed " + cfg_.device);
    } else if (l.error().code != errc::not_found) {
      return std::move(l).error();
    }
  }
  tunnel_info t{cfg_.device, std::nullopt, std::nullopt, 0};
  if (t != tunnel_) {
    tunnel_ = t;
    if (sink_) sink_->tunnel_changed(tunnel_);
  }
  return {};
}

void encapsulation::withdraw_all() {
  if (sink_)
    for (auto& [dst, _] : routes_) sink_->route_unwanted(dst);
  routes_.clear();
}

void encapsulation::want_routes(const std::string&, const std::optional<remote_plan>& before, const std::optional<remote_plan>& after) {
  std::set<ip_prefix> keep;
  if (after)
    for (auto& b : after->blocks) keep.insert(b);
  if (before)
    for (auto& b : before->blocks)
      if (!keep.count(b) && routes_.erase(b) && sink_) sink_->route_unwanted(b);
  if (after)
    for (auto& b : after->blocks) {
      auto e = route_for(b, after->tunnel, cfg_.device);
      auto it = routes_.find(b);
      if (it != routes_.end() && it->second == e) continue;
      routes_[b] = e;
      if (sink_) sink_->route_wanted(e);
    }
}

result<void> encapsulation::apply() {
  if (!sock_ || !sink_) return {};
  if (device_dirty_)
    if (auto r = ensure_device(); !r) {
      device_dirty_ = true;  // tried again at the next apply
      return r;
    }
  if (!ifindex_) {
    // No device: nothing to program; remember why nodes get nothing.
    notes_.clear();
    for (auto& [name, r] : nodes_) {
      std::string note;
      (void)plan(self_, r, pools_, cfg_.mode, note);
      if (!note.empty()) notes_[name] = note;
    }
    dirty_.clear();
    return {};
  }
  struct step {
    std::string node;
    std::optional<remote_plan> before, after;
    std::vector<std::size_t> reqs;
  };
  std::vector<step> steps;
  netlink::request_batch b;
  for (auto& name : dirty_) {
    step st;
    st.node = name;
    if (auto a = applied_.find(name); a != applied_.end()) st.before = a->second;
    if (auto n = nodes_.find(name); n != nodes_.end()) {
      std::string note;
      st.after = plan(self_, n->second, pools_, cfg_.mode, note);
      if (note.empty()) notes_.erase(name);
      else notes_[name] = note;
    } else {
      notes_.erase(name);
    }
    for (auto& op : diff(name, st.before, st.after)) {
      using t = kernel_op::type;
      switch (op.kind) {
        case t::set_neigh: st.reqs.push_back(b.add(netlink::set_neigh_msg(ifindex_, op.ip, op.mac), "neighbour " + op.ip.to_string() + " lladdr " + op.mac.to_string() + " dev " + cfg_.device + " (node " + name + ")")); break;
        case t::del_neigh: st.reqs.push_back(b.add(netlink::del_neigh_msg(ifindex_, op.ip), "delete neighbour " + op.ip.to_string() + " dev " + cfg_.device + " (node " + name + ")")); break;
        case t::set_fdb: st.reqs.push_back(b.add(netlink::set_fdb_msg(ifindex_, op.mac, op.ip), "fdb " + op.mac.to_string() + " dst " + op.ip.to_string() + " dev " + cfg_.device + " (node " + name + ")")); break;
        case t::del_fdb: st.reqs.push_back(b.add(netlink::del_fdb_msg(ifindex_, op.mac, op.ip), "delete fdb " + op.mac.to_string() + " dst " + op.ip.to_string() + " dev " + cfg_.device + " (node " + name + ")")); break;
      }
    }
    steps.push_back(std::move(st));
  }
  dirty_.clear();
  (void)sock_->execute(b);  // per-request results below
  std::optional<error> first;
  for (auto& st : steps) {
    bool ok = true;
    for (auto i : st.reqs) {
      const int e = b.error_of(i);
      const bool is_delete = b.at(i).what.rfind("delete ", 0) == 0;
      if (e != 0 && !(is_delete && (e == ENOENT || e == ESRCH))) {
        ok = false;
        if (!first) first = netlink::request_batch::describe(b.at(i));
      }
    }
    if (!ok) {
      // What the kernel holds for this node is unknown: forget it and set it again next time.
      applied_.erase(st.node);
      dirty_.insert(st.node);
      want_routes(st.node, st.before, std::nullopt);
      continue;
    }
    if (st.after) applied_[st.node] = *st.after;
    else applied_.erase(st.node);
    want_routes(st.node, st.before, st.after);
  }
  if (sweep_pending_ && !first)
    if (auto r = sweep(); !r) first = r.error();
  if (first) return error(first->code, "vxlan: " + first->message);
  return {};
}

// After a start on a device that already existed (a restarted agent): permanent entries on
// it that no node wants any more go; entries that are right were left as they were.
result<void> encapsulation::sweep() {
  sweep_pending_ = false;
  std::set<ip_address> neigh_ok;
  std::set<std::pair<std::string, ip_address>> fdb_ok;
  for (auto& [_, p] : applied_) {
    neigh_ok.insert(p.tunnel);
    fdb_ok.insert({p.mac.to_string(), p.node_address});
  }
  netlink::request_batch b;
  auto neigh = netlink::list_neighbours(*sock_, AF_INET, ifindex_);
  if (!neigh) return std::move(neigh).error();
  for (auto& n : *neigh)
    if (n.permanent() && n.dst && !neigh_ok.count(*n.dst)) b.add(netlink::del_neigh_msg(ifindex_, *n.dst), "delete stale neighbour " + n.dst->to_string());
  auto fdb = netlink::list_neighbours(*sock_, AF_BRIDGE, ifindex_);
  if (!fdb) return std::move(fdb).error();
  for (auto& n : *fdb)
    if (n.permanent() && n.dst && n.mac && !fdb_ok.count({n.mac->to_string(), *n.dst}))
      b.add(netlink::del_fdb_msg(ifindex_, *n.mac, *n.dst), "delete stale fdb " + n.mac->to_string() + " dst " + n.dst->to_string());
  if (b.empty()) return {};
  log_->info("vxlan: removing " + std::to_string(b.size()) + " stale neighbour/FDB entries from " + cfg_.device);
  return sock_->execute(b);
}

encap_status encapsulation::status() const {
  encap_status s;
  if (cfg_.mode) s.mode = *cfg_.mode;
  else
    for (auto& p : pools_)
      if (p.cidr.family() == ip_family::v4 && p.mode > s.mode) s.mode = p.mode;
  s.tunnel = tunnel_;
  for (auto& [_, p] : applied_)
    if (!p.blocks.empty()) ++s.remote_nodes;
  s.routes = routes_.size();
  s.pending = dirty_.size() + (device_dirty_ ? 1 : 0);
  if (!device_note_.empty()) s.notes.push_back(device_note_);
  for (auto& [_, n] : notes_) s.notes.push_back(n);
  return s;
}

result<void> encapsulation::stop() {
  // Never started (an agent whose profile no longer has this part): the device an earlier
  // run left goes all the same.
  if (!sock_) {
    auto s = netlink::rtnl_socket::open();
    if (!s) return std::move(s).error();
    sock_ = std::make_unique<netlink::rtnl_socket>(std::move(*s));
  }
  auto r = remove_device();
  sink_ = nullptr;
  device_dirty_ = true;
  return r;
}

}  // namespace vxlan
CNF_END_NAMESPACE
