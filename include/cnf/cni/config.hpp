// cnf/cni/config.hpp — the network configuration a plugin reads on stdin.
//
//   std::string in = read_all(stdin);
//   auto cfg = cni::parse_config(in, env->cmd);
//   if (!cfg) { puts(cfg.error().to_json().c_str()); return 1; }
//   cfg->version        // negotiated: write results and errors in this version
//   cfg->ipam->json     // the whole ipam object, for the IPAM plugin to read
//   cfg->raw            // stdin byte for byte: what a delegated IPAM binary must get
//
// Errors (first one found):
//   code 6  stdin is not JSON, or not a JSON object
//   code 1  no supported version among cniVersion/cniVersions (lists the supported ones),
//           or the command needs a newer version (CHECK 0.4.0, STATUS and GC 1.1.0)
//   code 7  a field is missing, of the wrong type or invalid; the message starts with its
//           path: "dns.nameservers[1]: expected string, got number"
//
// Fields read (SPEC section 1 and 3, CONVENTIONS.md), everything else stays in `json`:
//   cniVersion, cniVersions, name, type, disableCheck, disableGC, ipam{type,...}, dns,
//   args (args.cni.ips), runtimeConfig (ips, mac, portMappings; all of it raw too),
//   prevResult (any supported version), cni.dev/valid-attachments (GC; also the
//   misspelt cni.dev/attachments that libcni sends too),
//   cnf's own: profile (absolute path of the cnf TOML profile), mtu, vethPrefix.
#pragma once
#include <cnf/cni/command.hpp>
#include <cnf/cni/env.hpp>
#include <cnf/cni/error.hpp>
#include <cnf/cni/json.hpp>
#include <cnf/cni/result.hpp>
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

/// Interface MTU bounds accepted for `mtu` (68: IPv4 minimum; 65535: veth maximum).
inline constexpr std::uint32_t min_mtu = 68;
inline constexpr std::uint32_t max_mtu = 65535;
/// `vethPrefix` leaves at least 4 bytes of the 15-byte name for the unique part.
inline constexpr std::size_t max_veth_prefix_length = 11;

/// One entry of runtimeConfig.ips / args.cni.ips: "<ip>[/<prefix>]".
struct requested_ip {
  cnf::ip_address address;
  std::optional<std::uint8_t> prefix_length;

  static cnf::result<requested_ip> parse(std::string_view s) {
    requested_ip r;
    if (s.find('/') != std::string_view::npos) {
      auto p = cnf::ip_prefix::parse(s, true);
      if (!p) return p.error();
      r.address = p->address();
      r.prefix_length = static_cast<std::uint8_t>(p->length());
    } else {
      auto a = cnf::ip_address::parse(s);
      if (!a) return a.error();
      r.address = *a;
    }
    return r;
  }
  std::optional<cnf::ip_prefix> prefix() const {
    if (!prefix_length) return std::nullopt;
    return cnf::ip_prefix(address, *prefix_length);
  }
  std::string to_string() const {
    return prefix_length ? address.to_string() + "/" + std::to_string(*prefix_length) : address.to_string();
  }
  friend bool operator==(const requested_ip&, const requested_ip&) = default;
};

/// A GC attachment: (CNI_CONTAINERID, CNI_IFNAME) of a still-valid ADD.
struct attachment {
  std::string container_id;
  std::string ifname;
  friend bool operator==(const attachment&, const attachment&) = default;
};

struct ipam_config {
  std::string type;            ///< binary name of the IPAM plugin (no '/' or '\\')
  boost::json::object json;    ///< the whole ipam object, type included
};

struct runtime_config {
  std::vector<requested_ip> ips;        ///< capability "ips"
  std::optional<cnf::mac_address> mac;  ///< capability "mac"
  boost::json::array port_mappings;     ///< capability "portMappings", raw
  boost::json::object json;             ///< all of runtimeConfig, raw
};

struct net_config {
  std::string raw;             ///< stdin, byte for byte (delegation passes it on unchanged)
  boost::json::object json;    ///< stdin, parsed
  std::string cni_version;     ///< "cniVersion" as given ("" when absent)
  std::vector<std::string> cni_versions;  ///< "cniVersions" as given
  cni::version version = latest_version;  ///< negotiated: the highest supported of the two
  std::string name;
  std::string type;
  bool disable_check = false;
  bool disable_gc = false;
  std::optional<ipam_config> ipam;        ///< absent, or an ipam object without "type"
  dns_config dns;
  boost::json::object args;               ///< "args", raw
  std::vector<requested_ip> args_ips;     ///< args.cni.ips
  runtime_config runtime;                 ///< "runtimeConfig"
  std::optional<add_result> prev_result;  ///< "prevResult" (in whatever version it came)
  /// GC only: cni.dev/valid-attachments (or cni.dev/attachments).
  std::optional<std::vector<attachment>> valid_attachments;
  // cnf plugin keys
  std::string profile;                    ///< "profile": absolute path of the cnf TOML profile
  std::optional<std::uint32_t> mtu;       ///< "mtu" override
  std::string veth_prefix;                ///< "vethPrefix" override ("" = profile default)
};

namespace detail {

/// Network names and container ids share the spec's character set.
inline std::optional<std::string> network_name_problem(std::string_view n) {
  if (n.empty()) return "must not be empty";
  if (!is_alnum(n[0])) return "must start with a letter or digit, not " + describe_char(n[0]);
  for (std::size_t i = 1; i < n.size(); ++i)
    if (!is_alnum(n[i]) && n[i] != '_' && n[i] != '.' && n[i] != '-')
      return "invalid character " + describe_char(n[i]) + " at offset " + std::to_string(i) +
             " (allowed: letters, digits, '_', '.', '-')";
  return std::nullopt;
}

/// A plugin binary name (type, ipam.type): a file name, not a path.
inline std::optional<std::string> binary_name_problem(std::string_view t) {
  if (t.empty()) return "must not be empty";
  if (t == "." || t == "..") return "must not be \".\" or \"..\"";
  for (std::size_t i = 0; i < t.size(); ++i) {
    unsigned char u = static_cast<unsigned char>(t[i]);
    if (t[i] == '/' || t[i] == '\\' || u < 0x20 || u == 0x7f)
      return "invalid character " + describe_char(t[i]) + " at offset " + std::to_string(i) +
             " (a plugin binary name, not a path)";
  }
  return std::nullopt;
}

/// libcni reads disableCheck/disableGC as a boolean or the strings "true"/"false".
inline result<bool> read_flag(const json_node& n) {
  if (!n.present()) return false;
  if (auto* b = n.get()->if_bool()) return *b;
  if (auto* s = n.get()->if_string()) {
    std::string v(*s);
    for (auto& c : v) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    if (v == "true") return true;
    if (v == "false") return false;
    return n.invalid("expected true or false, got \"" + std::string(*s) + "\"");
  }
  return n.type_error("boolean");
}

inline result<std::vector<requested_ip>> read_ip_list(const json_node& n) {
  std::vector<requested_ip> out;
  auto list = n.opt_string_list();
  if (!list) return list.error();
  out.reserve(list->size());
  for (std::size_t i = 0; i < list->size(); ++i) {
    auto ip = requested_ip::parse((*list)[i]);
    if (!ip) return n[i].invalid("expected <ip>[/<prefix>], got \"" + (*list)[i] + "\"");
    out.push_back(*ip);
  }
  return out;
}

inline result<std::vector<attachment>> read_attachments(const json_node& n) {
  auto a = n.as_array();
  if (!a) return a.error();
  std::vector<attachment> out;
  out.reserve((*a)->size());
  for (std::size_t i = 0; i < (*a)->size(); ++i) {
    json_node e = n[i];
    if (auto o = e.as_object(); !o) return o.error();
    auto id = e["containerID"].as_string();
    if (!id) return id.error();
    auto ifn = e["ifname"].as_string();
    if (!ifn) return ifn.error();
    out.push_back({std::string(*id), std::string(*ifn)});
  }
  return out;
}

}  // namespace detail

/// Code 1 when `cmd` needs a newer spec version than `v`.
inline result<void> check_command_version(command cmd, version v) {
  if (v < min_version(cmd))
    return make_error(error_code::incompatible_version,
                      std::string(to_string(cmd)) + " requires cniVersion " + std::string(to_string(min_version(cmd))) +
                          " or later, config is " + std::string(to_string(v)));
  return {};
}

/// Parses and validates the stdin of ADD/DEL/CHECK/STATUS/GC (VERSION: use
/// version_request_version). `cmd` adds the per-command rules: version gates, and GC
/// requires the valid-attachments list (without it every attachment would look stale).
inline result<net_config> parse_config(std::string_view text, command cmd = command::add) {
  auto doc = parse_json(text, "network config");
  if (!doc) return doc.error();
  if (!doc->is_object())
    return make_error(error_code::decoding_failure,
                      "network config: expected a JSON object, got " + std::string(json_kind(*doc)));
  const json_node root(*doc);
  net_config c;

  // ---- version ----
  auto cv = root["cniVersion"].opt_string();
  if (!cv) return cv.error();
  c.cni_version = std::string(cv->value_or(std::string_view{}));
  if (!c.cni_version.empty() && !semver::parse(c.cni_version))
    return root["cniVersion"].invalid("invalid version \"" + c.cni_version + "\" (supported: " +
                                          supported_versions_list() + ")",
                                      error_code::incompatible_version);
  auto cvs = root["cniVersions"].opt_string_list();
  if (!cvs) return cvs.error();
  c.cni_versions = std::move(*cvs);
  for (std::size_t i = 0; i < c.cni_versions.size(); ++i)
    if (!semver::parse(c.cni_versions[i]))
      return root["cniVersions"][i].invalid("invalid version \"" + c.cni_versions[i] + "\"");
  auto v = negotiate(c.cni_version, std::span<const std::string>(c.cni_versions));
  if (!v) {
    std::string given;
    if (c.cni_version.empty() && c.cni_versions.empty()) given = "cniVersion is missing (0.1.0 implied)";
    else {
      given = "cniVersion \"" + c.cni_version + "\"";
      if (!c.cni_versions.empty()) given += ", cniVersions [" + detail::join(c.cni_versions, ", ") + "]";
    }
    return make_error(error_code::incompatible_version,
                      "unsupported CNI version: " + given + "; supported: " + supported_versions_list());
  }
  c.version = *v;
  if (auto ok = check_command_version(cmd, c.version); !ok) return std::move(ok).error();

  // ---- name, type, flags ----
  auto name = root["name"].as_string();
  if (!name) return name.error();
  if (auto p = detail::network_name_problem(*name)) return root["name"].invalid("\"" + std::string(*name) + "\" " + *p);
  c.name = std::string(*name);
  auto type = root["type"].as_string();
  if (!type) return type.error();
  if (auto p = detail::binary_name_problem(*type)) return root["type"].invalid("\"" + std::string(*type) + "\" " + *p);
  c.type = std::string(*type);
  auto dc = detail::read_flag(root["disableCheck"]);
  if (!dc) return dc.error();
  c.disable_check = *dc;
  auto dg = detail::read_flag(root["disableGC"]);
  if (!dg) return dg.error();
  c.disable_gc = *dg;

  // ---- ipam ----
  auto ipam = root["ipam"].opt_object();
  if (!ipam) return ipam.error();
  if (*ipam && !(**ipam)->empty()) {
    auto it = root["ipam"]["type"].as_string();
    if (!it) return it.error();
    if (auto p = detail::binary_name_problem(*it))
      return root["ipam"]["type"].invalid("\"" + std::string(*it) + "\" " + *p);
    c.ipam = ipam_config{std::string(*it), ***ipam};
  }

  // ---- dns ----
  auto dns = parse_dns(root["dns"]);
  if (!dns) return dns.error();
  c.dns = std::move(*dns);

  // ---- args ----
  auto args = root["args"].opt_object();
  if (!args) return args.error();
  if (*args) {
    c.args = ***args;
    auto cni = root["args"]["cni"].opt_object();
    if (!cni) return cni.error();
    auto ips = detail::read_ip_list(root["args"]["cni"]["ips"]);
    if (!ips) return ips.error();
    c.args_ips = std::move(*ips);
  }

  // ---- runtimeConfig ----
  auto rc = root["runtimeConfig"].opt_object();
  if (!rc) return rc.error();
  if (*rc) {
    const json_node r = root["runtimeConfig"];
    c.runtime.json = ***rc;
    auto ips = detail::read_ip_list(r["ips"]);
    if (!ips) return ips.error();
    c.runtime.ips = std::move(*ips);
    auto mac = r["mac"].opt_string();
    if (!mac) return mac.error();
    if (*mac) {
      auto m = cnf::mac_address::parse(**mac);
      if (!m) return r["mac"].invalid("invalid MAC address \"" + std::string(**mac) + "\" (expected aa:bb:cc:dd:ee:ff)");
      c.runtime.mac = *m;
    }
    auto pm = r["portMappings"].opt_array();
    if (!pm) return pm.error();
    if (*pm) c.runtime.port_mappings = ***pm;
  }

  // ---- prevResult ----
  if (root["prevResult"].present()) {
    auto pr = parse_result(root["prevResult"], c.version);
    if (!pr) return pr.error();
    c.prev_result = std::move(*pr);
  }

  // ---- GC attachments ----
  for (const char* key : {"cni.dev/valid-attachments", "cni.dev/attachments"}) {
    if (!root[key].present()) continue;
    auto a = detail::read_attachments(root[key]);
    if (!a) return a.error();
    c.valid_attachments = std::move(*a);
    break;  // the spec's key wins when both are sent (libcni sends both, equal)
  }
  if (cmd == command::gc && !c.valid_attachments)
    return root["cni.dev/valid-attachments"].invalid("required field missing (GC needs the list of valid attachments)");

  // ---- cnf plugin keys ----
  auto profile = root["profile"].opt_string();
  if (!profile) return profile.error();
  if (*profile) {
    if ((*profile)->empty() || (**profile)[0] != '/')
      return root["profile"].invalid("must be an absolute path, got \"" + std::string(**profile) + "\"");
    c.profile = std::string(**profile);
  }
  auto mtu = root["mtu"].opt_uint();
  if (!mtu) return mtu.error();
  if (*mtu) {
    if (**mtu < min_mtu || **mtu > max_mtu)
      return root["mtu"].invalid(std::to_string(**mtu) + " out of range " + std::to_string(min_mtu) + ".." +
                                 std::to_string(max_mtu));
    c.mtu = static_cast<std::uint32_t>(**mtu);
  }
  auto vp = root["vethPrefix"].opt_string();
  if (!vp) return vp.error();
  if (*vp) {
    std::string_view p = **vp;
    if (p.empty() || p.size() > max_veth_prefix_length)
      return root["vethPrefix"].invalid("\"" + std::string(p) + "\" must be 1.." +
                                        std::to_string(max_veth_prefix_length) + " bytes long");
    for (std::size_t i = 0; i < p.size(); ++i)
      if (!detail::is_alnum(p[i]) && p[i] != '-' && p[i] != '_' && p[i] != '.')
        return root["vethPrefix"].invalid("invalid character " + detail::describe_char(p[i]) + " at offset " +
                                          std::to_string(i) + " (allowed: letters, digits, '_', '.', '-')");
    c.veth_prefix = std::string(p);
  }

  c.raw = std::string(text);
  c.json = std::move(doc->as_object());
  return c;
}

}  // namespace cni
CNF_END_NAMESPACE
