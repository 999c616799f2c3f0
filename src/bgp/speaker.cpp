#include <cnf/bgp/speaker.hpp>

#include <algorithm>

CNF_BEGIN_NAMESPACE
namespace bgp {

struct speaker::slot {
  std::unique_ptr<session> s;
  conn_id conn = 0;
  std::uint64_t uid = 0;
  std::optional<ip_address> local;
};

struct speaker::peer {
  neighbor cfg;
  peer_id id = 0;
  bool ibgp = false;
  slot slots[2];  // 0: the peer's session; 1: an incoming connection while 0 is opening (collision)
  bool established = false;
  bool send_eor = false;
  std::uint64_t restart_uid = 0;  // the graceful-restart timer while its routes are stale
  bool initial_done = false;       // selection deferral: its End-of-RIB came, or it is not waited for
  std::vector<afi_safi> eor_awaited;  // selection deferral: the families whose End-of-RIB is still due
  std::string info;
  std::map<ip_prefix, std::shared_ptr<const path_attributes>> adj_out;
  std::set<ip_prefix> pending;
  std::map<ip_prefix, path> filtered;  // the rest of its Adj-RIB-In: paths its import filters reject
  std::size_t reflected_back = 0;      // paths refused by RFC 4456 loop detection
};

namespace {
constexpr std::uint64_t timer_of(std::uint64_t uid, timer_kind k) { return uid * 4 + static_cast<std::uint64_t>(k); }
afi_safi af_of(const ip_prefix& p) { return p.family() == ip_family::v4 ? ipv4_unicast : ipv6_unicast; }
}  // namespace

speaker::speaker(speaker_config c) : cfg_(std::move(c)) {
  rib_.multipath_enabled = cfg_.multipath;
  if (cfg_.restarting && cfg_.restart_time) {
    deferring_ = true;
    restart_window_uid_ = next_uid_++;
    out_.push_back(out::start_timer{timer_of(restart_window_uid_, timer_kind(3)), std::chrono::seconds(cfg_.restart_time)});
  }
}
speaker::~speaker() = default;

speaker::peer* speaker::find(std::string_view name) {
  auto it = peers_.find(name);
  return it == peers_.end() ? nullptr : it->second.get();
}

speaker::peer* speaker::by_address(const ip_address& a) {
  for (auto& [_, p] : peers_)
    if (p->cfg.address == a) return p.get();
  return nullptr;
}

std::optional<ip_address> speaker::local_for(const peer& p, ip_family f) const {
  if (p.slots[0].local && p.slots[0].local->family() == f) return p.slots[0].local;
  for (auto& a : cfg_.local_addresses)
    if (a.family() == f) return a;
  return std::nullopt;
}

void speaker::set_local_addresses(std::vector<ip_address> a) { cfg_.local_addresses = std::move(a); }

void speaker::start_session(peer& p, int which, bool outgoing) {
  auto& sl = p.slots[which];
  if (sl.uid) sessions_.erase(sl.uid);
  session_config sc;
  sc.local_as = cfg_.asn;
  sc.peer_as = p.cfg.asn;
  sc.router_id = cfg_.router_id;
  sc.hold_time = cfg_.hold_time;
  sc.connect_retry = cfg_.connect_retry;
  sc.families = cfg_.families;
  sc.passive = p.cfg.passive || which == 1;
  sc.auto_restart = which == 0;
  if (cfg_.restart_time) {
    graceful_restart g;
    g.restart_time = static_cast<std::uint16_t>(std::min<unsigned>(p.cfg.max_restart_time ? p.cfg.max_restart_time : cfg_.restart_time, 4095));
    g.restart_state = cfg_.restarting;
    for (auto& f : cfg_.families) g.families.push_back({f, cfg_.restarting});
    sc.restart = std::move(g);
  }
  sl.s = std::make_unique<session>(std::move(sc), outgoing);
  sl.uid = next_uid_++;
  sl.local.reset();
  sessions_[sl.uid] = {&p, which};
}

void speaker::add_peer(const neighbor& n) {
  if (auto* old = find(n.name)) {
    if (old->cfg == n) return;
    // Filters and the restart time apply without touching the session; anything else restarts it.
    neighbor same = n;
    same.filters = old->cfg.filters;
    same.max_restart_time = old->cfg.max_restart_time;
    if (old->cfg == same) {
      auto before = std::move(old->cfg.filters);
      old->cfg = n;
      refilter(*old, before);
      return;
    }
    remove_peer(n.name);
  }
  for (auto& a : cfg_.local_addresses)
    if (a == n.address) {
      out_.push_back(out::log{true, "peer " + n.name + ": " + a.to_string() + " is this speaker's own address; not peering"});
      return;
    }
  auto up = std::make_unique<peer>();
  auto& p = *up;
  p.cfg = n;
  p.id = next_peer_++;
  p.ibgp = n.asn == cfg_.asn;
  for (auto& f : n.filters)
    if (!f.exists)
      out_.push_back(out::log{true, "peer " + n.name + ": BGPFilter " + f.name + " does not exist; no filter applied for it (as Calico)"});
  peers_.emplace(n.name, std::move(up));
  if (stopped_) return;
  start_session(p, 0, true);
  p.slots[0].s->start();
  run(p, 0);
  flush();
}

void speaker::remove_peer(std::string_view name) {
  auto it = peers_.find(name);
  if (it == peers_.end()) return;
  auto& p = *it->second;
  for (int i = 1; i >= 0; --i)
    if (p.slots[i].s) {
      p.slots[i].s->stop(err::peer_deconfigured, "peer removed from the configuration");
      run(p, i);
    }
  if (p.established) on_down(p);
  end_restart(p);
  for (auto& pfx : rib_.drop_peer(p.id)) changed(pfx);
  for (auto& sl : p.slots) {
    if (sl.conn) conns_.erase(sl.conn);
    if (sl.uid) sessions_.erase(sl.uid);
  }
  peers_.erase(it);
  check_deferral();
  flush();
}

void speaker::stop(std::string why, bool graceful) {
  stopped_ = true;
  for (auto& [_, up] : peers_) {
    auto& p = *up;
    for (int i = 1; i >= 0; --i)
      if (p.slots[i].s) {
        auto& s = *p.slots[i].s;
        // Only an Established session whose peer offered graceful restart can keep the routes.
        if (graceful && i == 0 && cfg_.restart_time && s.state() == session_state::established && s.agreed().peer_restart)
          s.stop_silently(why + " (graceful restart: no Cease)");
        else
          s.stop(err::administrative_shutdown, why);
        run(p, i);
      }
  }
  flush();
}

void speaker::originate(const ip_prefix& prefix, std::vector<std::uint32_t> communities, std::vector<large_community> large) {
  auto pfx = prefix.canonical();
  // One attribute set per distinct set of communities, shared by the originated prefixes: they
  // cost one pointer each in the RIB, and the export groups them into full UPDATEs (a set per
  // prefix meant an UPDATE per prefix).
  path_attributes want;
  want.origin = origin_type::igp;
  want.communities = std::move(communities);
  want.large_communities = std::move(large);
  std::erase_if(origin_attrs_, [](const auto& a) { return a.use_count() == 1; });
  auto attrs = std::find_if(origin_attrs_.begin(), origin_attrs_.end(), [&](const auto& a) { return *a == want; });
  if (attrs == origin_attrs_.end()) attrs = origin_attrs_.insert(origin_attrs_.end(), std::make_shared<const path_attributes>(std::move(want)));
  if (!originated_.insert(pfx).second)
    if (auto* e = rib_.find(pfx))
      for (auto& x : e->paths)
        if (x.from == local_peer && x.attrs == *attrs) return;  // unchanged
  path p;
  p.from = local_peer;
  p.peer_router_id = cfg_.router_id;
  p.attrs = *attrs;
  if (rib_.update(pfx, std::move(p))) changed(pfx);
  flush();
}

void speaker::withdraw(const ip_prefix& prefix) {
  auto pfx = prefix.canonical();
  if (!originated_.erase(pfx)) return;
  if (rib_.withdraw(pfx, local_peer)) changed(pfx);
  flush();
}

// ---- events ----

void speaker::connected(conn_id c, const ip_address& local) {
  auto it = conns_.find(c);
  if (it == conns_.end()) { out_.push_back(out::close{c}); return; }
  auto [p, which] = it->second;
  p->slots[which].local = local;
  p->slots[which].s->tcp_connected();
  run(*p, which);
  flush();
}

void speaker::connect_failed(conn_id c) {
  auto it = conns_.find(c);
  if (it == conns_.end()) return;
  auto [p, which] = it->second;
  conns_.erase(it);
  p->slots[which].conn = 0;
  p->slots[which].s->tcp_failed();
  run(*p, which);
  flush();
}

conn_id speaker::accepted(const ip_address& remote, const ip_address& local) {
  const conn_id c = next_conn_++;
  peer* p = stopped_ ? nullptr : by_address(remote);
  if (!p) {
    out_.push_back(out::log{true, "connection from " + remote.to_string() + " refused: " + (stopped_ ? "stopping" : "not a configured peer")});
    out_.push_back(out::close{c});
    return c;
  }
  auto st = p->slots[0].s ? p->slots[0].s->state() : session_state::idle;
  int which = 0;
  if (st == session_state::established || (st != session_state::idle && st != session_state::connect && st != session_state::active && p->slots[1].s)) {
    out_.push_back(out::log{false, "peer " + p->cfg.name + ": connection from " + remote.to_string() + " closed: a session is already " +
                                       std::string(to_string(st)) + " (collision)"});
    out_.push_back(out::close{c});
    return c;
  }
  if (st == session_state::open_sent || st == session_state::open_confirm) {
    which = 1;  // keep both until an OPEN tells who wins
  } else {
    auto& sl = p->slots[0];
    if (sl.conn) {  // an outgoing attempt in progress loses to the connection already up
      out_.push_back(out::close{sl.conn});
      conns_.erase(sl.conn);
      sl.conn = 0;
    }
  }
  start_session(*p, which, false);
  auto& sl = p->slots[which];
  sl.conn = c;
  sl.local = local;
  conns_[c] = {p, which};
  sl.s->start();
  sl.s->take();  // start() asked for a connection; this one is already up
  sl.s->tcp_connected();
  run(*p, which);
  flush();
  return c;
}

void speaker::received(conn_id c, std::span<const std::uint8_t> data) {
  auto it = conns_.find(c);
  if (it == conns_.end()) return;
  auto [p, which] = it->second;
  p->slots[which].s->received(data);
  run(*p, which);
  flush();
}

void speaker::closed(conn_id c) {
  auto it = conns_.find(c);
  if (it == conns_.end()) return;
  auto [p, which] = it->second;
  conns_.erase(it);
  p->slots[which].conn = 0;
  p->slots[which].s->tcp_closed();
  run(*p, which);
  flush();
}

void speaker::timer_fired(timer_id t) {
  if (restart_window_uid_ && t / 4 == restart_window_uid_) {
    restart_window_uid_ = 0;
    cfg_.restarting = false;
    out_.push_back(out::log{false, "graceful restart window over: new sessions no longer carry the Restart State bit"});
    if (deferring_) {
      std::string late;
      for (auto& [name, p] : peers_)
        if (!p->initial_done) late += (late.empty() ? "" : ", ") + name;
      end_deferral("selection deferral time over (" + std::to_string(cfg_.restart_time) + " s)" +
                   (late.empty() ? std::string() : ", no End-of-RIB from " + late));
    }
    flush();
    return;
  }
  if (auto g = restart_timers_.find(t / 4); g != restart_timers_.end()) {
    peer& p = *g->second;
    restart_timers_.erase(g);
    p.restart_uid = 0;
    const auto n = rib_.stale_of(p.id);
    for (auto& pfx : rib_.drop_stale(p.id)) changed(pfx);
    out_.push_back(out::log{true, "peer " + p.cfg.name + ": graceful restart time over, " + std::to_string(n) + " stale path(s) removed"});
    flush();
    return;
  }
  auto it = sessions_.find(t / 4);
  if (it == sessions_.end()) return;
  auto [p, which] = it->second;
  if (p->slots[which].uid != t / 4 || !p->slots[which].s) return;
  p->slots[which].s->timer_expired(static_cast<timer_kind>(t % 4));
  run(*p, which);
  flush();
}

// ---- the sessions' actions ----

void speaker::run(peer& p, int which) {
  bool check_collision = false;
  for (;;) {
    auto& sl = p.slots[which];
    if (!sl.s) return;
    auto acts = sl.s->take();
    if (acts.empty()) break;
    for (auto& a : acts) {
      if (auto* x = std::get_if<action::connect>(&a)) {
        (void)x;
        if (sl.conn) { out_.push_back(out::close{sl.conn}); conns_.erase(sl.conn); }
        sl.conn = next_conn_++;
        conns_[sl.conn] = {&p, which};
        out_.push_back(out::connect{sl.conn, p.cfg.name, p.cfg.address});
      } else if (auto* s = std::get_if<action::send>(&a)) {
        if (sl.conn) out_.push_back(out::send{sl.conn, std::move(s->data)});
      } else if (std::holds_alternative<action::close>(a)) {
        if (sl.conn) {
          out_.push_back(out::close{sl.conn});
          conns_.erase(sl.conn);
          sl.conn = 0;
        }
      } else if (auto* t = std::get_if<action::start_timer>(&a)) {
        out_.push_back(out::start_timer{timer_of(sl.uid, t->timer), t->after});
      } else if (auto* t2 = std::get_if<action::stop_timer>(&a)) {
        out_.push_back(out::stop_timer{timer_of(sl.uid, t2->timer)});
      } else if (auto* sc = std::get_if<action::state_changed>(&a)) {
        if (sc->to == session_state::open_confirm) check_collision = true;
        if (which == 0) {
          if (sc->to == session_state::established) on_established(p);
          if (sc->from == session_state::established) on_down(p);
          p.info = sl.s->last_error().empty() ? sc->reason : sl.s->last_error();
          if (sc->to == session_state::established) p.info.clear();
          out_.push_back(out::peer_state{p.cfg.name, sc->to, p.info});
          if (sc->to == session_state::idle && !sl.s->last_error().empty() && sc->reason != "stopped")
            out_.push_back(out::log{true, "peer " + p.cfg.name + " (" + p.cfg.address.to_string() + "): " + sl.s->last_error()});
        }
      } else if (auto* u = std::get_if<action::update>(&a)) {
        if (which == 0) import(p, u->msg);
      } else if (auto* r = std::get_if<action::route_refresh>(&a)) {
        if (which == 0 && p.established) {
          for (auto it = p.adj_out.begin(); it != p.adj_out.end();)
            if (af_of(it->first) == r->af) it = p.adj_out.erase(it);
            else ++it;
          for (auto& [pfx, _] : rib_.entries())
            if (af_of(pfx) == r->af) p.pending.insert(pfx);
        }
      }
    }
  }
  auto& sl = p.slots[which];
  if (which == 1 && sl.s && sl.s->state() != session_state::open_sent && sl.s->state() != session_state::open_confirm) {
    sessions_.erase(sl.uid);
    if (sl.conn) {  // never leave a connection open behind a session that is gone
      out_.push_back(out::close{sl.conn});
      conns_.erase(sl.conn);
    }
    sl = slot{};
    return;
  }
  if (check_collision) resolve_collision(p);
}

void speaker::resolve_collision(peer& p) {
  auto& a = p.slots[0];
  auto& b = p.slots[1];
  if (!a.s || !b.s) return;
  auto opening = [](session_state s) { return s == session_state::open_sent || s == session_state::open_confirm; };
  if (!opening(b.s->state())) return;
  if (!opening(a.s->state())) {
    // The session's own connection went (refused or closed by the peer: Active, Connect, Idle)
    // while the peer's is opening: no collision left, the peer's connection is the session.
    // Left in slot 1 it would reach Established unseen and be dropped with its socket open,
    // the peer Established on it until its hold timer, refusing every new connection.
    if (a.s->state() == session_state::established) return;
    out_.push_back(out::log{false, "peer " + p.cfg.name + ": its own connection is gone, the incoming one carries on"});
  } else {
    const session* told = a.s->peer_open() ? a.s.get() : b.s->peer_open() ? b.s.get() : nullptr;
    if (!told) return;
    const std::uint32_t remote_id = told->peer_open()->router_id;
    const bool keep_outgoing = outgoing_wins_collision(cfg_.router_id, remote_id);
    // The loser of the two: the one whose direction does not match.
    const int loser = (a.s->outgoing() == keep_outgoing) ? 1 : 0;
    const std::string why = "connection collision: BGP identifier " + ip_address::v4(cfg_.router_id).to_string() + (keep_outgoing ? " > " : " < ") +
                            ip_address::v4(remote_id).to_string() + ", the " + (keep_outgoing ? "outgoing" : "incoming") + " connection stays";
    out_.push_back(out::log{false, "peer " + p.cfg.name + ": " + why});
    if (loser == 1) {
      b.s->notify_and_close({err::cease, err::connection_collision, {}}, why);
      run(p, 1);
      return;
    }
    // The incoming connection replaces the session's own: its OPEN exchange carries on.
    a.s->notify_and_close({err::cease, err::connection_collision, {}}, why);
  }
  {
    // drain a's close and timer stops without reporting a state change
    for (auto& act : a.s->take()) {
      if (std::holds_alternative<action::send>(act) && a.conn) out_.push_back(out::send{a.conn, std::move(std::get<action::send>(act).data)});
      else if (std::holds_alternative<action::stop_timer>(act))
        out_.push_back(out::stop_timer{timer_of(a.uid, std::get<action::stop_timer>(act).timer)});
    }
    if (a.conn) { out_.push_back(out::close{a.conn}); conns_.erase(a.conn); }
    sessions_.erase(a.uid);
  }
  a = std::move(b);
  b = slot{};
  a.s->config().auto_restart = true;
  a.s->config().passive = p.cfg.passive;  // the session dials again after a later loss
  sessions_[a.uid] = {&p, 0};
  if (a.conn) conns_[a.conn] = {&p, 0};
  out_.push_back(out::peer_state{p.cfg.name, a.s->state(), "OPEN received"});
  run(p, 0);
}

void speaker::on_established(peer& p) {
  p.established = true;
  if (p.restart_uid && !p.slots[0].s->agreed().peer_restart) {  // it came back without the capability
    end_restart(p);
    for (auto& pfx : rib_.drop_stale(p.id)) changed(pfx);
  }
  p.send_eor = true;
  p.adj_out.clear();
  p.pending.clear();
  for (auto& [pfx, _] : rib_.entries()) p.pending.insert(pfx);
  out_.push_back(out::log{false, "peer " + p.cfg.name + " (" + p.cfg.address.to_string() + ", AS " + std::to_string(p.cfg.asn) + "): Established"});
  if (deferring_ && !p.initial_done) {
    // RFC 4724 §4.1: wait for the End-of-RIB of every family agreed, except from a peer that
    // cannot send one (no capability) or is restarting too (it waits for ours: no deadlock).
    const auto& gr = p.slots[0].s->agreed().peer_restart;
    p.eor_awaited = p.slots[0].s->agreed().families;
    if (!gr || gr->restart_state) {
      p.initial_done = true;
      out_.push_back(out::log{false, "peer " + p.cfg.name + ": " + (gr ? "restarting too (R bit)" : "no graceful restart capability") +
                                         ": route selection does not wait for its End-of-RIB"});
    } else if (p.eor_awaited.empty()) {
      p.initial_done = true;
    }
    check_deferral();
  }
}

void speaker::check_deferral() {
  if (!deferring_ || peers_.empty()) return;  // no peer yet: only the timer ends it
  for (auto& [_, p] : peers_)
    if (!p->initial_done) return;
  end_deferral("End-of-RIB from every graceful-restart peer");
}

void speaker::end_deferral(std::string why) {
  if (!deferring_) return;
  deferring_ = false;
  out_.push_back(out::log{false, "graceful restart: route selection done (" + why + "): " + std::to_string(rib_.entries().size()) +
                                     " prefix(es) in the RIB; sending UPDATEs and End-of-RIB to the peers"});
  complete_ = std::move(why);  // reported by the flush that ends every event (never nested in run())
}

void speaker::on_down(peer& p) {
  p.established = false;
  p.send_eor = false;
  p.adj_out.clear();
  p.pending.clear();
  p.filtered.clear();
  const session* s = p.slots[0].s.get();
  const auto& gr = s ? s->agreed().peer_restart : std::nullopt;
  if (cfg_.restart_time && !stopped_ && s && s->connection_lost() && gr && gr->restart_time > 0) {
    // RFC 4724 §4.2: the peer may be restarting; its routes stay (stale) for its restart time.
    if (p.restart_uid) restart_timers_.erase(p.restart_uid);  // a second loss: the stale ones go now
    for (auto& pfx : rib_.drop_stale(p.id)) changed(pfx);
    rib_.mark_stale(p.id);
    p.restart_uid = next_uid_++;
    restart_timers_[p.restart_uid] = &p;
    // The time it advertised, unless this peering sets its own (Calico's maxRestartTime).
    const std::uint32_t keep = p.cfg.max_restart_time ? p.cfg.max_restart_time : gr->restart_time;
    out_.push_back(out::start_timer{timer_of(p.restart_uid, timer_kind(3)), std::chrono::seconds(keep)});
    out_.push_back(out::log{false, "peer " + p.cfg.name + ": connection lost, keeping its " + std::to_string(rib_.stale_of(p.id)) +
                                       " path(s) for its graceful restart (" + std::to_string(keep) + " s" +
                                       (p.cfg.max_restart_time ? ", this peering's maxRestartTime" : "") + ")"});
    return;
  }
  end_restart(p);
  for (auto& pfx : rib_.drop_peer(p.id)) changed(pfx);
}

void speaker::end_restart(peer& p) {
  if (!p.restart_uid) return;
  out_.push_back(out::stop_timer{timer_of(p.restart_uid, timer_kind(3))});
  restart_timers_.erase(p.restart_uid);
  p.restart_uid = 0;
}

void speaker::import(peer& p, update_message& u) {
  if (auto eor = u.end_of_rib()) {
    if (deferring_ && !p.initial_done) {
      std::erase(p.eor_awaited, *eor);
      if (p.eor_awaited.empty()) {
        p.initial_done = true;
        out_.push_back(out::log{false, "peer " + p.cfg.name + ": End-of-RIB received (" + std::to_string(rib_.paths_of(p.id)) + " path(s))"});
        check_deferral();
      }
    }
    if (p.restart_uid) {
      const ip_family f = eor->afi == 2 ? ip_family::v6 : ip_family::v4;
      for (auto& pfx : rib_.drop_stale(p.id, f)) changed(pfx);
      if (!rib_.stale_of(p.id)) end_restart(p);
    }
    return;
  }
  if (u.withdraw_reason)
    out_.push_back(out::log{true, "peer " + p.cfg.name + ": UPDATE treated as withdraw (RFC 7606): " + u.withdraw_reason->to_string()});
  for (auto& d : u.discarded) out_.push_back(out::log{true, "peer " + p.cfg.name + ": attribute discarded (RFC 7606): " + d});
  for (auto& pfx : u.withdrawn) {
    p.filtered.erase(pfx);
    if (rib_.withdraw(pfx, p.id)) changed(pfx);
  }
  if (u.unreach)
    for (auto& pfx : u.unreach->withdrawn) {
      p.filtered.erase(pfx);
      if (rib_.withdraw(pfx, p.id)) changed(pfx);
    }
  if (u.nlri.empty() && !(u.reach && !u.reach->nlri.empty())) return;

  auto attrs = std::make_shared<path_attributes>(std::move(u.attrs));
  std::string refused;
  bool reflected_back = false;  // RFC 4456's loop detection at work, not an error: logged at debug
  if (!p.ibgp && attrs->as_path_contains(cfg_.asn)) refused = "AS_PATH loop: the path contains this speaker's AS " + std::to_string(cfg_.asn);
  else if (p.ibgp && attrs->originator_id == cfg_.router_id) {
    refused = "ORIGINATOR_ID is this speaker's router id (reflected back)";
    reflected_back = true;
  } else if (p.ibgp && cfg_.cluster_id &&
             std::find(attrs->cluster_list.begin(), attrs->cluster_list.end(), *cfg_.cluster_id) != attrs->cluster_list.end()) {
    refused = "CLUSTER_LIST loop: contains this speaker's cluster id";
    reflected_back = true;
  }
  if (!p.ibgp) {
    attrs->local_pref = 100;
    attrs->originator_id.reset();
    attrs->cluster_list.clear();
  } else if (!attrs->local_pref) {
    attrs->local_pref = 100;
  }
  path base;
  base.from = p.id;
  base.peer_address = p.cfg.address;
  base.peer_router_id = p.slots[0].s && p.slots[0].s->peer_open() ? p.slots[0].s->peer_open()->router_id : 0;
  base.ebgp = !p.ibgp;
  base.from_client = p.cfg.rr_client && cfg_.cluster_id.has_value();
  base.attrs = attrs;
  auto is_local = [&](const ip_address& a) { return std::find(cfg_.local_addresses.begin(), cfg_.local_addresses.end(), a) != cfg_.local_addresses.end(); };
  auto take = [&](const std::vector<ip_prefix>& nlri, const std::optional<ip_address>& nh) {
    std::string why = refused;
    if (why.empty() && !nh) why = "no next hop";
    if (why.empty() && is_local(*nh)) why = "the next hop " + nh->to_string() + " is this node";
    if (!why.empty()) {
      if (reflected_back) p.reflected_back += nlri.size();
      out_.push_back(out::log{!reflected_back, "peer " + p.cfg.name + ": " + std::to_string(nlri.size()) + " prefix(es) ignored (first " + nlri.front().to_string() +
                                                   "): " + why + (reflected_back ? " (" + std::to_string(p.reflected_back) + " so far)" : std::string()),
                              reflected_back});
      for (auto& pfx : nlri) {
        p.filtered.erase(pfx);
        if (rib_.withdraw(pfx, p.id)) changed(pfx);
      }
      return;
    }
    path x = base;
    x.next_hop = *nh;
    for (auto& pfx : nlri) {
      if (!p.cfg.filters.empty() && !filter_accepts(p.cfg.filters, filter_direction::import, pfx, true)) {
        p.filtered[pfx] = x;  // kept: a filter change may let it in without asking the peer again
        if (rib_.withdraw(pfx, p.id)) changed(pfx);
        continue;
      }
      p.filtered.erase(pfx);
      if (rib_.update(pfx, x)) changed(pfx);
    }
  };
  if (!u.nlri.empty()) take(u.nlri, attrs->next_hop);
  if (u.reach && !u.reach->nlri.empty())
    take(u.reach->nlri, u.reach->next_hops.empty() ? std::nullopt : std::optional<ip_address>(u.reach->next_hops.front()));
}

void speaker::changed(const ip_prefix& prefix) { dirty_.insert(prefix); }

// A filter change: the peer's Adj-RIB-In (used paths in the RIB, rejected ones in `filtered`) is
// evaluated again, and its Adj-RIB-Out recomputed against the new export rules; flush() sends the
// difference (UPDATEs and withdraws). No other peer's state is looked at beyond the RIB changes.
void speaker::refilter(peer& p, const std::vector<route_filter>& before) {
  const auto& now = p.cfg.filters;
  for (auto& f : now)
    if (!f.exists)
      out_.push_back(out::log{true, "peer " + p.cfg.name + ": BGPFilter " + f.name + " does not exist; no filter applied for it (as Calico)"});
  if (!same_rules(before, now, filter_direction::import)) {
    std::vector<std::pair<ip_prefix, path>> out_now;
    for (auto& [pfx, e] : rib_.entries())
      for (auto& x : e.paths)
        if (x.from == p.id && !filter_accepts(now, filter_direction::import, pfx, true)) out_now.emplace_back(pfx, x);
    std::size_t in = 0;
    for (auto it = p.filtered.begin(); it != p.filtered.end();) {
      if (filter_accepts(now, filter_direction::import, it->first, true)) {
        if (rib_.update(it->first, it->second)) changed(it->first);
        it = p.filtered.erase(it);
        ++in;
      } else {
        ++it;
      }
    }
    for (auto& [pfx, x] : out_now) {
      if (rib_.withdraw(pfx, p.id)) changed(pfx);
      if (!x.stale) p.filtered[pfx] = std::move(x);  // a stale one is gone for good: the peer re-sends what it still has
    }
    out_.push_back(out::log{false, "peer " + p.cfg.name + ": import filters changed: " + std::to_string(in) + " path(s) accepted again, " +
                                       std::to_string(out_now.size()) + " rejected"});
  }
  if (!same_rules(before, now, filter_direction::export_) && p.established) {
    for (auto& [pfx, _] : rib_.entries()) p.pending.insert(pfx);
    for (auto& [pfx, _] : p.adj_out) p.pending.insert(pfx);
    out_.push_back(out::log{false, "peer " + p.cfg.name + ": export filters changed: its Adj-RIB-Out is recomputed"});
  }
  flush();
}

std::shared_ptr<const path_attributes> speaker::export_to(const peer& p, const ip_prefix& prefix, ip_address& nh) {
  auto best = rib_.best(prefix);
  if (best.empty()) return nullptr;
  const path& b = best.front();
  if (b.from == p.id) return nullptr;
  // RFC 1997's well-known communities, on every route as BIRD does: NO_ADVERTISE to no peer,
  // NO_EXPORT and NO_EXPORT_SUBCONFED to no eBGP peer (cnf has no confederation).
  for (auto c : b.attrs->communities)
    if (c == community::no_advertise || (!p.ibgp && (c == community::no_export || c == community::no_export_subconfed))) return nullptr;
  const auto& neg = p.slots[0].s->agreed();
  if (std::find(neg.families.begin(), neg.families.end(), af_of(prefix)) == neg.families.end()) return nullptr;
  if (!p.cfg.filters.empty() && !filter_accepts(p.cfg.filters, filter_direction::export_, prefix, b.from != local_peer)) return nullptr;
  bool reflected = false;
  if (b.from != local_peer && !b.ebgp && p.ibgp) {
    if (!cfg_.cluster_id) return nullptr;            // iBGP split horizon
    if (!b.from_client && !p.cfg.rr_client) return nullptr;  // non-client routes go to clients only
    reflected = true;
  }
  auto a = std::make_shared<path_attributes>(*b.attrs);
  if (reflected) {
    nh = b.next_hop;
    if (!a->originator_id) a->originator_id = b.peer_router_id;
    a->cluster_list.insert(a->cluster_list.begin(), *cfg_.cluster_id);
  } else {
    auto self = local_for(p, prefix.family());
    if (!self) return nullptr;
    nh = p.cfg.keep_next_hop && b.from != local_peer && b.next_hop.family() == prefix.family() ? b.next_hop : *self;
    if (p.ibgp) {
      if (!a->local_pref) a->local_pref = 100;
    } else {
      if (!a->as_path.empty() && a->as_path.front().type == as_segment::kind::sequence && a->as_path.front().asns.size() < 255)
        a->as_path.front().asns.insert(a->as_path.front().asns.begin(), cfg_.asn);
      else
        a->as_path.insert(a->as_path.begin(), as_segment{as_segment::kind::sequence, {cfg_.asn}});
      a->local_pref.reset();
      if (b.from != local_peer) a->med.reset();
      a->originator_id.reset();
      a->cluster_list.clear();
    }
  }
  if (prefix.family() == ip_family::v4) a->next_hop = nh;
  else a->next_hop.reset();
  return a;
}

void speaker::flush() {
  if (flushing_ || deferring_) return;  // deferring: the RIB fills; nothing is selected or sent yet
  flushing_ = true;
  // The host's view: one route per prefix, all equal best next hops.
  for (auto& pfx : dirty_) {
    auto best = rib_.best(pfx);
    std::vector<ip_address> nhs;
    std::string from;
    if (!best.empty() && best.front().from != local_peer) {
      for (auto& b : best)
        if (std::find(nhs.begin(), nhs.end(), b.next_hop) == nhs.end()) nhs.push_back(b.next_hop);
      for (auto& [name, p] : peers_)
        if (p->id == best.front().from) from = name;
    }
    auto it = reported_.find(pfx);
    if (nhs.empty()) {
      if (it != reported_.end()) {
        reported_.erase(it);
        out_.push_back(out::route{pfx, {}, {}});
      }
    } else if (it == reported_.end() || it->second != nhs) {
      reported_[pfx] = nhs;
      out_.push_back(out::route{pfx, nhs, from});
    }
    for (auto& [_, p] : peers_)
      if (p->established) p->pending.insert(pfx);
  }
  dirty_.clear();
  if (complete_) out_.push_back(out::initial_routes_complete{*std::exchange(complete_, std::nullopt)});

  for (auto& [_, up] : peers_) {
    auto& p = *up;
    if (!p.established || (p.pending.empty() && !p.send_eor)) continue;
    const bool four = p.slots[0].s->agreed().four_octet_as;
    std::vector<ip_prefix> gone4, gone6;
    std::map<const path_attributes*, std::vector<ip_prefix>> groups;
    std::map<const path_attributes*, ip_address> group_nh;
    std::map<std::pair<const path_attributes*, ip_address>, std::shared_ptr<const path_attributes>> interned;
    for (auto& pfx : p.pending) {
      ip_address nh;
      auto a = export_to(p, pfx, nh);
      auto old = p.adj_out.find(pfx);
      if (!a) {
        if (old != p.adj_out.end()) {
          (pfx.family() == ip_family::v4 ? gone4 : gone6).push_back(pfx);
          p.adj_out.erase(old);
        }
        continue;
      }
      auto src = rib_.best(pfx).front().attrs.get();
      auto& slot_a = interned[{src, nh}];
      if (!slot_a || !(*slot_a == *a)) slot_a = a;
      if (old != p.adj_out.end() && *old->second == *slot_a) continue;
      p.adj_out[pfx] = slot_a;
      groups[slot_a.get()].push_back(pfx);
      group_nh[slot_a.get()] = nh;
    }
    p.pending.clear();
    auto& s = *p.slots[0].s;
    auto send_chunks = [&](update_message base, auto add) {
      // Fills UPDATEs up to the 4096-octet limit.
      const std::size_t fixed = encode(base, {four}).size();
      update_message u = base;
      std::size_t size = fixed;
      bool any = false;
      auto emit = [&] { if (any) s.send_update(u); u = base; size = fixed; any = false; };
      add([&](const ip_prefix& pfx, auto&& put) {
        const std::size_t n = 1 + (pfx.length() + 7) / 8;
        if (size + n > max_message_size) emit();
        put(u, pfx);
        size += n;
        any = true;
      });
      emit();
    };
    if (!gone4.empty())
      send_chunks(update_message{}, [&](auto push) { for (auto& x : gone4) push(x, [](update_message& u, const ip_prefix& q) { u.withdrawn.push_back(q); }); });
    if (!gone6.empty()) {
      update_message base;
      base.unreach = mp_unreach{ipv6_unicast, {}};
      send_chunks(base, [&](auto push) { for (auto& x : gone6) push(x, [](update_message& u, const ip_prefix& q) { u.unreach->withdrawn.push_back(q); }); });
    }
    for (auto& [a, list] : groups) {
      update_message base;
      base.has_attributes = true;
      base.attrs = *a;
      if (list.front().family() == ip_family::v4) {
        send_chunks(base, [&](auto push) { for (auto& x : list) push(x, [](update_message& u, const ip_prefix& q) { u.nlri.push_back(q); }); });
      } else {
        base.reach = mp_reach{ipv6_unicast, {group_nh[a]}, {}};
        send_chunks(base, [&](auto push) { for (auto& x : list) push(x, [](update_message& u, const ip_prefix& q) { u.reach->nlri.push_back(q); }); });
      }
    }
    if (p.send_eor) {
      p.send_eor = false;
      for (auto& af : s.agreed().families) {
        update_message eor;
        if (af != ipv4_unicast) eor.unreach = mp_unreach{af, {}};
        s.send_update(eor);
      }
    }
    run(p, 0);
  }
  flushing_ = false;
  if (!dirty_.empty()) flush();
}

std::vector<peer_info> speaker::peers() const {
  std::vector<peer_info> v;
  for (auto& [_, up] : peers_) {
    peer_info i;
    i.config = up->cfg;
    i.state = up->slots[0].s ? up->slots[0].s->state() : session_state::idle;
    i.info = up->info;
    i.prefixes_received = rib_.paths_of(up->id);
    i.prefixes_sent = up->adj_out.size();
    i.stale = rib_.stale_of(up->id);
    i.filtered = up->filtered.size();
    i.awaited = deferring_ && !up->initial_done;
    i.reflected_back = up->reflected_back;
    for (auto& f : up->cfg.filters)
      if (!f.exists && i.info.empty()) i.info = "BGPFilter " + f.name + " not found: not applied";
    v.push_back(std::move(i));
  }
  return v;
}

std::map<ip_prefix, path_attributes> speaker::adj_rib_out(std::string_view name) const {
  std::map<ip_prefix, path_attributes> m;
  auto it = peers_.find(name);
  if (it == peers_.end()) return m;
  for (auto& [pfx, a] : it->second->adj_out) m[pfx] = *a;
  return m;
}

}  // namespace bgp
CNF_END_NAMESPACE
