#include <cnf/policy/rules.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <netinet/in.h>

CNF_BEGIN_NAMESPACE
namespace netpol {

namespace json = boost::json;

namespace {

struct reader {
  std::string what;  // "NetworkPolicy/ns/name"

  cnf::error fail(const std::string& field, const std::string& msg) const {
    return cnf::error(errc::invalid, what + ": " + field + ": " + msg);
  }

  result<void> known(const json::object& o, const std::string& field, std::initializer_list<std::string_view> keys) const {
    for (auto& kv : o) {
      if (std::find(keys.begin(), keys.end(), std::string_view(kv.key())) == keys.end()) {
        std::string list;
        for (auto k : keys) list += (list.empty() ? "" : ", ") + std::string(k);
        return fail(field.empty() ? std::string(kv.key()) : field + "." + std::string(kv.key()), "unknown field (known: " + list + ")");
      }
    }
    return {};
  }

  result<const json::object*> object(const json::value* v, const std::string& field) const {
    if (!v || v->is_null()) return static_cast<const json::object*>(nullptr);
    if (!v->is_object()) return fail(field, "expected an object");
    return &v->get_object();
  }
  result<const json::array*> array(const json::value* v, const std::string& field) const {
    if (!v || v->is_null()) return static_cast<const json::array*>(nullptr);
    if (!v->is_array()) return fail(field, "expected an array");
    return &v->get_array();
  }
  result<std::optional<std::string>> string(const json::value* v, const std::string& field) const {
    if (!v || v->is_null()) return std::optional<std::string>{};
    if (!v->is_string()) return fail(field, "expected a string");
    return std::optional<std::string>(std::string(v->get_string()));
  }
  result<std::optional<selector>> sel(const json::value* v, const std::string& field) const {
    auto s = string(v, field);
    if (!s) return s.error();
    if (!*s) return std::optional<selector>{};
    std::string_view t = **s;
    if (t.find_first_not_of(" \t") == std::string_view::npos) return std::optional<selector>{};
    auto p = parse_selector(t);
    if (!p) return fail(field, p.error().message);
    return std::optional<selector>(*p);
  }
  result<std::vector<ip_prefix>> nets(const json::value* v, const std::string& field) const {
    std::vector<ip_prefix> out;
    auto a = array(v, field);
    if (!a) return a.error();
    if (!*a) return out;
    std::size_t i = 0;
    for (auto& e : **a) {
      std::string f = field + "[" + std::to_string(i++) + "]";
      if (!e.is_string()) return fail(f, "expected a CIDR string");
      std::string_view t = e.get_string();
      auto p = ip_prefix::parse(t.find('/') == std::string_view::npos ? std::string(t) + (t.find(':') == std::string_view::npos ? "/32" : "/128")
                                                                      : std::string(t));
      if (!p) {
        if (ip_prefix::parse(t, true)) return fail(f, "'" + std::string(t) + "' is not a network (host bits are set)");
        return fail(f, "'" + std::string(t) + "' is not a CIDR");
      }
      out.push_back(*p);
    }
    return out;
  }
  result<port_spec> port_text(std::string_view t, const std::string& f) const {
    port_spec p;
    auto num = [&](std::string_view s, std::uint16_t& out) {
      unsigned v = 0;
      auto [e, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec != std::errc() || e != s.data() + s.size() || v > 65535) return false;
      out = static_cast<std::uint16_t>(v);
      return true;
    };
    if (auto c = t.find(':'); c != std::string_view::npos) {
      if (!num(t.substr(0, c), p.range.first) || !num(t.substr(c + 1), p.range.last) || p.range.first > p.range.last)
        return fail(f, "'" + std::string(t) + "' is not a port range (first:last, 0..65535, first <= last)");
      return p;
    }
    if (!t.empty() && std::isdigit(static_cast<unsigned char>(t[0]))) {
      if (!num(t, p.range.first)) return fail(f, "'" + std::string(t) + "' is not a port (0..65535)");
      p.range.last = p.range.first;
      return p;
    }
    if (t.empty() || t.size() > 15) return fail(f, "'" + std::string(t) + "' is not a port name (1..15 characters)");
    p.name = std::string(t);
    return p;
  }
  result<std::vector<port_spec>> ports(const json::value* v, const std::string& field) const {
    std::vector<port_spec> out;
    auto a = array(v, field);
    if (!a) return a.error();
    if (!*a) return out;
    std::size_t i = 0;
    for (auto& e : **a) {
      std::string f = field + "[" + std::to_string(i++) + "]";
      if (e.is_int64() || e.is_uint64()) {
        auto n = e.is_int64() ? e.get_int64() : static_cast<std::int64_t>(e.get_uint64());
        if (n < 0 || n > 65535) return fail(f, std::to_string(n) + " is not a port (0..65535)");
        out.push_back({{static_cast<std::uint16_t>(n), static_cast<std::uint16_t>(n)}, {}});
        continue;
      }
      if (!e.is_string()) return fail(f, "expected a port number, a \"first:last\" range or a port name");
      auto p = port_text(e.get_string(), f);
      if (!p) return p.error();
      out.push_back(*p);
    }
    return out;
  }
  result<std::optional<icmp_spec>> icmp(const json::value* v, const std::string& field) const {
    auto o = object(v, field);
    if (!o) return o.error();
    if (!*o) return std::optional<icmp_spec>{};
    if (auto k = known(**o, field, {"type", "code"}); !k) return k.error();
    icmp_spec s;
    for (auto [key, out] : {std::pair{"type", &s.type}, std::pair{"code", &s.code}}) {
      const auto* x = (*o)->if_contains(key);
      if (!x || x->is_null()) continue;
      if (!(x->is_int64() || x->is_uint64()) || x->to_number<std::int64_t>() < 0 || x->to_number<std::int64_t>() > 255)
        return fail(field + "." + key, "expected a number 0..255");
      *out = static_cast<std::uint8_t>(x->to_number<std::int64_t>());
    }
    if (s.code && !s.type) return fail(field + ".code", "a code needs a type");
    return std::optional<icmp_spec>(s);
  }
  result<std::optional<std::uint8_t>> protocol(const json::value* v, const std::string& field) const {
    if (!v || v->is_null()) return std::optional<std::uint8_t>{};
    if (v->is_int64() || v->is_uint64()) {
      auto n = v->to_number<std::int64_t>();
      if (n < 1 || n > 255) return fail(field, std::to_string(n) + " is not a protocol number (1..255)");
      return std::optional<std::uint8_t>(static_cast<std::uint8_t>(n));
    }
    if (!v->is_string()) return fail(field, "expected a protocol name or number");
    auto p = parse_protocol(v->get_string());
    if (!p) return fail(field, p.error().message);
    return std::optional<std::uint8_t>(*p);
  }

  result<entity_rule> entity(const json::value* v, const std::string& field) const {
    entity_rule e;
    auto o = object(v, field);
    if (!o) return o.error();
    if (!*o) return e;
    if (auto k = known(**o, field, {"nets", "notNets", "selector", "notSelector", "namespaceSelector", "ports", "notPorts", "serviceAccounts"});
        !k)
      return k.error();
    const auto& m = **o;
    if (auto r = nets(m.if_contains("nets"), field + ".nets"); !r) return r.error(); else e.nets = *r;
    if (auto r = nets(m.if_contains("notNets"), field + ".notNets"); !r) return r.error(); else e.not_nets = *r;
    if (auto r = sel(m.if_contains("selector"), field + ".selector"); !r) return r.error(); else e.sel = *r;
    if (auto r = sel(m.if_contains("notSelector"), field + ".notSelector"); !r) return r.error(); else e.not_sel = *r;
    if (auto r = sel(m.if_contains("namespaceSelector"), field + ".namespaceSelector"); !r) return r.error(); else e.namespace_sel = *r;
    if (auto r = ports(m.if_contains("ports"), field + ".ports"); !r) return r.error(); else e.ports = *r;
    if (auto r = ports(m.if_contains("notPorts"), field + ".notPorts"); !r) return r.error(); else e.not_ports = *r;
    if (auto sa = object(m.if_contains("serviceAccounts"), field + ".serviceAccounts"); !sa) {
      return sa.error();
    } else if (*sa) {
      if (auto k = known(**sa, field + ".serviceAccounts", {"names", "selector"}); !k) return k.error();
      auto s = sel((*sa)->if_contains("selector"), field + ".serviceAccounts.selector");
      if (!s) return s.error();
      std::optional<selector> names;
      auto n = array((*sa)->if_contains("names"), field + ".serviceAccounts.names");
      if (!n) return n.error();
      if (*n && !(*n)->empty()) {
        std::string t = "projectcalico.org/serviceaccount in {";
        std::size_t i = 0;
        for (auto& x : **n) {
          if (!x.is_string()) return fail(field + ".serviceAccounts.names[" + std::to_string(i) + "]", "expected a string");
          t += (i++ ? ", '" : "'") + std::string(x.get_string()) + "'";
        }
        names = parse_selector(t + "}").value();
      }
      if (*s) e.service_account_sel = (*s)->prefixed("pcsa.", "projectcalico.org/serviceaccount");
      if (names) e.service_account_sel = e.service_account_sel ? selector::both(*e.service_account_sel, *names) : *names;
    }
    return e;
  }

  result<rule> calico_rule(const json::value& v, const std::string& field) const {
    rule r;
    if (!v.is_object()) return fail(field, "expected an object");
    const auto& o = v.get_object();
    if (auto k = known(o, field, {"action", "protocol", "notProtocol", "icmp", "notICMP", "ipVersion", "source", "destination", "metadata", "http"});
        !k)
      return k.error();
    auto a = string(o.if_contains("action"), field + ".action");
    if (!a) return a.error();
    if (!*a) return fail(field + ".action", "missing (Allow, Deny, Pass or Log)");
    if (**a == "Allow") r.action = policy_rule::action_type::allow;
    else if (**a == "Deny") r.action = policy_rule::action_type::deny;
    else if (**a == "Pass") r.action = policy_rule::action_type::pass;
    else if (**a == "Log") r.action = policy_rule::action_type::log;
    else return fail(field + ".action", "'" + **a + "' is not one of Allow, Deny, Pass, Log");
    if (auto p = protocol(o.if_contains("protocol"), field + ".protocol"); !p) return p.error(); else r.protocol = *p;
    if (auto p = protocol(o.if_contains("notProtocol"), field + ".notProtocol"); !p) return p.error(); else r.not_protocol = *p;
    if (auto i = icmp(o.if_contains("icmp"), field + ".icmp"); !i) return i.error(); else r.icmp = *i;
    if (auto i = icmp(o.if_contains("notICMP"), field + ".notICMP"); !i) return i.error(); else r.not_icmp = *i;
    if (const auto* iv = o.if_contains("ipVersion"); iv && !iv->is_null()) {
      if (!(iv->is_int64() || iv->is_uint64()) || (iv->to_number<int>() != 4 && iv->to_number<int>() != 6))
        return fail(field + ".ipVersion", "expected 4 or 6");
      r.family = iv->to_number<int>() == 4 ? ip_family::v4 : ip_family::v6;
    }
    if (auto e = entity(o.if_contains("source"), field + ".source"); !e) return e.error(); else r.source = *e;
    if (auto e = entity(o.if_contains("destination"), field + ".destination"); !e) return e.error(); else r.destination = *e;
    auto port_proto = [&](const entity_rule& e, const char* side) -> result<void> {
      if ((e.ports.empty() && e.not_ports.empty()) || (r.protocol && (*r.protocol == IPPROTO_TCP || *r.protocol == IPPROTO_UDP || *r.protocol == IPPROTO_SCTP || *r.protocol == 136)))
        return {};
      return fail(field + "." + side + ".ports", "ports need protocol TCP, UDP, SCTP or UDPLite");
    };
    if (auto c = port_proto(r.source, "source"); !c) return c.error();
    if (auto c = port_proto(r.destination, "destination"); !c) return c.error();
    if ((r.icmp || r.not_icmp) && !(r.protocol && (*r.protocol == IPPROTO_ICMP || *r.protocol == IPPROTO_ICMPV6)))
      return fail(field + ".icmp", "icmp needs protocol ICMP or ICMPv6");
    return r;
  }
};

std::string what_of(const resource& r, std::string_view kind) {
  return std::string(kind) + "/" + (r.ns.empty() ? "" : r.ns + "/") + r.name;
}

result<void> parse_types(const reader& rd, const json::object& spec, policy_def& p) {
  auto t = rd.array(spec.if_contains("types"), "spec.types");
  if (!t) return t.error();
  if (!*t) {
    p.ingress = true;
    p.egress = !p.egress_rules.empty();
    return {};
  }
  p.ingress = p.egress = false;
  std::size_t i = 0;
  for (auto& x : **t) {
    auto f = "spec.types[" + std::to_string(i++) + "]";
    if (!x.is_string()) return rd.fail(f, "expected \"Ingress\" or \"Egress\"");
    if (x.get_string() == "Ingress") p.ingress = true;
    else if (x.get_string() == "Egress") p.egress = true;
    else return rd.fail(f, "'" + std::string(x.get_string()) + "' is neither \"Ingress\" nor \"Egress\"");
  }
  return {};
}

result<json::object> spec_object(const reader& rd, const resource& r) {
  boost::system::error_code ec;
  auto v = json::parse(r.spec, ec);
  if (ec || !v.is_object()) return rd.fail("spec", "not a JSON object");
  return std::move(v.get_object());
}

/// K8s LabelSelector {matchLabels, matchExpressions} -> selector.
result<selector> k8s_label_selector(const reader& rd, const json::value* v, const std::string& field) {
  auto o = rd.object(v, field);
  if (!o) return o.error();
  if (!*o) return selector();
  if (auto k = rd.known(**o, field, {"matchLabels", "matchExpressions"}); !k) return k.error();
  std::vector<std::string> terms;
  auto lit = [](std::string_view s) { return s.find('\'') == std::string_view::npos ? "'" + std::string(s) + "'" : "\"" + std::string(s) + "\""; };
  if (auto ml = rd.object((*o)->if_contains("matchLabels"), field + ".matchLabels"); !ml) {
    return ml.error();
  } else if (*ml) {
    for (auto& kv : **ml) {
      if (!kv.value().is_string()) return rd.fail(field + ".matchLabels." + std::string(kv.key()), "expected a string");
      terms.push_back(std::string(kv.key()) + " == " + lit(kv.value().get_string()));
    }
  }
  auto me = rd.array((*o)->if_contains("matchExpressions"), field + ".matchExpressions");
  if (!me) return me.error();
  if (*me) {
    std::size_t i = 0;
    for (auto& x : **me) {
      auto f = field + ".matchExpressions[" + std::to_string(i++) + "]";
      if (!x.is_object()) return rd.fail(f, "expected an object");
      if (auto k = rd.known(x.get_object(), f, {"key", "operator", "values"}); !k) return k.error();
      auto key = rd.string(x.get_object().if_contains("key"), f + ".key");
      if (!key) return key.error();
      if (!*key || (*key)->empty()) return rd.fail(f + ".key", "missing");
      auto op = rd.string(x.get_object().if_contains("operator"), f + ".operator");
      if (!op) return op.error();
      std::string vals;
      auto va = rd.array(x.get_object().if_contains("values"), f + ".values");
      if (!va) return va.error();
      if (*va)
        for (auto& s : **va) {
          if (!s.is_string()) return rd.fail(f + ".values", "expected strings");
          vals += (vals.empty() ? "" : ", ") + lit(s.get_string());
        }
      const std::string o2 = *op ? **op : "";
      if (o2 == "In" || o2 == "NotIn") {
        if (vals.empty()) return rd.fail(f + ".values", "operator " + o2 + " needs values");
        terms.push_back(**key + (o2 == "In" ? " in {" : " not in {") + vals + "}");
      } else if (o2 == "Exists" || o2 == "DoesNotExist") {
        if (!vals.empty()) return rd.fail(f + ".values", "operator " + o2 + " takes no values");
        terms.push_back((o2 == "Exists" ? "has(" : "!has(") + **key + ")");
      } else {
        return rd.fail(f + ".operator", "'" + o2 + "' is not one of In, NotIn, Exists, DoesNotExist");
      }
    }
  }
  if (terms.empty()) return selector();
  std::string t;
  for (auto& s : terms) t += (t.empty() ? "" : " && ") + s;
  auto s = parse_selector(t);
  if (!s) return rd.fail(field, s.error().message);
  return *s;
}

}  // namespace

result<std::uint8_t> parse_protocol(std::string_view s) {
  std::string l;
  for (char c : s) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (l == "tcp") return std::uint8_t{IPPROTO_TCP};
  if (l == "udp") return std::uint8_t{IPPROTO_UDP};
  if (l == "icmp") return std::uint8_t{IPPROTO_ICMP};
  if (l == "icmpv6") return std::uint8_t{IPPROTO_ICMPV6};
  if (l == "sctp") return std::uint8_t{IPPROTO_SCTP};
  if (l == "udplite") return std::uint8_t{136};
  unsigned v = 0;
  auto [e, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc() && e == s.data() + s.size() && v >= 1 && v <= 255) return static_cast<std::uint8_t>(v);
  return cnf::error(errc::invalid, "'" + std::string(s) + "' is not a protocol (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1..255)");
}

result<policy_def> parse_calico_policy(const resource& r) {
  const bool global = r.kind == "GlobalNetworkPolicy";
  if (!global && r.kind != "NetworkPolicy") return cnf::error(errc::invalid, r.kind + "/" + r.name + ": not a NetworkPolicy or GlobalNetworkPolicy");
  reader rd{what_of(r, global ? "GlobalNetworkPolicy" : "NetworkPolicy")};
  if (!global && r.ns.empty()) return rd.fail("metadata.namespace", "missing (a NetworkPolicy is namespaced)");
  auto spec = spec_object(rd, r);
  if (!spec) return spec.error();
  const auto& s = *spec;
  if (auto k = rd.known(s, "spec",
                        global ? std::initializer_list<std::string_view>{"order", "tier", "selector", "namespaceSelector", "serviceAccountSelector", "types",
                                                                         "ingress", "egress", "doNotTrack", "preDNAT", "applyOnForward",
                                                                         "performanceHints"}
                               : std::initializer_list<std::string_view>{"order", "tier", "selector", "serviceAccountSelector", "types", "ingress",
                                                                         "egress", "performanceHints"});
      !k)
    return k.error();
  policy_def p;
  p.kind = global ? "GlobalNetworkPolicy" : "NetworkPolicy";
  p.ns = global ? "" : r.ns;
  p.name = r.name;
  p.order = std::numeric_limits<double>::infinity();
  if (const auto* o = s.if_contains("order"); o && !o->is_null()) {
    if (!o->is_number()) return rd.fail("spec.order", "expected a number");
    p.order = o->to_number<double>();
    if (!std::isfinite(p.order)) return rd.fail("spec.order", "not a finite number");
  }
  if (auto t = rd.string(s.if_contains("tier"), "spec.tier"); !t) return t.error();
  else if (*t && **t != "default") return rd.fail("spec.tier", "only the 'default' tier is supported, not '" + **t + "'");
  if (auto x = rd.sel(s.if_contains("selector"), "spec.selector"); !x) return x.error(); else if (*x) p.sel = **x;
  if (global) {
    if (auto x = rd.sel(s.if_contains("namespaceSelector"), "spec.namespaceSelector"); !x) return x.error(); else p.namespace_sel = *x;
  }
  if (auto x = rd.sel(s.if_contains("serviceAccountSelector"), "spec.serviceAccountSelector"); !x) return x.error(); else p.service_account_sel = *x;
  for (auto [key, out] : {std::pair{"ingress", &p.ingress_rules}, std::pair{"egress", &p.egress_rules}}) {
    auto a = rd.array(s.if_contains(key), std::string("spec.") + key);
    if (!a) return a.error();
    if (!*a) continue;
    std::size_t i = 0;
    for (auto& v : **a) {
      auto ru = rd.calico_rule(v, std::string("spec.") + key + "[" + std::to_string(i++) + "]");
      if (!ru) return ru.error();
      out->push_back(*ru);
    }
  }
  if (auto t = parse_types(rd, s, p); !t) return t.error();
  return p;
}

result<policy_def> parse_k8s_network_policy(const resource& r) {
  reader rd{what_of(r, "NetworkPolicy")};
  if (r.ns.empty()) return rd.fail("metadata.namespace", "missing (a NetworkPolicy is namespaced)");
  auto spec = spec_object(rd, r);
  if (!spec) return spec.error();
  const auto& s = *spec;
  if (auto k = rd.known(s, "spec", {"podSelector", "ingress", "egress", "policyTypes"}); !k) return k.error();
  policy_def p;
  p.kind = "NetworkPolicy";
  p.ns = r.ns;
  p.name = "knp.default." + r.name;
  p.order = 1000.0;
  auto ps = k8s_label_selector(rd, s.if_contains("podSelector"), "spec.podSelector");
  if (!ps) return ps.error();
  p.sel = selector::both(*ps, selector::label_equals("projectcalico.org/orchestrator", "k8s"));

  // One K8s rule: peers x ports. Each peer becomes one Calico rule per protocol among the ports.
  auto translate = [&](const json::value& v, const std::string& field, bool ingress, std::vector<rule>& out) -> result<void> {
    if (!v.is_object()) return rd.fail(field, "expected an object");
    const auto& o = v.get_object();
    const char* peers_key = ingress ? "from" : "to";
    if (auto k = rd.known(o, field, {peers_key, "ports"}); !k) return k.error();
    std::vector<std::pair<std::uint8_t, port_spec>> ports;
    bool any_port = true;
    if (auto pa = rd.array(o.if_contains("ports"), field + ".ports"); !pa) {
      return pa.error();
    } else if (*pa && !(*pa)->empty()) {
      any_port = false;
      std::size_t i = 0;
      for (auto& x : **pa) {
        auto f = field + ".ports[" + std::to_string(i++) + "]";
        if (!x.is_object()) return rd.fail(f, "expected an object");
        if (auto k = rd.known(x.get_object(), f, {"protocol", "port", "endPort"}); !k) return k.error();
        std::uint8_t proto = IPPROTO_TCP;
        if (auto pr = rd.string(x.get_object().if_contains("protocol"), f + ".protocol"); !pr) {
          return pr.error();
        } else if (*pr) {
          if (**pr != "TCP" && **pr != "UDP" && **pr != "SCTP") return rd.fail(f + ".protocol", "'" + **pr + "' is not one of TCP, UDP, SCTP");
          proto = *parse_protocol(**pr);
        }
        port_spec sp{{0, 65535}, {}};
        const auto* pv = x.get_object().if_contains("port");
        if (pv && (pv->is_int64() || pv->is_uint64())) {
          auto n = pv->to_number<std::int64_t>();
          if (n < 1 || n > 65535) return rd.fail(f + ".port", std::to_string(n) + " is not a port (1..65535)");
          sp.range = {static_cast<std::uint16_t>(n), static_cast<std::uint16_t>(n)};
        } else if (pv && pv->is_string()) {
          auto t = rd.port_text(pv->get_string(), f + ".port");
          if (!t) return t.error();
          sp = *t;
        } else if (pv && !pv->is_null()) {
          return rd.fail(f + ".port", "expected a number or a port name");
        }
        if (const auto* ep = x.get_object().if_contains("endPort"); ep && !ep->is_null()) {
          if (!(ep->is_int64() || ep->is_uint64())) return rd.fail(f + ".endPort", "expected a number");
          auto n = ep->to_number<std::int64_t>();
          if (!pv || pv->is_null()) return rd.fail(f + ".endPort", "needs port");
          if (!sp.name.empty()) return rd.fail(f + ".endPort", "cannot be used with a named port");
          if (n < sp.range.first || n > 65535) return rd.fail(f + ".endPort", std::to_string(n) + " is below port or above 65535");
          sp.range.last = static_cast<std::uint16_t>(n);
        }
        ports.emplace_back(proto, sp);
      }
    }
    std::vector<entity_rule> peers;
    bool any_peer = true;
    if (auto pa = rd.array(o.if_contains(peers_key), field + "." + peers_key); !pa) {
      return pa.error();
    } else if (*pa && !(*pa)->empty()) {
      any_peer = false;
      std::size_t i = 0;
      for (auto& x : **pa) {
        auto f = field + "." + peers_key + "[" + std::to_string(i++) + "]";
        if (!x.is_object()) return rd.fail(f, "expected an object");
        const auto& po = x.get_object();
        if (auto k = rd.known(po, f, {"podSelector", "namespaceSelector", "ipBlock"}); !k) return k.error();
        entity_rule e;
        const auto* ip = po.if_contains("ipBlock");
        if (ip && !ip->is_null()) {
          if (po.if_contains("podSelector") || po.if_contains("namespaceSelector"))
            return rd.fail(f + ".ipBlock", "cannot be combined with podSelector or namespaceSelector");
          if (!ip->is_object()) return rd.fail(f + ".ipBlock", "expected an object");
          if (auto k = rd.known(ip->get_object(), f + ".ipBlock", {"cidr", "except"}); !k) return k.error();
          const auto* c = ip->get_object().if_contains("cidr");
          if (!c || !c->is_string()) return rd.fail(f + ".ipBlock.cidr", "missing");
          json::array one{*c};
          json::value onev(one);
          auto n = rd.nets(&onev, f + ".ipBlock.cidr");
          if (!n) return rd.fail(f + ".ipBlock.cidr", "'" + std::string(c->get_string()) + "' is not a network CIDR");
          e.nets = *n;
          auto ex = rd.nets(ip->get_object().if_contains("except"), f + ".ipBlock.except");
          if (!ex) return ex.error();
          for (std::size_t j = 0; j < ex->size(); ++j)
            if (!e.nets[0].contains((*ex)[j]))
              return rd.fail(f + ".ipBlock.except[" + std::to_string(j) + "]", (*ex)[j].to_string() + " is not inside " + e.nets[0].to_string());
          e.not_nets = *ex;
        } else {
          auto pod = k8s_label_selector(rd, po.if_contains("podSelector"), f + ".podSelector");
          if (!pod) return pod.error();
          const auto* nsv = po.if_contains("namespaceSelector");
          if (nsv && !nsv->is_null()) {
            auto nss = k8s_label_selector(rd, nsv, f + ".namespaceSelector");
            if (!nss) return nss.error();
            e.namespace_sel = *nss;
          } else if (!po.if_contains("podSelector")) {
            return rd.fail(f, "a peer needs podSelector, namespaceSelector or ipBlock");
          }
          e.sel = selector::both(*pod, selector::label_equals("projectcalico.org/orchestrator", "k8s"));
        }
        peers.push_back(std::move(e));
      }
    }
    if (any_peer) peers.emplace_back();
    for (auto& peer : peers) {
      if (any_port) {
        rule ru;
        (ingress ? ru.source : ru.destination) = peer;
        out.push_back(std::move(ru));
        continue;
      }
      for (std::uint8_t proto : {std::uint8_t{IPPROTO_TCP}, std::uint8_t{IPPROTO_UDP}, std::uint8_t{IPPROTO_SCTP}}) {
        rule ru;
        ru.protocol = proto;
        (ingress ? ru.source : ru.destination) = peer;
        for (auto& [pr, sp] : ports)
          if (pr == proto) ru.destination.ports.push_back(sp);
        if (!ru.destination.ports.empty()) out.push_back(std::move(ru));
      }
    }
    return {};
  };
  for (auto [key, out, ingress] : {std::tuple{"ingress", &p.ingress_rules, true}, std::tuple{"egress", &p.egress_rules, false}}) {
    auto a = rd.array(s.if_contains(key), std::string("spec.") + key);
    if (!a) return a.error();
    if (!*a) continue;
    std::size_t i = 0;
    for (auto& v : **a)
      if (auto t = translate(v, std::string("spec.") + key + "[" + std::to_string(i++) + "]", ingress, *out); !t) return t.error();
  }
  auto pt = rd.array(s.if_contains("policyTypes"), "spec.policyTypes");
  if (!pt) return pt.error();
  if (!*pt) {
    p.ingress = true;
    const auto* eg = s.if_contains("egress");
    p.egress = eg && eg->is_array() && !eg->get_array().empty();
  } else {
    p.ingress = p.egress = false;
    std::size_t i = 0;
    for (auto& x : **pt) {
      auto f = "spec.policyTypes[" + std::to_string(i++) + "]";
      if (x.is_string() && x.get_string() == "Ingress") p.ingress = true;
      else if (x.is_string() && x.get_string() == "Egress") p.egress = true;
      else return rd.fail(f, "expected \"Ingress\" or \"Egress\"");
    }
  }
  return p;
}

result<network_set> parse_network_set(const resource& r) {
  const bool global = r.kind == "GlobalNetworkSet";
  reader rd{what_of(r, global ? "GlobalNetworkSet" : "NetworkSet")};
  if (!global && r.ns.empty()) return rd.fail("metadata.namespace", "missing (a NetworkSet is namespaced)");
  auto spec = spec_object(rd, r);
  if (!spec) return spec.error();
  if (auto k = rd.known(*spec, "spec", {"nets", "allowedEgressDomains"}); !k) return k.error();
  network_set n;
  n.ns = global ? "" : r.ns;
  n.name = r.name;
  n.labels = r.labels;
  auto nets = rd.nets(spec->if_contains("nets"), "spec.nets");
  if (!nets) return nets.error();
  n.nets = *nets;
  return n;
}

}  // namespace netpol
CNF_END_NAMESPACE
