#include "node_agent.hpp"

#include <cnf/netlink/sysctl.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

namespace cnf_app {
namespace {

constexpr const char* owner_blackhole = "blackhole";
constexpr const char* owner_routing = "routing";

/// What differs between Calico's two encapsulations, for the agent: the owner of the part's
/// routes, the IPPool field with the mode, and the tunnel address's IPAM handle and type.
struct encap_kind {
  const char* owner;
  const char* pool_field;
  const char* handle_prefix;
  const char* address_type;
};
constexpr encap_kind vxlan_kind{"vxlan", "vxlanMode", "vxlan-tunnel-addr-", "vxlanTunnelAddress"};
constexpr encap_kind ipip_kind{"ipip", "ipipMode", "ipip-tunnel-addr-", "ipipTunnelAddress"};
const encap_kind& encap_kind_of(const cnf::profile& p) {
  return p.encapsulation && p.encapsulation->plugin == "ipip" ? ipip_kind : vxlan_kind;
}

// The node agent's routes (blackholes, routes to other nodes' blocks) carry a protocol of
// their own, next to cnf's 80: the CNI plugin writes each pod's host route with 80, and the
// route table, which owns every route of its protocol, would sweep those as unwanted (it has
// no way to leave a subset of its protocol alone). `ip route show proto 81` lists them.
constexpr std::uint8_t agent_route_protocol = 81;

/// The interface of the IPv4 default route (/proc/net/route of this namespace).
std::string default_route_interface() {
  std::ifstream in("/proc/net/route");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string ifname, dst, gw, flags, refcnt, use, metric, mask;
    if (ls >> ifname >> dst >> gw >> flags >> refcnt >> use >> metric >> mask && dst == "00000000" && mask == "00000000") return ifname;
  }
  return {};
}

std::optional<cnf::ip_prefix> autodetect(cnf::ip_family fam) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return std::nullopt;
  const std::string def = fam == cnf::ip_family::v4 ? default_route_interface() : std::string();
  std::optional<cnf::ip_prefix> first, on_default;
  for (auto* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || !i->ifa_netmask || (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP)) continue;
    const int af = i->ifa_addr->sa_family;
    if ((fam == cnf::ip_family::v4 && af != AF_INET) || (fam == cnf::ip_family::v6 && af != AF_INET6)) continue;
    const void* a = af == AF_INET ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr)
                                  : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr);
    const void* m = af == AF_INET ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(i->ifa_netmask)->sin_addr)
                                  : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(i->ifa_netmask)->sin6_addr);
    auto addr = cnf::ip_address::from_bytes(fam, a);
    if (fam == cnf::ip_family::v6 && (addr.data()[0] == 0xfe && (addr.data()[1] & 0xc0) == 0x80)) continue;  // link-local
    unsigned len = 0;
    for (std::size_t b = 0; b < addr.size(); ++b) len += static_cast<unsigned>(__builtin_popcount(static_cast<const unsigned char*>(m)[b]));
    cnf::ip_prefix p(addr, len);
    if (!first) first = p;
    if (!on_default && !def.empty() && def == i->ifa_name) on_default = p;
  }
  ::freeifaddrs(list);
  return on_default ? on_default : first;
}

std::string now_hms() {
  auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

struct block_view {
  cnf::ip_prefix cidr;
  std::string node;  // of affinity "host:<node>"
};

/// The two fields of an IPAMBlock the routes need; nullopt (and why) when it does not parse.
std::optional<block_view> parse_block(const cnf::resource& r, std::string& why) {
  boost::system::error_code ec;
  auto v = boost::json::parse(r.spec, ec);
  if (ec || !v.is_object()) {
    why = "IPAMBlock/" + r.name + ": spec: not a JSON object";
    return std::nullopt;
  }
  const auto& o = v.get_object();
  const auto* c = o.if_contains("cidr");
  if (!c || !c->is_string()) {
    why = "IPAMBlock/" + r.name + ": spec.cidr: expected a string";
    return std::nullopt;
  }
  auto p = cnf::ip_prefix::parse(std::string_view(c->get_string()));
  if (!p) {
    why = "IPAMBlock/" + r.name + ": spec.cidr: " + p.error().message;
    return std::nullopt;
  }
  if (const auto* d = o.if_contains("deleted"); d && ((d->is_bool() && d->get_bool()) || (d->is_string() && d->get_string() == "true")))
    return std::nullopt;
  block_view b{*p, {}};
  if (const auto* a = o.if_contains("affinity"); a && a->is_string()) {
    std::string_view s(a->get_string());
    if (s.rfind("host:", 0) == 0) b.node = std::string(s.substr(5));
  }
  return b;
}

}  // namespace

cnf::result<std::vector<cnf::ip_prefix>> node_addresses(const cnf::profile& prof) {
  std::vector<cnf::ip_prefix> out;
  for (auto fam : {cnf::ip_family::v4, cnf::ip_family::v6}) {
    const std::string& v = fam == cnf::ip_family::v4 ? prof.node.ipv4_address : prof.node.ipv6_address;
    const char* key = fam == cnf::ip_family::v4 ? "node.ipv4_address" : "node.ipv6_address";
    if (v == "none") continue;
    if (v == "autodetect") {
      auto a = autodetect(fam);
      if (!a) {
        if (fam == cnf::ip_family::v6) return cnf::error(cnf::errc::not_found, std::string(key) + ": no global IPv6 address to autodetect");
        return cnf::error(cnf::errc::not_found, std::string(key) + ": no global IPv4 address to autodetect in this network namespace; "
                                                                   "set [node] ipv4_address = \"A.B.C.D/N\"");
      }
      out.push_back(*a);
      continue;
    }
    auto p = cnf::ip_prefix::parse(v, true);  // validated with the profile
    if (!p) return cnf::error(cnf::errc::invalid, std::string(key) + ": " + p.error().message);
    out.push_back(*p);
  }
  return out;
}

node_agent::node_agent(cnf::event_loop& loop, cnf::logger& log, const cnf::profile& prof, cnf::any_datastore ds, cnf::any_routing routing)
    : loop_(loop), log_(log), prof_(prof), ds_(std::move(ds)), routing_(std::move(routing)), name_(prof.node_name()) {}

node_agent::~node_agent() { stop(); }

cnf::result<void> node_agent::start() {
  auto addrs = node_addresses(prof_);
  if (!addrs) return std::move(addrs).error();
  self_.name = name_;
  self_.addresses = *addrs;
  self_.asn = prof_.node.as_number;
  self_.labels = prof_.node.labels;
  for (auto& a : self_.addresses)
    if (a.family() == cnf::ip_family::v4) self_.router_id = a.address().to_string();

  // Pods are routed through this node: forwarding in the agent's (the node's) namespace.
  cnf::netlink::node_sysctls sys;
  if (auto r = sys.write("net/ipv4/ip_forward", "1"); !r) return cnf::error(r.error().code, "node sysctl: " + r.error().message);
  if (prof_.cni.assign_ipv6)
    if (auto r = sys.write("net/ipv6/conf/all/forwarding", "1"); !r) return cnf::error(r.error().code, "node sysctl: " + r.error().message);

  cnf::route_table::options ro;
  ro.log = &log_;
  ro.protocol = agent_route_protocol;
  rt_ = std::make_unique<cnf::route_table>(loop_, ro);
  rt_->set_owner_priority(owner_blackhole, 20);  // this node's blocks are never routed elsewhere
  rt_->set_owner_priority(owner_routing, 10);
  rt_->set_owner_priority(encap_kind_of(prof_).owner, 15);  // Always: the tunnel wins over a direct route

  std::string addr_text;
  for (auto& a : self_.addresses) addr_text += (addr_text.empty() ? "" : ", ") + a.to_string();
  log_.info(fmt::format("node {}: addresses {}{}", name_, addr_text.empty() ? "none" : addr_text,
                        self_.asn ? fmt::format(", AS {}", self_.asn) : std::string()));
  register_node();

  cnf::syncer::options so;
  so.kinds = {std::string(cnf::kinds::node), std::string(cnf::kinds::ipam_block), std::string(cnf::kinds::block_affinity),
              std::string(cnf::kinds::ip_pool), std::string(cnf::kinds::bgp_peer), std::string(cnf::kinds::bgp_configuration),
              std::string(cnf::kinds::bgp_filter)};
  if (prof_.routing)
    if (auto rs = cnf::settings::parse(prof_.text, prof_.file, "routing")) {
      secrets_dir_ = rs->get<std::string>("secrets_dir", secrets_dir_);
      mesh_default_ = rs->get<bool>("node_to_node_mesh", mesh_default_);
      // The routing part restarts gracefully (its peers keep this node's routes and it relearns
      // theirs): the kernel keeps the routes of the last run until it has relearned them.
      if (rs->get<bool>("graceful_stop", false)) {
        const auto t = rs->get<std::int64_t>("graceful_restart_time", 120);
        if (t > 0) {
          holding_stale_ = true;
          // The part ends its own wait at its restart time; this is the backstop.
          graceful_wait_ = std::chrono::seconds(t + 5);
          rt_->hold_stale(true);
        }
      }
    }
  if (policy_plugin_) {
    // [policy] refresh_interval: the host's key in the plugin's section (the plugin validated it too).
    auto ps = cnf::settings::parse(prof_.text, prof_.file, "policy");
    if (!ps) return ps.error();
    const auto hs = cnf::netpol::read_host_settings(*ps);
    if (!ps->diagnostics().empty()) return cnf::error(cnf::errc::invalid, cnf::join_diagnostics(ps->diagnostics()));
    policy_ = std::make_unique<cnf::netpol::policy_host>(loop_, policy_plugin_, cnf::netpol::policy_host::options{name_, hs.refresh_interval, true},
                                                         &log_);
    for (auto& k : cnf::netpol::policy_host::kinds()) {
      policy_kinds_.insert(k);
      if (std::find(so.kinds.begin(), so.kinds.end(), k) == so.kinds.end()) so.kinds.push_back(k);
    }
    log_.info("policy: " + policy_name_ + " (programs nothing before the first complete sync; " +
              (hs.refresh_interval.count() ? fmt::format("checks for drift every {} ms)", hs.refresh_interval.count()) : std::string("no drift checks)")));
  }
  so.log = &log_;
  sync_ = std::make_unique<cnf::syncer>(ds_, loop_, so);
  sync_->on_update([this](const cnf::sync_update& u) { on_update(u); });
  sync_->on_status([this](cnf::sync_status s) { on_status(s); });
  sync_->start();
  return {};
}

void node_agent::stop() {
  if (register_timer_) loop_.cancel(std::exchange(register_timer_, 0));
  if (stale_timer_) loop_.cancel(std::exchange(stale_timer_, 0));
  if (encap_retry_) loop_.cancel(std::exchange(encap_retry_, 0));
  if (sync_) sync_->stop();
  // The policy host goes with the syncer; the kernel keeps its chains (a restarted agent
  // computes the same ones and rewrites nothing).
  if (policy_) {
    policy_.reset();
    if (auto r = policy_plugin_.stop(); !r) log_.warn("policy: stop: " + r.error().message);
  }
  // The route table goes first, leaving the kernel as it is: what the routing part withdraws
  // as it stops must not reach the kernel (the next agent takes the routes over unchanged).
  rt_.reset();
  if (routing_ && routing_started_) {
    routing_started_ = false;
    if (auto r = routing_.stop(); !r) log_.warn("routing: stop: " + r.error().message);
  }
  sync_.reset();
}

// The Node resource: this agent's fields (addresses, AS number, labels) written over whatever
// is there, everything else kept (tunnel addresses written by others). Compare-and-swap;
// retried every 2 s while the datastore does not answer.
void node_agent::register_node() {
  register_timer_ = 0;
  auto retry = [this](const std::string& why) {
    log_.warn("node registration: " + why + "; trying again in 2 s");
    register_timer_ = loop_.post_after(std::chrono::seconds(2), [this] { register_node(); });
  };
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto cur = ds_.get({std::string(cnf::kinds::node), "", name_});
    if (!cur && cur.error().code != cnf::errc::not_found) return retry(cur.error().message);
    cnf::model::node n;
    n.name = name_;
    if (cur) {
      if (auto parsed = cnf::model::parse_node(*cur)) n = *parsed;
      else log_.warn(parsed.error().message + "; this agent writes its Node again");
      n.revision = cur->revision;
    }
    auto want = n;
    if (!want.bgp) want.bgp.emplace();
    want.bgp->ipv4_address.reset();
    want.bgp->ipv6_address.reset();
    for (auto& a : self_.addresses) (a.family() == cnf::ip_family::v4 ? want.bgp->ipv4_address : want.bgp->ipv6_address) = a;
    if (self_.asn) want.bgp->as_number = self_.asn;
    for (auto& [k, v] : self_.labels) want.labels[k] = v;
    if (cur && want == n && cur->spec == cnf::model::to_spec_json(want)) {
      registered_ = true;
      return;
    }
    auto res = cnf::model::to_resource(want);
    auto w = cur ? ds_.update(res) : ds_.create(res);
    if (w) {
      registered_ = true;
      log_.info(fmt::format("registered Node/{} (revision {})", name_, w->revision));
      return;
    }
    if (w.error().code != cnf::errc::conflict && w.error().code != cnf::errc::already_exists) return retry(w.error().message);
  }
  retry("the Node kept changing under this agent");
}

void node_agent::on_update(const cnf::sync_update& u) {
  if (policy_ && policy_kinds_.count(u.object.kind)) {
    policy_update(u);
    if (u.object.kind != cnf::kinds::node) return;  // nothing of the routes depends on the policy kinds
  }
  if (u.object.kind == cnf::kinds::bgp_peer || u.object.kind == cnf::kinds::bgp_configuration || u.object.kind == cnf::kinds::bgp_filter) {
    bgp_update(u);
  } else if (u.object.kind == cnf::kinds::node) {
    const std::string& name = u.object.name;
    if (u.kind == cnf::sync_update::type::deleted) {
      nodes_.erase(name);
      invalid_.erase(name);
    } else if (auto n = cnf::model::parse_node(u.object)) {
      if (invalid_.erase(name)) log_.info("Node/" + name + " is valid again");
      nodes_[name] = std::move(*n);
    } else {
      ++invalid_seen_;
      const bool had = nodes_.count(name);
      invalid_[name] = n.error().message;
      log_.warn(n.error().message + (had ? "; keeping the node's last valid state" : "; the node is left out"));
    }
  }
  schedule();
}

// One change of a kind the policy calculation reads. A resource it refuses keeps its last
// good version programmed (policy_host's rule); the error, which names the resource and the
// field, is logged once and listed in the status until the resource is fixed or deleted.
void node_agent::policy_update(const cnf::sync_update& u) {
  const std::string key = u.object.key().to_string();
  ++policy_updates_;
  auto r = policy_->on_update(u);
  if (r) {
    policy_flushes_at_update_ = policy_->flushes();  // a refused change schedules no flush: nothing to wait for
    if (policy_invalid_.erase(key)) log_.info("policy: " + key + " is valid again");
    return;
  }
  if (u.kind == cnf::sync_update::type::deleted) {
    policy_invalid_.erase(key);
    return;
  }
  ++invalid_seen_;
  auto& why = policy_invalid_[key];
  if (why != r.error().message) log_.warn("policy: " + r.error().message + "; its previous version (if any) stays programmed");
  why = r.error().message;
}

cnf::result<void> node_agent::policy_endpoint_now(const cnf::resource_key& wep) {
  if (!policy_ || !synced_once_) return {};
  auto r = ds_.get(wep);
  if (!r) {
    if (r.error().code == cnf::errc::not_found) return {};  // not visible here yet: the syncer brings it
    return cnf::error(r.error().code, "policy: reading " + wep.to_string() + ": " + r.error().message);
  }
  policy_update({cnf::sync_update::type::added, std::move(*r)});
  if (auto f = policy_->flush(); !f) return f.error();
  ++policy_early_;
  return {};
}

void node_agent::set_policy(cnf::any_policy policy, std::string plugin) {
  policy_plugin_ = std::move(policy);
  policy_name_ = std::move(plugin);
}

void node_agent::on_status(cnf::sync_status s) {
  if (policy_) policy_->set_in_sync(s == cnf::sync_status::in_sync);
  if (s == cnf::sync_status::in_sync && !synced_once_) {
    synced_once_ = true;
    log_.info("datastore in sync: programming routes from now on");
    recalculate();
    rt_->set_ready(true);
    if (holding_stale_) {
      log_.info(fmt::format("graceful restart: the routes of the last run stay in the kernel until the routing part has its peers' "
                            "End-of-RIB (at most {} s)",
                            graceful_wait_.count()));
      stale_timer_ = loop_.post_after(graceful_wait_, [this] {
        stale_timer_ = 0;
        release_stale(fmt::format("no word from the routing part after {} s", graceful_wait_.count()));
      });
    }
  } else if (s == cnf::sync_status::datastore_down) {
    log_.warn("datastore down: not ready; the kernel keeps its routes until it is back");
  } else if (s == cnf::sync_status::in_sync) {
    log_.info("datastore in sync again");
  }
}

void node_agent::schedule() {
  if (!synced_once_ || pending_) return;
  pending_ = true;
  loop_.post([this] {
    pending_ = false;
    recalculate();
  });
}

void node_agent::recalculate() {
  if (!sync_ || !rt_) return;
  ++recalculations_;
  // Blocks by node, from each IPAMBlock's affinity.
  std::map<std::string, std::vector<cnf::ip_prefix>> blocks;
  for (auto& [key, r] : sync_->cache(cnf::kinds::ipam_block)) {
    std::string why;
    auto b = parse_block(r, why);
    if (!b) {
      if (!why.empty()) log_.debug(why);
      continue;
    }
    if (!b->node.empty()) blocks[b->node].push_back(b->cidr);
  }
  // This node's blocks: blackholes (pods get /32 routes to their veths, which win).
  std::set<cnf::ip_prefix> own(blocks[name_].begin(), blocks[name_].end());
  for (auto& p : own_blocks_)
    if (!own.count(p)) rt_->remove(owner_blackhole, p);
  for (auto& p : own)
    if (!own_blocks_.count(p)) {
      cnf::route_entry e;
      e.dst = p;
      e.kind = cnf::route_entry::type::blackhole;
      rt_->set(owner_blackhole, e);
    }
  // The other nodes, as the parts see them: only those that changed reach a part.
  std::map<std::string, cnf::remote_node> now;
  for (auto& [name, n] : nodes_) {
    if (name == name_) continue;
    auto b = blocks.count(name) ? blocks[name] : std::vector<cnf::ip_prefix>{};
    std::sort(b.begin(), b.end());
    now.emplace(name, cnf::model::to_remote_node(n, std::move(b)));
  }
  if (routing_) {
    if (!routing_started_) {
      // The cluster's configuration first: a mesh that is off never opens a session.
      std::map<std::string, std::string> ignored;
      config_told_ = bgp_config(ignored);
      if (auto r = routing_.configure(*config_told_); !r && r.error().code != cnf::errc::unsupported) log_.warn("routing: configure: " + r.error().message);
      if (auto r = routing_.start(self_, *this); !r) log_.error("routing: start: " + r.error().message);
      routing_started_ = true;
    }
    for (auto& p : own_blocks_)
      if (!own.count(p))
        if (auto r = routing_.withdraw(p); !r) log_.warn("routing: withdraw " + p.to_string() + ": " + r.error().message);
    for (auto& p : own)
      if (!own_blocks_.count(p))
        if (auto r = routing_.advertise(p); !r) log_.warn("routing: advertise " + p.to_string() + ": " + r.error().message);
    for (auto& [name, _] : told_)
      if (!now.count(name))
        if (auto r = routing_.remove_node(name); !r) log_.warn("routing: remove_node " + name + ": " + r.error().message);
    for (auto& [name, r] : now) {
      auto it = told_.find(name);
      if (it != told_.end() && it->second == r) continue;
      if (auto x = routing_.upsert_node(r); !x) log_.warn("routing: upsert_node " + name + ": " + x.error().message);
    }
    told_ = now;
    recalculate_bgp(now);
  }
  if (encap_) recalculate_encap(now);
  own_blocks_ = std::move(own);
}

// ---- BGP configuration ---------------------------------------------------------------------

// A BGPPeer or BGPConfiguration that does not parse keeps its last good version acting (the
// sessions it made stay up); the error, which names the resource and the field, is logged once
// and listed in the status until the resource is fixed or deleted.
void node_agent::bgp_update(const cnf::sync_update& u) {
  const bool peer = u.object.kind == cnf::kinds::bgp_peer;
  const bool filter = u.object.kind == cnf::kinds::bgp_filter;
  const std::string key = std::string(u.object.kind) + "/" + u.object.name;
  if (u.kind == cnf::sync_update::type::deleted) {
    if (peer) bgp_peers_.erase(u.object.name);
    else if (filter) bgp_filters_.erase(u.object.name);
    else bgp_configs_.erase(u.object.name);
    invalid_.erase(key);
    return;
  }
  std::string why;
  if (peer) {
    if (auto p = cnf::model::parse_bgp_peer(u.object)) bgp_peers_[u.object.name] = std::move(*p);
    else why = p.error().message;
  } else if (filter) {
    if (auto f = cnf::model::parse_bgp_filter(u.object)) bgp_filters_[u.object.name] = std::move(*f);
    else why = f.error().message;
  } else {
    if (auto c = cnf::model::parse_bgp_configuration(u.object)) bgp_configs_[u.object.name] = std::move(*c);
    else why = c.error().message;
  }
  if (why.empty()) {
    if (invalid_.erase(key)) log_.info(key + " is valid again");
    return;
  }
  const bool had = peer ? bgp_peers_.count(u.object.name) : filter ? bgp_filters_.count(u.object.name) : bgp_configs_.count(u.object.name);
  if (invalid_[key] != why) {
    ++invalid_seen_;
    log_.warn(why + (had ? "; its last valid version stays in force" : "; it is left out"));
  }
  invalid_[key] = why;
}

// Calico's model, for this node: the cluster's BGPConfiguration `default` with this node's
// `node.<name>` over it; the BGPPeers that select this node (neither node nor nodeSelector:
// every node), each a session to its peerIP, or to every node its peerSelector matches; and
// the reverse, as Calico does: a node matched by a BGPPeer's peerSelector peers with the nodes
// that BGPPeer selects. Only the peers that changed reach the routing part.
cnf::routing_config node_agent::bgp_config(std::map<std::string, std::string>& errors) const {
  cnf::routing_config cfg;
  for (const std::string& name : {std::string("default"), "node." + name_}) {
    auto it = bgp_configs_.find(name);
    if (it == bgp_configs_.end()) continue;
    const auto& c = it->second;
    if (c.as_number) cfg.as_number = c.as_number;
    if (c.node_to_node_mesh_enabled) cfg.node_to_node_mesh = c.node_to_node_mesh_enabled;
    if (c.listen_port) cfg.listen_port = c.listen_port;
    if (c.node_mesh_max_restart_time) cfg.mesh_max_restart_time = c.node_mesh_max_restart_time;
    if (c.node_mesh_password) {
      if (auto pw = cnf::model::read_secret(secrets_dir_, *c.node_mesh_password)) cfg.mesh_password = *pw;
      else errors["BGPConfiguration/" + name] = "BGPConfiguration/" + name + ": spec.nodeMeshPassword: " + pw.error().message;
    }
  }
  auto dflt = bgp_configs_.find("default");
  auto mine = bgp_configs_.find("node." + name_);
  const auto* d = dflt != bgp_configs_.end() ? &dflt->second : nullptr;
  const auto* n = mine != bgp_configs_.end() ? &mine->second : nullptr;
  for (auto& pa : cnf::model::effective_prefix_advertisements(d, n)) cfg.prefix_advertisements.push_back({pa.cidr, pa.communities});
  cfg.log_severity_screen = n && !n->log_severity_screen.empty() ? n->log_severity_screen : d ? d->log_severity_screen : std::string();
  auto self_node = nodes_.find(name_);
  if (self_node != nodes_.end() && self_node->second.bgp && !self_node->second.bgp->route_reflector_cluster_id.empty())
    cfg.route_reflector_cluster_id = self_node->second.bgp->route_reflector_cluster_id;
  return cfg;
}

void node_agent::recalculate_bgp(const std::map<std::string, cnf::remote_node>& now) {
  std::map<std::string, std::string> errors;
  cnf::routing_config cfg = bgp_config(errors);
  const auto self_node = nodes_.find(name_);
  const auto& my_labels = self_node != nodes_.end() ? self_node->second.labels : self_.labels;
  const std::string my_cluster = cfg.route_reflector_cluster_id.value_or("");
  if (!config_told_ || *config_told_ != cfg) {
    if (auto r = routing_.configure(cfg); !r && r.error().code != cnf::errc::unsupported) log_.warn("routing: configure: " + r.error().message);
    config_told_ = cfg;
  }
  const bool mesh = cfg.node_to_node_mesh.value_or(mesh_default_);

  std::map<std::string, cnf::peer_config> want;
  // BGPFilters by name, in order; one that does not exist is skipped, as Calico's confd does
  // (the part lists it in its status notes); a filter change reaches only the peers naming it.
  auto filters_of = [&](const cnf::model::bgp_peer& bp) {
    std::vector<cnf::route_filter> v;
    for (auto& fname : bp.filters) {
      auto f = bgp_filters_.find(fname);
      if (f != bgp_filters_.end()) v.push_back(f->second);
      else v.push_back(cnf::route_filter{.name = fname, .exists = false, .export_v4 = {}, .import_v4 = {}, .export_v6 = {}, .import_v6 = {}});
    }
    return v;
  };
  auto node_peer = [&](const cnf::model::bgp_peer& bp, const std::string& node, const cnf::remote_node& r) {
    if (mesh) return;  // the mesh peers with it already (as Calico, no second session)
    auto a = r.address(cnf::ip_family::v4);
    if (!a) a = r.address(cnf::ip_family::v6);
    if (!a) return;
    cnf::peer_config pc;
    pc.name = node;
    pc.address = *a;
    pc.asn = r.asn ? r.asn : bp.as_number ? bp.as_number : cfg.as_number.value_or(0);
    pc.type = bp.global() ? "global" : "node specific";
    auto n = nodes_.find(node);
    pc.route_reflector = !my_cluster.empty() && n != nodes_.end() && n->second.bgp && n->second.bgp->route_reflector_cluster_id == my_cluster;
    pc.filters = filters_of(bp);
    want.try_emplace(node, std::move(pc));
  };
  for (auto& [name, bp] : bgp_peers_) {
    std::optional<std::string> password;
    if (bp.password) {
      auto pw = cnf::model::read_secret(secrets_dir_, *bp.password);
      if (!pw) {
        errors["BGPPeer/" + name] = "BGPPeer/" + name + ": spec.password: " + pw.error().message + "; no session until it can be read";
        continue;
      }
      password = *pw;
    }
    const bool mine = bp.applies_to(name_, my_labels);
    if (bp.peer_ip && mine) {
      cnf::peer_config pc;
      pc.name = name;
      pc.address = *bp.peer_ip;
      pc.port = bp.peer_port;
      pc.asn = bp.as_number;
      pc.type = bp.global() ? "global" : "node specific";
      pc.password = password;
      pc.keep_original_next_hop = bp.keep_original_next_hop;
      pc.max_restart_time = bp.max_restart_time.value_or(0);
      pc.bind_source = bp.source_address != "None";
      pc.filters = filters_of(bp);
      want[name] = std::move(pc);
      continue;
    }
    if (bp.peer_selector.empty()) continue;
    auto sel = cnf::netpol::parse_selector(bp.peer_selector);
    if (!sel) continue;
    for (auto& [node, r] : now) {
      auto n = nodes_.find(node);
      if (n == nodes_.end()) continue;
      if (mine && sel->matches(n->second.labels)) node_peer(bp, node, r);
      else if (sel->matches(my_labels) && bp.applies_to(node, n->second.labels)) node_peer(bp, node, r);
    }
  }
  for (auto& [name, _] : peers_told_)
    if (!want.count(name))
      if (auto r = routing_.remove_peer(name); !r) log_.warn("routing: remove_peer " + name + ": " + r.error().message);
  for (auto& [name, pc] : want) {
    auto it = peers_told_.find(name);
    if (it != peers_told_.end() && it->second == pc) continue;
    if (auto r = routing_.upsert_peer(pc); !r) log_.warn("routing: upsert_peer " + name + ": " + r.error().message);
  }
  peers_told_ = std::move(want);
  for (auto& [k, why] : errors)
    if (bgp_errors_[k] != why) {
      ++invalid_seen_;
      log_.warn(why);
    }
  bgp_errors_ = std::move(errors);
}

void node_agent::route_learned(const cnf::learned_route& r) noexcept {
  if (!rt_) return;
  try {
    cnf::route_entry e;
    e.dst = r.prefix;
    for (auto& h : r.next_hops) e.next_hops.push_back({h, r.device, false});
    rt_->set(owner_routing, e);
  } catch (const std::exception& ex) {
    log_.error(std::string("route ") + r.prefix.to_string() + ": " + ex.what());
  }
}

void node_agent::route_withdrawn(const cnf::ip_prefix& p) noexcept {
  if (!rt_) return;
  try {
    rt_->remove(owner_routing, p);
  } catch (const std::exception& ex) {
    log_.error(std::string("route ") + p.to_string() + ": " + ex.what());
  }
}

void node_agent::initial_routes_complete() noexcept {
  try {
    release_stale("the routing part has relearned its routes");
  } catch (const std::exception& ex) {
    log_.error(std::string("graceful restart: ") + ex.what());
  }
}

void node_agent::release_stale(const std::string& why) {
  if (!holding_stale_ || !rt_) return;
  holding_stale_ = false;
  if (stale_timer_) loop_.cancel(std::exchange(stale_timer_, 0));
  log_.info("graceful restart over (" + why + "): removing the routes of the last run that nobody wants (" +
            std::to_string(rt_->stale().size()) + ")");
  rt_->hold_stale(false);
}

void node_agent::peer_changed(const cnf::peer_status& p) noexcept {
  try {
    auto it = peers_.find(p.name);
    if (it == peers_.end() || it->second.first.state != p.state) {
      if (p.state != "Reachable" && p.state != "Established")
        log_.warn(fmt::format("peer {} ({}): {}: {}", p.name, p.address.to_string(), p.state, p.info));
      else
        log_.info(fmt::format("peer {} ({}): {}", p.name, p.address.to_string(), p.state));
      peers_[p.name] = {p, std::chrono::system_clock::now()};
      peers_[p.name].first.since = p.since.empty() ? now_hms() : p.since;
    } else {
      auto since = it->second.first.since;
      it->second.first = p;
      if (p.since.empty()) it->second.first.since = since;
    }
  } catch (...) {
  }
}

void node_agent::peer_removed(std::string_view name) noexcept {
  try {
    peers_.erase(std::string(name));
  } catch (...) {
  }
}

// ---- encapsulation ------------------------------------------------------------------------

void node_agent::set_encapsulation(cnf::any_encapsulation encap, cnf::any_ipam ipam) {
  encap_ = std::move(encap);
  ipam_ = std::move(ipam);
}

// The pools and their spec.vxlanMode (absent: Never, as in Calico): IPv4 and, for vxlan,
// IPv6 (vxlan-v6.calico; Calico's IP-in-IP is IPv4 only). A pool whose mode does not parse
// keeps the mode it had (the node keeps its working state) and is reported.
std::vector<cnf::encap_pool> node_agent::read_pools() {
  std::vector<cnf::encap_pool> out;
  std::set<std::string> readable;  // "IPPool/<name>" whose mode parsed
  std::set<std::string> present;   // every "IPPool/<name>" there is (a deleted one is not reported)
  for (auto& [key, r] : sync_->cache(cnf::kinds::ip_pool)) {
    const std::string what = "IPPool/" + r.name;
    present.insert(what);
    boost::system::error_code ec;
    auto v = boost::json::parse(r.spec, ec);
    if (ec || !v.is_object()) continue;  // the IPAM reports pools it cannot read
    const auto& o = v.get_object();
    const auto* c = o.if_contains("cidr");
    if (!c || !c->is_string()) continue;
    auto cidr = cnf::ip_prefix::parse(std::string_view(c->get_string()), true);
    if (!cidr || (cidr->family() != cnf::ip_family::v4 && &encap_kind_of(prof_) != &vxlan_kind)) continue;
    cnf::encap_pool p{r.name, cidr->canonical(), cnf::encap_mode::never};
    std::string why;
    const std::string field = encap_kind_of(prof_).pool_field;
    if (const auto* m = o.if_contains(field); m && !m->is_null()) {
      const std::string text = m->is_string() ? std::string(m->get_string()) : boost::json::serialize(*m);
      if (text == "Always") p.mode = cnf::encap_mode::always;
      else if (text == "CrossSubnet") p.mode = cnf::encap_mode::cross_subnet;
      else if (text == "Never" || text.empty()) p.mode = cnf::encap_mode::never;
      else why = what + ": spec." + field + ": '" + text + "' is not a mode; expected Always, CrossSubnet or Never";
    }
    if (!why.empty()) {
      if (!invalid_.count(what)) {
        ++invalid_seen_;
        log_.warn(why + "; the pool keeps its previous mode");
      }
      invalid_[what] = why;
      auto prev = std::find_if(pools_.begin(), pools_.end(), [&](auto& q) { return q.name == r.name; });
      if (prev == pools_.end()) continue;
      p.mode = prev->mode;
    }
    out.push_back(std::move(p));
    if (why.empty()) readable.insert(what);
  }
  // Pools never overlap (cnf apply refuses it, as calicoctl does), but one written past the
  // CLI may. Two overlapping pools that disagree on the mode leave it undecided for the
  // blocks they share: both are named in the status and each keeps the mode it had; one
  // this node did not have yet is left out, so the node keeps its working state.
  const std::string field = encap_kind_of(prof_).pool_field;
  std::set<std::string> disputed;
  for (std::size_t i = 0; i < out.size(); ++i)
    for (std::size_t j = i + 1; j < out.size(); ++j) {
      if (!out[i].cidr.overlaps(out[j].cidr) || out[i].mode == out[j].mode) continue;
      for (auto [a, b] : {std::pair(&out[i], &out[j]), std::pair(&out[j], &out[i])}) {
        const std::string what = "IPPool/" + a->name;
        const std::string why = what + ": spec.cidr " + a->cidr.to_string() + " overlaps IPPool/" + b->name + " (" + b->cidr.to_string() +
                                ") whose spec." + field + " differs; both keep their previous mode";
        if (invalid_.count(what) == 0 || invalid_[what] != why) {
          if (!invalid_.count(what)) ++invalid_seen_;
          log_.warn(why);
        }
        invalid_[what] = why;
        disputed.insert(a->name);
      }
    }
  for (auto& p : out) {
    const std::string what = "IPPool/" + p.name;
    if (!disputed.count(p.name)) {
      if (readable.count(what) && invalid_.erase(what)) log_.info(what + " is valid again");
      continue;
    }
    auto prev = std::find_if(pools_.begin(), pools_.end(), [&](auto& q) { return q.name == p.name; });
    if (prev != pools_.end()) p = *prev;
    else p.name.clear();  // left out below
  }
  std::erase_if(out, [](const cnf::encap_pool& p) { return p.name.empty(); });
  std::erase_if(invalid_, [&](const auto& kv) { return kv.first.starts_with("IPPool/") && !present.count(kv.first); });
  return out;
}

// This node's tunnel address of a family, as Calico assigns it: from a pool of that family
// whose mode is not Never, through the IPAM, on handle vxlan-tunnel-addr-<node> (IPv6:
// vxlan-v6-tunnel-addr-<node>); an address the handle already holds is reused (a restarted
// agent keeps its address).
bool node_agent::ensure_tunnel_address(const std::vector<cnf::encap_pool>& pools, cnf::ip_family family) {
  const auto& kind = encap_kind_of(prof_);
  const bool v6 = family == cnf::ip_family::v6;
  auto& slot = v6 ? self_.vxlan_tunnel_address_v6 : &kind == &ipip_kind ? self_.ipip_tunnel_address : self_.vxlan_tunnel_address;
  if (slot) return true;
  const std::string what = std::string(kind.owner) + (v6 ? " IPv6" : "");
  if (!ipam_) {
    encap_failed("no IPAM in the profile to assign this node's " + what + " tunnel address");
    return false;
  }
  const std::string handle = (v6 ? std::string("vxlan-v6-tunnel-addr-") : std::string(kind.handle_prefix)) + name_;
  auto all = ipam_.allocations();
  if (!all) {
    encap_failed("tunnel address: " + all.error().message);
    return false;
  }
  for (auto& a : *all)
    if (a.handle == handle && a.address.family() == family) {
      slot = a.address;
      log_.info(what + ": this node's tunnel address " + a.address.to_string() + " (held by " + handle + ")");
      return true;
    }
  cnf::assign_request req;
  req.handle = handle;
  req.node = name_;
  req.attributes = {{"type", v6 ? "vxlanV6TunnelAddress" : kind.address_type}, {"node", name_}};
  req.num_v4 = v6 ? 0 : 1;
  req.num_v6 = v6 ? 1 : 0;
  for (auto& p : pools)
    if (p.mode != cnf::encap_mode::never && p.cidr.family() == family) (v6 ? req.pools_v6 : req.pools_v4).push_back(p.cidr);
  auto got = ipam_.assign(req);
  if (!got || got->empty()) {
    encap_failed((v6 ? "IPv6 tunnel address: " : "tunnel address: ") + (got ? std::string("the IPAM assigned none") : got.error().message));
    return false;
  }
  slot = got->front().address.address();
  log_.info(what + ": assigned this node's tunnel address " + slot->to_string() + " (" + handle + ")");
  return true;
}

void node_agent::encap_failed(const std::string& what) {
  if (what != encap_error_) log_.error("encapsulation: " + what + "; trying again every 5 s");
  encap_error_ = what;
  if (!encap_retry_)
    encap_retry_ = loop_.post_after(std::chrono::seconds(5), [this] {
      encap_retry_ = 0;
      recalculate();
    });
}

void node_agent::recalculate_encap(const std::map<std::string, cnf::remote_node>& now) {
  auto pools = read_pools();
  if (pools != pools_ || !encap_started_) {
    if (auto r = encap_.set_pools(pools); !r && r.error().code != cnf::errc::unsupported) log_.warn("encapsulation: pools: " + r.error().message);
    pools_ = pools;
  }
  auto st = encap_.status();
  const bool wanted = st && st->mode != cnf::encap_mode::never;
  const bool wanted_v6 = st && st->mode_v6 != cnf::encap_mode::never;
  // This node's tunnel endpoints: the MACs its Node names, if any; the addresses through IPAM.
  if (auto it = nodes_.find(name_); it != nodes_.end()) {
    if (it->second.vxlan_tunnel_mac_addr) self_.vxlan_tunnel_mac = it->second.vxlan_tunnel_mac_addr;
    if (it->second.vxlan_tunnel_mac_addr_v6) self_.vxlan_tunnel_mac_v6 = it->second.vxlan_tunnel_mac_addr_v6;
  }
  if (wanted && !ensure_tunnel_address(pools, cnf::ip_family::v4)) return;
  if (wanted_v6 && !ensure_tunnel_address(pools, cnf::ip_family::v6)) return;
  if (!encap_started_) {
    auto t = encap_.start(self_, *this);
    if (!t) return encap_failed("start: " + t.error().message);
    encap_started_ = true;
    tunnel_ = *t;
  } else if (auto r = encap_.set_node(self_); !r) {
    log_.warn("encapsulation: set_node: " + r.error().message);
  }
  for (auto& [name, _] : encap_told_)
    if (!now.count(name))
      if (auto r = encap_.remove_node(name); !r) log_.warn("encapsulation: remove_node " + name + ": " + r.error().message);
  for (auto& [name, r] : now) {
    auto it = encap_told_.find(name);
    if (it != encap_told_.end() && it->second == r) continue;
    if (auto x = encap_.upsert_node(r); !x) log_.warn("encapsulation: upsert_node " + name + ": " + x.error().message);
  }
  encap_told_ = now;
  if (auto r = encap_.apply(); !r) return encap_failed(r.error().message);
  if (wanted) {
    tunnel_dropped_ = false;
  } else if (!tunnel_dropped_) {
    drop_tunnel_address(cnf::ip_family::v4);
    if (!tunnel_dropped_) return;
  }
  if (wanted_v6) {
    tunnel_v6_dropped_ = false;
  } else if (!tunnel_v6_dropped_) {
    drop_tunnel_address(cnf::ip_family::v6);
    if (!tunnel_v6_dropped_) return;
  }
  if (!encap_error_.empty()) log_.info("encapsulation: working again");
  encap_error_.clear();
  if (wanted || wanted_v6) write_tunnel_fields();
}

// Every pool's mode of a family is Never and the part took that family's device down: this
// node's tunnel address of the family leaves its Node (so no other node routes to it) and
// then goes back to the pool, as Calico's tunnel address allocator does. A later Always
// assigns one afresh. Done once per switch to Never; a failure is retried by encap_failed's timer.
void node_agent::drop_tunnel_address(cnf::ip_family family) {
  const auto& kind = encap_kind_of(prof_);
  const bool vx = &kind == &vxlan_kind;
  const bool v6 = family == cnf::ip_family::v6;
  if (v6 && !vx) {  // IP-in-IP has no IPv6 tunnel
    tunnel_v6_dropped_ = true;
    return;
  }
  auto& slot = v6 ? self_.vxlan_tunnel_address_v6 : vx ? self_.vxlan_tunnel_address : self_.ipip_tunnel_address;
  auto on_node = [&](const cnf::model::node& n) {
    if (v6) return n.ipv6_vxlan_tunnel_addr.has_value() || n.vxlan_tunnel_mac_addr_v6.has_value();
    return vx ? n.ipv4_vxlan_tunnel_addr.has_value() || n.vxlan_tunnel_mac_addr.has_value() : n.bgp && n.bgp->ipv4_ipip_tunnel_addr;
  };
  const std::string field = v6 ? "ipv6VXLANTunnelAddr" : vx ? "ipv4VXLANTunnelAddr" : "bgp.ipv4IPIPTunnelAddr";
  for (int attempt = 0;; ++attempt) {
    if (attempt == 5) return encap_failed("Node/" + name_ + " kept changing while removing its " + field);
    auto cur = ds_.get({std::string(cnf::kinds::node), "", name_});
    if (!cur && cur.error().code == cnf::errc::not_found) break;
    if (!cur) return encap_failed("remove Node/" + name_ + " " + field + ": " + cur.error().message);
    auto n = cnf::model::parse_node(*cur);
    if (!n) return encap_failed(n.error().message);
    if (!on_node(*n)) break;
    n->revision = cur->revision;
    if (v6) {
      n->ipv6_vxlan_tunnel_addr.reset();
      n->vxlan_tunnel_mac_addr_v6.reset();
    } else if (vx) {
      n->ipv4_vxlan_tunnel_addr.reset();
      n->vxlan_tunnel_mac_addr.reset();
    } else {
      n->bgp->ipv4_ipip_tunnel_addr.reset();
    }
    auto w = ds_.update(cnf::model::to_resource(*n));
    if (w) {
      log_.info("Node/" + name_ + ": " + field + " removed (every " + (v6 ? "IPv6" : "IPv4") + " pool's " + kind.pool_field + " is Never)");
      break;
    }
    if (w.error().code != cnf::errc::conflict) return encap_failed("remove Node/" + name_ + " " + field + ": " + w.error().message);
  }
  if (ipam_) {
    const std::string handle = (v6 ? std::string("vxlan-v6-tunnel-addr-") : std::string(kind.handle_prefix)) + name_;
    auto held = ipam_.addresses_of(handle);
    if (!held) return encap_failed("tunnel address: " + held.error().message);
    if (!held->empty()) {
      if (auto r = ipam_.release_handle(handle); !r) return encap_failed("release " + handle + ": " + r.error().message);
      log_.info(std::string(kind.owner) + ": released this node's tunnel address " + held->front().to_string() + " (" + handle + ")");
    }
  }
  slot.reset();
  if (v6) {
    tunnel_v6_ = {};
    tunnel_v6_dropped_ = true;
  } else {
    tunnel_ = {};
    tunnel_dropped_ = true;
  }
}

// spec.ipv4VXLANTunnelAddr and spec.vxlanTunnelMACAddr of this node's Node, and for IPv6
// spec.ipv6VXLANTunnelAddr and spec.vxlanTunnelMACAddrV6, as the devices have them;
// compare-and-swap, every other field kept.
void node_agent::write_tunnel_fields() {
  if (!tunnel_.address && !tunnel_v6_.address) return;
  if (&encap_kind_of(prof_) == &ipip_kind) {
    if (tunnel_.address) write_ipip_tunnel_field();
    return;
  }
  auto up_to_date = [&](const cnf::model::node& n) {
    return (!tunnel_.address || (n.ipv4_vxlan_tunnel_addr == tunnel_.address && (!tunnel_.mac || n.vxlan_tunnel_mac_addr == tunnel_.mac))) &&
           (!tunnel_v6_.address ||
            (n.ipv6_vxlan_tunnel_addr == tunnel_v6_.address && (!tunnel_v6_.mac || n.vxlan_tunnel_mac_addr_v6 == tunnel_v6_.mac)));
  };
  if (auto have = nodes_.find(name_); have != nodes_.end() && up_to_date(have->second)) return;
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto cur = ds_.get({std::string(cnf::kinds::node), "", name_});
    if (!cur) return encap_failed("write Node/" + name_ + " tunnel fields: " + cur.error().message);
    auto n = cnf::model::parse_node(*cur);
    if (!n) return encap_failed(n.error().message);
    n->revision = cur->revision;
    if (up_to_date(*n)) return;
    std::string said;
    if (tunnel_.address) {
      n->ipv4_vxlan_tunnel_addr = tunnel_.address;
      if (tunnel_.mac) n->vxlan_tunnel_mac_addr = tunnel_.mac;
      said = "ipv4VXLANTunnelAddr " + tunnel_.address->to_string() + (tunnel_.mac ? ", vxlanTunnelMACAddr " + tunnel_.mac->to_string() : std::string());
    }
    if (tunnel_v6_.address) {
      n->ipv6_vxlan_tunnel_addr = tunnel_v6_.address;
      if (tunnel_v6_.mac) n->vxlan_tunnel_mac_addr_v6 = tunnel_v6_.mac;
      said += (said.empty() ? "" : ", ") + std::string("ipv6VXLANTunnelAddr ") + tunnel_v6_.address->to_string() +
              (tunnel_v6_.mac ? ", vxlanTunnelMACAddrV6 " + tunnel_v6_.mac->to_string() : std::string());
    }
    auto w = ds_.update(cnf::model::to_resource(*n));
    if (w) {
      log_.info("Node/" + name_ + ": " + said);
      return;
    }
    if (w.error().code != cnf::errc::conflict) return encap_failed("write Node/" + name_ + " tunnel fields: " + w.error().message);
  }
  encap_failed("Node/" + name_ + " kept changing while writing its tunnel fields");
}

// spec.bgp.ipv4IPIPTunnelAddr of this node's Node (ipip); compare-and-swap, every other field kept.
void node_agent::write_ipip_tunnel_field() {
  auto has_it = [&](const cnf::model::node& n) { return n.bgp && n.bgp->ipv4_ipip_tunnel_addr == tunnel_.address; };
  if (auto have = nodes_.find(name_); have != nodes_.end() && has_it(have->second)) return;
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto cur = ds_.get({std::string(cnf::kinds::node), "", name_});
    if (!cur) return encap_failed("write Node/" + name_ + " tunnel fields: " + cur.error().message);
    auto n = cnf::model::parse_node(*cur);
    if (!n) return encap_failed(n.error().message);
    n->revision = cur->revision;
    if (has_it(*n)) return;
    if (!n->bgp) n->bgp.emplace();
    n->bgp->ipv4_ipip_tunnel_addr = tunnel_.address;
    auto w = ds_.update(cnf::model::to_resource(*n));
    if (w) {
      log_.info("Node/" + name_ + ": ipv4IPIPTunnelAddr " + tunnel_.address->to_string());
      return;
    }
    if (w.error().code != cnf::errc::conflict) return encap_failed("write Node/" + name_ + " tunnel fields: " + w.error().message);
  }
  encap_failed("Node/" + name_ + " kept changing while writing its tunnel fields");
}

void node_agent::route_wanted(const cnf::route_entry& r) noexcept {
  if (!rt_) return;
  try {
    rt_->set(encap_kind_of(prof_).owner, r);
  } catch (const std::exception& ex) {
    log_.error(std::string("route ") + r.dst.to_string() + ": " + ex.what());
  }
}

void node_agent::route_unwanted(const cnf::ip_prefix& dst) noexcept {
  if (!rt_) return;
  try {
    rt_->remove(encap_kind_of(prof_).owner, dst);
  } catch (const std::exception& ex) {
    log_.error(std::string("route ") + dst.to_string() + ": " + ex.what());
  }
}

void node_agent::tunnel_changed(const cnf::tunnel_info& t) noexcept {
  try {
    (t.family == cnf::ip_family::v6 ? tunnel_v6_ : tunnel_) = t;
  } catch (...) {
  }
}

// ---- the pods' MTU -----------------------------------------------------------------------

unsigned node_agent::uplink_mtu() const {
  const auto now = std::chrono::steady_clock::now();
  if (uplink_mtu_ && now - uplink_mtu_read_ < std::chrono::seconds(10)) return uplink_mtu_;
  uplink_mtu_read_ = now;
  uplink_mtu_ = 0;
  const cnf::ip_prefix* mine = nullptr;
  for (auto& a : self_.addresses)
    if (!mine && a.family() == cnf::ip_family::v4) mine = &a;
  for (auto& a : self_.addresses)
    if (!mine) mine = &a;
  if (!mine) return 0;
  // The interface holding the address (getifaddrs reads this network namespace), then its
  // MTU through a socket of this namespace (not /sys, which may be another namespace's).
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return 0;
  std::string name;
  for (ifaddrs* i = list; i && name.empty(); i = i->ifa_next)
    if (i->ifa_addr && i->ifa_name) {
      const int af = i->ifa_addr->sa_family;
      if (af != (mine->family() == cnf::ip_family::v4 ? AF_INET : AF_INET6)) continue;
      const void* a = af == AF_INET ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr)
                                    : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr);
      if (cnf::ip_address::from_bytes(mine->family(), a) == mine->address()) name = i->ifa_name;
    }
  ::freeifaddrs(list);
  if (name.empty() || name.size() >= IFNAMSIZ) return 0;
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  ifreq req {};
  std::memcpy(req.ifr_name, name.c_str(), name.size() + 1);
  if (::ioctl(fd, SIOCGIFMTU, &req) == 0 && req.ifr_mtu > 0) uplink_mtu_ = static_cast<unsigned>(req.ifr_mtu);
  ::close(fd);
  return uplink_mtu_;
}

unsigned node_agent::pod_mtu() const {
  const unsigned up = uplink_mtu();
  if (!encap_) return up;
  // A pod has one veth for both families: the smaller of the tunnels in use (vxlan-v6.calico
  // carries 20 bytes more header than vxlan.calico).
  const unsigned v6 = tunnel_v6_.mtu && !tunnel_v6_dropped_ ? tunnel_v6_.mtu : 0;
  auto with_v6 = [&](unsigned m) { return v6 && (!m || v6 < m) ? v6 : m; };
  if (tunnel_dropped_ && !pools_.empty()) return with_v6(up);  // every IPv4 pool Never: no IPv4 tunnel
  if (tunnel_.mtu) return with_v6(tunnel_.mtu);                // the device's (the profile's [encapsulation] mtu, or detected)
  // The part is in use but its device is not up yet (before the first sync, or no IPPool yet:
  // calico-ipam makes the pool at the first allocation, so the first pod can come first):
  // what the device will get.
  if (auto es = cnf::settings::parse(prof_.text, prof_.file, "encapsulation"))
    if (auto m = es->get<std::int64_t>("mtu", 0); m >= 68 && m <= 65535) return with_v6(static_cast<unsigned>(m));
  const unsigned overhead = encap_kind_of(prof_).owner == std::string_view("ipip") ? 20 : 50;
  return with_v6(up > overhead + 68 ? up - overhead : 0);
}

bool node_agent::ready() const { return sync_ && synced_once_ && sync_->status() == cnf::sync_status::in_sync; }

std::string node_agent::status_json() const {
  namespace json = boost::json;
  json::object o;
  o["pid"] = ::getpid();
  o["ready"] = ready();
  o["sync"] = sync_ ? std::string(cnf::to_string(sync_->status())) : std::string("stopped");
  o["registered"] = registered_;
  json::object self;
  self["name"] = name_;
  json::array addrs;
  for (auto& a : self_.addresses) addrs.push_back(json::string(a.to_string()));
  self["addresses"] = std::move(addrs);
  if (self_.asn) self["asNumber"] = self_.asn;
  self["podMtu"] = pod_mtu();  // what a served ADD gives a pod whose config and profile set no MTU
  o["node"] = std::move(self);
  json::array own;
  for (auto& p : own_blocks_) own.push_back(json::string(p.to_string()));
  o["blocks"] = std::move(own);
  json::object routing;
  routing["plugin"] = "none";
  json::array peers, notes;
  if (routing_) {
    if (auto st = routing_.status()) {
      routing["plugin"] = st->plugin;
      for (auto& n : st->notes) notes.push_back(json::string(n));
      for (auto& p : st->peers) {
        json::object po;
        po["name"] = p.name;
        po["address"] = p.address.to_string();
        po["asNumber"] = p.asn;
        po["type"] = p.type;
        po["state"] = p.state;
        auto it = peers_.find(p.name);
        po["since"] = !p.since.empty() ? p.since : it != peers_.end() ? it->second.first.since : std::string();
        po["info"] = p.info;
        peers.push_back(std::move(po));
      }
    } else {
      notes.push_back(json::string("routing status: " + st.error().message));
    }
  }
  routing["peers"] = std::move(peers);
  routing["notes"] = std::move(notes);
  o["routing"] = std::move(routing);
  if (encap_) {
    json::object en;
    json::array enotes;
    if (auto st = encap_.status()) {
      en["mode"] = std::string(cnf::to_string(st->mode));
      en["device"] = st->tunnel.device;
      en["address"] = st->tunnel.address ? st->tunnel.address->to_string() : std::string();
      en["mac"] = st->tunnel.mac ? st->tunnel.mac->to_string() : std::string();
      en["mtu"] = st->tunnel.mtu;
      en["remoteNodes"] = st->remote_nodes;
      en["routes"] = st->routes;
      en["pending"] = st->pending;
      if (st->mode_v6 != cnf::encap_mode::never || st->tunnel_v6.address) {
        json::object v6;
        v6["mode"] = std::string(cnf::to_string(st->mode_v6));
        v6["device"] = st->tunnel_v6.device;
        v6["address"] = st->tunnel_v6.address ? st->tunnel_v6.address->to_string() : std::string();
        v6["mac"] = st->tunnel_v6.mac ? st->tunnel_v6.mac->to_string() : std::string();
        v6["mtu"] = st->tunnel_v6.mtu;
        en["ipv6"] = std::move(v6);
      }
      for (auto& n : st->notes) enotes.push_back(json::string(n));
    } else {
      enotes.push_back(json::string("encapsulation status: " + st.error().message));
    }
    if (!encap_error_.empty()) enotes.push_back(json::string("error: " + encap_error_));
    en["notes"] = std::move(enotes);
    o["encapsulation"] = std::move(en);
  }
  if (policy_) {
    json::object po;
    po["plugin"] = policy_name_;
    po["flushes"] = policy_->flushes();
    po["failures"] = policy_->failures();
    po["endpointsBeforeAdd"] = policy_early_;
    // What a caller waits on after a change: `updates` counts the changes received, and
    // `upToDate` says a flush has run since the last of them (the status is served on the
    // loop, after the flush the change scheduled; with `failures` unchanged, it succeeded).
    po["updates"] = policy_updates_;
    po["upToDate"] = policy_->flushes() > policy_flushes_at_update_;
    po["refreshIntervalMs"] = policy_->refresh_interval().count();
    po["driftChecks"] = policy_->drift_checks();
    po["driftRepairs"] = policy_->drift_repairs();
    po["driftCheckFailures"] = policy_->drift_failures();
    json::array pnotes;
    if (auto st = policy_->plugin_status()) {  // not while the drift worker holds the plugin
      po["dataplane"] = st->dataplane;
      po["endpoints"] = st->endpoints;
      po["policies"] = st->policies;
      po["profiles"] = st->profiles;
      po["ipSets"] = st->ip_sets;
      po["rules"] = st->rules;
      po["pending"] = st->pending;
    } else {
      pnotes.push_back(json::string("policy status: " + st.error().message));
    }
    json::array pinv;
    for (auto& [_, why] : policy_invalid_) pinv.push_back(json::string(why));
    po["invalid"] = std::move(pinv);
    po["notes"] = std::move(pnotes);
    o["policy"] = std::move(po);
  }
  json::array invalid;
  for (auto& [_, why] : invalid_) invalid.push_back(json::string(why));
  for (auto& [_, why] : policy_invalid_) invalid.push_back(json::string(why));
  for (auto& [_, why] : bgp_errors_) invalid.push_back(json::string(why));
  o["invalid"] = std::move(invalid);
  json::array routes, conflicts;
  if (rt_) {
    for (auto& r : rt_->desired()) routes.push_back(json::string(r.to_string()));
    for (auto& c : rt_->conflicts()) conflicts.push_back(json::string(c));
  }
  o["routes"] = std::move(routes);
  o["conflicts"] = std::move(conflicts);
  json::array stale;
  if (rt_ && holding_stale_)
    for (auto& d : rt_->stale()) stale.push_back(json::string(d.to_string()));
  o["staleRoutes"] = std::move(stale);  // kept from the last run through a graceful restart
  o["cniCalls"] = cni_calls_;
  return json::serialize(o) + "\n";
}

std::string node_agent::metrics() const {
  std::string m;
  auto gauge = [&](const char* name, const char* help, const std::string& labels, double v) {
    m += fmt::format("# HELP {} {}\n# TYPE {} gauge\n{}{} {}\n", name, help, name, name, labels, v);
  };
  auto counter = [&](const char* name, const char* help, std::uint64_t v) {
    m += fmt::format("# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, v);
  };
  gauge("cnf_agent_ready", "1 when the agent is in sync with the datastore", "", ready() ? 1 : 0);
  m += "# HELP cnf_agent_sync_status The syncer's state (1 for the current one)\n# TYPE cnf_agent_sync_status gauge\n";
  for (auto s : {cnf::sync_status::starting, cnf::sync_status::in_sync, cnf::sync_status::resyncing, cnf::sync_status::datastore_down})
    m += fmt::format("cnf_agent_sync_status{{status=\"{}\"}} {}\n", cnf::to_string(s), sync_ && sync_->status() == s ? 1 : 0);
  gauge("cnf_agent_remote_nodes", "Other nodes known from the datastore", "", static_cast<double>(told_.size()));
  gauge("cnf_agent_own_blocks", "IPAM blocks affine to this node (blackholed)", "", static_cast<double>(own_blocks_.size()));
  gauge("cnf_agent_invalid_nodes", "Node resources that do not parse", "", static_cast<double>(invalid_.size()));
  std::size_t reach = 0, unreach = 0;
  for (auto& [_, p] : peers_) (p.first.state == "Reachable" || p.first.state == "Established" ? reach : unreach)++;
  m += "# HELP cnf_routing_peers Peers (for direct routing: other nodes) by state\n# TYPE cnf_routing_peers gauge\n";
  m += fmt::format("cnf_routing_peers{{state=\"up\"}} {}\ncnf_routing_peers{{state=\"down\"}} {}\n", reach, unreach);
  if (rt_) {
    gauge("cnf_route_table_routes", "Routes cnf wants in the kernel", "", static_cast<double>(rt_->desired().size()));
    gauge("cnf_route_table_conflicts", "Routes left out because a route of another protocol holds the destination", "",
          static_cast<double>(rt_->conflicts().size()));
    gauge("cnf_route_table_stale_routes", "Routes of the last run kept through a graceful restart until relearned", "",
          static_cast<double>(holding_stale_ ? rt_->stale().size() : 0));
    auto t = rt_->totals();
    counter("cnf_route_table_added_total", "Routes added to the kernel", t.added);
    counter("cnf_route_table_replaced_total", "Routes replaced in the kernel", t.replaced);
    counter("cnf_route_table_deleted_total", "Routes deleted from the kernel", t.deleted);
    counter("cnf_route_table_batches_total", "Netlink batches sent", t.batches);
  }
  counter("cnf_agent_recalculations_total", "Recalculations of the node's routes", recalculations_);
  counter("cnf_agent_invalid_resources_total", "Invalid resources seen", invalid_seen_);
  counter("cnf_agent_cni_calls_total", "CNI calls served", cni_calls_);
  if (policy_) {
    counter("cnf_policy_flushes_total", "Policy flushes (changes delivered to the policy part and applied)", policy_->flushes());
    counter("cnf_policy_flush_failures_total", "Policy flushes that failed (retried)", policy_->failures());
    counter("cnf_policy_drift_checks_total", "Drift checks (the kernel's chains and sets compared with what was programmed)",
            policy_->drift_checks());
    counter("cnf_policy_drift_repairs_total", "Chains, sets and hooks found changed in the kernel and rewritten", policy_->drift_repairs());
    counter("cnf_policy_drift_check_failures_total", "Drift checks that failed", policy_->drift_failures());
    gauge("cnf_policy_invalid_resources", "Policy resources that do not parse (their previous version stays)", "",
          static_cast<double>(policy_invalid_.size()));
  }
  return m;
}

}  // namespace cnf_app
