// cnf/model/node.hpp: Calico v3 Node codec, errors naming resource and field.
#include <cnf/model/node.hpp>

#include <catch2/catch.hpp>

namespace {
cnf::resource node_res(std::string name, std::string spec) {
  cnf::resource r;
  r.kind = "Node";
  r.name = std::move(name);
  r.spec = std::move(spec);
  return r;
}
}  // namespace

TEST_CASE("Node: Calico's fields read and written back the same", "[unit][model]") {
  auto r = node_res("node-a", R"({"bgp":{"ipv4Address":"192.168.50.1/24","ipv6Address":"fd00::1/64","asNumber":64512,
      "routeReflectorClusterID":"224.0.0.1","ipv4IPIPTunnelAddr":"10.244.0.1"},
      "ipv4VXLANTunnelAddr":"10.244.0.2","vxlanTunnelMACAddr":"66:aa:bb:cc:dd:ee",
      "addresses":[{"address":"192.168.50.1/24","type":"CalicoNodeIP"}],
      "orchRefs":[{"nodeName":"node-a","orchestrator":"k8s"}],"somethingNew":{"x":1}})");
  r.labels = {{"zone", "a"}};
  auto n = cnf::model::parse_node(r);
  REQUIRE(n);
  REQUIRE(n->bgp);
  CHECK(n->bgp->ipv4_address->to_string() == "192.168.50.1/24");
  CHECK(n->bgp->ipv6_address->to_string() == "fd00::1/64");
  CHECK(n->bgp->as_number == 64512u);
  CHECK(n->bgp->route_reflector_cluster_id == "224.0.0.1");
  CHECK(n->bgp->ipv4_ipip_tunnel_addr->to_string() == "10.244.0.1");
  CHECK(n->ipv4_vxlan_tunnel_addr->to_string() == "10.244.0.2");
  CHECK(n->vxlan_tunnel_mac_addr->to_string() == "66:aa:bb:cc:dd:ee");
  CHECK(n->addresses.at(0).type == "CalicoNodeIP");
  CHECK(n->orch_refs.at(0).orchestrator == "k8s");
  CHECK(n->labels.at("zone") == "a");

  auto back = cnf::model::parse_node(cnf::model::to_resource(*n));
  REQUIRE(back);
  CHECK(*back == *n);

  auto rn = cnf::model::to_remote_node(*n, {cnf::ip_prefix::parse("10.244.0.0/26").value()});
  CHECK(rn.address()->to_string() == "192.168.50.1");
  CHECK(rn.address(cnf::ip_family::v6)->to_string() == "fd00::1");
  CHECK(rn.asn == 64512u);
  CHECK(rn.pod_cidrs.size() == 1);
  CHECK(cnf::model::to_node_info(*n).router_id == "192.168.50.1");
}

TEST_CASE("Node: a bare address is a host prefix; AS numbers as Calico writes them", "[unit][model]") {
  auto n = cnf::model::parse_node(node_res("b", R"({"bgp":{"ipv4Address":"10.0.0.7","asNumber":"1.10"}})"));
  REQUIRE(n);
  CHECK(n->bgp->ipv4_address->to_string() == "10.0.0.7/32");
  CHECK(n->bgp->as_number == (1u << 16) + 10u);
  auto s = cnf::model::parse_node(node_res("b", R"({"bgp":{"asNumber":"4200000000"}})"));
  REQUIRE(s);
  CHECK(s->bgp->as_number == 4200000000u);
  auto empty = cnf::model::parse_node(node_res("c", "{}"));
  REQUIRE(empty);
  CHECK_FALSE(empty->bgp);
  CHECK(empty->underlay().empty());
}

TEST_CASE("Node: malformed fields are named with the resource", "[unit][model]") {
  auto err = [](std::string spec) {
    auto n = cnf::model::parse_node(node_res("node-b", std::move(spec)));
    REQUIRE_FALSE(n);
    CHECK(n.error().code == cnf::errc::invalid);
    return n.error().message;
  };
  CHECK(err(R"({"bgp":{"ipv4Address":"10.0.0.300/24"}})") ==
        "Node/node-b: spec.bgp.ipv4Address: '10.0.0.300/24' is not an IPv4 address with a prefix length");
  CHECK(err(R"({"bgp":{"ipv4Address":"fd00::1/64"}})") ==
        "Node/node-b: spec.bgp.ipv4Address: 'fd00::1/64' is not an IPv4 address with a prefix length");
  CHECK(err(R"({"bgp":{"ipv6Address":"10.0.0.1/24"}})") ==
        "Node/node-b: spec.bgp.ipv6Address: '10.0.0.1/24' is not an IPv6 address with a prefix length");
  CHECK(err(R"({"bgp":{"ipv4Address":17}})") == "Node/node-b: spec.bgp.ipv4Address: expected a string");
  CHECK(err(R"({"bgp":{"asNumber":0}})") == "Node/node-b: spec.bgp.asNumber: 0 is not an AS number (1 to 4294967295, or asdot 1.10)");
  CHECK(err(R"({"bgp":{"asNumber":"65536.1"}})") ==
        "Node/node-b: spec.bgp.asNumber: '65536.1' is not an AS number (1 to 4294967295, or asdot 1.10)");
  CHECK(err(R"({"bgp":[]})") == "Node/node-b: spec.bgp: expected an object");
  CHECK(err(R"({"ipv4VXLANTunnelAddr":"fd00::1"})") == "Node/node-b: spec.ipv4VXLANTunnelAddr: 'fd00::1' is not an IPv4 address");
  CHECK(err(R"({"vxlanTunnelMACAddr":"66:aa"})") ==
        "Node/node-b: spec.vxlanTunnelMACAddr: '66:aa' is not a MAC address (aa:bb:cc:dd:ee:ff)");
  CHECK(err(R"({"addresses":[{"address":"nope"}]})") == "Node/node-b: spec.addresses[0].address: 'nope' is not an address or a CIDR");
  CHECK_THAT(err("{"), Catch::StartsWith("Node/node-b: spec: not valid JSON"));
  CHECK(err("[]") == "Node/node-b: spec: expected an object");
}
