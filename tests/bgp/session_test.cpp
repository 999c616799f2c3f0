// The session state machine, driven by hand: no sockets, timers are events.
#include <cnf/bgp/session.hpp>

#include <catch2/catch.hpp>

namespace bgp = cnf::bgp;
using bgp::session_state;

namespace {
cnf::ip_address ip(const char* s) { return cnf::ip_address::parse(s).value(); }

bgp::session_config cfg(std::uint32_t as, std::uint32_t peer_as, const char* id) {
  bgp::session_config c;
  c.local_as = as;
  c.peer_as = peer_as;
  c.router_id = ip(id).v4_host_order();
  c.hold_time = 9;
  c.families = {bgp::ipv4_unicast, bgp::ipv6_unicast};
  return c;
}

// What one batch of actions held, by kind.
struct seen {
  std::vector<bgp::message> sent;
  std::vector<bgp::action::start_timer> timers;
  std::vector<bgp::timer_kind> stopped;
  std::vector<bgp::action::state_changed> states;
  std::vector<bgp::update_message> updates;
  int connects = 0, closes = 0;
  bgp::bytes wire;  // everything sent, concatenated
};

seen take(bgp::session& s) {
  seen r;
  for (auto& a : s.take()) {
    if (std::holds_alternative<bgp::action::connect>(a)) ++r.connects;
    else if (std::holds_alternative<bgp::action::close>(a)) ++r.closes;
    else if (auto* x = std::get_if<bgp::action::send>(&a)) {
      r.wire.insert(r.wire.end(), x->data.begin(), x->data.end());
      r.sent.push_back(std::get<bgp::message>(bgp::decode(x->data)));
    } else if (auto* t = std::get_if<bgp::action::start_timer>(&a)) r.timers.push_back(*t);
    else if (auto* st = std::get_if<bgp::action::stop_timer>(&a)) r.stopped.push_back(st->timer);
    else if (auto* c = std::get_if<bgp::action::state_changed>(&a)) r.states.push_back(*c);
    else if (auto* u = std::get_if<bgp::action::update>(&a)) r.updates.push_back(u->msg);
  }
  return r;
}

bool has_timer(const seen& s, bgp::timer_kind k) {
  for (auto& t : s.timers)
    if (t.timer == k) return true;
  return false;
}

// Two sessions over a perfect wire until both are Established.
void establish(bgp::session& a, bgp::session& b) {
  a.start();
  auto s = take(a);
  REQUIRE(s.connects == 1);
  REQUIRE(a.state() == session_state::connect);
  REQUIRE(has_timer(s, bgp::timer_kind::connect_retry));
  b.start();
  take(b);
  a.tcp_connected();
  b.tcp_connected();
  for (int i = 0; i < 4; ++i) {
    auto x = take(a);
    auto y = take(b);
    if (!x.wire.empty()) b.received(x.wire);
    if (!y.wire.empty()) a.received(y.wire);
  }
  REQUIRE(a.state() == session_state::established);
  REQUIRE(b.state() == session_state::established);
}
}  // namespace

TEST_CASE("bgp session: Idle -> Connect -> OpenSent -> OpenConfirm -> Established", "[unit][bgp]") {
  bgp::session a(cfg(64512, 64512, "10.0.0.1"));
  a.start();
  auto s = take(a);
  CHECK(s.connects == 1);
  CHECK(s.states.back().to == session_state::connect);
  a.tcp_connected();
  s = take(a);
  REQUIRE(s.sent.size() == 1);
  auto& open = std::get<bgp::open_message>(s.sent[0]);
  CHECK(open.asn == 64512);
  CHECK(open.hold_time == 9);
  CHECK(open.route_refresh);
  CHECK(open.multiprotocol.size() == 2);
  CHECK(a.state() == session_state::open_sent);
  CHECK(has_timer(s, bgp::timer_kind::hold));

  bgp::open_message peer;
  peer.asn = 64512;
  peer.hold_time = 30;
  peer.router_id = ip("10.0.0.2").v4_host_order();
  peer.multiprotocol = {bgp::ipv4_unicast};
  a.received(bgp::encode(peer));
  s = take(a);
  CHECK(a.state() == session_state::open_confirm);
  REQUIRE(s.sent.size() == 1);
  CHECK(std::holds_alternative<bgp::keepalive_message>(s.sent[0]));
  CHECK(a.agreed().hold_time == 9);  // the smaller one
  CHECK(a.agreed().keepalive == std::chrono::milliseconds(3000));
  CHECK(a.agreed().families == std::vector{bgp::ipv4_unicast});
  CHECK(has_timer(s, bgp::timer_kind::keepalive));

  // KEEPALIVE and an UPDATE in one read: both are handled, in order.
  bgp::update_message u;
  u.has_attributes = true;
  u.attrs.next_hop = ip("10.0.0.2");
  u.nlri = {cnf::ip_prefix::parse("10.244.0.0/26").value()};
  auto wire = bgp::encode(bgp::keepalive_message{});
  auto ub = bgp::encode(u);
  wire.insert(wire.end(), ub.begin(), ub.end());
  // delivered in two pieces, split inside the UPDATE
  a.received(std::span(wire).first(25));
  a.received(std::span(wire).subspan(25));
  s = take(a);
  CHECK(a.state() == session_state::established);
  REQUIRE(s.updates.size() == 1);
  CHECK(s.updates[0].nlri == u.nlri);
  CHECK(has_timer(s, bgp::timer_kind::hold));  // restarted by each message
}

TEST_CASE("bgp session: the keepalive timer sends KEEPALIVE, the hold timer ends the session", "[unit][bgp]") {
  bgp::session a(cfg(64512, 64512, "10.0.0.1")), b(cfg(64512, 64512, "10.0.0.2"));
  establish(a, b);
  a.timer_expired(bgp::timer_kind::keepalive);
  auto s = take(a);
  REQUIRE(s.sent.size() == 1);
  CHECK(std::holds_alternative<bgp::keepalive_message>(s.sent[0]));
  CHECK(has_timer(s, bgp::timer_kind::keepalive));

  // b never hears from a again: its hold timer fires.
  b.timer_expired(bgp::timer_kind::hold);
  s = take(b);
  REQUIRE(s.sent.size() == 1);
  auto& n = std::get<bgp::notification_message>(s.sent[0]);
  CHECK(n.code == 4);
  CHECK(s.closes == 1);
  CHECK(b.state() == session_state::idle);
  CHECK_THAT(b.last_error(), Catch::Contains("Hold Timer Expired"));
  CHECK(has_timer(s, bgp::timer_kind::connect_retry));  // restarts on its own
  a.received(s.wire);
  CHECK(a.state() == session_state::idle);
  CHECK_THAT(a.last_error(), Catch::Contains("received NOTIFICATION: Hold Timer Expired"));
  // connect-retry in Idle starts again
  b.timer_expired(bgp::timer_kind::connect_retry);
  CHECK(take(b).connects == 1);
  CHECK(b.state() == session_state::connect);
}

TEST_CASE("bgp session: a wrong peer AS is refused with Bad Peer AS", "[unit][bgp]") {
  bgp::session a(cfg(64512, 64513, "10.0.0.1"));
  a.start();
  a.tcp_connected();
  take(a);
  bgp::open_message peer{.asn = 65099, .hold_time = 90, .router_id = 2};
  a.received(bgp::encode(peer));
  auto s = take(a);
  REQUIRE(s.sent.size() == 1);
  auto& n = std::get<bgp::notification_message>(s.sent[0]);
  CHECK((n.code == 2 && n.subcode == 2));
  CHECK(a.state() == session_state::idle);
  CHECK_THAT(a.last_error(), Catch::Contains("OPEN.my_autonomous_system") && Catch::Contains("65099") && Catch::Contains("64513"));
}

TEST_CASE("bgp session: unexpected messages are FSM errors; bad bytes a header error", "[unit][bgp]") {
  bgp::session a(cfg(64512, 64512, "10.0.0.1"));
  a.start();
  a.tcp_connected();
  take(a);
  a.received(bgp::encode(bgp::update_message{}));
  auto s = take(a);
  REQUIRE(s.sent.size() == 1);
  CHECK(std::get<bgp::notification_message>(s.sent[0]).code == 5);
  CHECK(a.state() == session_state::idle);

  bgp::session b(cfg(64512, 64512, "10.0.0.1"));
  b.start();
  b.tcp_connected();
  take(b);
  bgp::bytes junk(19, 0);
  b.received(junk);
  s = take(b);
  REQUIRE(s.sent.size() == 1);
  auto& n = std::get<bgp::notification_message>(s.sent[0]);
  CHECK((n.code == 1 && n.subcode == 1));
  CHECK_THAT(b.last_error(), Catch::Contains("header.marker"));
}

TEST_CASE("bgp session: connection failures and retries", "[unit][bgp]") {
  bgp::session a(cfg(64512, 64512, "10.0.0.1"));
  a.start();
  take(a);
  a.tcp_failed();
  auto s = take(a);
  CHECK(a.state() == session_state::active);
  CHECK(has_timer(s, bgp::timer_kind::connect_retry));
  a.timer_expired(bgp::timer_kind::connect_retry);
  s = take(a);
  CHECK(s.connects == 1);
  CHECK(a.state() == session_state::connect);
  // a connection that closes in OpenSent goes back to Active
  a.tcp_connected();
  take(a);
  a.tcp_closed();
  take(a);
  CHECK(a.state() == session_state::active);
  // passive sessions never connect
  auto pc = cfg(64512, 64512, "10.0.0.1");
  pc.passive = true;
  bgp::session p(pc);
  p.start();
  CHECK(take(p).connects == 0);
  CHECK(p.state() == session_state::active);
}

TEST_CASE("bgp session: stop sends Cease with the reason and does not restart", "[unit][bgp]") {
  bgp::session a(cfg(64512, 64512, "10.0.0.1")), b(cfg(64512, 64512, "10.0.0.2"));
  establish(a, b);
  a.stop(bgp::err::administrative_shutdown, "node draining");
  auto s = take(a);
  REQUIRE(s.sent.size() == 1);
  auto& n = std::get<bgp::notification_message>(s.sent[0]);
  CHECK(n.to_string() == "Cease / Administrative Shutdown: \"node draining\"");
  CHECK(!has_timer(s, bgp::timer_kind::connect_retry));
  a.timer_expired(bgp::timer_kind::connect_retry);
  CHECK(take(a).connects == 0);
  b.received(s.wire);
  CHECK(b.state() == session_state::idle);
}

TEST_CASE("bgp session: the collision rule keeps the connection of the higher BGP identifier", "[unit][bgp]") {
  CHECK(bgp::outgoing_wins_collision(ip("10.0.0.2").v4_host_order(), ip("10.0.0.1").v4_host_order()));
  CHECK(!bgp::outgoing_wins_collision(ip("10.0.0.1").v4_host_order(), ip("10.0.0.2").v4_host_order()));
}
