#include <cnf/plugins/ipip.hpp>

#include <cnf/encap_decision.hpp>
#include <cnf/netlink/address.hpp>
#include <cnf/netlink/route.hpp>
#include <cnf/netlink/vxlan.hpp>

#include <linux/if_tunnel.h>

#include <algorithm>

CNF_BEGIN_NAMESPACE
namespace ipip {

std::string_view to_string(datapath d) noexcept {
  switch (d) {
    case datapath::automatic: return "auto";
    case datapath::kernel: return "kernel";
    case datapath::ebpf: return "ebpf";
  }
  return "?";
}

result<datapath> parse_datapath(std::string_view text, std::string_view field) {
  if (text == "auto") return datapath::automatic;
  if (text == "kernel") return datapath::kernel;
  if (text == "ebpf") return datapath::ebpf;
  return error(errc::invalid, std::string(field) + ": '" + std::string(text) + "' is not a datapath; expected auto, kernel or ebpf");
}

std::optional<remote_plan> plan(const node_info& self, const remote_node& r, const std::vector<encap_pool>& pools,
                                std::optional<encap_mode> override_mode, std::string& note) {
  note.clear();
  auto addr = r.address(ip_family::v4);
  if (!addr) {
    note = "node " + r.name + " has no IPv4 address (spec.bgp.ipv4Address) to send IPIP to";
    return std::nullopt;
  }
  remote_plan p{*addr, {}};
  const bool elsewhere = crosses_subnet(self, r);
  for (auto& b : r.pod_cidrs)
    if (b.family() == ip_family::v4 && encap_needed(encap_mode_of(b, pools, override_mode), elsewhere)) p.blocks.push_back(b.canonical());
  std::sort(p.blocks.begin(), p.blocks.end());
  return p;
}

netlink::message new_ipip_msg(std::string_view name, unsigned mtu) {
  netlink::message m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
  m.put_str(IFLA_IFNAME, name);
  if (mtu) m.put_u32(IFLA_MTU, mtu);
  auto* li = m.begin_nest(IFLA_LINKINFO);
  m.put_str(IFLA_INFO_KIND, "ipip");
  auto* data = m.begin_nest(IFLA_INFO_DATA);
  m.put_u8(IFLA_IPTUN_PMTUDISC, 1);
  m.put_u8(IFLA_IPTUN_PROTO, IPPROTO_IPIP);
  m.end_nest(data);
  m.end_nest(li);
  return m;
}

route_entry kernel_route(const ip_prefix& block, const ip_address& node, const std::string& device) {
  route_entry e;
  e.dst = block.canonical();
  e.next_hops.push_back({node, device, true});
  return e;
}

route_entry ebpf_route(const ip_prefix& block, const ip_address& next_hop, const std::string& uplink, unsigned mtu) {
  route_entry e;
  e.dst = block.canonical();
  e.next_hops.push_back({next_hop, uplink, false});
  e.mtu = mtu;
  return e;
}

bool kernel_lacks_ipip(int err) noexcept {
  // "Unknown device type" (no ipip in the kernel, no module to load) and its relatives.
  return err == EOPNOTSUPP || err == ENODEV || err == EAFNOSUPPORT || err == EPROTONOSUPPORT || err == ENOENT;
}

encapsulation::encapsulation(config c, logger* log) : cfg_(std::move(c)), log_(log ? log : &default_logger()) {}
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
  datapath_dirty_ = true;
  for (auto& [name, _] : nodes_) dirty_.insert(name);
  if (auto r = ensure_datapath(); !r) return std::move(r).error();
  return tunnel_;
}

result<void> encapsulation::set_node(const node_info& self) {
  if (self == self_) return {};
  self_ = self;
  datapath_dirty_ = true;
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
  if (was != active()) datapath_dirty_ = true;
  for (auto& [name, _] : nodes_) dirty_.insert(name);
}

// The datapath as the config and this node say: made or corrected; when no block can need
// the tunnel, gone with everything it holds.
result<void> encapsulation::ensure_datapath() {
  datapath_dirty_ = false;
  datapath_note_.clear();
  if (!sock_) return {};
  auto local = [&]() -> std::optional<ip_prefix> {
    for (auto& a : self_.addresses)
      if (a.family() == ip_family::v4) return a;
    return std::nullopt;
  }();
  if (!active() || !local) {
    if (active()) datapath_note_ = "this node has no IPv4 address: no IPIP";
    return remove_datapath();
  }
  auto addrs = netlink::list_addresses(*sock_, 0, ip_family::v4);
  if (!addrs) return std::move(addrs).error();
  int uplink = 0;
  for (auto& a : *addrs)
    if (a.prefix.address() == local->address()) uplink = a.ifindex;
  if (!uplink) return error(errc::not_found, "ipip: no interface holds this node's address " + local->address().to_string());
  auto up = netlink::get_link(*sock_, uplink);
  if (!up) return std::move(up).error();
  const unsigned mtu = cfg_.mtu ? cfg_.mtu : up->mtu - overhead;
  uplink_ = up->name;

  datapath want = used_ != datapath::automatic ? used_ : cfg_.path;
  if (want == datapath::automatic || want == datapath::kernel) {
    auto r = ensure_kernel(uplink, mtu);
    if (r) return {};
    if (want == datapath::kernel || r.error().code != errc::unsupported) return r;
    log_->info("ipip: " + r.error().message + "; using the eBPF datapath on " + uplink_);
  }
  return ensure_ebpf(uplink, mtu, local->address());
}

result<void> encapsulation::ensure_kernel(int, unsigned mtu) {
  auto& s = *sock_;
  auto l = netlink::get_link(s, cfg_.device);
  if (l && l->kind != "ipip")
    return error(errc::already_exists, "ipip: " + cfg_.device + " exists and is not an ipip device (" + l->kind + "); left alone");
  if (!l && l.error().code != errc::not_found) return std::move(l).error();
  if (!l) {
    netlink::request_batch b;
    b.add(new_ipip_msg(cfg_.device, mtu), "create " + cfg_.device + " (type ipip)");
    (void)s.execute(b);
    if (const int e = b.error_of(0); e != 0) {
      if (kernel_lacks_ipip(e))
        return error(errc::unsupported, "ipip: this kernel cannot make an ipip device (" + std::string(std::strerror(e)) +
                                            "); set [encapsulation] datapath = \"ebpf\" or \"auto\"");
      return netlink::request_batch::describe(b.at(0));
    }
    made_device_ = true;
    l = netlink::get_link(s, cfg_.device);
    if (!l) return std::move(l).error();
  }
  tunnel_ifindex_ = l->index;
  netlink::request_batch b;
  if (l->mtu != mtu) b.add(netlink::set_link_mtu_mac_msg(tunnel_ifindex_, mtu, std::nullopt), "set " + cfg_.device + " mtu " + std::to_string(mtu));
  if (self_.ipip_tunnel_address) {
    const ip_prefix tun(*self_.ipip_tunnel_address, 32);
    if (auto have = netlink::list_addresses(s, tunnel_ifindex_, ip_family::v4); have)
      for (auto& a : *have)
        if (a.prefix != tun) b.add(netlink::del_address_msg(tunnel_ifindex_, a.prefix), "remove " + a.prefix.to_string() + " from " + cfg_.device);
    b.add(netlink::add_address_msg(tunnel_ifindex_, tun, 0), "add " + tun.to_string() + " to " + cfg_.device);
  }
  b.add(netlink::set_link_up_msg(tunnel_ifindex_), "set " + cfg_.device + " up");
  (void)s.execute(b);
  for (std::size_t i = 0; i < b.size(); ++i)
    if (const int e = b.error_of(i); e != 0 && e != EEXIST) return netlink::request_batch::describe(b.at(i));
  if (used_ != datapath::kernel) {
    used_ = datapath::kernel;
    applied_.clear();
    for (auto& [name, _] : nodes_) dirty_.insert(name);
  }
  datapath_note_ = "datapath kernel: device " + cfg_.device;
  tunnel_info t{cfg_.device, self_.ipip_tunnel_address, std::nullopt, mtu};
  if (t != tunnel_) {
    tunnel_ = t;
    log_->info("ipip: " + cfg_.device + " (MTU " + std::to_string(mtu) + ")" +
               (t.address ? " holds " + t.address->to_string() + "/32" : std::string()));
    if (sink_) sink_->tunnel_changed(tunnel_);
  }
  return {};
}

result<void> encapsulation::ensure_ebpf(int uplink, unsigned mtu, const ip_address& local) {
  if (bpf_ && bpf_->ifindex() != uplink) {
    withdraw_all();
    bpf_.reset();
  }
  if (!bpf_) {
    auto d = std::make_unique<bpf_datapath>();
    if (auto r = d->attach(uplink, local); !r) return r;
    bpf_ = std::move(d);
    blocks_.clear();
    peers_.clear();
    applied_.clear();
    for (auto& [name, _] : nodes_) dirty_.insert(name);
    log_->info("ipip: eBPF datapath attached to tc egress and ingress of " + uplink_ + " (outer source " + local.to_string() + ")");
  } else if (auto r = bpf_->set_self(local); !r) {
    return r;
  }
  used_ = datapath::ebpf;
  datapath_note_ = "datapath ebpf: tc programs on " + uplink_ + " (no kernel ipip device)";
  tunnel_info t{uplink_, self_.ipip_tunnel_address, std::nullopt, mtu};
  if (t != tunnel_) {
    if (t.mtu != tunnel_.mtu)
      for (auto& [name, _] : nodes_) dirty_.insert(name);  // the routes carry the MTU
    tunnel_ = t;
    if (sink_) sink_->tunnel_changed(tunnel_);
  }
  return {};
}

result<void> encapsulation::remove_datapath() {
  withdraw_all();
  applied_.clear();
  blocks_.clear();
  peers_.clear();
  for (auto& [name, _] : nodes_) dirty_.insert(name);
  std::optional<error> first;
  if (bpf_) {
    if (auto r = bpf_->detach(); !r) first = r.error();
    bpf_.reset();
    log_->info("ipip: eBPF datapath detached from " + uplink_);
  }
  if (used_ == datapath::kernel && sock_) {
    auto l = netlink::get_link(*sock_, cfg_.device);
    if (l && l->kind == "ipip") {
      if (made_device_) {
        if (auto r = netlink::delete_link(*sock_, cfg_.device); !r && !first) first = r.error();
        else log_->info("ipip: removed " + cfg_.device);
      } else if (self_.ipip_tunnel_address) {
        // A tunl0 the kernel made (the ipip module's fallback device) stays; our address goes.
        netlink::request_batch b;
        b.add(netlink::del_address_msg(l->index, ip_prefix(*self_.ipip_tunnel_address, 32)), "remove the tunnel address from " + cfg_.device);
        (void)sock_->execute(b);
      }
    }
  }
  made_device_ = false;
  tunnel_ifindex_ = 0;
  used_ = datapath::automatic;
  tunnel_info t{cfg_.device, std::nullopt, std::nullopt, 0};
  if (t != tunnel_) {
    tunnel_ = t;
    if (sink_) sink_->tunnel_changed(tunnel_);
  }
  if (first) return *first;
  return {};
}

void encapsulation::withdraw_all() {
  if (sink_)
    for (auto& [dst, _] : routes_) sink_->route_unwanted(dst);
  routes_.clear();
}

// The route a block takes: through tunl0 to the node (kernel), or out of the uplink toward the
// next hop the kernel uses for the node's address (eBPF), so the outer packet's link layer is
// the one the node's own traffic gets.
result<std::optional<route_entry>> encapsulation::route_to(const ip_prefix& block, const ip_address& node) {
  if (used_ == datapath::kernel) return std::optional<route_entry>(kernel_route(block, node, cfg_.device));
  netlink::message m(RTM_GETROUTE, 0);
  auto& rt = m.header<rtmsg>();
  rt.rtm_family = AF_INET;
  rt.rtm_dst_len = 32;
  m.put_addr(RTA_DST, node);
  std::optional<netlink::route_info> got;
  netlink::request_batch b;
  b.add(m, "look up the route to " + node.to_string(), [&](const nlmsghdr& h) { got = netlink::parse_route(h); });
  (void)sock_->execute(b);
  if (b.error_of(0) == ENETUNREACH || b.error_of(0) == EHOSTUNREACH) return std::optional<route_entry>();
  if (b.error_of(0)) return netlink::request_batch::describe(b.at(0));
  if (!got) return std::optional<route_entry>();
  if (bpf_ && got->oif != bpf_->ifindex()) return std::optional<route_entry>();
  return std::optional<route_entry>(ebpf_route(block, got->gateway ? *got->gateway : node, uplink_, tunnel_.mtu));
}

result<void> encapsulation::apply() {
  if (!sock_ || !sink_) return {};
  if (datapath_dirty_)
    if (auto r = ensure_datapath(); !r) {
      datapath_dirty_ = true;
      return r;
    }
  const bool have = used_ == datapath::kernel || (used_ == datapath::ebpf && bpf_);
  notes_.clear();
  for (auto& [name, r] : nodes_) {
    std::string note;
    (void)plan(self_, r, pools_, cfg_.mode, note);
    if (!note.empty()) notes_[name] = note;
  }
  if (!have) {
    dirty_.clear();
    return {};
  }
  std::optional<error> first;
  std::set<std::string, std::less<>> retry;
  for (auto& name : dirty_) {
    std::optional<remote_plan> before, after;
    if (auto a = applied_.find(name); a != applied_.end()) before = a->second;
    if (auto n = nodes_.find(name); n != nodes_.end()) {
      std::string note;
      after = plan(self_, n->second, pools_, cfg_.mode, note);
      if (after && after->blocks.empty()) after.reset();  // nothing through the tunnel
    }
    std::set<ip_prefix> keep;
    if (after)
      for (auto& b : after->blocks) keep.insert(b);
    bool ok = true;
    auto fail = [&](error e) {
      ok = false;
      if (!first) first = std::move(e);
    };
    // Withdraw first: the route goes before the map entry, so no packet is routed out plain.
    if (before)
      for (auto& b : before->blocks)
        if (!keep.count(b)) {
          if (routes_.erase(b)) sink_->route_unwanted(b);
          if (bpf_ && blocks_.count(b)) {
            if (auto r = bpf_->del_block(b); !r) fail(r.error());
            else blocks_.erase(b);
          }
        }
    if (bpf_ && before && (!after || after->node_address != before->node_address)) {
      if (auto r = bpf_->del_peer(before->node_address); !r) fail(r.error());
      else peers_.erase(before->node_address);
    }
    if (after) {
      if (bpf_ && !peers_.count(after->node_address)) {
        if (auto r = bpf_->set_peer(after->node_address); !r) fail(r.error());
        else peers_.insert(after->node_address);
      }
      for (auto& b : after->blocks) {
        auto e = route_to(b, after->node_address);
        if (!e) {
          fail(e.error());
          continue;
        }
        if (!*e) {
          notes_[name] = "node " + name + " (" + after->node_address.to_string() + ") is not reached through " + uplink_ + ": no IPIP to it";
          if (routes_.erase(b)) sink_->route_unwanted(b);
          continue;
        }
        // The map entry first, then the route: a packet routed to the uplink is already wrapped.
        if (bpf_) {
          auto it = blocks_.find(b);
          if (it == blocks_.end() || it->second != after->node_address) {
            if (auto r = bpf_->set_block(b, after->node_address); !r) {
              fail(r.error());
              continue;
            }
            blocks_[b] = after->node_address;
          }
        }
        auto it = routes_.find(b);
        if (it != routes_.end() && it->second == **e) continue;
        routes_[b] = **e;
        sink_->route_wanted(**e);
      }
    }
    if (!ok) {
      retry.insert(name);
      applied_.erase(name);
      continue;
    }
    if (after) applied_[name] = *after;
    else applied_.erase(name);
  }
  dirty_ = std::move(retry);
  if (first) return error(first->code, "ipip: " + first->message);
  return {};
}

encap_status encapsulation::status() const {
  encap_status s;
  if (cfg_.mode) s.mode = *cfg_.mode;
  else
    for (auto& p : pools_)
      if (p.cidr.family() == ip_family::v4 && p.mode > s.mode) s.mode = p.mode;
  s.tunnel = tunnel_;
  s.remote_nodes = applied_.size();
  s.routes = routes_.size();
  s.pending = dirty_.size() + (datapath_dirty_ ? 1 : 0);
  if (!datapath_note_.empty()) s.notes.push_back(datapath_note_);
  for (auto& [_, n] : notes_) s.notes.push_back(n);
  return s;
}

result<void> encapsulation::sweep_leftovers() {
  if (!sock_) {
    auto s = netlink::rtnl_socket::open();
    if (!s) return std::move(s).error();
    sock_ = std::make_unique<netlink::rtnl_socket>(std::move(*s));
  }
  auto links = netlink::list_links(*sock_);
  if (!links) return std::move(links).error();
  for (auto& l : *links) {
    auto n = bpf_datapath::sweep(l.index);
    if (!n) {
      if (n.error().code == errc::unsupported) return {};  // no eBPF here: nothing of it to remove
      return std::move(n).error();
    }
    if (*n) log_->info("ipip: removed the eBPF datapath an earlier run left on " + l.name + " (" + std::to_string(*n) + " tc filters)");
  }
  // A kernel tunl0 keeps its address: which one is ours is on the Node, which a part that
  // was never started does not have (the device itself is the ipip module's and stays).
  return {};
}

result<void> encapsulation::stop() {
  // Never started: an agent whose profile no longer has this part asks for what an earlier
  // run of it left behind.
  if (!sink_ && !bpf_ && used_ == datapath::automatic) return sweep_leftovers();
  auto r = remove_datapath();
  sink_ = nullptr;
  datapath_dirty_ = true;
  return r;
}

}  // namespace ipip
CNF_END_NAMESPACE
