// cnf/profile.hpp — a TOML profile composes the parts into one CNI (host side).
//
//   plugin_path = ["/opt/cnf/plugins"]     # optional; then $CNF_PLUGIN_PATH, then the install dir
//   [cni]            mtu = 1450   veth_prefix = "cali"   log_level = "info"   log_file = "..."
//                    (mtu unset: the MTU `cnf agent` detected when it serves the call, else 1500)
//                    assign_ipv4 = true   assign_ipv6 = false
//                    agent_socket = "/run/cnf/cni.sock"   (optional: `cnf agent` serves CNI calls there)
//   [node]           name = "node-1"   ipv4_address = "autodetect" | "192.168.1.10/24" | "none"
//                    ipv6_address = "none" | "autodetect" | "fd00::10/64"   as_number = 64512
//                    labels = { rack = "r1" }      (what `cnf agent` registers as this node's Node)
//   [agent]          health_port = 9099   (127.0.0.1: /livez, /readyz, /metrics, /status; 0: off)
//   [datastore]      plugin = "local"       dir = "/var/lib/cnf"
//   [ipam]           plugin = "host-local"  ...
//   [routing]        plugin = "bgp"         ...   (optional)
//   [encapsulation]  plugin = "vxlan"       ...   (optional)
//   [policy]         plugin = "iptables"    ...   (optional)
//
// The host validates its own keys here; each plugin validates its section itself
// (cnf/settings.hpp). Every error names file:line:column and the key path.
//
//   auto p = cnf::load_profile("/etc/cnf/profile.toml");
//   auto c = cnf::compose(*p, loader, {cnf::part::datastore, cnf::part::ipam}, ctx);
#pragma once
#include <cnf/loader.hpp>
#include <cnf/plugin.hpp>
#include <cnf/settings.hpp>

#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

CNF_BEGIN_NAMESPACE

struct part_choice {
  std::string plugin;
  unsigned line = 0;
  unsigned column = 0;
};

struct profile {
  std::string file;
  std::string text;
  std::vector<std::filesystem::path> plugin_path;

  struct cni_section {
    /// Pods' veths. Unless `mtu_set`, a fallback: a call `cnf agent` serves takes the MTU
    /// the agent detected instead (the tunnel's, else the uplink's; Calico's auto MTU).
    unsigned mtu = 1500;
    bool mtu_set = false;  ///< the profile gives `mtu`
    std::string veth_prefix = "cali";
    log_level level = log_level::info;
    std::string log_file;
    bool assign_ipv4 = true;   ///< ask the IPAM for an IPv4 address per pod
    bool assign_ipv6 = false;  ///< ask the IPAM for an IPv6 address per pod (dual stack with both)
    /// Empty: every CNI call does its work in its own process. A path: the CNI plugin
    /// hands its call to `cnf agent` listening there when it is running (and does the work
    /// itself when it is not).
    std::string agent_socket;
  } cni;

  struct node_section {
    std::string name;  ///< empty: $NODENAME, then the host name
    /// "autodetect" (the address of the interface holding the default route, else the first
    /// global one), "none", or an address with its subnet length ("192.168.1.10/24").
    std::string ipv4_address = "autodetect";
    std::string ipv6_address = "none";
    std::uint32_t as_number = 0;  ///< 0: none (the cluster's default)
    std::map<std::string, std::string> labels;
  } node;

  struct agent_section {
    /// `cnf agent`'s health, metrics and status endpoint on 127.0.0.1 (0: none).
    unsigned health_port = 9099;
  } agent;

  std::optional<part_choice> datastore, ipam, routing, encapsulation, policy;

  const std::optional<part_choice>& choice(part p) const {
    switch (p) {
      case part::datastore: return datastore;
      case part::ipam: return ipam;
      case part::routing: return routing;
      case part::encapsulation: return encapsulation;
      case part::policy: return policy;
    }
    return datastore;
  }
  plugin_config config_for(part p) const { return {text, file, to_string(p)}; }

  /// The node name: the profile's, else $NODENAME, else the host name.
  std::string node_name() const {
    if (!node.name.empty()) return node.name;
    if (const char* e = std::getenv("NODENAME"); e && *e) return e;
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) == 0) return buf;
    return "localhost";
  }
};

inline constexpr std::array<part, 5> all_parts = {part::datastore, part::ipam, part::routing, part::encapsulation, part::policy};

/// Parses a profile from text; `file` is used in messages.
inline result<profile> parse_profile(std::string text, std::string file) {
  profile p;
  p.file = file;
  p.text = std::move(text);
  toml::table doc;
  try {
    doc = toml::parse(p.text, file);
  } catch (const toml::parse_error& e) {
    diagnostic d{file, static_cast<unsigned>(e.source().begin.line), static_cast<unsigned>(e.source().begin.column), "",
                 std::string(e.description())};
    return error(errc::invalid, d.to_string());
  }
  std::vector<diagnostic> diags;
  auto take = [&](settings& s) {
    (void)s.finish();
    diags.insert(diags.end(), s.diagnostics().begin(), s.diagnostics().end());
  };

  // Top level: plugin_path and the known sections.
  {
    std::set<std::string> sections = {"cni", "node", "agent"};
    for (auto prt : all_parts) sections.insert(std::string(to_string(prt)));
    settings top(&doc, file, "", sections);
    if (auto v = top.get_optional<std::vector<std::string>>("plugin_path")) {
      auto base = std::filesystem::path(file).parent_path();
      for (auto& d : *v) {
        std::filesystem::path dp(d);
        p.plugin_path.push_back(dp.is_relative() && !base.empty() ? base / dp : dp);
      }
    }
    for (auto& s : sections) {
      if (auto* n = doc.get(s); n && !n->is_table()) top.fail(s, "expected a table ([" + s + "])");
    }
    // Unknown top-level keys get suggestions from keys and section names alike.
    if (top.table()) {
      std::set<std::string> cands = sections;
      cands.insert("plugin_path");
      for (auto& [k, v] : *top.table()) {
        std::string key(k.str());
        if (cands.count(key)) continue;
        std::string msg = v.is_table() ? "unknown section" : "unknown key";
        if (auto m = did_you_mean(key, cands)) msg += "; did you mean '" + *m + "'?";
        diags.push_back({file, static_cast<unsigned>(k.source().begin.line), static_cast<unsigned>(k.source().begin.column), key, msg});
      }
    }
    diags.insert(diags.end(), top.diagnostics().begin(), top.diagnostics().end());
  }
  {
    settings s(&doc, file, "cni", {});
    if (auto mtu = s.get_optional<std::int64_t>("mtu")) {
      if (*mtu < 68 || *mtu > 65535) s.fail("mtu", "must be between 68 and 65535 (got " + std::to_string(*mtu) + ")");
      else {
        p.cni.mtu = static_cast<unsigned>(*mtu);
        p.cni.mtu_set = true;
      }
    }
    p.cni.veth_prefix = s.get<std::string>("veth_prefix", p.cni.veth_prefix);
    if (p.cni.veth_prefix.empty() || p.cni.veth_prefix.size() > 4)
      s.fail("veth_prefix", "must be 1 to 4 characters (the name adds 11 hex digits; Linux allows 15)");
    for (char c : p.cni.veth_prefix)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
        s.fail("veth_prefix", "may contain only letters, digits, '-' and '_'");
        break;
      }
    if (auto lv = s.get_optional<std::string>("log_level"); lv && !parse_log_level(*lv, p.cni.level))
      s.fail("log_level", "must be one of error, warn, info, debug, trace (got '" + *lv + "')");
    p.cni.log_file = s.get<std::string>("log_file", "");
    p.cni.assign_ipv4 = s.get<bool>("assign_ipv4", true);
    p.cni.assign_ipv6 = s.get<bool>("assign_ipv6", false);
    if (!p.cni.assign_ipv4 && !p.cni.assign_ipv6) s.fail("assign_ipv6", "assign_ipv4 and assign_ipv6 are both false: pods would get no address");
    p.cni.agent_socket = s.get<std::string>("agent_socket", "");
    if (!p.cni.agent_socket.empty() && p.cni.agent_socket[0] != '/')
      s.fail("agent_socket", "must be an absolute path (got '" + p.cni.agent_socket + "')");
    else if (p.cni.agent_socket.size() >= 108)  // sockaddr_un's sun_path, with its NUL
      s.fail("agent_socket", "is longer than a Unix socket path may be (107 bytes)");
    take(s);
  }
  {
    settings s(&doc, file, "node", {});
    p.node.name = s.get<std::string>("name", "");
    auto address = [&](const char* key, std::string& out, bool v4) {
      out = s.get<std::string>(key, out);
      if (out == "autodetect" || out == "none") return;
      const char* fam = v4 ? "IPv4" : "IPv6";
      auto pr = ip_prefix::parse(out, /*allow_host_bits=*/true);
      if (out.find('/') == std::string::npos || !pr || (pr->family() == ip_family::v4) != v4)
        s.fail(key, std::string("must be \"autodetect\", \"none\" or an ") + fam + " address with its subnet length (got '" + out + "')");
    };
    address("ipv4_address", p.node.ipv4_address, true);
    address("ipv6_address", p.node.ipv6_address, false);
    if (auto as = s.get_optional<std::int64_t>("as_number")) {
      if (*as < 1 || *as > 4294967295) s.fail("as_number", "must be between 1 and 4294967295 (got " + std::to_string(*as) + ")");
      else p.node.as_number = static_cast<std::uint32_t>(*as);
    }
    if (auto* l = s.node("labels")) {
      if (auto* t = l->as_table()) {
        for (auto& [k, v] : *t) {
          if (auto* str = v.as_string()) p.node.labels[std::string(k.str())] = str->get();
          else s.fail_at(v, "labels." + std::string(k.str()), "expected a string");
        }
      } else {
        s.fail("labels", "expected a table (labels = { key = \"value\" })");
      }
    }
    take(s);
  }
  {
    settings s(&doc, file, "agent", {});
    if (auto port = s.get_optional<std::int64_t>("health_port")) {
      if (*port < 0 || *port > 65535) s.fail("health_port", "must be between 0 (off) and 65535 (got " + std::to_string(*port) + ")");
      else p.agent.health_port = static_cast<unsigned>(*port);
    }
    take(s);
  }
  for (auto prt : all_parts) {
    auto name = std::string(to_string(prt));
    auto* n = doc.get(name);
    if (!n || !n->is_table()) continue;
    auto* t = n->as_table();
    auto* pl = t->get("plugin");
    part_choice c;
    if (!pl) {
      diags.push_back({file, static_cast<unsigned>(t->source().begin.line), static_cast<unsigned>(t->source().begin.column),
                       name + ".plugin", "is required: name the " + name + " plugin (e.g. plugin = \"...\")"});
      continue;
    }
    if (!pl->is_string()) {
      diags.push_back({file, static_cast<unsigned>(pl->source().begin.line), static_cast<unsigned>(pl->source().begin.column),
                       name + ".plugin", "expected a string"});
      continue;
    }
    c.plugin = pl->as_string()->get();
    c.line = static_cast<unsigned>(pl->source().begin.line);
    c.column = static_cast<unsigned>(pl->source().begin.column);
    switch (prt) {
      case part::datastore: p.datastore = c; break;
      case part::ipam: p.ipam = c; break;
      case part::routing: p.routing = c; break;
      case part::encapsulation: p.encapsulation = c; break;
      case part::policy: p.policy = c; break;
    }
  }
  // A node always has a datastore: the embedded one unless the profile names another.
  if (!p.datastore && !doc.get("datastore")) p.datastore = part_choice{"local", 0, 0};
  if (!diags.empty()) return error(errc::invalid, join_diagnostics(diags));
  return p;
}

inline result<profile> load_profile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return error(errc::io, path.string() + ": cannot read profile: " + std::string(std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_profile(ss.str(), path.string());
}

/// The parts a host built from a profile. Empty wrappers for parts not asked for or
/// not in the profile.
struct composition {
  any_datastore datastore;
  any_ipam ipam;
  any_routing routing;
  any_encapsulation encapsulation;
  any_policy policy;
};

namespace detail {
inline error at_choice(const profile& p, part prt, const error& e) {
  const auto& c = p.choice(prt);
  std::string where = p.file;
  if (c && c->line) where += ":" + std::to_string(c->line) + ":" + std::to_string(c->column);
  if (e.message.rfind(p.file + ":", 0) == 0) return e;  // the plugin already said where
  return error(e.code, where + ": " + std::string(to_string(prt)) + ".plugin: " + e.message);
}
}  // namespace detail

/// How a host adapts composition, for hosts that need it (the cnf program links some parts
/// in, and wraps the CNI plugin's datastore so that it fails fast). Both are optional.
struct compose_hooks {
  /// A plugin to use instead of loading `name` for `part` (nullopt: load it as usual).
  std::function<std::optional<loaded_plugin>(part, const std::string& name)> resolve;
  /// Applied to the datastore before it goes into the other parts' context.
  std::function<any_datastore(any_datastore)> wrap_datastore;
};

/// Loads and builds the parts in `which` (the datastore first: it goes into the
/// context of the others). Errors point at the profile's line of the part's choice.
inline result<composition> compose(const profile& p, const plugin_loader& loader, std::set<part> which, plugin_context ctx,
                                   const compose_hooks& hooks = {}) {
  composition c;
  if (ctx.node_name.empty()) ctx.node_name = p.node_name();
  auto build = [&]<part P>(typename part_traits<P>::any& out) -> result<void> {
    if (!which.count(P) || !p.choice(P)) return {};
    const std::string& name = p.choice(P)->plugin;
    auto made = [&]() -> result<typename part_traits<P>::any> {
      if (hooks.resolve)
        if (auto lp = hooks.resolve(P, name)) return plugin_loader::make<P>(*lp, ctx, p.config_for(P));
      return loader.make<P>(name, ctx, p.config_for(P));
    }();
    if (!made) return detail::at_choice(p, P, made.error());
    out = std::move(*made);
    return {};
  };
  if (auto r = build.template operator()<part::datastore>(c.datastore); !r) return r.error();
  if (hooks.wrap_datastore && c.datastore) c.datastore = hooks.wrap_datastore(std::move(c.datastore));
  ctx.datastore = c.datastore;
  if (auto r = build.template operator()<part::ipam>(c.ipam); !r) return r.error();
  if (auto r = build.template operator()<part::routing>(c.routing); !r) return r.error();
  if (auto r = build.template operator()<part::encapsulation>(c.encapsulation); !r) return r.error();
  if (auto r = build.template operator()<part::policy>(c.policy); !r) return r.error();
  return c;
}

CNF_END_NAMESPACE
