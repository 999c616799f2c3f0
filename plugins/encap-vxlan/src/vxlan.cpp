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

mac_address derive_mac_v6(std::string_view node_name) { return derive_mac("v6/" + std::string(node_name)); }

bool cross_subnet(const node_info& self, const remote_node& r, ip_family f) { return crosses_subnet(self, r, f); }

encap_mode mode_of(const ip_prefix& block, const std::vector<encap_pool>& pools, std::optional<encap_mode> override_mode) {
  return encap_mode_of(block, pools, override_mode);
}

std::optional<remote_plan> plan(const node_info& self, const remote_node& r, const std::vector<encap_pool>& pools,
                                std::optional<encap_mode> override_mode, std::string& note, ip_family f) {
  note.clear();
  const bool v6 = f == ip_family::v6;
  const auto& tunnel = v6 ? r.vxlan_tunnel_address_v6 : r.vxlan_tunnel_address;
  const auto& mac = v6 ? r.vxlan_tunnel_mac_v6 : r.vxlan_tunnel_mac;
  auto addr = r.address(f);
  if (!tunnel) {
    note = "node " + r.name + (v6 ? " has no IPv6 VXLAN tunnel address yet (spec.ipv6VXLANTunnelAddr)"
                                  : " has no VXLAN tunnel address yet (spec.ipv4VXLANTunnelAddr)");
    return std::nullopt;
  }
  if (!addr) {
    note = "node " + r.name + (v6 ? " has no IPv6 address (spec.bgp.ipv6Address) to send VXLAN to"
                                  : " has no IPv4 address (spec.bgp.ipv4Address) to send VXLAN to");
    return std::nullopt;
  }
  remote_plan p{*tunnel, mac ? *mac : (v6 ? derive_mac_v6(r.name) : derive_mac(r.name)), *addr, {}};
  const bool elsewhere = cross_subnet(self, r, f);
  for (auto& b : r.pod_cidrs) {
    if (b.family() != f) continue;
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
  v4_.family = ip_family::v4;
  v6_.family = ip_family::v6;
  v4_.tunnel.device = cfg_.device;
  v6_.tunnel.device = cfg_.device_v6;
  v6_.tunnel.family = ip_family::v6;
}
encapsulation::~encapsulation() = default;
encapsulation::encapsulation(encapsulation&&) noexcept = default;
encapsulation& encapsulation::operator=(encapsulation&&) noexcept = default;

// Whether a block of family `f` can need the tunnel. The profile's mode overrides the pools',
// for IPv6 only where there is an IPv6 pool (an IPv4-only cluster gets no IPv6 device).
bool encapsulation::active(ip_family f) const {
  auto of_family = [f](const encap_pool& p) { return p.cidr.family() == f; };
  if (cfg_.mode)
    return *cfg_.mode != encap_mode::never && (f == ip_family::v4 || std::any_of(pools_.begin(), pools_.end(), of_family));
  return std::any_of(pools_.begin(), pools_.end(), [&](auto& p) { return p.mode != encap_mode::never && of_family(p); });
}

void encapsulation::dirty_all() {
  for (auto& [name, _] : nodes_) dirty_.insert(name);
}

result<tunnel_info> encapsulation::start(const node_info& self, encap_sink& sink) {
  if (!sock_) {
    auto s = netlink::rtnl_socket::open();
    if (!s) return std::move(s).error();
    sock_ = std::make_unique<netlink::rtnl_socket>(std::move(*s));
  }
  self_ = self;
  sink_ = &sink;
  for (side* d : {&v4_, &v6_}) {
    d->dirty = true;
    d->sweep_pending = true;
  }
  dirty_all();
  if (auto r = ensure_device(v4_); !r) return std::move(r).error();
  // The IPv6 device failing does not take IPv4 down: it is tried again, and reported, by apply().
  if (auto r = ensure_device(v6_); !r) {
    v6_.dirty = true;
    log_->warn("vxlan: " + cfg_.device_v6 + ": " + r.error().message);
  }
  return v4_.tunnel;
}

result<void> encapsulation::set_node(const node_info& self) {
  if (self == self_) return {};
  self_ = self;
  v4_.dirty = v6_.dirty = true;
  dirty_all();  // CrossSubnet depends on this node's subnets
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
  const bool was4 = active(ip_family::v4), was6 = active(ip_family::v6);
  pools_ = pools;
  if (was4 != active(ip_family::v4)) v4_.dirty = true;
  if (was6 != active(ip_family::v6)) v6_.dirty = true;
  dirty_all();
}

// The device of a family as the config and this node say, created or corrected; when it must
// not exist (no block of the family can need it), gone with all it holds. Neighbour and FDB
// entries die with a deleted device, so every node is programmed again after a re-creation.
result<void> encapsulation::ensure_device(side& d) {
  d.dirty = false;
  d.note.clear();
  if (!sock_) return {};
  auto& s = *sock_;
  const bool v6 = d.family == ip_family::v6;
  const std::string& dev = device_of(d);
  const char* fam = v6 ? "IPv6" : "IPv4";
  const auto& tunnel_addr = v6 ? self_.vxlan_tunnel_address_v6 : self_.vxlan_tunnel_address;
  auto local = [&]() -> std::optional<ip_prefix> {
    for (auto& a : self_.addresses)
      if (a.family() == d.family) return a;
    return std::nullopt;
  }();
  if (!active(d.family) || !local || !tunnel_addr) {
    if (active(d.family) && !local) d.note = std::string("this node has no ") + fam + " address: no " + dev;
    else if (active(d.family))
      d.note = v6 ? "waiting for this node's IPv6 VXLAN tunnel address (spec.ipv6VXLANTunnelAddr)"
                  : "waiting for this node's VXLAN tunnel address (spec.ipv4VXLANTunnelAddr)";
    return remove_device(d);
  }
  // The uplink: the interface holding this node's address.
  auto addrs = netlink::list_addresses(s, 0, d.family);
  if (!addrs) return std::move(addrs).error();
  int uplink = 0;
  for (auto& a : *addrs)
    if (a.prefix.address() == local->address()) uplink = a.ifindex;
  if (!uplink) return error(errc::not_found, "vxlan: no interface holds this node's address " + local->address().to_string());
  auto up = netlink::get_link(s, uplink);
  if (!up) return std::move(up).error();
  const unsigned mtu_cfg = v6 ? cfg_.mtu_v6 : cfg_.mtu;
  const unsigned mtu = mtu_cfg ? mtu_cfg : up->mtu - (v6 ? overhead_v6 : overhead);
  const auto& mac_cfg = v6 ? self_.vxlan_tunnel_mac_v6 : self_.vxlan_tunnel_mac;
  const mac_address mac = mac_cfg ? *mac_cfg : (v6 ? derive_mac_v6(self_.name) : derive_mac(self_.name));

  auto all = netlink::list_vxlans(s);
  if (!all) return std::move(all).error();
  std::optional<netlink::vxlan_info> mine;
  for (auto& v : *all) {
    if (v.link.name == dev) { mine = v; continue; }
    if (v.link.name == cfg_.device || v.link.name == cfg_.device_v6) continue;  // the other family's: same VNI and port, other socket
    const bool same_family = (v.local ? v.local->family() : ip_family::v4) == d.family;  // one UDP socket per family
    if (v.vni == cfg_.vni && v.port == cfg_.port && same_family)
      return error(errc::already_exists, "vxlan: VNI " + std::to_string(cfg_.vni) + " on UDP port " + std::to_string(cfg_.port) +
                                             " is already used by device " + v.link.name +
                                             "; set [encapsulation] vni or port, or remove that device");
  }
  netlink::vxlan_spec want{dev, cfg_.vni, cfg_.port, local->address(), uplink, false, mtu, mac};
  bool created = false;
  if (mine && (mine->vni != want.vni || mine->port != want.port || mine->local != want.local || mine->link_index != want.link_index ||
               mine->learning)) {
    log_->info("vxlan: " + dev + " has other settings than wanted; re-creating it");
    if (auto r = remove_device(d); !r) return r;
    mine.reset();
  }
  if (!mine) {
    netlink::request_batch b;
    b.add(netlink::new_vxlan_msg(want), "create " + dev + " (vxlan id " + std::to_string(cfg_.vni) + " dstport " +
                                            std::to_string(cfg_.port) + " local " + local->address().to_string() + ")");
    if (auto r = s.execute(b); !r) return error(r.error().code, "vxlan: " + r.error().message);
    created = true;
    auto l = netlink::get_link(s, dev);
    if (!l) return std::move(l).error();
    d.ifindex = l->index;
    d.applied.clear();
    dirty_all();
  } else {
    d.ifindex = mine->link.index;
    if (mine->link.mtu != mtu || mine->link.mac != mac) {
      netlink::request_batch b;
      b.add(netlink::set_link_mtu_mac_msg(d.ifindex, mtu, mac), "set " + dev + " mtu " + std::to_string(mtu) + " address " + mac.to_string());
      if (auto r = s.execute(b); !r) return error(r.error().code, "vxlan: " + r.error().message);
    }
  }
  // The tunnel address, alone on the device (an IPv6 link-local address the kernel gives it
  // stays), without duplicate address detection (no multicast crosses this device); then up
  // (the UDP socket is bound here).
  const ip_prefix tun(*tunnel_addr, v6 ? 128 : 32);
  netlink::request_batch b;
  if (auto have = netlink::list_addresses(s, d.ifindex, d.family); have) {
    for (auto& a : *have) {
      const bool link_local = v6 && a.prefix.address().data()[0] == 0xfe && (a.prefix.address().data()[1] & 0xc0) == 0x80;
      if (a.prefix != tun && !link_local) b.add(netlink::del_address_msg(d.ifindex, a.prefix), "remove " + a.prefix.to_string() + " from " + dev);
    }
  }
  b.add(netlink::add_address_msg(d.ifindex, tun, v6 ? IFA_F_NODAD : 0), "add " + tun.to_string() + " to " + dev);
  const std::size_t up_idx = b.add(netlink::set_link_up_msg(d.ifindex), "set " + dev + " up");
  if (auto r = s.execute(b); !r) {
    auto e = b.error_of(up_idx) == EADDRINUSE
                 ? error(errc::already_exists, "vxlan: UDP port " + std::to_string(cfg_.port) + " is already in use by another socket; set [encapsulation] port")
                 : error(r.error().code, "vxlan: " + r.error().message);
    if (created) (void)remove_device(d);  // nothing left half-made
    return e;
  }
  tunnel_info t{dev, *tunnel_addr, mac, mtu, d.family};
  if (t != d.tunnel) {
    d.tunnel = t;
    log_->info("vxlan: " + dev + " (VNI " + std::to_string(cfg_.vni) + ", port " + std::to_string(cfg_.port) + ", MTU " +
               std::to_string(mtu) + ", MAC " + mac.to_string() + ") holds " + tun.to_string());
    if (sink_) sink_->tunnel_changed(d.tunnel);
  }
  return {};
}

result<void> encapsulation::remove_device(side& d) {
  withdraw_all(d);
  d.applied.clear();
  dirty_all();
  d.ifindex = 0;
  const std::string& dev = device_of(d);
  if (sock_) {
    auto l = netlink::get_link(*sock_, dev);
    if (l) {
      if (l->kind != "vxlan") return error(errc::already_exists, "vxlan: " + dev + " exists and is not a vxlan device (" + l->kind + "); left alone");
      if (auto r = netlink::delete_link(*sock_, dev); !r) return r;
      log_->info("vxlan: removed " + dev);
    } else if (l.error().code != errc::not_found) {
      return std::move(l).error();
    }
  }
  tunnel_info t{dev, std::nullopt, std::nullopt, 0, d.family};
  if (t != d.tunnel) {
    d.tunnel = t;
    if (sink_) sink_->tunnel_changed(d.tunnel);
  }
  return {};
}

void encapsulation::withdraw_all(side& d) {
  if (sink_)
    for (auto& [dst, _] : d.routes) sink_->route_unwanted(dst);
  d.routes.clear();
}

void encapsulation::want_routes(side& d, const std::optional<remote_plan>& before, const std::optional<remote_plan>& after) {
  std::set<ip_prefix> keep;
  if (after)
    for (auto& b : after->blocks) keep.insert(b);
  if (before)
    for (auto& b : before->blocks)
      if (!keep.count(b) && d.routes.erase(b) && sink_) sink_->route_unwanted(b);
  if (after)
    for (auto& b : after->blocks) {
      auto e = route_for(b, after->tunnel, device_of(d));
      auto it = d.routes.find(b);
      if (it != d.routes.end() && it->second == e) continue;
      d.routes[b] = e;
      if (sink_) sink_->route_wanted(e);
    }
}

result<void> encapsulation::apply() {
  if (!sock_ || !sink_) return {};
  std::optional<error> first;
  bool failed4 = false, failed6 = false;
  for (side* d : {&v4_, &v6_})
    if (d->dirty)
      if (auto r = ensure_device(*d); !r) {
        d->dirty = true;  // tried again at the next apply
        (d == &v4_ ? failed4 : failed6) = true;
        if (!first) first = r.error();
      }
  const auto names = std::exchange(dirty_, {});
  for (side* d : {&v4_, &v6_}) {
    if (d == &v4_ ? failed4 : failed6) {
      dirty_.insert(names.begin(), names.end());  // planned again once the device is right
      continue;
    }
    if (auto r = program(*d, names); !r && !first) first = r.error();
  }
  if (first) return error(first->code, first->message.starts_with("vxlan: ") ? first->message : "vxlan: " + first->message);
  return {};
}

// One device's neighbour and FDB entries for the nodes `names`, in one netlink batch; the
// routes of every node whose entries are in place go to the sink.
result<void> encapsulation::program(side& d, const std::set<std::string, std::less<>>& names) {
  const std::string& dev = device_of(d);
  if (!d.ifindex) {
    // No device: nothing to program; remember why nodes get nothing (IPv6: only when the
    // family is wanted at all, an IPv4-only cluster is not told its nodes lack IPv6).
    d.notes.clear();
    if (d.family == ip_family::v4 || active(d.family))
      for (auto& [name, r] : nodes_) {
        std::string note;
        (void)plan(self_, r, pools_, cfg_.mode, note, d.family);
        if (!note.empty()) d.notes[name] = note;
      }
    return {};
  }
  struct step {
    std::string node;
    std::optional<remote_plan> before, after;
    std::vector<std::size_t> reqs;
  };
  std::vector<step> steps;
  netlink::request_batch b;
  for (auto& name : names) {
    step st;
    st.node = name;
    if (auto a = d.applied.find(name); a != d.applied.end()) st.before = a->second;
    if (auto n = nodes_.find(name); n != nodes_.end()) {
      std::string note;
      st.after = plan(self_, n->second, pools_, cfg_.mode, note, d.family);
      if (note.empty()) d.notes.erase(name);
      else d.notes[name] = note;
    } else {
      d.notes.erase(name);
    }
    for (auto& op : diff(name, st.before, st.after)) {
      using t = kernel_op::type;
      switch (op.kind) {
        case t::set_neigh: st.reqs.push_back(b.add(netlink::set_neigh_msg(d.ifindex, op.ip, op.mac), "neighbour " + op.ip.to_string() + " lladdr " + op.mac.to_string() + " dev " + dev + " (node " + name + ")")); break;
        case t::del_neigh: st.reqs.push_back(b.add(netlink::del_neigh_msg(d.ifindex, op.ip), "delete neighbour " + op.ip.to_string() + " dev " + dev + " (node " + name + ")")); break;
        case t::set_fdb: st.reqs.push_back(b.add(netlink::set_fdb_msg(d.ifindex, op.mac, op.ip), "fdb " + op.mac.to_string() + " dst " + op.ip.to_string() + " dev " + dev + " (node " + name + ")")); break;
        case t::del_fdb: st.reqs.push_back(b.add(netlink::del_fdb_msg(d.ifindex, op.mac, op.ip), "delete fdb " + op.mac.to_string() + " dst " + op.ip.to_string() + " dev " + dev + " (node " + name + ")")); break;
      }
    }
    steps.push_back(std::move(st));
  }
  if (!b.empty()) (void)sock_->execute(b);  // per-request results below
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
      d.applied.erase(st.node);
      dirty_.insert(st.node);
      want_routes(d, st.before, std::nullopt);
      continue;
    }
    if (st.after) d.applied[st.node] = *st.after;
    else d.applied.erase(st.node);
    want_routes(d, st.before, st.after);
  }
  if (d.sweep_pending && !first)
    if (auto r = sweep(d); !r) first = r.error();
  if (first) return std::move(*first);
  return {};
}

// After a start on a device that already existed (a restarted agent): permanent entries on
// it that no node wants any more go; entries that are right were left as they were.
result<void> encapsulation::sweep(side& d) {
  d.sweep_pending = false;
  std::set<ip_address> neigh_ok;
  std::set<std::pair<std::string, ip_address>> fdb_ok;
  for (auto& [_, p] : d.applied) {
    neigh_ok.insert(p.tunnel);
    fdb_ok.insert({p.mac.to_string(), p.node_address});
  }
  netlink::request_batch b;
  auto neigh = netlink::list_neighbours(*sock_, d.family == ip_family::v6 ? AF_INET6 : AF_INET, d.ifindex);
  if (!neigh) return std::move(neigh).error();
  for (auto& n : *neigh)
    if (n.permanent() && n.dst && !neigh_ok.count(*n.dst)) b.add(netlink::del_neigh_msg(d.ifindex, *n.dst), "delete stale neighbour " + n.dst->to_string());
  auto fdb = netlink::list_neighbours(*sock_, AF_BRIDGE, d.ifindex);
  if (!fdb) return std::move(fdb).error();
  for (auto& n : *fdb)
    if (n.permanent() && n.dst && n.mac && !fdb_ok.count({n.mac->to_string(), *n.dst}))
      b.add(netlink::del_fdb_msg(d.ifindex, *n.mac, *n.dst), "delete stale fdb " + n.mac->to_string() + " dst " + n.dst->to_string());
  if (b.empty()) return {};
  log_->info("vxlan: removing " + std::to_string(b.size()) + " stale neighbour/FDB entries from " + device_of(d));
  return sock_->execute(b);
}

encap_status encapsulation::status() const {
  encap_status s;
  auto mode_of_family = [&](ip_family f) {
    encap_mode m = encap_mode::never;
    if (cfg_.mode) return active(f) ? *cfg_.mode : encap_mode::never;
    for (auto& p : pools_)
      if (p.cidr.family() == f && p.mode > m) m = p.mode;
    return m;
  };
  s.mode = cfg_.mode ? *cfg_.mode : mode_of_family(ip_family::v4);
  s.mode_v6 = mode_of_family(ip_family::v6);
  s.tunnel = v4_.tunnel;
  s.tunnel_v6 = v6_.tunnel;
  std::set<std::string> reached;
  for (const side* d : {&v4_, &v6_}) {
    for (auto& [name, p] : d->applied)
      if (!p.blocks.empty()) reached.insert(name);
    s.routes += d->routes.size();
    if (d->dirty) ++s.pending;
  }
  s.remote_nodes = reached.size();
  s.pending += dirty_.size();
  for (const side* d : {&v4_, &v6_}) {
    if (!d->note.empty()) s.notes.push_back(d->note);
    for (auto& [_, n] : d->notes) s.notes.push_back(n);
  }
  return s;
}

result<void> encapsulation::stop() {
  // Never started (an agent whose profile no longer has this part): the devices an earlier
  // run left go all the same.
  if (!sock_) {
    auto s = netlink::rtnl_socket::open();
    if (!s) return std::move(s).error();
    sock_ = std::make_unique<netlink::rtnl_socket>(std::move(*s));
  }
  auto r4 = remove_device(v4_);
  auto r6 = remove_device(v6_);
  sink_ = nullptr;
  v4_.dirty = v6_.dirty = true;
  if (!r4) return r4;
  return r6;
}

}  // namespace vxlan
CNF_END_NAMESPACE
