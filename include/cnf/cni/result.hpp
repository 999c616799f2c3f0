// cnf/cni/result.hpp — the CNI ADD success result, in every supported version.
//
// One in-memory shape (the 1.1.0 one) read from and written to any supported version:
//   0.3.0, 0.3.1, 0.4.0  ips[].version "4"/"6" (derived from the address on output)
//   1.0.0                no ips[].version
//   1.1.0                adds interfaces[].mtu/socketPath/pciID and
//                        routes[].mtu/advmss/priority/table/scope (emitted by 1.1.0 only)
// Reading accepts all fields in every version (a 1.0.0 reader ignoring unknown keys is
// what libcni does), so prevResult in any version converts to the version in use.
//
//   auto r = cni::parse_result(ipam_stdout, cni::version::v1_1_0);   // delegated IPAM output
//   r->interfaces.push_back({.name = "eth0", .mac = mac, .sandbox = netns});
//   std::string out = cni::to_json(*r, cfg.version);                   // print on stdout
//
// Output is compact JSON written directly (no DOM): the binary runs once per pod.
#pragma once
#include <cnf/cni/error.hpp>
#include <cnf/cni/json.hpp>
#include <cnf/cni/json_writer.hpp>
#include <cnf/cni/version.hpp>
#include <cnf/net.hpp>

#include <boost/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace cni {

struct interface {
  std::string name;
  std::string mac;         ///< hardware address as text (kept as text: not always 6 bytes, e.g. InfiniBand)
  std::uint32_t mtu = 0;   ///< 0 = not set (1.1.0)
  std::string sandbox;     ///< CNI_NETNS for container interfaces; empty on the host
  std::string socket_path; ///< "socketPath" (1.1.0)
  std::string pci_id;      ///< "pciID" (1.1.0)
  friend bool operator==(const interface&, const interface&) = default;
};

struct ip_config {
  cnf::ip_prefix address;                      ///< address with its prefix length: host bits set ("10.1.0.5/16")
  std::optional<cnf::ip_address> gateway;
  std::optional<std::uint32_t> interface_index; ///< "interface": index into interfaces
  friend bool operator==(const ip_config&, const ip_config&) = default;
};

struct route {
  cnf::ip_prefix dst;
  std::optional<cnf::ip_address> gw;
  std::uint32_t mtu = 0;       ///< 0 = not set (1.1.0)
  std::uint32_t advmss = 0;    ///< 0 = not set (1.1.0)
  std::uint32_t priority = 0;  ///< 0 = not set (1.1.0)
  std::optional<std::uint32_t> table;  ///< (1.1.0)
  std::optional<std::uint8_t> scope;   ///< 0 global, 253 link, 254 host (1.1.0)
  friend bool operator==(const route&, const route&) = default;
};

struct dns_config {
  std::vector<std::string> nameservers;
  std::string domain;
  std::vector<std::string> search;
  std::vector<std::string> options;
  bool empty() const noexcept { return nameservers.empty() && domain.empty() && search.empty() && options.empty(); }
  friend bool operator==(const dns_config&, const dns_config&) = default;
};

/// The ADD success result (also prevResult, and a delegated IPAM plugin's abbreviated
/// result, which has no interfaces and no ips[].interface).
struct add_result {
  version cni_version = latest_version;  ///< version it was read in; to_json(r) writes this one
  std::vector<interface> interfaces;
  std::vector<ip_config> ips;
  std::vector<route> routes;
  dns_config dns;
  friend bool operator==(const add_result&, const add_result&) = default;
};

// ---------------------------------------------------------------------------------------
// Output

namespace detail {
inline void write_dns(json_writer& w, const dns_config& d) {
  w.begin_object();
  auto list = [&](std::string_view k, const std::vector<std::string>& v) {
    if (v.empty()) return;
    w.key(k).begin_array();
    for (const auto& s : v) w.value(s);
    w.end_array();
  };
  list("nameservers", d.nameservers);
  if (!d.domain.empty()) w.member("domain", d.domain);
  list("search", d.search);
  list("options", d.options);
  w.end_object();
}
}  // namespace detail

/// Appends `r` in the format of version `v`. Empty lists and unset fields are omitted
/// (as libcni does); cniVersion is always written.
inline void write_json(std::string& out, const add_result& r, version v) {
  const bool v11 = has_1_1_fields(v);
  detail::json_writer w(out);
  w.begin_object().member("cniVersion", to_string(v));
  if (!r.interfaces.empty()) {
    w.key("interfaces").begin_array();
    for (const auto& i : r.interfaces) {
      w.begin_object().member("name", i.name);
      if (!i.mac.empty()) w.member("mac", i.mac);
      if (v11 && i.mtu) w.member("mtu", i.mtu);
      if (!i.sandbox.empty()) w.member("sandbox", i.sandbox);
      if (v11 && !i.socket_path.empty()) w.member("socketPath", i.socket_path);
      if (v11 && !i.pci_id.empty()) w.member("pciID", i.pci_id);
      w.end_object();
    }
    w.end_array();
  }
  if (!r.ips.empty()) {
    w.key("ips").begin_array();
    for (const auto& ip : r.ips) {
      w.begin_object();
      if (has_ip_version_field(v)) w.member("version", ip.address.address().is_v4() ? "4" : "6");
      if (ip.interface_index) w.member("interface", *ip.interface_index);
      w.member("address", ip.address.to_string());
      if (ip.gateway) w.member("gateway", ip.gateway->to_string());
      w.end_object();
    }
    w.end_array();
  }
  if (!r.routes.empty()) {
    w.key("routes").begin_array();
    for (const auto& rt : r.routes) {
      w.begin_object().member("dst", rt.dst.to_string());
      if (rt.gw) w.member("gw", rt.gw->to_string());
      if (v11) {
        if (rt.mtu) w.member("mtu", rt.mtu);
        if (rt.advmss) w.member("advmss", rt.advmss);
        if (rt.priority) w.member("priority", rt.priority);
        if (rt.table) w.member("table", *rt.table);
        if (rt.scope) w.member("scope", std::uint32_t{*rt.scope});
      }
      w.end_object();
    }
    w.end_array();
  }
  if (!r.dns.empty()) {
    w.key("dns");
    detail::write_dns(w, r.dns);
  }
  w.end_object();
}

/// `r` as compact JSON in version `v` — what ADD prints on stdout.
inline std::string to_json(const add_result& r, version v) {
  std::string out;
  out.reserve(160 + 120 * (r.interfaces.size() + r.ips.size() + r.routes.size()));
  write_json(out, r, v);
  return out;
}
inline std::string to_json(const add_result& r) { return to_json(r, r.cni_version); }

/// The VERSION command's answer: `cni_version` is the cniVersion given on input
/// (spec_version when there was none).
inline std::string version_output(std::string_view cni_version = spec_version) {
  std::string out;
  out.reserve(96);
  detail::json_writer w(out);
  w.begin_object().member("cniVersion", cni_version.empty() ? spec_version : cni_version);
  w.key("supportedVersions").begin_array();
  for (auto s : supported_version_strings) w.value(s);
  w.end_array().end_object();
  return out;
}

/// The cniVersion of a VERSION request's stdin ({"cniVersion": "..."}); spec_version when
/// stdin is empty, not JSON or has none. VERSION never fails on its input (libcni ignores it).
inline std::string version_request_version(std::string_view stdin_text) {
  boost::json::error_code ec;
  auto v = boost::json::parse(stdin_text, ec);
  if (!ec)
    if (auto* o = v.if_object())
      if (auto* p = o->if_contains("cniVersion"))
        if (auto* s = p->if_string(); s && !s->empty()) return std::string(*s);
  return std::string(spec_version);
}

// ---------------------------------------------------------------------------------------
// Input

namespace detail {

inline result<cnf::ip_address> read_ip(const json_node& n) {
  auto s = n.as_string();
  if (!s) return s.error();
  auto a = cnf::ip_address::parse(*s);
  if (!a) return n.invalid("invalid IP address '" + std::string(*s) + "'");
  return *a;
}
inline result<std::optional<cnf::ip_address>> read_opt_ip(const json_node& n) {
  if (!n.present()) return std::optional<cnf::ip_address>{};
  auto a = read_ip(n);
  if (!a) return a.error();
  return std::optional<cnf::ip_address>(*a);
}
/// CIDR with host bits allowed ("10.1.0.5/16").
inline result<cnf::ip_prefix> read_cidr(const json_node& n) {
  auto s = n.as_string();
  if (!s) return s.error();
  auto p = cnf::ip_prefix::parse(*s, true);
  if (!p) return n.invalid(p.error().message);
  return *p;
}
inline result<std::uint32_t> read_u32(const json_node& n, std::uint64_t max = 0xffffffffu) {
  auto u = n.opt_uint(max);
  if (!u) return u.error();
  return static_cast<std::uint32_t>(u->value_or(0));
}
inline result<std::string> read_opt_string(const json_node& n) {
  auto s = n.opt_string();
  if (!s) return s.error();
  return std::string(s->value_or(std::string_view{}));
}

}  // namespace detail

/// Reads a `dns` object (result and config share the shape). Absent/null -> empty.
inline result<dns_config> parse_dns(const json_node& n) {
  dns_config d;
  auto o = n.opt_object();
  if (!o) return o.error();
  if (!*o) return d;
  auto ns = n["nameservers"].opt_string_list();
  if (!ns) return ns.error();
  auto dom = detail::read_opt_string(n["domain"]);
  if (!dom) return dom.error();
  auto se = n["search"].opt_string_list();
  if (!se) return se.error();
  auto op = n["options"].opt_string_list();
  if (!op) return op.error();
  d.nameservers = std::move(*ns);
  d.domain = std::move(*dom);
  d.search = std::move(*se);
  d.options = std::move(*op);
  return d;
}

/// Reads a result object at node `n` (e.g. json_node(v, "prevResult"); errors name
/// paths below it: "prevResult.ips[0].address: ...").
/// Its version is its own `cniVersion`, else `assumed` (libcni injects the config's
/// version into a prevResult that has none); unknown versions -> code 1.
inline result<add_result> parse_result(const json_node& n, std::optional<version> assumed = std::nullopt) {
  auto obj = n.as_object();
  if (!obj) return obj.error();
  add_result r;

  auto vs = n["cniVersion"].opt_string();
  if (!vs) return vs.error();
  if (*vs && !(*vs)->empty()) {
    auto v = parse_version(**vs);
    if (!v)
      return n["cniVersion"].invalid("unsupported result version \"" + std::string(**vs) +
                                         "\" (supported: " + supported_versions_list() + ")",
                                     error_code::incompatible_version);
    r.cni_version = *v;
  } else if (assumed) {
    r.cni_version = *assumed;
  } else {
    return n["cniVersion"].invalid("required field missing (supported: " + supported_versions_list() + ")",
                                   error_code::incompatible_version);
  }

  if (auto a = n["interfaces"].opt_array(); !a) return a.error();
  else if (*a) {
    r.interfaces.reserve((**a)->size());
    for (std::size_t i = 0; i < (**a)->size(); ++i) {
      json_node e = n["interfaces"][i];
      if (auto o = e.as_object(); !o) return o.error();
      interface itf;
      auto name = e["name"].as_string();
      if (!name) return name.error();
      itf.name = std::string(*name);
      auto mac = detail::read_opt_string(e["mac"]);
      if (!mac) return mac.error();
      itf.mac = std::move(*mac);
      auto mtu = detail::read_u32(e["mtu"]);
      if (!mtu) return mtu.error();
      itf.mtu = *mtu;
      auto sb = detail::read_opt_string(e["sandbox"]);
      if (!sb) return sb.error();
      itf.sandbox = std::move(*sb);
      auto sp = detail::read_opt_string(e["socketPath"]);
      if (!sp) return sp.error();
      itf.socket_path = std::move(*sp);
      auto pci = detail::read_opt_string(e["pciID"]);
      if (!pci) return pci.error();
      itf.pci_id = std::move(*pci);
      r.interfaces.push_back(std::move(itf));
    }
  }

  if (auto a = n["ips"].opt_array(); !a) return a.error();
  else if (*a) {
    r.ips.reserve((**a)->size());
    for (std::size_t i = 0; i < (**a)->size(); ++i) {
      json_node e = n["ips"][i];
      if (auto o = e.as_object(); !o) return o.error();
      ip_config ip;
      auto addr = detail::read_cidr(e["address"]);
      if (!addr) return addr.error();
      ip.address = *addr;
      auto gw = detail::read_opt_ip(e["gateway"]);
      if (!gw) return gw.error();
      ip.gateway = *gw;
      if (ip.gateway && ip.gateway->family() != ip.address.family())
        return e["gateway"].invalid("gateway " + ip.gateway->to_string() + " is not of the family of address " +
                                    ip.address.to_string());
      auto idx = e["interface"].opt_uint(0xffffffffu);
      if (!idx) return idx.error();
      if (*idx) {
        if (!r.interfaces.empty() && **idx >= r.interfaces.size())
          return e["interface"].invalid("index " + std::to_string(**idx) + " out of range (" +
                                        std::to_string(r.interfaces.size()) + " interfaces)");
        ip.interface_index = static_cast<std::uint32_t>(**idx);
      }
      if (has_ip_version_field(r.cni_version)) {
        auto ver = e["version"].opt_string();
        if (!ver) return ver.error();
        if (*ver) {
          std::string_view want = ip.address.address().is_v4() ? "4" : "6";
          if (**ver != "4" && **ver != "6")
            return e["version"].invalid("expected \"4\" or \"6\", got \"" + std::string(**ver) + "\"");
          if (**ver != want)
            return e["version"].invalid("\"" + std::string(**ver) + "\" does not match address " +
                                        ip.address.to_string());
        }
      }
      r.ips.push_back(std::move(ip));
    }
  }

  if (auto a = n["routes"].opt_array(); !a) return a.error();
  else if (*a) {
    r.routes.reserve((**a)->size());
    for (std::size_t i = 0; i < (**a)->size(); ++i) {
      json_node e = n["routes"][i];
      if (auto o = e.as_object(); !o) return o.error();
      route rt;
      auto dst = detail::read_cidr(e["dst"]);
      if (!dst) return dst.error();
      rt.dst = *dst;
      auto gw = detail::read_opt_ip(e["gw"]);
      if (!gw) return gw.error();
      rt.gw = *gw;
      auto mtu = detail::read_u32(e["mtu"]);
      if (!mtu) return mtu.error();
      rt.mtu = *mtu;
      auto mss = detail::read_u32(e["advmss"]);
      if (!mss) return mss.error();
      rt.advmss = *mss;
      auto prio = detail::read_u32(e["priority"]);
      if (!prio) return prio.error();
      rt.priority = *prio;
      auto table = e["table"].opt_uint(0xffffffffu);
      if (!table) return table.error();
      if (*table) rt.table = static_cast<std::uint32_t>(**table);
      auto scope = e["scope"].opt_uint(255);
      if (!scope) return scope.error();
      if (*scope) rt.scope = static_cast<std::uint8_t>(**scope);
      r.routes.push_back(std::move(rt));
    }
  }

  auto dns = parse_dns(n["dns"]);
  if (!dns) return dns.error();
  r.dns = std::move(*dns);
  return r;
}

/// Reads a plugin's stdout (e.g. a delegated IPAM plugin's result). Not JSON -> code 6.
inline result<add_result> parse_result(std::string_view text, std::optional<version> assumed = std::nullopt) {
  auto v = parse_json(text, "result");
  if (!v) return v.error();
  return parse_result(json_node(&*v, "result"), assumed);
}

/// Reads the error a delegated plugin printed when it failed. Output that is not a CNI
/// error object becomes an internal error carrying the text, so nothing is lost.
inline error parse_error_output(std::string_view text) {
  boost::json::error_code ec;
  auto v = boost::json::parse(text, ec);
  const boost::json::object* o = ec ? nullptr : v.if_object();
  const boost::json::value* code = o ? o->if_contains("code") : nullptr;
  if (!code || !(code->is_uint64() || code->is_int64()) ||
      (code->is_int64() && (code->get_int64() < 0 || code->get_int64() > 0xffffffff)) ||
      (code->is_uint64() && code->get_uint64() > 0xffffffffu)) {
    std::string_view t = text;
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.remove_suffix(1);
    return make_error(error_code::internal, "delegated plugin failed without a CNI error object",
                      std::string(t.substr(0, 4096)));
  }
  error e;
  e.code = static_cast<error_code>(code->is_uint64() ? code->get_uint64() : static_cast<std::uint64_t>(code->get_int64()));
  if (auto* m = o->if_contains("msg"); m && m->is_string()) e.msg = std::string(m->get_string());
  if (auto* d = o->if_contains("details"); d && d->is_string()) e.details = std::string(d->get_string());
  return e;
}

}  // namespace cni
CNF_END_NAMESPACE
