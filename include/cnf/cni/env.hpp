// cnf/cni/env.hpp — the CNI_* environment of one plugin invocation, parsed and validated.
//
//   int main(int, char**, char** envp) {
//     auto env = cni::parse_env(envp);
//     if (!env) { std::puts(env.error().to_json().c_str()); return 1; }
//     if (env->cmd == cni::command::add) ... env->container_id, env->ifname, env->args.k8s_pod_name
//
// Required variables per command (SPEC section 2; empty counts as missing):
//   ADD, CHECK  CNI_COMMAND CNI_CONTAINERID CNI_NETNS CNI_IFNAME
//   DEL         CNI_COMMAND CNI_CONTAINERID CNI_IFNAME          (CNI_NETNS may be empty)
//   GC          CNI_COMMAND CNI_PATH
//   STATUS      CNI_COMMAND                                     (CNI_PATH optional)
//   VERSION     CNI_COMMAND
// CNI_ARGS and CNI_PATH are optional otherwise; env_options::require_path makes CNI_PATH
// required (a plugin that will delegate to an IPAM binary needs it).
// Every problem is reported at once in one error, code 4 (invalid environment), whose
// message names each missing or invalid variable.
//
// Checks beyond presence (ADD/DEL/CHECK only, as libcni):
//   CNI_CONTAINERID  [A-Za-z0-9][A-Za-z0-9_.-]* (spec), and, because cnf uses it in file
//                    and key names: no "..", at most 255 bytes
//   CNI_IFNAME       1..15 bytes (IFNAMSIZ-1), not "." or "..", no '/', ':', whitespace or
//                    control characters (the kernel's dev_valid_name, as libcni checks)
//   CNI_ARGS         KEY=VALUE pairs separated by ';' (see parse_cni_args)
#pragma once
#include <cnf/cni/command.hpp>
#include <cnf/cni/error.hpp>

#include <cstddef>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace cni {

/// Maximum interface name length in bytes (IFNAMSIZ 16 minus the terminating NUL).
inline constexpr std::size_t max_ifname_length = 15;
/// cnf's limit for container ids (they become file names: NAME_MAX).
inline constexpr std::size_t max_container_id_length = 255;

/// CNI_ARGS, parsed. Known keys (exact case, as libcni matches them): IgnoreUnknown,
/// K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID and IP
/// (CONVENTIONS.md). Any other key is an error unless IgnoreUnknown is 1/true or the
/// caller lists it in `extra_known`.
struct cni_args {
  std::string k8s_pod_namespace;
  std::string k8s_pod_name;
  std::string k8s_pod_infra_container_id;
  std::string k8s_pod_uid;
  std::string ip;                 ///< "IP": requested address(es), raw
  bool ignore_unknown = false;
  /// Every pair in input order, known or not (later duplicates win in the fields above).
  std::vector<std::pair<std::string, std::string>> pairs;

  /// The last value given for `key`, if any.
  std::optional<std::string_view> get(std::string_view key) const {
    for (auto it = pairs.rbegin(); it != pairs.rend(); ++it)
      if (it->first == key) return std::string_view(it->second);
    return std::nullopt;
  }
};

namespace detail {

/// `"value"` for messages, cut at 80 bytes.
inline std::string quoted(std::string_view s) {
  if (s.size() > 80) return "\"" + std::string(s.substr(0, 77)) + "...\"";
  return "\"" + std::string(s) + "\"";
}

inline std::string describe_char(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  if (u < 0x20 || u == 0x7f || u >= 0x80) {
    static constexpr char hex[] = "0123456789abcdef";
    return std::string("byte 0x") + hex[u >> 4] + hex[u & 15];
  }
  if (c == ' ') return "space";
  return std::string("'") + c + "'";
}

inline bool is_alnum(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/// The problem with a container id, or nullopt if it is valid. Empty is a problem too.
inline std::optional<std::string> container_id_problem(std::string_view id) {
  if (id.empty()) return "must not be empty";
  if (id.size() > max_container_id_length)
    return std::to_string(id.size()) + " bytes long, at most " + std::to_string(max_container_id_length) + " allowed";
  if (!is_alnum(id[0])) return "must start with a letter or digit, not " + describe_char(id[0]);
  for (std::size_t i = 1; i < id.size(); ++i) {
    char c = id[i];
    if (!is_alnum(c) && c != '_' && c != '.' && c != '-')
      return "invalid character " + describe_char(c) + " at offset " + std::to_string(i) +
             " (allowed: letters, digits, '_', '.', '-')";
  }
  if (id.find("..") != std::string_view::npos) return "must not contain \"..\"";
  return std::nullopt;
}

/// The problem with an interface name, or nullopt if it is valid.
inline std::optional<std::string> ifname_problem(std::string_view name) {
  if (name.empty()) return "must not be empty";
  if (name.size() > max_ifname_length)
    return std::to_string(name.size()) + " bytes long, at most " + std::to_string(max_ifname_length) + " allowed";
  if (name == "." || name == "..") return "must not be \".\" or \"..\"";
  for (std::size_t i = 0; i < name.size(); ++i) {
    unsigned char u = static_cast<unsigned char>(name[i]);
    if (name[i] == '/' || name[i] == ':' || u <= 0x20 || u == 0x7f)
      return "invalid character " + describe_char(name[i]) + " at offset " + std::to_string(i) +
             " (not allowed: '/', ':', whitespace, control characters)";
  }
  return std::nullopt;
}

inline std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string s;
  for (const auto& x : v) {
    if (!s.empty()) s += sep;
    s += x;
  }
  return s;
}

}  // namespace detail

/// Code 4 naming CNI_CONTAINERID and the problem.
inline result<void> validate_container_id(std::string_view id) {
  if (auto p = detail::container_id_problem(id))
    return make_error(error_code::invalid_environment, "CNI_CONTAINERID " + detail::quoted(id) + ": " + *p);
  return {};
}
/// Code 4 naming CNI_IFNAME and the problem.
inline result<void> validate_ifname(std::string_view name) {
  if (auto p = detail::ifname_problem(name))
    return make_error(error_code::invalid_environment, "CNI_IFNAME " + detail::quoted(name) + ": " + *p);
  return {};
}

/// Parses CNI_ARGS ("K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IgnoreUnknown=1").
/// Empty input is no arguments. Errors are code 4 and start with "CNI_ARGS".
inline result<cni_args> parse_cni_args(std::string_view s, std::span<const std::string_view> extra_known = {}) {
  cni_args a;
  if (s.empty()) return a;
  std::vector<std::string> unknown;
  std::size_t pos = 0, index = 0;
  auto fail = [](std::string m) { return make_error(error_code::invalid_environment, "CNI_ARGS: " + std::move(m)); };
  while (true) {
    std::size_t end = s.find(';', pos);
    std::string_view pair = s.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    std::size_t eq = pair.find('=');
    if (pair.empty()) return fail("empty pair at position " + std::to_string(index) + " (stray ';')");
    if (eq == std::string_view::npos || pair.find('=', eq + 1) != std::string_view::npos)
      return fail("invalid pair " + detail::quoted(pair) + " at position " + std::to_string(index) +
                  " (expected KEY=VALUE)");
    std::string_view key = pair.substr(0, eq), value = pair.substr(eq + 1);
    if (key.empty()) return fail("empty key in pair " + detail::quoted(pair));

    if (key == "IgnoreUnknown") {
      std::string v(value);
      for (auto& c : v) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
      if (v == "1" || v == "true") a.ignore_unknown = true;
      else if (v == "0" || v == "false") a.ignore_unknown = false;
      else return fail("IgnoreUnknown: invalid boolean " + detail::quoted(value) + " (expected 1, 0, true or false)");
    } else if (key == "K8S_POD_NAMESPACE") a.k8s_pod_namespace = value;
    else if (key == "K8S_POD_NAME") a.k8s_pod_name = value;
    else if (key == "K8S_POD_INFRA_CONTAINER_ID") a.k8s_pod_infra_container_id = value;
    else if (key == "K8S_POD_UID") a.k8s_pod_uid = value;
    else if (key == "IP") a.ip = value;
    else {
      bool known = false;
      for (auto k : extra_known) known = known || k == key;
      if (!known) unknown.emplace_back(key);
    }
    a.pairs.emplace_back(std::string(key), std::string(value));
    if (end == std::string_view::npos) break;
    pos = end + 1;
    ++index;
  }
  if (!unknown.empty() && !a.ignore_unknown)
    return fail("unknown key" + std::string(unknown.size() > 1 ? "s " : " ") + detail::join(unknown, ", ") +
                " (set IgnoreUnknown=1 to ignore unknown keys)");
  return a;
}

/// The environment of one invocation. Fields a command does not use are whatever the
/// runtime set (possibly empty) and are not validated.
struct environment {
  command cmd = command::version;
  std::string container_id;   ///< CNI_CONTAINERID
  std::string netns;          ///< CNI_NETNS (may be empty for DEL)
  std::string ifname;         ///< CNI_IFNAME
  std::string args_raw;       ///< CNI_ARGS as given
  cni_args args;              ///< CNI_ARGS parsed (ADD/DEL/CHECK only)
  std::string path_raw;       ///< CNI_PATH as given
  std::vector<std::string> path;  ///< CNI_PATH split on ':' (empty entries dropped)
};

struct env_options {
  /// Also require CNI_PATH for ADD/DEL/CHECK/STATUS (needed to delegate to an IPAM binary).
  bool require_path = false;
  /// CNI_ARGS keys accepted in addition to the known ones.
  std::span<const std::string_view> extra_arg_keys = {};
};

/// Parses the environment through `lookup(name) -> std::optional<std::string_view>`.
template <class Lookup>
result<environment> parse_env_with(Lookup&& lookup, const env_options& opts = {}) {
  auto get = [&](const char* name) -> std::string_view {
    std::optional<std::string_view> v = lookup(std::string_view(name));
    return v ? *v : std::string_view{};
  };
  environment env;
  std::string_view cmd = get("CNI_COMMAND");
  if (cmd.empty())
    return make_error(error_code::invalid_environment, "missing required environment variables: CNI_COMMAND");
  auto c = parse_command(cmd);
  if (!c)
    return make_error(error_code::invalid_environment,
                      "CNI_COMMAND " + detail::quoted(cmd) +
                          ": unknown command (expected ADD, DEL, CHECK, STATUS, GC or VERSION)");
  env.cmd = *c;
  if (env.cmd == command::version) return env;

  const bool attach = is_attachment_command(env.cmd);
  env.container_id = get("CNI_CONTAINERID");
  env.netns = get("CNI_NETNS");
  env.ifname = get("CNI_IFNAME");
  env.args_raw = get("CNI_ARGS");
  env.path_raw = get("CNI_PATH");

  std::vector<std::string> missing, problems;
  if (attach) {
    if (env.container_id.empty()) missing.emplace_back("CNI_CONTAINERID");
    else if (auto p = detail::container_id_problem(env.container_id))
      problems.push_back("CNI_CONTAINERID " + detail::quoted(env.container_id) + ": " + *p);
    if (env.netns.empty() && env.cmd != command::del) missing.emplace_back("CNI_NETNS");
    if (env.ifname.empty()) missing.emplace_back("CNI_IFNAME");
    else if (auto p = detail::ifname_problem(env.ifname))
      problems.push_back("CNI_IFNAME " + detail::quoted(env.ifname) + ": " + *p);
  }
  if (env.path_raw.empty() && (env.cmd == command::gc || opts.require_path)) missing.emplace_back("CNI_PATH");
  if (attach) {
    auto a = parse_cni_args(env.args_raw, opts.extra_arg_keys);
    if (a) env.args = std::move(*a);
    else problems.push_back(std::move(a).error().msg);
  }

  if (!missing.empty() || !problems.empty()) {
    std::vector<std::string> parts;
    if (!missing.empty())
      parts.push_back("missing required environment variable" + std::string(missing.size() > 1 ? "s" : "") +
                      " for " + std::string(to_string(env.cmd)) + ": " + detail::join(missing, ", "));
    for (auto& p : problems) parts.push_back(std::move(p));
    return make_error(error_code::invalid_environment, detail::join(parts, "; "));
  }

  std::string_view rest = env.path_raw;
  while (!rest.empty()) {
    auto colon = rest.find(':');
    auto part = rest.substr(0, colon);
    if (!part.empty()) env.path.emplace_back(part);
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  return env;
}

/// From a process environment block (main's third argument, or `environ`). When a name
/// occurs twice the first wins, as getenv does.
inline result<environment> parse_env(const char* const* envp, const env_options& opts = {}) {
  return parse_env_with(
      [envp](std::string_view name) -> std::optional<std::string_view> {
        for (const char* const* e = envp; e && *e; ++e) {
          std::string_view kv(*e);
          if (kv.size() > name.size() && kv[name.size()] == '=' && kv.substr(0, name.size()) == name)
            return kv.substr(name.size() + 1);
        }
        return std::nullopt;
      },
      opts);
}

/// From a map (tests, or an environment assembled by a caller).
inline result<environment> parse_env(const std::map<std::string, std::string>& vars, const env_options& opts = {}) {
  return parse_env_with(
      [&vars](std::string_view name) -> std::optional<std::string_view> {
        auto it = vars.find(std::string(name));
        if (it == vars.end()) return std::nullopt;
        return std::string_view(it->second);
      },
      opts);
}

}  // namespace cni
CNF_END_NAMESPACE
