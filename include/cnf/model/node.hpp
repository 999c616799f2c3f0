// cnf/model/node.hpp — Calico's projectcalico.org/v3 Node, typed, with its JSON codec.
//
// A node agent registers its node as one of these, and every agent builds the other nodes
// (cnf::remote_node) from them. The codec validates what it reads: a malformed address
// names the resource and the field, as "Node/node-b: spec.bgp.ipv4Address: '10.0.0.300/24'
// is not an IPv4 address with a prefix length". Fields cnf does not know are ignored (a
// newer writer may add some); fields of the wrong JSON type are errors.
//
//   auto n = cnf::model::parse_node(res);            // res: a datastore resource of kind Node
//   if (!n) log.warn(n.error().message);
//   cnf::remote_node r = cnf::model::to_remote_node(*n, blocks_of(n->name));
//   cnf::resource out = cnf::model::to_resource(*n); // spec JSON written by Boost.JSON
//
// Uses Boost.JSON: code that includes this header links Boost::json.
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/net.hpp>
#include <cnf/node.hpp>

#include <boost/json.hpp>

#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace model {

/// spec.bgp
struct node_bgp {
  std::optional<ip_prefix> ipv4_address;   ///< ipv4Address: the node's address with its subnet length
  std::optional<ip_prefix> ipv6_address;   ///< ipv6Address
  std::optional<std::uint32_t> as_number;  ///< asNumber; none: the cluster's default
  std::string route_reflector_cluster_id;  ///< routeReflectorClusterID (an IPv4 address when set)
  std::optional<ip_address> ipv4_ipip_tunnel_addr;  ///< ipv4IPIPTunnelAddr
  friend bool operator==(const node_bgp&, const node_bgp&) = default;
};

/// spec.addresses[]
struct node_address {
  std::string address;  ///< an address or a CIDR
  std::string type;     ///< InternalIP, ExternalIP, CalicoNodeIP
  friend bool operator==(const node_address&, const node_address&) = default;
};

/// spec.orchRefs[]
struct orch_ref {
  std::string node_name;
  std::string orchestrator;
  friend bool operator==(const orch_ref&, const orch_ref&) = default;
};

struct node {
  std::string name;
  std::map<std::string, std::string> labels;
  std::optional<node_bgp> bgp;
  std::optional<ip_address> ipv4_vxlan_tunnel_addr;   ///< ipv4VXLANTunnelAddr
  std::optional<ip_address> ipv6_vxlan_tunnel_addr;   ///< ipv6VXLANTunnelAddr
  std::optional<mac_address> vxlan_tunnel_mac_addr;    ///< vxlanTunnelMACAddr
  std::optional<mac_address> vxlan_tunnel_mac_addr_v6; ///< vxlanTunnelMACAddrV6
  std::vector<node_address> addresses;
  std::vector<orch_ref> orch_refs;
  std::string revision;  ///< the resource's, when read from the datastore
  friend bool operator==(const node&, const node&) = default;

  /// The node's underlay addresses (spec.bgp.ipv4Address, ipv6Address) with their lengths.
  std::vector<ip_prefix> underlay() const {
    std::vector<ip_prefix> v;
    if (bgp && bgp->ipv4_address) v.push_back(*bgp->ipv4_address);
    if (bgp && bgp->ipv6_address) v.push_back(*bgp->ipv6_address);
    return v;
  }
};

namespace detail {

class node_reader {
 public:
  explicit node_reader(std::string what) : what_(std::move(what)) {}
  error fail(std::string_view field, std::string_view msg) const {
    return error(errc::invalid, what_ + ": " + std::string(field) + ": " + std::string(msg));
  }
  /// Absent or null: nullptr. Present but not a string: an error.
  result<const boost::json::string*> str(const boost::json::object& o, std::string_view key, std::string_view field) const {
    const auto* v = o.if_contains(key);
    if (!v || v->is_null()) return static_cast<const boost::json::string*>(nullptr);
    if (!v->is_string()) return fail(field, "expected a string");
    return &v->get_string();
  }
  result<const boost::json::object*> obj(const boost::json::object& o, std::string_view key, std::string_view field) const {
    const auto* v = o.if_contains(key);
    if (!v || v->is_null()) return static_cast<const boost::json::object*>(nullptr);
    if (!v->is_object()) return fail(field, "expected an object");
    return &v->get_object();
  }
  result<const boost::json::array*> arr(const boost::json::object& o, std::string_view key, std::string_view field) const {
    const auto* v = o.if_contains(key);
    if (!v || v->is_null()) return static_cast<const boost::json::array*>(nullptr);
    if (!v->is_array()) return fail(field, "expected an array");
    return &v->get_array();
  }
  /// An address with a prefix length of one family; a bare address gets the full length.
  result<std::optional<ip_prefix>> cidr(const boost::json::object& o, std::string_view key, std::string_view field, ip_family f) const {
    auto s = str(o, key, field);
    if (!s) return s.error();
    if (!*s || (*s)->empty()) return std::optional<ip_prefix>();
    std::string_view text(**s);
    const char* fam = f == ip_family::v4 ? "IPv4" : "IPv6";
    auto bad = [&] { return fail(field, "'" + std::string(text) + "' is not an " + fam + " address with a prefix length"); };
    if (text.find('/') == std::string_view::npos) {
      auto a = ip_address::parse(text);
      if (!a || a->family() != f) return bad();
      return std::optional<ip_prefix>(ip_prefix(*a, static_cast<std::uint8_t>(a->bits())));
    }
    auto p = ip_prefix::parse(text, /*allow_host_bits=*/true);
    if (!p || p->family() != f) return bad();
    return std::optional<ip_prefix>(*p);
  }
  result<std::optional<ip_address>> addr(const boost::json::object& o, std::string_view key, std::string_view field, ip_family f) const {
    auto s = str(o, key, field);
    if (!s) return s.error();
    if (!*s || (*s)->empty()) return std::optional<ip_address>();
    auto a = ip_address::parse(std::string_view(**s));
    if (!a || a->family() != f)
      return fail(field, "'" + std::string(**s) + "' is not an " + (f == ip_family::v4 ? "IPv4" : "IPv6") + " address");
    return std::optional<ip_address>(*a);
  }
  result<std::optional<mac_address>> mac(const boost::json::object& o, std::string_view key, std::string_view field) const {
    auto s = str(o, key, field);
    if (!s) return s.error();
    if (!*s || (*s)->empty()) return std::optional<mac_address>();
    auto m = mac_address::parse(std::string_view(**s));
    if (!m) return fail(field, "'" + std::string(**s) + "' is not a MAC address (aa:bb:cc:dd:ee:ff)");
    return std::optional<mac_address>(*m);
  }
  /// Calico's ASNumber: a number, or a string "64512" or dotted "1.10" (asdot).
  result<std::optional<std::uint32_t>> asn(const boost::json::object& o, std::string_view key, std::string_view field) const {
    const auto* v = o.if_contains(key);
    if (!v || v->is_null()) return std::optional<std::uint32_t>();
    auto range = [&](std::string shown) { return fail(field, shown + " is not an AS number (1 to 4294967295, or asdot 1.10)"); };
    if (v->is_int64() || v->is_uint64()) {
      std::int64_t n = v->is_int64() ? v->get_int64() : -1;
      if (v->is_uint64()) n = v->get_uint64() > 4294967295u ? -1 : static_cast<std::int64_t>(v->get_uint64());
      if (n < 1 || n > 4294967295) return range(boost::json::serialize(*v));
      return std::optional<std::uint32_t>(static_cast<std::uint32_t>(n));
    }
    if (!v->is_string()) return fail(field, "expected a number or a string");
    std::string_view s(v->get_string());
    auto num = [](std::string_view t, std::uint64_t max) -> std::optional<std::uint64_t> {
      std::uint64_t x = 0;
      if (t.empty()) return std::nullopt;
      auto r = std::from_chars(t.data(), t.data() + t.size(), x);
      if (r.ec != std::errc() || r.ptr != t.data() + t.size() || x > max) return std::nullopt;
      return x;
    };
    std::optional<std::uint64_t> n;
    if (auto dot = s.find('.'); dot != std::string_view::npos) {
      auto hi = num(s.substr(0, dot), 65535), lo = num(s.substr(dot + 1), 65535);
      if (hi && lo) n = (*hi << 16) | *lo;
    } else {
      n = num(s, 4294967295u);
    }
    if (!n || *n == 0) return range("'" + std::string(s) + "'");
    return std::optional<std::uint32_t>(static_cast<std::uint32_t>(*n));
  }

 private:
  std::string what_;
};

}  // namespace detail

/// Reads a Node resource (its name, labels and spec JSON). Errors name the resource and field.
inline result<node> parse_node(const resource& r) {
  detail::node_reader rd("Node/" + r.name);
  node n;
  n.name = r.name;
  n.labels = r.labels;
  n.revision = r.revision;
  if (r.name.empty()) return rd.fail("metadata.name", "is required");
  boost::system::error_code ec;
  auto doc = boost::json::parse(r.spec, ec);
  if (ec) return rd.fail("spec", "not valid JSON: " + ec.message());
  if (!doc.is_object()) return rd.fail("spec", "expected an object");
  const auto& spec = doc.get_object();

  auto bgp = rd.obj(spec, "bgp", "spec.bgp");
  if (!bgp) return bgp.error();
  if (*bgp) {
    const auto& b = **bgp;
    node_bgp nb;
    auto v4 = rd.cidr(b, "ipv4Address", "spec.bgp.ipv4Address", ip_family::v4);
    if (!v4) return v4.error();
    nb.ipv4_address = *v4;
    auto v6 = rd.cidr(b, "ipv6Address", "spec.bgp.ipv6Address", ip_family::v6);
    if (!v6) return v6.error();
    nb.ipv6_address = *v6;
    auto as = rd.asn(b, "asNumber", "spec.bgp.asNumber");
    if (!as) return as.error();
    nb.as_number = *as;
    auto rr = rd.addr(b, "routeReflectorClusterID", "spec.bgp.routeReflectorClusterID", ip_family::v4);
    if (!rr) return rr.error();
    if (*rr) nb.route_reflector_cluster_id = (*rr)->to_string();
    auto ipip = rd.addr(b, "ipv4IPIPTunnelAddr", "spec.bgp.ipv4IPIPTunnelAddr", ip_family::v4);
    if (!ipip) return ipip.error();
    nb.ipv4_ipip_tunnel_addr = *ipip;
    n.bgp = std::move(nb);
  }
  auto vx4 = rd.addr(spec, "ipv4VXLANTunnelAddr", "spec.ipv4VXLANTunnelAddr", ip_family::v4);
  if (!vx4) return vx4.error();
  n.ipv4_vxlan_tunnel_addr = *vx4;
  auto vx6 = rd.addr(spec, "ipv6VXLANTunnelAddr", "spec.ipv6VXLANTunnelAddr", ip_family::v6);
  if (!vx6) return vx6.error();
  n.ipv6_vxlan_tunnel_addr = *vx6;
  auto mac4 = rd.mac(spec, "vxlanTunnelMACAddr", "spec.vxlanTunnelMACAddr");
  if (!mac4) return mac4.error();
  n.vxlan_tunnel_mac_addr = *mac4;
  auto mac6 = rd.mac(spec, "vxlanTunnelMACAddrV6", "spec.vxlanTunnelMACAddrV6");
  if (!mac6) return mac6.error();
  n.vxlan_tunnel_mac_addr_v6 = *mac6;

  auto addrs = rd.arr(spec, "addresses", "spec.addresses");
  if (!addrs) return addrs.error();
  if (*addrs) {
    for (std::size_t i = 0; i < (*addrs)->size(); ++i) {
      std::string f = "spec.addresses[" + std::to_string(i) + "]";
      const auto& e = (**addrs)[i];
      if (!e.is_object()) return rd.fail(f, "expected an object");
      auto a = rd.str(e.get_object(), "address", f + ".address");
      if (!a) return a.error();
      if (!*a || (*a)->empty()) return rd.fail(f + ".address", "is required");
      std::string_view text(**a);
      bool ok = text.find('/') == std::string_view::npos ? bool(ip_address::parse(text)) : bool(ip_prefix::parse(text, true));
      if (!ok) return rd.fail(f + ".address", "'" + std::string(text) + "' is not an address or a CIDR");
      auto t = rd.str(e.get_object(), "type", f + ".type");
      if (!t) return t.error();
      n.addresses.push_back({std::string(text), *t ? std::string(**t) : std::string()});
    }
  }
  auto refs = rd.arr(spec, "orchRefs", "spec.orchRefs");
  if (!refs) return refs.error();
  if (*refs) {
    for (std::size_t i = 0; i < (*refs)->size(); ++i) {
      std::string f = "spec.orchRefs[" + std::to_string(i) + "]";
      const auto& e = (**refs)[i];
      if (!e.is_object()) return rd.fail(f, "expected an object");
      auto nn = rd.str(e.get_object(), "nodeName", f + ".nodeName");
      if (!nn) return nn.error();
      auto o = rd.str(e.get_object(), "orchestrator", f + ".orchestrator");
      if (!o) return o.error();
      n.orch_refs.push_back({*nn ? std::string(**nn) : std::string(), *o ? std::string(**o) : std::string()});
    }
  }
  return n;
}

/// The spec as JSON text (Calico's field names; absent optionals are left out).
inline std::string to_spec_json(const node& n) {
  boost::json::object spec;
  if (n.bgp) {
    boost::json::object b;
    if (n.bgp->ipv4_address) b["ipv4Address"] = n.bgp->ipv4_address->to_string();
    if (n.bgp->ipv6_address) b["ipv6Address"] = n.bgp->ipv6_address->to_string();
    if (n.bgp->as_number) b["asNumber"] = *n.bgp->as_number;
    if (!n.bgp->route_reflector_cluster_id.empty()) b["routeReflectorClusterID"] = n.bgp->route_reflector_cluster_id;
    if (n.bgp->ipv4_ipip_tunnel_addr) b["ipv4IPIPTunnelAddr"] = n.bgp->ipv4_ipip_tunnel_addr->to_string();
    spec["bgp"] = std::move(b);
  }
  if (n.ipv4_vxlan_tunnel_addr) spec["ipv4VXLANTunnelAddr"] = n.ipv4_vxlan_tunnel_addr->to_string();
  if (n.ipv6_vxlan_tunnel_addr) spec["ipv6VXLANTunnelAddr"] = n.ipv6_vxlan_tunnel_addr->to_string();
  if (n.vxlan_tunnel_mac_addr) spec["vxlanTunnelMACAddr"] = n.vxlan_tunnel_mac_addr->to_string();
  if (n.vxlan_tunnel_mac_addr_v6) spec["vxlanTunnelMACAddrV6"] = n.vxlan_tunnel_mac_addr_v6->to_string();
  if (!n.addresses.empty()) {
    boost::json::array a;
    for (auto& x : n.addresses) {
      boost::json::object e;
      e["address"] = x.address;
      if (!x.type.empty()) e["type"] = x.type;
      a.push_back(std::move(e));
    }
    spec["addresses"] = std::move(a);
  }
  if (!n.orch_refs.empty()) {
    boost::json::array a;
    for (auto& x : n.orch_refs) a.push_back(boost::json::object{{"nodeName", x.node_name}, {"orchestrator", x.orchestrator}});
    spec["orchRefs"] = std::move(a);
  }
  return boost::json::serialize(spec);
}

inline resource to_resource(const node& n) {
  resource r;
  r.kind = std::string(kinds::node);
  r.name = n.name;
  r.labels = n.labels;
  r.spec = to_spec_json(n);
  r.revision = n.revision;
  return r;
}

/// Another node as routing and encapsulation see it, with the blocks affine to it.
inline remote_node to_remote_node(const node& n, std::vector<ip_prefix> blocks = {}) {
  remote_node r;
  r.name = n.name;
  r.addresses = n.underlay();
  r.pod_cidrs = std::move(blocks);
  if (n.bgp) {
    r.ipip_tunnel_address = n.bgp->ipv4_ipip_tunnel_addr;
    r.asn = n.bgp->as_number.value_or(0);
  }
  r.vxlan_tunnel_address = n.ipv4_vxlan_tunnel_addr;
  r.vxlan_tunnel_address_v6 = n.ipv6_vxlan_tunnel_addr;
  r.vxlan_tunnel_mac = n.vxlan_tunnel_mac_addr;
  r.vxlan_tunnel_mac_v6 = n.vxlan_tunnel_mac_addr_v6;
  r.labels = n.labels;
  return r;
}

/// This node as a part sees it (router id: its IPv4 address, Calico's default).
inline node_info to_node_info(const node& n) {
  node_info i;
  i.name = n.name;
  i.addresses = n.underlay();
  i.labels = n.labels;
  if (n.bgp) {
    i.asn = n.bgp->as_number.value_or(0);
    if (n.bgp->ipv4_address) i.router_id = n.bgp->ipv4_address->address().to_string();
  }
  return i;
}

}  // namespace model
CNF_END_NAMESPACE
