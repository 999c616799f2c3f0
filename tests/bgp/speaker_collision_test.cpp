// One speaker driven by hand (no sockets, no clock) through the start of a lab's full mesh:
// its own connection to a peer goes (the peer refused it: it did not know this node yet)
// while the peer's connection to it is opening. The peer's connection must become the
// session: Established, its routes imported, no connection left open unseen (as found by
// tests/bench/bgp/lab_bench.py at 50 nodes: the peer sat Established on a connection this
// side had forgotten until its hold timer, refusing every new one as a collision).
#include <cnf/bgp/speaker.hpp>

#include <catch2/catch.hpp>

#include <algorithm>

namespace bgp = cnf::bgp;
using bgp::session_state;

namespace {
cnf::ip_address ip(const char* s) { return cnf::ip_address::parse(s).value(); }
cnf::ip_prefix pfx(const char* s) { return cnf::ip_prefix::parse(s).value(); }

struct harness {
  bgp::speaker sp;
  std::vector<bgp::speaker_action> acts;
  harness() : sp(config()) {}
  static bgp::speaker_config config() {
    bgp::speaker_config c;
    c.asn = 64512;
    c.router_id = ip("10.0.0.2").v4_host_order();  // the higher identifier: its own connection would win a collision
    c.local_addresses = {ip("10.0.0.2")};
    c.families = {bgp::ipv4_unicast};
    c.restart_time = 0;
    return c;
  }
  void take() {
    auto a = sp.take();
    acts.insert(acts.end(), a.begin(), a.end());
  }
  template <class T>
  std::vector<T> of() const {
    std::vector<T> v;
    for (auto& a : acts)
      if (auto* x = std::get_if<T>(&a)) v.push_back(*x);
    return v;
  }
  bool closed(bgp::conn_id c) const {
    auto v = of<bgp::out::close>();
    return std::any_of(v.begin(), v.end(), [&](auto& x) { return x.conn == c; });
  }
  session_state state() const { return sp.peers().at(0).state; }
};

bgp::bytes peer_open() {
  bgp::open_message o;
  o.asn = 64512;
  o.hold_time = 90;
  o.router_id = ip("10.0.0.1").v4_host_order();
  o.multiprotocol = {bgp::ipv4_unicast};
  return bgp::encode(o);
}

}  // namespace

TEST_CASE("bgp speaker: its own connection refused while the peer's is opening, the peer's becomes the session", "[unit][bgp]") {
  harness h;
  h.sp.add_peer({"node-1", ip("10.0.0.1"), 64512, "node-to-node mesh"});
  h.take();
  auto connects = h.of<bgp::out::connect>();
  REQUIRE(connects.size() == 1);
  const auto own = connects[0].conn;
  h.sp.connected(own, ip("10.0.0.2"));  // its OPEN goes out on its own connection
  h.take();
  REQUIRE(h.state() == session_state::open_sent);

  const auto theirs = h.sp.accepted(ip("10.0.0.1"), ip("10.0.0.2"));  // kept aside: the collision is not decided yet
  h.take();
  REQUIRE_FALSE(h.closed(theirs));

  h.sp.closed(own);  // the peer refused this side's connection
  h.take();
  h.sp.received(theirs, peer_open());
  h.take();
  CHECK_FALSE(h.closed(theirs));
  CHECK(h.state() == session_state::open_confirm);

  h.sp.received(theirs, bgp::encode(bgp::keepalive_message{}));
  h.take();
  CHECK_FALSE(h.closed(theirs));
  CHECK(h.state() == session_state::established);

  // It is the session: the peer's routes come in over it, this speaker's go out on it.
  bgp::update_message u;
  u.has_attributes = true;
  u.attrs.next_hop = ip("10.0.0.1");
  u.attrs.local_pref = 100;
  u.nlri = {pfx("10.244.1.0/26")};
  h.sp.received(theirs, bgp::encode(u));
  h.take();
  auto routes = h.of<bgp::out::route>();
  REQUIRE(routes.size() == 1);
  CHECK(routes[0].prefix == pfx("10.244.1.0/26"));
  CHECK(routes[0].next_hops == std::vector<cnf::ip_address>{ip("10.0.0.1")});
  h.acts.clear();
  h.sp.originate(pfx("10.244.2.0/26"));
  h.take();
  auto sends = h.of<bgp::out::send>();
  CHECK(std::any_of(sends.begin(), sends.end(), [&](auto& s) { return s.conn == theirs; }));
}
