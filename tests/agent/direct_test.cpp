// The direct routing part's decision, and what it tells the host's sink (no kernel).
#include <cnf/plugins/direct.hpp>

#include <catch2/catch.hpp>

namespace {
cnf::ip_prefix pfx(const char* s) { return cnf::ip_prefix::parse(s, true).value(); }
cnf::ip_address ip(const char* s) { return cnf::ip_address::parse(s).value(); }

cnf::node_info self_node() {
  cnf::node_info n;
  n.name = "a";
  n.addresses = {pfx("192.168.50.1/24"), pfx("fd00:50::1/64")};
  return n;
}
cnf::remote_node remote(const char* name, std::vector<cnf::ip_prefix> addrs, std::vector<cnf::ip_prefix> blocks) {
  cnf::remote_node r;
  r.name = name;
  r.addresses = std::move(addrs);
  r.pod_cidrs = std::move(blocks);
  return r;
}

struct recording_sink final : cnf::routing_sink {
  std::map<cnf::ip_prefix, cnf::learned_route> routes;
  std::map<std::string, cnf::peer_status> peers;
  int learned = 0, withdrawn = 0;
  void route_learned(const cnf::learned_route& r) noexcept override { routes[r.prefix] = r; ++learned; }
  void route_withdrawn(const cnf::ip_prefix& p) noexcept override { routes.erase(p); ++withdrawn; }
  void peer_changed(const cnf::peer_status& p) noexcept override { peers[p.name] = p; }
  void peer_removed(std::string_view n) noexcept override { peers.erase(std::string(n)); }
};
}  // namespace

static_assert(cnf::check_routing<cnf::direct::routing>());

TEST_CASE("direct: a node on a connected subnet is reached via its address", "[unit][direct]") {
  auto d = cnf::direct::decide(self_node(), remote("b", {pfx("192.168.50.2/24")}, {}));
  REQUIRE(d.reachable());
  CHECK(d.via_v4 == ip("192.168.50.2"));
  CHECK_FALSE(d.via_v6);
}

TEST_CASE("direct: a node on another subnet is not reachable, and the reason says why", "[unit][direct]") {
  auto d = cnf::direct::decide(self_node(), remote("c", {pfx("10.9.0.2/24")}, {}));
  CHECK_FALSE(d.reachable());
  CHECK(d.reason == "10.9.0.2 is not on a subnet of this node");
  auto none = cnf::direct::decide(self_node(), remote("d", {}, {}));
  CHECK_FALSE(none.reachable());
  CHECK_THAT(none.reason, Catch::Contains("has no address"));
  // A node claiming this node's own address is never a next hop.
  auto dup = cnf::direct::decide(self_node(), remote("e", {pfx("192.168.50.1/24")}, {}));
  CHECK_FALSE(dup.reachable());
  CHECK_THAT(dup.reason, Catch::Contains("this node's own"));
}

TEST_CASE("direct: each block goes via the address of its own family", "[unit][direct]") {
  auto r = remote("b", {pfx("192.168.50.2/24"), pfx("fd00:50::2/64")}, {pfx("10.244.1.0/26"), pfx("fd10::/122"), pfx("10.244.9.0/26")});
  auto d = cnf::direct::decide(self_node(), r);
  auto routes = cnf::direct::routes_for(r, d);
  REQUIRE(routes.size() == 3);
  CHECK(routes[0].next_hops == std::vector{ip("192.168.50.2")});
  CHECK(routes[1].next_hops == std::vector{ip("fd00:50::2")});
  CHECK(routes[2].peer == "b");
  // Only IPv4 reachable: the IPv6 block is left out.
  auto r4 = remote("b", {pfx("192.168.50.2/24"), pfx("fd99::2/64")}, {pfx("10.244.1.0/26"), pfx("fd10::/122")});
  CHECK(cnf::direct::routes_for(r4, cnf::direct::decide(self_node(), r4)).size() == 1);
}

TEST_CASE("direct: the sink hears only what changed; status names the unreachable nodes", "[unit][direct]") {
  cnf::direct::routing rt;
  recording_sink sink;
  rt.start(self_node(), sink);
  rt.upsert_node(remote("b", {pfx("192.168.50.2/24")}, {pfx("10.244.1.0/26")}));
  rt.upsert_node(remote("c", {pfx("10.9.0.2/24")}, {pfx("10.244.2.0/26")}));
  REQUIRE(sink.routes.size() == 1);
  CHECK(sink.routes.begin()->second.next_hops == std::vector{ip("192.168.50.2")});
  CHECK(sink.peers.at("b").state == "Reachable");
  CHECK(sink.peers.at("c").state == "Unreachable");
  CHECK(sink.learned == 1);

  // The same node again: nothing new.
  rt.upsert_node(remote("b", {pfx("192.168.50.2/24")}, {pfx("10.244.1.0/26")}));
  CHECK(sink.learned == 1);
  // A second block: one more route, the first untouched.
  rt.upsert_node(remote("b", {pfx("192.168.50.2/24")}, {pfx("10.244.1.0/26"), pfx("10.244.3.0/26")}));
  CHECK(sink.learned == 2);
  CHECK(sink.withdrawn == 0);
  // Its address moves to another subnet: both withdrawn.
  rt.upsert_node(remote("b", {pfx("10.8.0.2/24")}, {pfx("10.244.1.0/26"), pfx("10.244.3.0/26")}));
  CHECK(sink.routes.empty());
  CHECK(sink.withdrawn == 2);

  auto st = rt.status();
  CHECK(st.plugin == "direct");
  REQUIRE(st.notes.size() == 1);
  CHECK(st.notes[0] == "2 nodes not on a subnet of this node, not routed directly: b c");

  // This node joins c's subnet: c becomes reachable.
  auto self = self_node();
  self.addresses.push_back(pfx("10.9.0.1/24"));
  rt.set_node(self);
  CHECK(sink.routes.count(pfx("10.244.2.0/26")) == 1);
  CHECK(sink.peers.at("c").info == "1 block via 10.9.0.2");

  rt.remove_node("c");
  CHECK(sink.routes.empty());
  CHECK(sink.peers.count("c") == 0);
  rt.stop();
}
