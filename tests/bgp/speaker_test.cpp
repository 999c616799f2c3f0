// Whole speakers wired to each other by a simulated network (a queue of deliveries): the
// decision process, iBGP split horizon, next-hop self, route reflection, ECMP, loops,
// collisions and timers. No sockets, no clock.
#include <cnf/bgp/speaker.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>

namespace bgp = cnf::bgp;
using bgp::session_state;

namespace {
cnf::ip_prefix pfx(const char* s) { return cnf::ip_prefix::parse(s).value(); }
cnf::ip_address ip(const char* s) { return cnf::ip_address::parse(s).value(); }

struct node {
  node(bgp::speaker_config c, cnf::ip_address a) : sp(std::move(c)), addr(a) {}
  bgp::speaker sp;
  cnf::ip_address addr;
  std::map<cnf::ip_prefix, std::vector<cnf::ip_address>> routes;
  std::map<std::string, bgp::out::peer_state> peers;
  std::vector<std::string> logs;
  std::vector<std::string> debug_logs;  // the ones logged at debug level
  std::set<bgp::timer_id> timers;
  std::map<bgp::timer_id, std::chrono::milliseconds> timer_after;  // each timer's duration when started
  std::vector<bgp::message> sent;  // every message this node sent
  std::vector<std::string> complete;  // out::initial_routes_complete reasons
  std::size_t eors_sent() const {
    return static_cast<std::size_t>(std::count_if(sent.begin(), sent.end(), [](auto& m) {
      auto* u = std::get_if<bgp::update_message>(&m);
      return u && u->end_of_rib();
    }));
  }
  bool announced(const cnf::ip_prefix& p) const {  // an UPDATE of this node carried p
    for (auto& m : sent)
      if (auto* u = std::get_if<bgp::update_message>(&m); u && std::find(u->nlri.begin(), u->nlri.end(), p) != u->nlri.end()) return true;
    return false;
  }
  template <class M> std::size_t sent_count() const {
    return static_cast<std::size_t>(std::count_if(sent.begin(), sent.end(), [](auto& m) { return std::holds_alternative<M>(m); }));
  }

  bool logged(std::string_view s) const {
    for (auto& l : logs)
      if (l.find(s) != std::string::npos) return true;
    return false;
  }
  std::vector<bgp::timer_id> timers_of(bgp::timer_kind k) const {
    std::vector<bgp::timer_id> v;
    for (auto t : timers)
      if (t % 4 == static_cast<bgp::timer_id>(k)) v.push_back(t);
    return v;
  }
};

struct fabric {
  std::vector<std::unique_ptr<node>> nodes;
  std::map<std::pair<std::size_t, bgp::conn_id>, std::pair<std::size_t, bgp::conn_id>> wires;
  std::deque<std::function<void()>> q;
  std::vector<std::tuple<std::size_t, bgp::conn_id, cnf::ip_address>> held;  // connects not yet completed
  bool hold_connects = false;
  bool trace = false;

  node& add(const char* address, std::uint32_t asn, std::optional<std::uint32_t> cluster = {}, const char* v6 = nullptr) {
    bgp::speaker_config c;
    c.asn = asn;
    c.router_id = ip(address).v4_host_order();
    c.hold_time = 90;
    c.cluster_id = cluster;
    c.local_addresses = {ip(address)};
    c.families = {bgp::ipv4_unicast};
    if (v6) {
      c.local_addresses.push_back(ip(v6));
      c.families.push_back(bgp::ipv6_unicast);
    }
    nodes.push_back(std::make_unique<node>(std::move(c), ip(address)));
    return *nodes.back();
  }
  std::size_t index(const node& n) const {
    for (std::size_t i = 0; i < nodes.size(); ++i)
      if (nodes[i].get() == &n) return i;
    return nodes.size();
  }
  std::optional<std::size_t> at(const cnf::ip_address& a) const {
    for (std::size_t i = 0; i < nodes.size(); ++i)
      if (nodes[i]->addr == a) return i;
    return std::nullopt;
  }

  void complete(std::size_t i, bgp::conn_id c) { nodes[i]->sp.connected(c, nodes[i]->addr); }
  void accept(std::size_t i, bgp::conn_id c, const cnf::ip_address& to) {
    auto j = at(to);
    if (!j) { nodes[i]->sp.connect_failed(c); return; }
    auto c2 = nodes[*j]->sp.accepted(nodes[i]->addr, to);
    wires[{i, c}] = {*j, c2};
    wires[{*j, c2}] = {i, c};
  }

  bool drain(std::size_t i) {
    auto& n = *nodes[i];
    auto acts = n.sp.take();
    for (auto& a : acts) {
      if (trace && std::holds_alternative<bgp::out::start_timer>(a)) std::printf("%zu timer %lu\n", i, (unsigned long)std::get<bgp::out::start_timer>(a).timer);
      if (trace) {
        if (auto* x = std::get_if<bgp::out::connect>(&a)) std::printf("%zu connect %lu\n", i, (unsigned long)x->conn);
        if (auto* x = std::get_if<bgp::out::close>(&a)) std::printf("%zu close %lu\n", i, (unsigned long)x->conn);
        if (auto* x = std::get_if<bgp::out::send>(&a)) std::printf("%zu send %lu type %d\n", i, (unsigned long)x->conn, x->data[18]);
        if (auto* x = std::get_if<bgp::out::peer_state>(&a)) std::printf("%zu state %s %s\n", i, std::string(to_string(x->state)).c_str(), x->info.c_str());
        if (auto* x = std::get_if<bgp::out::log>(&a)) std::printf("%zu log %s\n", i, x->message.c_str());
      }
      if (auto* x = std::get_if<bgp::out::connect>(&a)) {
        if (hold_connects) {
          held.emplace_back(i, x->conn, x->address);
        } else if (!at(x->address)) {
          auto c = x->conn;
          q.push_back([this, i, c] { nodes[i]->sp.connect_failed(c); });
        } else {
          // the connection completes on the initiator first, then the peer accepts it
          complete(i, x->conn);
          accept(i, x->conn, x->address);
        }
      } else if (auto* s = std::get_if<bgp::out::send>(&a)) {
        n.sent.push_back(std::get<bgp::message>(bgp::decode(s->data)));
        q.push_back([this, i, c = s->conn, d = s->data] {
          auto w = wires.find({i, c});
          if (w != wires.end()) nodes[w->second.first]->sp.received(w->second.second, d);
        });
      } else if (auto* cl = std::get_if<bgp::out::close>(&a)) {
        q.push_back([this, i, c = cl->conn] {
          auto w = wires.find({i, c});
          if (w == wires.end()) return;
          auto other = w->second;
          wires.erase(w);
          wires.erase(other);
          nodes[other.first]->sp.closed(other.second);
        });
      } else if (auto* t = std::get_if<bgp::out::start_timer>(&a)) {
        n.timers.insert(t->timer);
        n.timer_after[t->timer] = t->after;
      } else if (auto* st = std::get_if<bgp::out::stop_timer>(&a)) {
        n.timers.erase(st->timer);
      } else if (auto* r = std::get_if<bgp::out::route>(&a)) {
        if (r->next_hops.empty()) n.routes.erase(r->prefix);
        else n.routes[r->prefix] = r->next_hops;
      } else if (auto* p = std::get_if<bgp::out::peer_state>(&a)) {
        n.peers[p->name] = *p;
      } else if (auto* l = std::get_if<bgp::out::log>(&a)) {
        n.logs.push_back(l->message);
        if (l->debug) n.debug_logs.push_back(l->message);
      } else if (auto* c = std::get_if<bgp::out::initial_routes_complete>(&a)) {
        n.complete.push_back(c->reason);
      }
    }
    return !acts.empty();
  }

  void run() {
    for (int guard = 0; guard < 100000; ++guard) {
      bool any = false;
      for (std::size_t i = 0; i < nodes.size(); ++i) any |= drain(i);
      if (any) continue;
      if (q.empty()) return;
      auto f = std::move(q.front());
      q.pop_front();
      f();
    }
    FAIL("the fabric did not settle");
  }

  void fire(node& n, bgp::timer_kind k) {
    for (auto t : n.timers_of(k)) {
      if (trace) std::printf("fire %zu %lu\n", index(n), (unsigned long)t);
      n.timers.erase(t);
      n.sp.timer_fired(t);
    }
    run();
  }

  // The TCP connections of `n` break, with no NOTIFICATION either way.
  void cut(node& n) {
    std::vector<std::pair<std::pair<std::size_t, bgp::conn_id>, std::pair<std::size_t, bgp::conn_id>>> ends;
    for (auto& [k, v] : wires)
      if (nodes[k.first].get() == &n) ends.emplace_back(k, v);
    for (auto& [k, v] : ends) {
      wires.erase(k);
      wires.erase(v);
      nodes[k.first]->sp.closed(k.second);
      nodes[v.first]->sp.closed(v.second);
    }
    run();
  }

  void peer(node& a, node& b, const char* type = "node-to-node mesh", bool rr_client = false) {
    bgp::neighbor n;
    n.name = "peer-" + b.addr.to_string();
    n.address = b.addr;
    n.asn = b.sp.config().asn;
    n.type = type;
    n.rr_client = rr_client;
    a.sp.add_peer(n);
  }
  void mesh(std::initializer_list<node*> ns) {
    for (auto* a : ns)
      for (auto* b : ns)
        if (a != b) peer(*a, *b);
    run();
  }
};

std::string name(const node& n) { return "peer-" + n.addr.to_string(); }
}  // namespace

TEST_CASE("bgp speaker: an iBGP pair exchanges originated prefixes with next-hop self", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  f.mesh({&a, &b});
  CHECK(a.peers[name(b)].state == session_state::established);
  CHECK(b.peers[name(a)].state == session_state::established);

  a.sp.originate(pfx("10.244.1.0/26"));
  b.sp.originate(pfx("10.244.2.0/26"));
  f.run();
  CHECK(b.routes == std::map<cnf::ip_prefix, std::vector<cnf::ip_address>>{{pfx("10.244.1.0/26"), {a.addr}}});
  CHECK(a.routes == std::map<cnf::ip_prefix, std::vector<cnf::ip_address>>{{pfx("10.244.2.0/26"), {b.addr}}});
  auto out = a.sp.adj_rib_out(name(b));
  REQUIRE(out.count(pfx("10.244.1.0/26")));
  CHECK(out[pfx("10.244.1.0/26")].next_hop == a.addr);
  CHECK(out[pfx("10.244.1.0/26")].local_pref == 100u);
  CHECK(out[pfx("10.244.1.0/26")].as_path.empty());

  a.sp.withdraw(pfx("10.244.1.0/26"));
  f.run();
  CHECK(b.routes.count(pfx("10.244.1.0/26")) == 0);

  // A clean stop: Cease, and b drops a's routes at once (no hold timer wait).
  a.sp.originate(pfx("10.244.1.0/26"));
  f.run();
  CHECK(b.routes.size() == 1);
  a.sp.stop("node draining");
  f.run();
  CHECK(b.routes.empty());
  CHECK(a.routes.empty());
  CHECK(b.peers[name(a)].state != session_state::established);
  CHECK_THAT(b.peers[name(a)].info, Catch::Contains("Cease / Administrative Shutdown"));
}

TEST_CASE("bgp speaker: in a full iBGP mesh routes are not passed on (split horizon)", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  auto& c = f.add("10.0.0.3", 64512);
  f.mesh({&a, &b, &c});
  a.sp.originate(pfx("10.244.1.0/26"));
  f.run();
  CHECK(c.routes[pfx("10.244.1.0/26")] == std::vector{a.addr});
  CHECK(b.routes[pfx("10.244.1.0/26")] == std::vector{a.addr});
  CHECK(b.sp.adj_rib_out(name(c)).empty());
  CHECK(c.sp.adj_rib_out(name(b)).empty());
  CHECK(b.sp.table().paths_of(1) + b.sp.table().paths_of(2) == 1);  // one Adj-RIB-In path
}

TEST_CASE("bgp speaker: a route reflector passes client routes on with ORIGINATOR_ID and CLUSTER_LIST", "[unit][bgp]") {
  fabric f;
  auto& rr = f.add("10.0.0.1", 64512, 0x01010101);
  auto& c1 = f.add("10.0.0.2", 64512);
  auto& c2 = f.add("10.0.0.3", 64512);
  auto& nc = f.add("10.0.0.4", 64512);  // a non-client iBGP peer of the reflector
  f.peer(rr, c1, "global", true);
  f.peer(rr, c2, "global", true);
  f.peer(rr, nc, "global", false);
  f.peer(c1, rr, "global");
  f.peer(c2, rr, "global");
  f.peer(nc, rr, "global");
  f.run();
  c1.sp.originate(pfx("10.244.1.0/26"));
  nc.sp.originate(pfx("10.244.4.0/26"));
  f.run();
  // client route: to the other client and to the non-client, next hop kept
  CHECK(c2.routes[pfx("10.244.1.0/26")] == std::vector{c1.addr});
  CHECK(nc.routes[pfx("10.244.1.0/26")] == std::vector{c1.addr});
  auto out = rr.sp.adj_rib_out(name(c2));
  REQUIRE(out.count(pfx("10.244.1.0/26")));
  CHECK(out[pfx("10.244.1.0/26")].originator_id == c1.addr.v4_host_order());
  CHECK(out[pfx("10.244.1.0/26")].cluster_list == std::vector<std::uint32_t>{0x01010101});
  CHECK(rr.sp.adj_rib_out(name(c1)).count(pfx("10.244.1.0/26")) == 0);  // never back to the sender
  // non-client route: to clients only
  CHECK(c1.routes[pfx("10.244.4.0/26")] == std::vector{nc.addr});
  CHECK(c2.routes[pfx("10.244.4.0/26")] == std::vector{nc.addr});
  CHECK(rr.sp.adj_rib_out(name(nc)).count(pfx("10.244.4.0/26")) == 0);
}

TEST_CASE("bgp speaker: a client drops its own route reflected back (ORIGINATOR_ID)", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  f.mesh({&a, &b});
  // b plays a broken reflector: replay to a an UPDATE whose ORIGINATOR_ID is a's router id
  bgp::update_message u;
  u.has_attributes = true;
  u.attrs.next_hop = ip("10.0.0.7");
  u.attrs.local_pref = 100;
  u.attrs.originator_id = a.addr.v4_host_order();
  u.nlri = {pfx("10.244.9.0/26")};
  // find a's connection to b, and feed it as if b sent it
  for (auto& [k, v] : f.wires)
    if (f.nodes[k.first].get() == &a) {
      a.sp.received(k.second, bgp::encode(u));
      break;
    }
  f.run();
  CHECK(a.routes.count(pfx("10.244.9.0/26")) == 0);
  CHECK(a.logged("ORIGINATOR_ID is this speaker's router id"));
}

TEST_CASE("bgp speaker: eBGP, AS_PATH prepend, ECMP across equal paths, AS_PATH loop refused", "[unit][bgp]") {
  fabric f;
  auto& c = f.add("10.0.0.1", 64512);
  auto& x = f.add("10.0.0.2", 65001);
  auto& y = f.add("10.0.0.3", 65001);
  for (auto* e : {&x, &y}) {
    f.peer(c, *e, "global");
    f.peer(*e, c, "global");
  }
  f.run();
  x.sp.originate(pfx("192.0.2.0/24"));
  y.sp.originate(pfx("192.0.2.0/24"));
  c.sp.originate(pfx("10.244.1.0/26"));
  f.run();
  // equal LOCAL_PREF, AS_PATH, ORIGIN, MED, both eBGP: one route, two next hops
  REQUIRE(c.routes.count(pfx("192.0.2.0/24")));
  auto nhs = c.routes[pfx("192.0.2.0/24")];
  std::sort(nhs.begin(), nhs.end());
  CHECK(nhs == std::vector{x.addr, y.addr});
  // c's prefix reaches x with c's AS prepended, next hop c
  auto out = c.sp.adj_rib_out(name(x));
  REQUIRE(out.count(pfx("10.244.1.0/26")));
  CHECK(out[pfx("10.244.1.0/26")].as_path == std::vector<bgp::as_segment>{{bgp::as_segment::kind::sequence, {64512}}});
  CHECK(!out[pfx("10.244.1.0/26")].local_pref);
  CHECK(x.routes[pfx("10.244.1.0/26")] == std::vector{c.addr});
  // x's path (the best: lower router id) re-advertised by c to y carries 64512 65001: y refuses the loop
  CHECK(y.logged("AS_PATH loop"));
  CHECK(y.routes.count(pfx("192.0.2.0/24")) == 0);  // its own prefix stays its own

  y.sp.withdraw(pfx("192.0.2.0/24"));
  f.run();
  CHECK(c.routes[pfx("192.0.2.0/24")] == std::vector{x.addr});
  x.sp.withdraw(pfx("192.0.2.0/24"));
  f.run();
  CHECK(c.routes.count(pfx("192.0.2.0/24")) == 0);
}

TEST_CASE("bgp speaker: a wrong AS is refused with a logged reason", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 65099);
  bgp::neighbor n{.name = "b", .address = b.addr, .asn = 64513};  // configured with the wrong AS
  a.sp.add_peer(n);
  f.peer(b, a, "global");
  f.run();
  CHECK(a.peers["b"].state != session_state::established);
  CHECK(a.logged("Bad Peer AS"));
  CHECK(a.logged("65099"));
  bool sent_bad_peer_as = false;
  for (auto& m : a.sent)
    if (auto* nm = std::get_if<bgp::notification_message>(&m)) sent_bad_peer_as |= nm->code == 2 && nm->subcode == 2;
  CHECK(sent_bad_peer_as);
}

TEST_CASE("bgp speaker: a 2-octet AS peer gets AS_TRANS and AS4_PATH; its AS4_PATH is merged (RFC 6793)", "[unit][bgp]") {
  bgp::speaker_config c;
  c.asn = 4200000001u;
  c.router_id = ip("10.0.0.1").v4_host_order();
  c.local_addresses = {ip("10.0.0.1")};
  c.families = {bgp::ipv4_unicast};
  bgp::speaker sp(c);
  sp.add_peer(bgp::neighbor{.name = "old", .address = ip("10.0.0.9"), .asn = 65001, .type = "global"});
  sp.originate(pfx("10.244.1.0/26"));
  std::vector<bgp::bytes> sent;
  std::vector<std::string> logs;
  std::map<cnf::ip_prefix, std::vector<cnf::ip_address>> routes;
  std::optional<bgp::conn_id> conn;
  auto drain = [&] {
    for (auto& a : sp.take()) {
      if (auto* x = std::get_if<bgp::out::connect>(&a)) conn = x->conn;
      else if (auto* s = std::get_if<bgp::out::send>(&a)) sent.push_back(s->data);
      else if (auto* l = std::get_if<bgp::out::log>(&a)) logs.push_back(l->message);
      else if (auto* r = std::get_if<bgp::out::route>(&a)) routes[r->prefix] = r->next_hops;
    }
  };
  drain();
  REQUIRE(conn);
  sp.connected(*conn, ip("10.0.0.1"));
  // The old speaker's OPEN: no 4-octet AS capability
  bgp::open_message o;
  o.asn = 65001;
  o.router_id = ip("10.0.0.9").v4_host_order();
  o.four_octet_as = false;
  sp.received(*conn, bgp::encode(o, {false}));
  sp.received(*conn, bgp::encode(bgp::keepalive_message{}, {false}));
  drain();
  REQUIRE(sp.peers().front().state == session_state::established);
  // What it sent: AS_TRANS in OPEN and in AS_PATH, the real path in AS4_PATH
  REQUIRE(!sent.empty());
  CHECK(sent.front()[18] == 1);
  CHECK((sent.front()[20] << 8 | sent.front()[21]) == bgp::as_trans);
  auto contains = [&](const bgp::bytes& b, const bgp::bytes& what) { return std::search(b.begin(), b.end(), what.begin(), what.end()) != b.end(); };
  const bgp::bytes as_path_trans{0x40, 2, 4, 2, 1, 0x5b, 0xa0}, as4_path{0xc0, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x01};
  CHECK(std::any_of(sent.begin(), sent.end(), [&](auto& b) { return b[18] == 2 && contains(b, as_path_trans) && contains(b, as4_path); }));

  // Its routes: AS_PATH 65001 23456 with AS4_PATH 65001 4200000099 (a path), 65001 23456
  // with AS4_PATH 65001 4200000001 (this speaker's own AS: a loop once merged)
  auto update = [&](const char* prefix, std::uint32_t asn) {
    bgp::update_message u;
    u.has_attributes = true;
    u.attrs.as_path = {{bgp::as_segment::kind::sequence, {65001, asn}}};
    u.attrs.next_hop = ip("10.0.0.9");
    u.nlri = {pfx(prefix)};
    return bgp::encode(u, {false});
  };
  CHECK(contains(update("192.0.2.0/24", 4200000099u), {0x40, 2, 6, 2, 2, 0xfd, 0xe9, 0x5b, 0xa0}));
  sp.received(*conn, update("192.0.2.0/24", 4200000099u));
  sp.received(*conn, update("198.51.100.0/24", 4200000001u));
  drain();
  CHECK(routes[pfx("192.0.2.0/24")] == std::vector{ip("10.0.0.9")});
  CHECK(routes.count(pfx("198.51.100.0/24")) == 0);
  CHECK(std::any_of(logs.begin(), logs.end(), [](auto& l) { return l.find("198.51.100.0/24): AS_PATH loop") != std::string::npos; }));
}

TEST_CASE("bgp speaker: a connection collision leaves one session, by BGP identifier", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.2", 64512);  // the higher identifier: its outgoing connection wins
  auto& b = f.add("10.0.0.1", 64512);
  f.hold_connects = true;
  f.peer(a, b);
  f.peer(b, a);
  f.run();
  REQUIRE(f.held.size() == 2);
  auto held = std::move(f.held);
  f.hold_connects = false;
  for (auto& [i, c, to] : held) f.complete(i, c);
  for (auto& [i, c, to] : held) f.accept(i, c, to);
  f.run();
  CHECK(a.peers[name(b)].state == session_state::established);
  CHECK(b.peers[name(a)].state == session_state::established);
  CHECK(a.logged("connection collision"));
  CHECK(f.wires.size() == 2);  // one connection left, both ends
  a.sp.originate(pfx("10.244.1.0/26"));
  f.run();
  CHECK(b.routes.count(pfx("10.244.1.0/26")) == 1);
  // the survivor is the connection a opened: a's end of it is one a asked for
  bool a_initiated = false;
  for (auto& [i, c, to] : held)
    if (f.nodes[i].get() == &a) a_initiated = f.wires.count({i, c}) == 1;
  CHECK(a_initiated);
}

TEST_CASE("bgp speaker: hold timer expiry drops the peer's routes; connect-retry brings it back", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  f.mesh({&a, &b});
  a.sp.originate(pfx("10.244.1.0/26"));
  f.run();
  REQUIRE(b.routes.size() == 1);
  f.fire(b, bgp::timer_kind::hold);
  CHECK(b.routes.empty());
  CHECK(b.peers[name(a)].state == session_state::idle);
  CHECK_THAT(b.peers[name(a)].info, Catch::Contains("Hold Timer Expired"));
  CHECK_THAT(a.peers[name(b)].info, Catch::Contains("Hold Timer Expired"));
  f.fire(b, bgp::timer_kind::connect_retry);
  f.fire(a, bgp::timer_kind::connect_retry);
  CHECK(b.peers[name(a)].state == session_state::established);
  CHECK(a.peers[name(b)].state == session_state::established);
  CHECK(b.routes.size() == 1);
  CHECK(f.wires.size() == 2);  // one connection, both ends
}

TEST_CASE("bgp speaker: removing a peer sends Cease and withdraws what it taught", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  f.mesh({&a, &b});
  b.sp.originate(pfx("10.244.2.0/26"));
  f.run();
  REQUIRE(a.routes.size() == 1);
  a.sp.remove_peer(name(b));
  f.run();
  CHECK(a.routes.empty());
  CHECK(a.sp.peers().empty());
  CHECK(b.peers[name(a)].state != session_state::established);
  CHECK_THAT(b.peers[name(a)].info, Catch::Contains("Peer De-configured"));
}

TEST_CASE("bgp decision: each step in order", "[unit][bgp]") {
  auto mk = [](auto f) {
    bgp::path p;
    p.from = 1;
    p.peer_address = ip("10.0.0.9");
    p.peer_router_id = 9;
    auto a = std::make_shared<bgp::path_attributes>();
    a->local_pref = 100;
    a->as_path = {{bgp::as_segment::kind::sequence, {65001}}};
    f(p, *a);
    p.attrs = a;
    return p;
  };
  auto base = mk([](auto&, auto&) {});
  bgp::decision_step s;
  auto better = [&](const bgp::path& x) { return bgp::compare(x, base, &s) < 0; };
  CHECK(better(mk([](auto&, auto& a) { a.local_pref = 200; })));
  CHECK(s == bgp::decision_step::local_pref);
  CHECK(better(mk([](auto&, auto& a) { a.as_path = {}; })));
  CHECK(s == bgp::decision_step::as_path);
  CHECK(!better(mk([](auto&, auto& a) { a.origin = bgp::origin_type::incomplete; })));
  CHECK(s == bgp::decision_step::origin);
  CHECK(!better(mk([](auto&, auto& a) { a.med = 10; })));
  CHECK(s == bgp::decision_step::med);
  CHECK(better(mk([](auto& p, auto&) { p.ebgp = true; })));
  CHECK(s == bgp::decision_step::ebgp);
  CHECK(better(mk([](auto& p, auto&) { p.peer_router_id = 1; })));
  CHECK(s == bgp::decision_step::router_id);
  CHECK(better(mk([](auto& p, auto&) { p.peer_address = ip("10.0.0.1"); })));
  CHECK(s == bgp::decision_step::peer_address);
  // MED is compared only between paths from the same neighbouring AS
  auto other_as = mk([](auto&, auto& a) { a.med = 10; a.as_path = {{bgp::as_segment::kind::sequence, {65002}}}; });
  bgp::compare(other_as, base, &s);
  CHECK(s != bgp::decision_step::med);
  // multipath: equal through the eBGP step, whatever the router id
  CHECK(bgp::multipath_equal(base, mk([](auto& p, auto&) { p.peer_router_id = 1; p.from = 2; })));
  CHECK(!bgp::multipath_equal(base, mk([](auto&, auto& a) { a.med = 5; })));
}

TEST_CASE("bgp speaker: IPv6 prefixes over an IPv4 session (MP_REACH_NLRI, next-hop self of the v6 address)", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512, {}, "fd00::1");
  auto& b = f.add("10.0.0.2", 64512, {}, "fd00::2");
  auto& c = f.add("10.0.0.3", 64512);  // IPv4 only: negotiates no IPv6
  f.mesh({&a, &b, &c});
  a.sp.originate(pfx("fd00:244:1::/64"));
  a.sp.originate(pfx("10.244.1.0/26"));
  f.run();
  CHECK(b.routes[pfx("fd00:244:1::/64")] == std::vector{ip("fd00::1")});
  CHECK(b.routes[pfx("10.244.1.0/26")] == std::vector{a.addr});
  CHECK(c.routes.count(pfx("fd00:244:1::/64")) == 0);
  CHECK(c.routes[pfx("10.244.1.0/26")] == std::vector{a.addr});
  bool mp = false;
  for (auto& m : a.sent)
    if (auto* u = std::get_if<bgp::update_message>(&m))
      if (u->reach && u->reach->nlri == std::vector{pfx("fd00:244:1::/64")}) mp = u->reach->next_hops == std::vector{ip("fd00::1")};
  CHECK(mp);
  a.sp.withdraw(pfx("fd00:244:1::/64"));
  f.run();
  CHECK(b.routes.count(pfx("fd00:244:1::/64")) == 0);
}

TEST_CASE("bgp speaker: route refresh resends the Adj-RIB-Out; End-of-RIB after the initial table", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  a.sp.originate(pfx("10.244.1.0/26"));
  f.mesh({&a, &b});
  CHECK(b.routes.count(pfx("10.244.1.0/26")) == 1);
  auto updates_with = [&](const node& n) {
    int k = 0;
    for (auto& m : n.sent)
      if (auto* u = std::get_if<bgp::update_message>(&m))
        if (u->nlri == std::vector{pfx("10.244.1.0/26")}) ++k;
    return k;
  };
  bool eor = false;
  for (auto& m : a.sent)
    if (auto* u = std::get_if<bgp::update_message>(&m)) eor |= u->end_of_rib() == bgp::ipv4_unicast;
  CHECK(eor);
  CHECK(updates_with(a) == 1);
  for (auto& [k, v] : f.wires)
    if (f.nodes[k.first].get() == &a) {
      a.sp.received(k.second, bgp::encode(bgp::route_refresh_message{bgp::ipv4_unicast}));
      break;
    }
  f.run();
  CHECK(updates_with(a) == 2);
}

TEST_CASE("bgp speaker: graceful restart helper keeps a peer's routes stale until its End-of-RIB", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  f.mesh({&a, &b});
  b.sp.originate(pfx("10.244.2.0/26"));
  b.sp.originate(pfx("10.244.3.0/26"));
  f.run();
  REQUIRE(a.routes.size() == 2);
  f.cut(b);  // b "restarts": the connection is gone, no NOTIFICATION
  CHECK(a.routes.size() == 2);  // kept, stale
  CHECK(a.sp.peers().front().stale == 2);
  CHECK(a.logged("graceful restart"));
  CHECK(!a.timers_of(bgp::timer_kind(3)).empty());
  // b comes back without one of its prefixes: after its End-of-RIB only the other remains
  b.sp.withdraw(pfx("10.244.3.0/26"));
  f.fire(a, bgp::timer_kind::connect_retry);
  f.fire(b, bgp::timer_kind::connect_retry);
  REQUIRE(a.peers[name(b)].state == session_state::established);
  CHECK(a.routes.count(pfx("10.244.2.0/26")) == 1);
  CHECK(a.routes.count(pfx("10.244.3.0/26")) == 0);
  CHECK(a.sp.peers().front().stale == 0);
  CHECK(a.timers_of(bgp::timer_kind(3)).empty());
}

TEST_CASE("bgp speaker: stale routes go when the peer's restart time is over", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  f.mesh({&a, &b});
  b.sp.originate(pfx("10.244.2.0/26"));
  f.run();
  f.cut(b);
  REQUIRE(a.routes.size() == 1);
  f.fire(a, bgp::timer_kind(3));
  CHECK(a.routes.empty());
  CHECK(a.logged("graceful restart time over"));
}

TEST_CASE("bgp speaker: without graceful restart a lost connection drops the routes at once", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  (void)a;
  bgp::speaker_config c = b.sp.config();
  c.restart_time = 0;  // b does not offer graceful restart
  f.nodes[1] = std::make_unique<node>(c, b.addr);
  auto& b2 = *f.nodes[1];
  f.mesh({f.nodes[0].get(), &b2});
  b2.sp.originate(pfx("10.244.2.0/26"));
  f.run();
  REQUIRE(f.nodes[0]->routes.size() == 1);
  f.cut(b2);
  CHECK(f.nodes[0]->routes.empty());
}

// ---- BGPFilter (import and export rules per peer) and maxRestartTime ----

namespace {
cnf::route_filter_rule rule(cnf::filter_action a, cnf::filter_match m, const char* cidr) {
  cnf::route_filter_rule r;
  r.action = a;
  r.match = m;
  r.cidr = pfx(cidr);
  return r;
}
bgp::neighbor neighbor_of(node& b, std::vector<cnf::route_filter> filters = {}) {
  bgp::neighbor n;
  n.name = name(b);
  n.address = b.addr;
  n.asn = b.sp.config().asn;
  n.type = "node-to-node mesh";  // as fabric::peer made it: only the filters differ
  n.filters = std::move(filters);
  return n;
}
}  // namespace

TEST_CASE("bgp speaker: an import filter keeps a peer's rejected paths and lets them in again live", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64513);
  f.mesh({&a, &b});
  b.sp.originate(pfx("10.244.2.0/26"));
  b.sp.originate(pfx("10.244.3.0/26"));
  b.sp.originate(pfx("10.9.0.0/16"));
  f.run();
  REQUIRE(a.routes.size() == 3);
  const auto opens = a.sent_count<bgp::open_message>();
  const auto b_updates = b.sent_count<bgp::update_message>();

  // Reject what is inside 10.244.2.0/24 from /24 to /28; the rest falls to no rule: Accept.
  cnf::route_filter flt;
  flt.name = "no-rack2";
  auto r = rule(cnf::filter_action::reject, cnf::filter_match::in, "10.244.2.0/24");
  r.max_length = 28;
  flt.import_v4 = {r};
  a.sp.add_peer(neighbor_of(b, {flt}));
  f.run();
  CHECK(a.routes.count(pfx("10.244.2.0/26")) == 0);
  CHECK(a.routes.count(pfx("10.244.3.0/26")) == 1);
  CHECK(a.routes.count(pfx("10.9.0.0/16")) == 1);
  CHECK(a.sp.peers().front().filtered == 1);
  CHECK(a.sp.peers().front().prefixes_received == 2);
  // the peer re-sending the same prefix: still rejected
  b.sp.withdraw(pfx("10.244.2.0/26"));
  b.sp.originate(pfx("10.244.2.0/26"));
  f.run();
  CHECK(a.routes.count(pfx("10.244.2.0/26")) == 0);
  CHECK(a.sp.peers().front().filtered == 1);

  // The filter goes: the kept path comes back from a's own Adj-RIB-In, b is not asked again.
  const auto b_updates2 = b.sent_count<bgp::update_message>();
  a.sp.add_peer(neighbor_of(b));
  f.run();
  CHECK(a.routes.count(pfx("10.244.2.0/26")) == 1);
  CHECK(a.sp.peers().front().filtered == 0);
  CHECK(b.sent_count<bgp::update_message>() == b_updates2);
  // Neither change touched the session.
  CHECK(a.sent_count<bgp::open_message>() == opens);
  CHECK(a.sent_count<bgp::notification_message>() == 0);
  CHECK(a.peers[name(b)].state == session_state::established);
  CHECK(b_updates < b.sent_count<bgp::update_message>());
  CHECK(a.logged("import filters changed"));
}

TEST_CASE("bgp speaker: an export filter withdraws from that peer only, and sends again when it goes", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  auto& c = f.add("10.0.0.3", 64512);
  f.mesh({&a, &b, &c});
  a.sp.originate(pfx("10.244.1.0/26"));
  a.sp.originate(pfx("10.244.1.64/26"));
  f.run();
  REQUIRE(b.routes.size() == 2);
  REQUIRE(c.routes.size() == 2);
  const auto opens = a.sent_count<bgp::open_message>();

  cnf::route_filter flt;
  flt.name = "keep-first-block";
  flt.export_v4 = {rule(cnf::filter_action::reject, cnf::filter_match::equal, "10.244.1.0/26")};
  a.sp.add_peer(neighbor_of(b, {flt}));
  f.run();
  CHECK(b.routes.count(pfx("10.244.1.0/26")) == 0);
  CHECK(b.routes.count(pfx("10.244.1.64/26")) == 1);
  CHECK(c.routes.size() == 2);  // c's peering has no filter
  CHECK(a.sp.adj_rib_out(name(b)).count(pfx("10.244.1.0/26")) == 0);

  // NotEqual + Accept first, then a catch-all Reject: only the first block leaves.
  cnf::route_filter only;
  only.name = "only-first";
  cnf::route_filter_rule all;
  all.action = cnf::filter_action::reject;
  only.export_v4 = {rule(cnf::filter_action::accept, cnf::filter_match::equal, "10.244.1.0/26"), all};
  a.sp.add_peer(neighbor_of(b, {only}));
  f.run();
  CHECK(b.routes.count(pfx("10.244.1.0/26")) == 1);
  CHECK(b.routes.count(pfx("10.244.1.64/26")) == 0);

  a.sp.add_peer(neighbor_of(b));
  f.run();
  CHECK(b.routes.size() == 2);
  CHECK(a.sent_count<bgp::open_message>() == opens);
  CHECK(b.peers[name(a)].state == session_state::established);
  CHECK(a.sent_count<bgp::notification_message>() == 0);
}

TEST_CASE("bgp speaker: a filter that does not exist is not applied, and says so", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  cnf::route_filter missing;
  missing.name = "typo";
  missing.exists = false;
  bgp::neighbor n = neighbor_of(b, {missing});
  a.sp.add_peer(n);
  f.peer(b, a);
  f.run();
  b.sp.originate(pfx("10.244.2.0/26"));
  f.run();
  CHECK(a.routes.size() == 1);
  CHECK(a.logged("BGPFilter typo does not exist"));
  CHECK_THAT(a.sp.peers().front().info, Catch::Contains("BGPFilter typo not found"));
}

TEST_CASE("bgp speaker: maxRestartTime is advertised to that peer and bounds how long its routes stay stale", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  bgp::neighbor n = neighbor_of(b);
  n.max_restart_time = 7;
  a.sp.add_peer(n);
  f.peer(b, a);
  f.run();
  REQUIRE(a.peers[name(b)].state == session_state::established);
  bool seen = false;
  for (auto& m : a.sent)
    if (auto* o = std::get_if<bgp::open_message>(&m); o && o->restart) {
      CHECK(o->restart->restart_time == 7);
      seen = true;
    }
  CHECK(seen);
  for (auto& m : b.sent)  // b's own default
    if (auto* o = std::get_if<bgp::open_message>(&m); o && o->restart) CHECK(o->restart->restart_time == 120);
  b.sp.originate(pfx("10.244.2.0/26"));
  f.run();
  f.cut(b);
  REQUIRE(a.routes.size() == 1);  // stale, kept
  auto t = a.timers_of(bgp::timer_kind(3));
  REQUIRE(t.size() == 1);
  CHECK(a.timer_after[t.front()] == std::chrono::seconds(7));  // not the 120 s b advertised
  CHECK(a.logged("maxRestartTime"));

  // A change of it alone does not reset the session (it applies to the next one).
  f.fire(a, bgp::timer_kind(3));
  CHECK(a.routes.empty());
  f.fire(a, bgp::timer_kind::connect_retry);
  f.fire(b, bgp::timer_kind::connect_retry);
  REQUIRE(a.peers[name(b)].state == session_state::established);
  const auto opens = a.sent_count<bgp::open_message>();
  n.max_restart_time = 30;
  a.sp.add_peer(n);
  f.run();
  CHECK(a.sent_count<bgp::open_message>() == opens);
  CHECK(a.peers[name(b)].state == session_state::established);
}

TEST_CASE("bgp speaker: a filter change during a peer's graceful restart does not bring stale paths back later", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  f.mesh({&a, &b});
  b.sp.originate(pfx("10.244.2.0/26"));
  f.run();
  f.cut(b);
  REQUIRE(a.routes.size() == 1);  // stale
  cnf::route_filter flt;
  flt.name = "no-2";
  flt.import_v4 = {rule(cnf::filter_action::reject, cnf::filter_match::equal, "10.244.2.0/26")};
  a.sp.add_peer(neighbor_of(b, {flt}));
  f.run();
  CHECK(a.routes.empty());
  a.sp.add_peer(neighbor_of(b));  // the filter goes before b is back: the stale path stays gone
  f.run();
  CHECK(a.routes.empty());
  CHECK(a.sp.peers().front().filtered == 0);
  f.fire(a, bgp::timer_kind::connect_retry);
  f.fire(b, bgp::timer_kind::connect_retry);
  REQUIRE(a.peers[name(b)].state == session_state::established);
  CHECK(a.routes.size() == 1);  // re-sent by b
}

TEST_CASE("bgp speaker: a graceful stop closes without Cease; the restarted speaker sets the R bit", "[unit][bgp]") {
  fabric f;
  auto& a = f.add("10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  f.mesh({&a, &b});
  a.sp.originate(pfx("10.244.1.0/26"));
  f.run();
  REQUIRE(b.routes.size() == 1);
  a.sp.stop("agent restarting", true);
  f.run();
  CHECK(a.sent_count<bgp::notification_message>() == 0);
  CHECK(b.routes.size() == 1);  // b, as helper, keeps a's route stale
  CHECK(b.sp.peers().front().stale == 1);
  CHECK(b.logged("graceful restart"));

  // a "restarts": a new speaker with the R bit; b takes it back, a's End-of-RIB ends b's stale time.
  bgp::speaker_config c = a.sp.config();
  c.restarting = true;
  f.wires.clear();
  f.nodes[0] = std::make_unique<node>(c, a.addr);
  auto& a2 = *f.nodes[0];
  f.peer(a2, b);
  a2.sp.originate(pfx("10.244.1.0/26"));
  f.run();
  f.fire(b, bgp::timer_kind::connect_retry);
  REQUIRE(b.peers[name(a2)].state == session_state::established);
  bool r_bit = false;
  for (auto& m : a2.sent)
    if (auto* o = std::get_if<bgp::open_message>(&m); o && o->restart) {
      r_bit = o->restart->restart_state;
      REQUIRE(!o->restart->families.empty());
      CHECK(o->restart->families.front().forwarding_preserved);
    }
  CHECK(r_bit);
  CHECK(b.routes.size() == 1);
  CHECK(b.sp.peers().front().stale == 0);
  // The restart window ends: sessions opened from then on have no R bit.
  REQUIRE(a2.timers_of(bgp::timer_kind(3)).size() == 1);
  f.fire(a2, bgp::timer_kind(3));
  CHECK(!a2.sp.config().restarting);
  CHECK(a2.logged("graceful restart window over"));

  // Without graceful restart agreed, a graceful stop still sends the Cease.
  fabric g;
  auto& x = g.add("10.0.0.1", 64512);
  bgp::speaker_config yc;
  yc.asn = 64512;
  yc.router_id = ip("10.0.0.2").v4_host_order();
  yc.local_addresses = {ip("10.0.0.2")};
  yc.families = {bgp::ipv4_unicast};
  yc.restart_time = 0;
  g.nodes.push_back(std::make_unique<node>(yc, ip("10.0.0.2")));
  auto& y = *g.nodes.back();
  g.mesh({&x, &y});
  x.sp.stop("bye", true);
  g.run();
  CHECK(x.sent_count<bgp::notification_message>() == 1);
}

namespace {
// A speaker at `address` that has just restarted gracefully (RFC 4724 restarting speaker).
node& add_restarting(fabric& f, const char* address, std::uint32_t asn) {
  auto& n = f.add(address, asn);
  bgp::speaker_config c = n.sp.config();
  c.restarting = true;
  f.nodes.back() = std::make_unique<node>(c, n.addr);
  return *f.nodes.back();
}
}  // namespace

TEST_CASE("bgp speaker: a restarting speaker defers selection and its UPDATEs until every peer's End-of-RIB", "[unit][bgp]") {
  fabric f;
  auto& a = add_restarting(f, "10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  auto& c = f.add("10.0.0.3", 64512);
  REQUIRE(a.sp.deferring());
  b.sp.originate(pfx("10.244.2.0/26"));
  c.sp.originate(pfx("10.244.3.0/26"));
  a.sp.originate(pfx("10.244.1.0/26"));
  f.peer(a, b);
  f.peer(a, c);
  f.peer(b, a);  // c does not know a yet: its session waits
  f.run();
  REQUIRE(a.peers[name(b)].state == session_state::established);
  REQUIRE(a.peers[name(c)].state != session_state::established);
  // b's table and End-of-RIB are in a's RIB, but nothing is selected for the host or sent.
  CHECK(a.sp.table().entries().size() == 2);
  CHECK(a.routes.empty());
  CHECK(a.complete.empty());
  CHECK(!a.announced(pfx("10.244.1.0/26")));
  CHECK(a.eors_sent() == 0);
  CHECK(b.routes.empty());
  CHECK(a.logged("peer " + name(b) + ": End-of-RIB received (1 path(s))"));
  auto awaited = [&] {
    std::vector<std::string> v;
    for (auto& p : a.sp.peers())
      if (p.awaited) v.push_back(p.config.name);
    return v;
  };
  CHECK(awaited() == std::vector<std::string>{name(c)});

  // c comes up and sends its End-of-RIB: selection runs once, then UPDATEs and End-of-RIB go out.
  f.peer(c, a);
  f.fire(a, bgp::timer_kind::connect_retry);
  REQUIRE(a.peers[name(c)].state == session_state::established);
  CHECK(!a.sp.deferring());
  REQUIRE(a.complete.size() == 1);
  CHECK(a.complete.front() == "End-of-RIB from every graceful-restart peer");
  CHECK(a.routes.size() == 2);
  CHECK(b.routes.count(pfx("10.244.1.0/26")) == 1);
  CHECK(c.routes.count(pfx("10.244.1.0/26")) == 1);
  CHECK(a.eors_sent() == 2);  // one per peer, after its UPDATE
  CHECK(awaited().empty());
  // Later changes flow at once, and no second completion is reported.
  b.sp.originate(pfx("10.244.9.0/26"));
  f.run();
  CHECK(a.routes.count(pfx("10.244.9.0/26")) == 1);
  CHECK(a.complete.size() == 1);
}

TEST_CASE("bgp speaker: selection deferral ends at the restart time without a silent peer's End-of-RIB", "[unit][bgp]") {
  fabric f;
  auto& a = add_restarting(f, "10.0.0.1", 64512);
  auto& b = f.add("10.0.0.2", 64512);
  b.sp.originate(pfx("10.244.2.0/26"));
  a.sp.originate(pfx("10.244.1.0/26"));
  f.peer(a, b);
  bgp::neighbor gone;  // configured, never answers
  gone.name = "gone";
  gone.address = ip("10.0.0.9");
  gone.asn = 64512;
  a.sp.add_peer(gone);
  f.peer(b, a);
  f.run();
  REQUIRE(a.peers[name(b)].state == session_state::established);
  CHECK(a.sp.deferring());
  CHECK(a.routes.empty());
  // The one timer of kind 3 is the restart window: its end bounds the deferral.
  REQUIRE(a.timers_of(bgp::timer_kind(3)).size() == 1);
  CHECK(a.timer_after[a.timers_of(bgp::timer_kind(3)).front()] == std::chrono::seconds(120));
  f.fire(a, bgp::timer_kind(3));
  CHECK(!a.sp.deferring());
  REQUIRE(a.complete.size() == 1);
  CHECK(a.complete.front() == "selection deferral time over (120 s), no End-of-RIB from gone");
  CHECK(a.routes.count(pfx("10.244.2.0/26")) == 1);
  CHECK(b.routes.count(pfx("10.244.1.0/26")) == 1);
  CHECK(a.eors_sent() == 1);
}

TEST_CASE("bgp speaker: selection deferral does not wait for a peer without graceful restart, nor for one restarting too", "[unit][bgp]") {
  fabric f;
  auto& a = add_restarting(f, "10.0.0.1", 64512);
  // b offers no graceful restart; c restarts as well (its OPEN has the R bit).
  bgp::speaker_config bc;
  bc.asn = 64512;
  bc.router_id = ip("10.0.0.2").v4_host_order();
  bc.local_addresses = {ip("10.0.0.2")};
  bc.families = {bgp::ipv4_unicast};
  bc.restart_time = 0;
  f.nodes.push_back(std::make_unique<node>(bc, ip("10.0.0.2")));
  auto& b = *f.nodes.back();
  auto& c = add_restarting(f, "10.0.0.3", 64512);
  b.sp.originate(pfx("10.244.2.0/26"));
  a.sp.originate(pfx("10.244.1.0/26"));
  f.mesh({&a, &b, &c});
  REQUIRE(a.peers[name(b)].state == session_state::established);
  REQUIRE(a.peers[name(c)].state == session_state::established);
  CHECK(a.logged("peer " + name(b) + ": no graceful restart capability: route selection does not wait for its End-of-RIB"));
  CHECK(a.logged("peer " + name(c) + ": restarting too (R bit): route selection does not wait for its End-of-RIB"));
  REQUIRE(a.complete.size() == 1);
  CHECK(a.routes.count(pfx("10.244.2.0/26")) == 1);
  CHECK(b.routes.count(pfx("10.244.1.0/26")) == 1);
  CHECK(c.routes.count(pfx("10.244.1.0/26")) == 1);
  CHECK(c.routes.count(pfx("10.244.2.0/26")) == 1);
}

TEST_CASE("bgp speaker: originated prefixes carry their communities; new ones are sent again live, reflected routes keep theirs", "[unit][bgp]") {
  fabric f;
  auto& rr = f.add("10.0.0.1", 64512, 0x01010101);
  auto& c1 = f.add("10.0.0.2", 64512);
  auto& c2 = f.add("10.0.0.3", 64512);
  auto& x = f.add("10.0.0.9", 65001);  // eBGP peer of the reflector
  f.peer(rr, c1, "global", true);
  f.peer(rr, c2, "global", true);
  f.peer(c1, rr, "global");
  f.peer(c2, rr, "global");
  f.peer(rr, x, "global");
  f.peer(x, rr, "global");
  f.run();
  const auto p = pfx("10.244.1.0/26");
  c1.sp.originate(p, {65000u << 16 | 100}, {{65000, 300, 100}});
  rr.sp.originate(pfx("10.244.0.0/26"), {65000u << 16 | 7});
  f.run();
  auto attrs_at = [&](node& n, const cnf::ip_prefix& q) {
    auto best = n.sp.table().best(q);
    REQUIRE(!best.empty());
    return *best.front().attrs;
  };
  // c1's communities reach c2 through the reflector untouched, and x over eBGP; the reflector's own go to all.
  CHECK(attrs_at(c2, p).communities == std::vector<std::uint32_t>{65000u << 16 | 100});
  CHECK(attrs_at(c2, p).large_communities == std::vector<bgp::large_community>{{65000, 300, 100}});
  CHECK(attrs_at(x, p).communities == std::vector<std::uint32_t>{65000u << 16 | 100});
  CHECK(attrs_at(c1, pfx("10.244.0.0/26")).communities == std::vector<std::uint32_t>{65000u << 16 | 7});
  CHECK(attrs_at(x, pfx("10.244.0.0/26")).communities == std::vector<std::uint32_t>{65000u << 16 | 7});

  // The same communities again: nothing is sent.
  const auto updates = c1.sent_count<bgp::update_message>();
  const auto opens = c1.sent_count<bgp::open_message>() + rr.sent_count<bgp::open_message>();
  c1.sp.originate(p, {65000u << 16 | 100}, {{65000, 300, 100}});
  f.run();
  CHECK(c1.sent_count<bgp::update_message>() == updates);
  // New ones: one UPDATE, no session touched; the reflector's own communities do not change c1's route.
  c1.sp.originate(p, {65000u << 16 | 200}, {});
  f.run();
  CHECK(c1.sent_count<bgp::update_message>() == updates + 1);
  CHECK(c1.sent_count<bgp::open_message>() + rr.sent_count<bgp::open_message>() == opens);
  CHECK(attrs_at(c2, p).communities == std::vector<std::uint32_t>{65000u << 16 | 200});
  CHECK(attrs_at(c2, p).large_communities.empty());
  CHECK(attrs_at(x, p).communities == std::vector<std::uint32_t>{65000u << 16 | 200});
  CHECK(rr.peers[name(c1)].state == session_state::established);
}

TEST_CASE("bgp speaker: well-known communities NO_EXPORT, NO_ADVERTISE, NO_EXPORT_SUBCONFED are honoured (RFC 1997)", "[unit][bgp]") {
  fabric f;
  auto& c = f.add("10.0.0.1", 64512);
  auto& d = f.add("10.0.0.2", 64512);  // iBGP
  auto& x = f.add("10.0.0.9", 65001);  // eBGP
  auto& a = f.add("10.0.0.7", 65002);  // eBGP, the replayed routes' origin
  for (auto* e : {&d, &x, &a}) {
    f.peer(c, *e, "global");
    f.peer(*e, c, "global");
  }
  f.run();
  // Replay to c, as if a sent them, one UPDATE per community.
  auto from_a = [&](const char* prefix, std::uint32_t community) {
    bgp::update_message u;
    u.has_attributes = true;
    u.attrs.as_path = {{bgp::as_segment::kind::sequence, {65002}}};
    u.attrs.next_hop = a.addr;
    if (community) u.attrs.communities = {community};
    u.nlri = {pfx(prefix)};
    for (auto& [k, v] : f.wires)
      if (k.first == f.index(c) && v.first == f.index(a)) {
        c.sp.received(k.second, bgp::encode(u));
        break;
      }
    f.run();
  };
  from_a("192.0.2.0/26", bgp::community::no_export);
  from_a("192.0.2.64/26", bgp::community::no_advertise);
  from_a("192.0.2.128/26", bgp::community::no_export_subconfed);
  from_a("192.0.2.192/26", 0);
  c.sp.originate(pfx("10.244.1.0/26"), {bgp::community::no_export});
  f.run();
  // c uses them all itself
  for (auto* q : {"192.0.2.0/26", "192.0.2.64/26", "192.0.2.128/26", "192.0.2.192/26"}) CHECK(c.routes.count(pfx(q)));
  auto to_d = c.sp.adj_rib_out(name(d));
  auto to_x = c.sp.adj_rib_out(name(x));
  // NO_EXPORT and NO_EXPORT_SUBCONFED: iBGP only; NO_ADVERTISE: nobody; none: everybody
  CHECK(to_d.count(pfx("192.0.2.0/26")));
  CHECK(!to_x.count(pfx("192.0.2.0/26")));
  CHECK(!to_d.count(pfx("192.0.2.64/26")));
  CHECK(!to_x.count(pfx("192.0.2.64/26")));
  CHECK(to_d.count(pfx("192.0.2.128/26")));
  CHECK(!to_x.count(pfx("192.0.2.128/26")));
  CHECK(to_d.count(pfx("192.0.2.192/26")));
  CHECK(to_x.count(pfx("192.0.2.192/26")));
  // its own prefix with NO_EXPORT: to d (community kept), not to x
  REQUIRE(to_d.count(pfx("10.244.1.0/26")));
  CHECK(to_d[pfx("10.244.1.0/26")].communities == std::vector<std::uint32_t>{bgp::community::no_export});
  CHECK(!to_x.count(pfx("10.244.1.0/26")));
  CHECK(d.routes.count(pfx("192.0.2.0/26")));
  CHECK(!x.routes.count(pfx("192.0.2.0/26")));
  CHECK(!d.routes.count(pfx("192.0.2.64/26")));
  // The community taken away: the prefix goes to x after all, live.
  c.sp.originate(pfx("10.244.1.0/26"));
  f.run();
  CHECK(x.routes.count(pfx("10.244.1.0/26")));
}

TEST_CASE("bgp speaker: a route reflected back is refused at debug level and counted", "[unit][bgp]") {
  fabric f;
  auto& rr1 = f.add("10.0.0.1", 64512, 0x01010101);
  auto& rr2 = f.add("10.0.0.2", 64512, 0x01010101);
  auto& c = f.add("10.0.0.3", 64512);
  // two reflectors of one cluster, both reflecting c (Calico's two reflectors); they peer as non-clients
  f.peer(rr1, c, "global", true);
  f.peer(rr2, c, "global", true);
  f.peer(c, rr1, "global");
  f.peer(c, rr2, "global");
  f.peer(rr1, rr2, "global");
  f.peer(rr2, rr1, "global");
  f.run();
  c.sp.originate(pfx("10.244.3.0/26"));
  f.run();
  CHECK(rr1.routes.count(pfx("10.244.3.0/26")));
  // each reflector reflects c's route to the other, which sees its own cluster id: refused, quietly
  std::size_t back = 0;
  for (auto& pi : rr1.sp.peers()) back += pi.reflected_back;
  for (auto& pi : rr2.sp.peers()) back += pi.reflected_back;
  CHECK(back >= 1);
  std::size_t at_debug = 0;
  for (auto* n : {&rr1, &rr2})
    for (auto& l : n->debug_logs) at_debug += l.find("CLUSTER_LIST loop") != std::string::npos;
  CHECK(at_debug == back);  // every one of them at debug level, none as a warning
  CHECK(c.routes.empty());
  CHECK(rr2.routes[pfx("10.244.3.0/26")] == std::vector{c.addr});
}
