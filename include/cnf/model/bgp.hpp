// cnf/model/bgp.hpp — Calico's projectcalico.org/v3 BGPPeer, BGPConfiguration and BGPFilter, typed,
// with the parsers `cnf apply` validates with and the node agent reads with (so what apply
// accepts, the agents act on).
//
// Errors name the resource and the field: "BGPPeer/rack1: spec.peerIP: '10.0.0.300' is not
// an IP address", "BGPPeer/rack1: spec.peerIp: unknown field; did you mean 'peerIP'?".
//
//   auto p = cnf::model::parse_bgp_peer(res);           // res: a datastore resource of kind BGPPeer
//   if (p && p->applies_to(node_name, node_labels)) ... // Calico's node / nodeSelector rules
//   auto c = cnf::model::parse_bgp_configuration(res);  // "default", or "node.<name>"
//   auto f = cnf::model::parse_bgp_filter(res);         // a cnf::route_filter (cnf/route_filter.hpp)
//
// Passwords: Calico's `password: {secretKeyRef: {name, key}}` names a Kubernetes secret.
// cnf reads it where a Kubernetes secret volume puts it: the file <secrets_dir>/<name>/<key>
// (the agent's [routing] secrets_dir, default /etc/cnf/secrets), trailing newline removed.
//
// Uses Boost.JSON and the policy selector (cnf_policy): link Boost::json and cnf_policy.
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/net.hpp>
#include <cnf/policy/selector.hpp>
#include <cnf/route_filter.hpp>
#include <cnf/settings.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace model {

/// spec.password.secretKeyRef
struct secret_key_ref {
  std::string name;
  std::string key;
  friend bool operator==(const secret_key_ref&, const secret_key_ref&) = default;
};

struct bgp_peer {
  std::string name;
  std::string node;                       ///< spec.node: only this node peers
  std::string node_selector;              ///< spec.nodeSelector: the nodes that peer (empty: see node)
  std::optional<ip_address> peer_ip;     ///< spec.peerIP (its address)
  std::uint16_t peer_port = 0;            ///< spec.peerIP "A.B.C.D:port" / "[v6]:port"; 0: the listen port
  std::string peer_selector;              ///< spec.peerSelector: the nodes peered with (instead of peerIP)
  std::uint32_t as_number = 0;            ///< spec.asNumber
  std::optional<secret_key_ref> password; ///< spec.password.secretKeyRef
  bool keep_original_next_hop = false;    ///< spec.keepOriginalNextHop
  std::optional<std::uint32_t> max_restart_time;  ///< spec.maxRestartTime, seconds
  std::string source_address = "UseNodeIP";       ///< spec.sourceAddress: UseNodeIP or None
  std::vector<std::string> filters;               ///< spec.filters (BGPFilter names)
  friend bool operator==(const bgp_peer&, const bgp_peer&) = default;

  /// Calico's rule: nodeSelector when set; else `node` when set; else every node (global).
  bool applies_to(std::string_view node_name, const std::map<std::string, std::string>& labels) const {
    if (!node_selector.empty()) {
      auto s = netpol::parse_selector(node_selector);
      return s && s->matches(labels);
    }
    return node.empty() || node == node_name;
  }
  bool global() const { return node.empty() && node_selector.empty(); }
};

struct bgp_community {
  std::string name;
  std::string value;  ///< "aa:nn" or "aa:nn:mm"
  friend bool operator==(const bgp_community&, const bgp_community&) = default;
};

struct bgp_prefix_advertisement {
  ip_prefix cidr;
  std::vector<std::string> communities;  ///< names of spec.communities, or values
  friend bool operator==(const bgp_prefix_advertisement&, const bgp_prefix_advertisement&) = default;
};

struct bgp_configuration {
  std::string name;                               ///< "default" or "node.<name>"
  std::optional<std::uint32_t> as_number;         ///< spec.asNumber (default only)
  std::optional<bool> node_to_node_mesh_enabled;  ///< spec.nodeToNodeMeshEnabled (default only)
  std::optional<std::uint16_t> listen_port;       ///< spec.listenPort
  std::string log_severity_screen;                ///< spec.logSeverityScreen
  std::optional<secret_key_ref> node_mesh_password;  ///< spec.nodeMeshPassword.secretKeyRef
  std::optional<std::uint32_t> node_mesh_max_restart_time;
  std::vector<bgp_community> communities;
  std::vector<bgp_prefix_advertisement> prefix_advertisements;
  friend bool operator==(const bgp_configuration&, const bgp_configuration&) = default;
};

namespace detail {

/// "aa:nn" (standard, RFC 1997: two 16-bit numbers) or "aa:nn:mm" (large, RFC 8092: three
/// 32-bit numbers) as its numbers; nullopt when it is neither.
inline std::optional<std::vector<std::uint32_t>> parse_community(std::string_view s) {
  std::vector<std::uint32_t> parts;
  while (true) {
    auto colon = s.find(':');
    auto t = s.substr(0, colon);
    std::uint64_t n = 0;
    auto r = std::from_chars(t.data(), t.data() + t.size(), n);
    if (t.empty() || r.ec != std::errc() || r.ptr != t.data() + t.size() || n > 4294967295ull || parts.size() == 3) return std::nullopt;
    parts.push_back(static_cast<std::uint32_t>(n));
    if (colon == std::string_view::npos) break;
    s.remove_prefix(colon + 1);
  }
  if (parts.size() == 2 && (parts[0] > 65535 || parts[1] > 65535)) return std::nullopt;
  if (parts.size() != 2 && parts.size() != 3) return std::nullopt;
  return parts;
}

inline const std::set<std::string>& bgp_peer_fields() {
  static const std::set<std::string> f = {"node", "peerIP", "asNumber", "nodeSelector", "peerSelector", "password", "keepOriginalNextHop",
                                          "maxRestartTime", "sourceAddress", "filters", "restartMode", "failureDetectionMode",
                                          "birdGatewayMode", "numAllowedLocalASNumbers", "ttlSecurity", "reachableBy"};
  return f;
}
inline const std::set<std::string>& bgp_configuration_fields() {
  static const std::set<std::string> f = {"asNumber", "nodeToNodeMeshEnabled", "listenPort", "logSeverityScreen", "communities",
                                          "prefixAdvertisements", "nodeMeshPassword", "nodeMeshMaxRestartTime", "serviceClusterIPs",
                                          "serviceExternalIPs", "serviceLoadBalancerIPs", "bindMode", "ignoredInterfaces"};
  return f;
}

struct bgp_reader {
  std::string what;  ///< "BGPPeer/name"
  error fail(const std::string& field, const std::string& msg) const { return error(errc::invalid, what + ": spec." + field + ": " + msg); }

  result<void> known(const boost::json::object& o, const std::set<std::string>& fields, const std::string& prefix = {}) const {
    for (auto& [k, v] : o) {
      (void)v;
      std::string key(k);
      if (fields.count(key)) continue;
      std::string msg = "unknown field";
      if (auto m = did_you_mean(key, fields)) msg += "; did you mean '" + *m + "'?";
      return fail(prefix + key, msg);
    }
    return {};
  }
  result<std::uint32_t> asn(const boost::json::value& v, const std::string& field) const {
    std::int64_t n = 0;
    if (v.is_int64()) n = v.get_int64();
    else if (v.is_uint64()) n = v.get_uint64() > 0xffffffffull ? -1 : static_cast<std::int64_t>(v.get_uint64());
    else if (v.is_string()) {
      // "64512" or Calico's dotted "1.10" (asdot)
      std::string_view s(v.get_string());
      auto dot = s.find('.');
      std::uint64_t hi = 0, lo = 0;
      auto parse = [](std::string_view t, std::uint64_t& out) {
        auto r = std::from_chars(t.data(), t.data() + t.size(), out);
        return !t.empty() && r.ec == std::errc() && r.ptr == t.data() + t.size();
      };
      if (dot == std::string_view::npos ? !parse(s, lo) : !(parse(s.substr(0, dot), hi) && parse(s.substr(dot + 1), lo) && hi <= 65535 && lo <= 65535))
        return fail(field, "'" + std::string(s) + "' is not an AS number");
      n = static_cast<std::int64_t>(hi * 65536 + lo);
    } else {
      return fail(field, "expected an AS number (1 to 4294967295)");
    }
    if (n < 1 || n > 4294967295LL) return fail(field, "must be between 1 and 4294967295 (got " + (v.is_string() ? std::string(v.get_string()) : boost::json::serialize(v)) + ")");
    return static_cast<std::uint32_t>(n);
  }
  result<std::string> selector(const boost::json::value& v, const std::string& field) const {
    if (!v.is_string()) return fail(field, "expected a selector string, e.g. \"rack == 'a'\"");
    auto s = netpol::parse_selector(std::string_view(v.get_string()));
    if (!s) return fail(field, s.error().message);
    return std::string(v.get_string());
  }
  result<std::uint32_t> seconds(const boost::json::value& v, const std::string& field) const {
    // A Go duration as Calico writes it: "120s", "2m", "1h30m", "500ms" (rounded up to seconds).
    if (!v.is_string()) return fail(field, "expected a duration such as \"120s\"");
    std::string_view s(v.get_string());
    double total = 0;
    if (s.empty()) return fail(field, "expected a duration such as \"120s\"");
    while (!s.empty()) {
      std::size_t i = 0;
      while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
      if (i == 0) return fail(field, "'" + std::string(v.get_string()) + "' is not a duration (e.g. \"120s\", \"2m\")");
      double num = std::stod(std::string(s.substr(0, i)));
      s.remove_prefix(i);
      std::size_t j = 0;
      while (j < s.size() && !((s[j] >= '0' && s[j] <= '9') || s[j] == '.')) ++j;
      std::string_view unit = s.substr(0, j);
      s.remove_prefix(j);
      if (unit == "h") total += num * 3600;
      else if (unit == "m") total += num * 60;
      else if (unit == "s") total += num;
      else if (unit == "ms") total += num / 1000;
      else return fail(field, "'" + std::string(v.get_string()) + "' is not a duration (units h, m, s, ms)");
    }
    if (total > 4294967295.0) return fail(field, "too long");
    return static_cast<std::uint32_t>(total + 0.999);
  }
  result<secret_key_ref> secret(const boost::json::value& v, const std::string& field) const {
    if (!v.is_object()) return fail(field, "expected {secretKeyRef: {name: SECRET, key: KEY}}");
    if (auto r = known(v.get_object(), {"secretKeyRef"}, field + "."); !r) return r.error();
    auto* ref = v.get_object().if_contains("secretKeyRef");
    if (!ref || !ref->is_object()) return fail(field + ".secretKeyRef", "is required: {name: SECRET, key: KEY}");
    if (auto r = known(ref->get_object(), {"name", "key", "optional"}, field + ".secretKeyRef."); !r) return r.error();
    secret_key_ref s;
    for (const char* k : {"name", "key"}) {
      auto* x = ref->get_object().if_contains(k);
      if (!x || !x->is_string() || x->get_string().empty()) return fail(field + ".secretKeyRef." + k, "is required (a string)");
      std::string t(x->get_string());
      if (t.find('/') != std::string::npos || t == "." || t == "..") return fail(field + ".secretKeyRef." + k, "'" + t + "' is not a secret name or key");
      (std::string_view(k) == "name" ? s.name : s.key) = t;
    }
    return s;
  }
};

}  // namespace detail

inline result<bgp_peer> parse_bgp_peer(const resource& r) {
  detail::bgp_reader rd{"BGPPeer/" + r.name};
  boost::system::error_code ec;
  auto v = boost::json::parse(r.spec.empty() ? std::string_view("{}") : std::string_view(r.spec), ec);
  if (ec || !v.is_object()) return error(errc::invalid, rd.what + ": spec: not a JSON object");
  const auto& o = v.get_object();
  if (auto k = rd.known(o, detail::bgp_peer_fields()); !k) return k.error();
  bgp_peer p;
  p.name = r.name;
  auto str = [&](const char* k, std::string& out) -> result<void> {
    auto* x = o.if_contains(k);
    if (!x || x->is_null()) return {};
    if (!x->is_string()) return rd.fail(k, "expected a string");
    out = std::string(x->get_string());
    return {};
  };
  if (auto x = str("node", p.node); !x) return x.error();
  if (auto* x = o.if_contains("nodeSelector"); x && !x->is_null()) {
    auto s = rd.selector(*x, "nodeSelector");
    if (!s) return s.error();
    p.node_selector = *s;
  }
  if (auto* x = o.if_contains("peerSelector"); x && !x->is_null()) {
    auto s = rd.selector(*x, "peerSelector");
    if (!s) return s.error();
    p.peer_selector = *s;
  }
  if (auto* x = o.if_contains("peerIP"); x && !x->is_null()) {
    if (!x->is_string()) return rd.fail("peerIP", "expected an IP address (\"10.0.0.1\", \"10.0.0.1:1179\", \"[fd00::1]:1179\")");
    std::string t(x->get_string()), addr = t;
    std::string port;
    if (t.size() > 2 && t.front() == '[') {
      auto close = t.find(']');
      if (close == std::string::npos) return rd.fail("peerIP", "'" + t + "': '[' without ']'");
      addr = t.substr(1, close - 1);
      if (close + 1 < t.size()) {
        if (t[close + 1] != ':') return rd.fail("peerIP", "'" + t + "': expected ':port' after ']'");
        port = t.substr(close + 2);
      }
    } else if (std::count(t.begin(), t.end(), ':') == 1) {
      addr = t.substr(0, t.find(':'));
      port = t.substr(t.find(':') + 1);
    }
    auto a = ip_address::parse(addr);
    if (!a) return rd.fail("peerIP", "'" + t + "' is not an IP address");
    p.peer_ip = *a;
    if (!port.empty()) {
      unsigned n = 0;
      auto res = std::from_chars(port.data(), port.data() + port.size(), n);
      if (res.ec != std::errc() || res.ptr != port.data() + port.size() || n < 1 || n > 65535)
        return rd.fail("peerIP", "'" + t + "': the port must be between 1 and 65535");
      p.peer_port = static_cast<std::uint16_t>(n);
    }
  }
  if (auto* x = o.if_contains("asNumber"); x && !x->is_null()) {
    auto a = rd.asn(*x, "asNumber");
    if (!a) return a.error();
    p.as_number = *a;
  }
  if (p.peer_ip && !p.peer_selector.empty()) return rd.fail("peerSelector", "give either peerIP or peerSelector, not both");
  if (!p.peer_ip && p.peer_selector.empty()) return rd.fail("peerIP", "is required (or peerSelector: the nodes to peer with)");
  if (p.peer_ip && !p.as_number) return rd.fail("asNumber", "is required with peerIP");
  if (!p.node.empty() && !p.node_selector.empty()) return rd.fail("nodeSelector", "give either node or nodeSelector, not both");
  if (auto* x = o.if_contains("password"); x && !x->is_null()) {
    auto s = rd.secret(*x, "password");
    if (!s) return s.error();
    p.password = *s;
  }
  if (auto* x = o.if_contains("keepOriginalNextHop"); x && !x->is_null()) {
    if (!x->is_bool()) return rd.fail("keepOriginalNextHop", "expected true or false");
    p.keep_original_next_hop = x->get_bool();
  }
  if (auto* x = o.if_contains("maxRestartTime"); x && !x->is_null()) {
    auto s = rd.seconds(*x, "maxRestartTime");
    if (!s) return s.error();
    p.max_restart_time = *s;
  }
  if (auto* x = o.if_contains("sourceAddress"); x && !x->is_null()) {
    if (!x->is_string() || (x->get_string() != "UseNodeIP" && x->get_string() != "None"))
      return rd.fail("sourceAddress", "expected UseNodeIP or None");
    p.source_address = std::string(x->get_string());
  }
  if (auto* x = o.if_contains("filters"); x && !x->is_null()) {
    if (!x->is_array()) return rd.fail("filters", "expected a list of BGPFilter names");
    for (auto& f : x->get_array()) {
      if (!f.is_string()) return rd.fail("filters", "expected a list of BGPFilter names");
      p.filters.emplace_back(f.get_string());
    }
  }
  for (const char* k : {"restartMode", "birdGatewayMode", "failureDetectionMode", "reachableBy"})
    if (auto* x = o.if_contains(k); x && !x->is_null() && !x->is_string()) return rd.fail(k, "expected a string");
  return p;
}

inline result<bgp_configuration> parse_bgp_configuration(const resource& r) {
  detail::bgp_reader rd{"BGPConfiguration/" + r.name};
  if (r.name != "default" && !r.name.starts_with("node."))
    return error(errc::invalid, rd.what + ": metadata.name: must be 'default' (the cluster's) or 'node.<node name>' (one node's)");
  boost::system::error_code ec;
  auto v = boost::json::parse(r.spec.empty() ? std::string_view("{}") : std::string_view(r.spec), ec);
  if (ec || !v.is_object()) return error(errc::invalid, rd.what + ": spec: not a JSON object");
  const auto& o = v.get_object();
  if (auto k = rd.known(o, detail::bgp_configuration_fields()); !k) return k.error();
  bgp_configuration c;
  c.name = r.name;
  const bool per_node = r.name != "default";
  if (auto* x = o.if_contains("asNumber"); x && !x->is_null()) {
    if (per_node) return rd.fail("asNumber", "only the 'default' BGPConfiguration sets it (a node's own AS is its Node's spec.bgp.asNumber)");
    auto a = rd.asn(*x, "asNumber");
    if (!a) return a.error();
    c.as_number = *a;
  }
  if (auto* x = o.if_contains("nodeToNodeMeshEnabled"); x && !x->is_null()) {
    if (per_node) return rd.fail("nodeToNodeMeshEnabled", "only the 'default' BGPConfiguration sets it");
    if (!x->is_bool()) return rd.fail("nodeToNodeMeshEnabled", "expected true or false");
    c.node_to_node_mesh_enabled = x->get_bool();
  }
  if (auto* x = o.if_contains("listenPort"); x && !x->is_null()) {
    if (!x->is_int64() || x->get_int64() < 1 || x->get_int64() > 65535) return rd.fail("listenPort", "must be between 1 and 65535");
    c.listen_port = static_cast<std::uint16_t>(x->get_int64());
  }
  if (auto* x = o.if_contains("logSeverityScreen"); x && !x->is_null()) {
    static const std::set<std::string> levels = {"Debug", "Info", "Warning", "Error", "Fatal"};
    if (!x->is_string() || !levels.count(std::string(x->get_string()))) return rd.fail("logSeverityScreen", "expected Debug, Info, Warning, Error or Fatal");
    c.log_severity_screen = std::string(x->get_string());
  }
  if (auto* x = o.if_contains("nodeMeshPassword"); x && !x->is_null()) {
    auto s = rd.secret(*x, "nodeMeshPassword");
    if (!s) return s.error();
    c.node_mesh_password = *s;
  }
  if (auto* x = o.if_contains("nodeMeshMaxRestartTime"); x && !x->is_null()) {
    auto s = rd.seconds(*x, "nodeMeshMaxRestartTime");
    if (!s) return s.error();
    c.node_mesh_max_restart_time = *s;
  }
  auto community_ok = [](std::string_view s) { return detail::parse_community(s).has_value(); };
  if (auto* x = o.if_contains("communities"); x && !x->is_null()) {
    if (!x->is_array()) return rd.fail("communities", "expected a list of {name, value}");
    std::size_t i = 0;
    for (auto& e : x->get_array()) {
      const std::string f = "communities[" + std::to_string(i++) + "]";
      if (!e.is_object()) return rd.fail(f, "expected {name, value}");
      if (auto k = rd.known(e.get_object(), {"name", "value"}, f + "."); !k) return k.error();
      auto* n = e.get_object().if_contains("name");
      auto* val = e.get_object().if_contains("value");
      if (!n || !n->is_string() || n->get_string().empty()) return rd.fail(f + ".name", "is required");
      if (!val || !val->is_string() || !community_ok(val->get_string()))
        return rd.fail(f + ".value", "expected aa:nn (standard, 16-bit numbers) or aa:nn:mm (large, 32-bit numbers)");
      c.communities.push_back({std::string(n->get_string()), std::string(val->get_string())});
    }
  }
  if (auto* x = o.if_contains("prefixAdvertisements"); x && !x->is_null()) {
    if (!x->is_array()) return rd.fail("prefixAdvertisements", "expected a list of {cidr, communities}");
    std::size_t i = 0;
    for (auto& e : x->get_array()) {
      const std::string f = "prefixAdvertisements[" + std::to_string(i++) + "]";
      if (!e.is_object()) return rd.fail(f, "expected {cidr, communities}");
      if (auto k = rd.known(e.get_object(), {"cidr", "communities"}, f + "."); !k) return k.error();
      auto* cidr = e.get_object().if_contains("cidr");
      if (!cidr || !cidr->is_string()) return rd.fail(f + ".cidr", "is required");
      auto pfx = ip_prefix::parse(std::string_view(cidr->get_string()));
      if (!pfx) return rd.fail(f + ".cidr", pfx.error().message);
      bgp_prefix_advertisement pa{*pfx, {}};
      if (auto* cs = e.get_object().if_contains("communities"); cs && !cs->is_null()) {
        if (!cs->is_array()) return rd.fail(f + ".communities", "expected a list of community names or values");
        for (auto& cv : cs->get_array()) {
          if (!cv.is_string()) return rd.fail(f + ".communities", "expected a list of community names or values");
          std::string s(cv.get_string());
          bool named = std::any_of(c.communities.begin(), c.communities.end(), [&](auto& k) { return k.name == s; });
          if (!named && !community_ok(s)) return rd.fail(f + ".communities", "'" + s + "' is neither a name in spec.communities nor a community value");
          pa.communities.push_back(s);
        }
      }
      c.prefix_advertisements.push_back(std::move(pa));
    }
  }
  return c;
}

/// The prefixAdvertisements a node's speaker applies, as Calico's confd renders them into
/// BIRD's apply_communities(): per family, the `node.<name>` BGPConfiguration's entries when
/// it has any of that family, else the `default`'s; every community name resolved to its value
/// through the spec.communities of the same resource (a value stays as written).
inline std::vector<bgp_prefix_advertisement> effective_prefix_advertisements(const bgp_configuration* dflt, const bgp_configuration* node) {
  auto of = [](const bgp_configuration* c, ip_family f) {
    std::vector<bgp_prefix_advertisement> v;
    if (!c) return v;
    for (auto& pa : c->prefix_advertisements) {
      if (pa.cidr.family() != f) continue;
      bgp_prefix_advertisement r{pa.cidr, {}};
      for (auto& name : pa.communities) {
        auto k = std::find_if(c->communities.begin(), c->communities.end(), [&](auto& x) { return x.name == name; });
        r.communities.push_back(k != c->communities.end() ? k->value : name);
      }
      v.push_back(std::move(r));
    }
    return v;
  };
  std::vector<bgp_prefix_advertisement> out;
  for (auto f : {ip_family::v4, ip_family::v6}) {
    auto v = of(node, f);
    if (v.empty()) v = of(dflt, f);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

/// Calico's BGPFilter: spec.exportV4, importV4, exportV6, importV6, each a list of rules
/// {action: Accept|Reject, matchOperator: Equal|NotEqual|In|NotIn, cidr, prefixLength: {min, max},
/// source: RemotePeers}. Spelled exactly as Calico's API validation wants them. `interface`
/// (routes BIRD learned from kernel interfaces) has no meaning for cnf's speaker and is refused.
inline result<route_filter> parse_bgp_filter(const resource& r) {
  detail::bgp_reader rd{"BGPFilter/" + r.name};
  boost::system::error_code ec;
  auto v = boost::json::parse(r.spec.empty() ? std::string_view("{}") : std::string_view(r.spec), ec);
  if (ec || !v.is_object()) return error(errc::invalid, rd.what + ": spec: not a JSON object");
  const auto& o = v.get_object();
  static const std::set<std::string> lists = {"exportV4", "importV4", "exportV6", "importV6"};
  if (auto k = rd.known(o, lists); !k) return k.error();
  route_filter f;
  f.name = r.name;
  for (const auto& list : lists) {
    auto* x = o.if_contains(list);
    if (!x || x->is_null()) continue;
    const ip_family fam = list.ends_with("V4") ? ip_family::v4 : ip_family::v6;
    const unsigned bits = fam == ip_family::v4 ? 32 : 128;
    auto& out = list == "exportV4" ? f.export_v4 : list == "importV4" ? f.import_v4 : list == "exportV6" ? f.export_v6 : f.import_v6;
    if (!x->is_array()) return rd.fail(list, "expected a list of rules {action, matchOperator, cidr}");
    std::size_t i = 0;
    for (auto& e : x->get_array()) {
      const std::string at = list + "[" + std::to_string(i++) + "]";
      if (!e.is_object()) return rd.fail(at, "expected a rule {action, matchOperator, cidr}");
      const auto& ro = e.get_object();
      if (auto k = rd.known(ro, {"action", "matchOperator", "cidr", "prefixLength", "source", "interface"}, at + "."); !k) return k.error();
      route_filter_rule rule;
      auto* act = ro.if_contains("action");
      if (!act || act->is_null()) return rd.fail(at + ".action", "is required (Accept or Reject)");
      if (!act->is_string() || (act->get_string() != "Accept" && act->get_string() != "Reject"))
        return rd.fail(at + ".action", "expected Accept or Reject" + (act->is_string() ? " (got '" + std::string(act->get_string()) + "')" : std::string()));
      rule.action = act->get_string() == "Accept" ? filter_action::accept : filter_action::reject;
      auto* op = ro.if_contains("matchOperator");
      auto* cidr = ro.if_contains("cidr");
      const bool has_op = op && !op->is_null(), has_cidr = cidr && !cidr->is_null();
      if (has_op) {
        static const std::map<std::string, filter_match, std::less<>> ops = {
            {"Equal", filter_match::equal}, {"NotEqual", filter_match::not_equal}, {"In", filter_match::in}, {"NotIn", filter_match::not_in}};
        auto it = op->is_string() ? ops.find(std::string_view(op->get_string())) : ops.end();
        if (it == ops.end())
          return rd.fail(at + ".matchOperator", "expected Equal, NotEqual, In or NotIn" +
                                                    (op->is_string() ? " (got '" + std::string(op->get_string()) + "')" : std::string()));
        rule.match = it->second;
      }
      if (has_cidr) {
        if (!cidr->is_string()) return rd.fail(at + ".cidr", "expected a CIDR such as \"10.0.0.0/8\"");
        auto pfx = ip_prefix::parse(std::string_view(cidr->get_string()));
        if (!pfx) return rd.fail(at + ".cidr", pfx.error().message);
        if (pfx->family() != fam)
          return rd.fail(at + ".cidr", "'" + std::string(cidr->get_string()) + "' is not an " + (fam == ip_family::v4 ? "IPv4" : "IPv6") + " CIDR (" + list + ")");
        rule.cidr = *pfx;
      }
      if (has_op != has_cidr) return rd.fail(at + (has_op ? ".cidr" : ".matchOperator"), "cidr and matchOperator go together: give both or neither");
      if (auto* pl = ro.if_contains("prefixLength"); pl && !pl->is_null()) {
        if (!pl->is_object()) return rd.fail(at + ".prefixLength", "expected {min, max}");
        if (auto k = rd.known(pl->get_object(), {"min", "max"}, at + ".prefixLength."); !k) return k.error();
        if (rule.match != filter_match::in && rule.match != filter_match::not_in)
          return rd.fail(at + ".prefixLength", "needs matchOperator In or NotIn (and a cidr)");
        for (const char* k : {"min", "max"}) {
          auto* n = pl->get_object().if_contains(k);
          if (!n || n->is_null()) continue;
          if (!n->is_int64() || n->get_int64() < 0 || n->get_int64() > static_cast<std::int64_t>(bits))
            return rd.fail(at + ".prefixLength." + k, "must be between 0 and " + std::to_string(bits));
          (std::string_view(k) == "min" ? rule.min_length : rule.max_length) = static_cast<std::uint8_t>(n->get_int64());
        }
        if (rule.min_length && *rule.min_length < rule.cidr.length())
          return rd.fail(at + ".prefixLength.min", "must be at least the cidr's length " + std::to_string(rule.cidr.length()));
        if (rule.min_length && rule.max_length && *rule.min_length > *rule.max_length)
          return rd.fail(at + ".prefixLength", "min is above max");
      }
      if (auto* s = ro.if_contains("source"); s && !s->is_null()) {
        if (!s->is_string() || s->get_string() != "RemotePeers") return rd.fail(at + ".source", "expected RemotePeers");
        rule.remote_peers_only = true;
      }
      if (auto* s = ro.if_contains("interface"); s && !s->is_null())
        return rd.fail(at + ".interface", "not supported by cnf (it matches routes BIRD learns from kernel interfaces; cnf's speaker has none)");
      out.push_back(rule);
    }
  }
  return f;
}

/// The secret a secretKeyRef names, as a Kubernetes secret volume holds it.
inline result<std::string> read_secret(const std::string& secrets_dir, const secret_key_ref& ref) {
  const std::string path = secrets_dir + "/" + ref.name + "/" + ref.key;
  std::ifstream f(path);
  if (!f) return error(errc::not_found, "secret " + ref.name + "/" + ref.key + ": cannot read " + path +
                                            " (cnf reads a secretKeyRef from <[routing] secrets_dir>/<name>/<key>)");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.empty()) return error(errc::invalid, "secret " + ref.name + "/" + ref.key + ": " + path + " is empty");
  if (s.size() > 80) return error(errc::invalid, "secret " + ref.name + "/" + ref.key + ": longer than 80 octets (the TCP MD5 key limit)");
  return s;
}

}  // namespace model
CNF_END_NAMESPACE
