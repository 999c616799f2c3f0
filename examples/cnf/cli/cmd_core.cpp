// cnf version | cnf plugins [--profile P] | cnf profile check P
#include "app.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <unistd.h>

#include <cstdlib>
#include <iostream>

namespace cnf_app {

std::filesystem::path exe_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path(".") : p.parent_path();
}

std::filesystem::path install_plugin_dir() { return (exe_dir() / ".." / "lib" / "cnf" / "plugins").lexically_normal(); }

std::vector<std::filesystem::path> plugin_search_path(const cnf::profile* p) {
  return cnf::plugin_loader::default_search_path(p ? p->plugin_path : std::vector<std::filesystem::path>{}, install_plugin_dir());
}

std::string default_profile_path() {
  if (const char* e = std::getenv("CNF_PROFILE"); e && *e) return e;
  return "/etc/cnf/profile.toml";
}

namespace {

int cmd_version() {
  fmt::print("cnf {}\nplugin ABI {}\nbuild {}\n", CNF_VERSION_STRING, cnf::abi_version, CNF_BUILD_TAG);
  if (auto b = builtin_plugin_names(); !b.empty()) fmt::print("built in {}\n", fmt::join(b, ", "));
  return 0;
}

int cmd_plugins(const std::string& profile_path) {
  std::optional<cnf::profile> prof;
  if (!profile_path.empty()) {
    auto p = cnf::load_profile(profile_path);
    if (!p) {
      fmt::print(stderr, "{}\n", p.error().message);
      return 1;
    }
    prof = std::move(*p);
  }
  cnf::plugin_loader loader(plugin_search_path(prof ? &*prof : nullptr));
  std::vector<cnf::error> problems;
  auto found = loader.discover(&problems);
  fmt::print("{:<14} {:<16} {:<10} {:<4} {}\n", "PART", "NAME", "VERSION", "ABI", "PATH");
  for (auto& i : found)
    fmt::print("{:<14} {:<16} {:<10} {:<4} {}\n", cnf::to_string(i.kind), i.name, i.version, i.abi, i.path.string());
  for (auto& e : problems) fmt::print(stderr, "refused: {}\n", e.message);
  std::string searched;
  for (auto& d : loader.search_path()) searched += (searched.empty() ? "" : ", ") + d.string();
  fmt::print(stderr, "searched: {}\n", searched);
  return 0;
}

int cmd_profile_check(const std::string& path) {
  auto p = cnf::load_profile(path);
  if (!p) {
    fmt::print(stderr, "{}\n", p.error().message);
    return 1;
  }
  cnf::plugin_loader loader(plugin_search_path(&*p));
  std::vector<std::string> errors;
  fmt::print("profile {}\n", path);
  fmt::print("  node           {}\n", p->node_name());
  fmt::print("  cni            mtu={} veth_prefix={} log_level={}{}\n",
             p->cni.mtu_set ? std::to_string(p->cni.mtu) : "auto (the agent's; " + std::to_string(p->cni.mtu) + " when not served)", p->cni.veth_prefix, cnf::to_string(p->cni.level),
             p->cni.log_file.empty() ? "" : " log_file=" + p->cni.log_file);
  for (auto prt : cnf::all_parts) {
    const auto& c = p->choice(prt);
    if (!c) {
      fmt::print("  {:<14} (none)\n", cnf::to_string(prt));
      continue;
    }
    auto lp = loader.find(prt, c->plugin);
    if (!lp) {
      errors.push_back(cnf::detail::at_choice(*p, prt, lp.error()).message);
      fmt::print("  {:<14} {} (NOT FOUND)\n", cnf::to_string(prt), c->plugin);
      continue;
    }
    auto v = cnf::plugin_loader::validate(*lp, p->config_for(prt));
    fmt::print("  {:<14} {} {} ({}){}\n", cnf::to_string(prt), lp->info.name, lp->info.version, lp->info.path.string(), v ? "" : " INVALID");
    if (!v) errors.push_back(v.error().message);
  }
  for (auto& e : errors) fmt::print(stderr, "{}\n", e);
  if (!errors.empty()) {
    fmt::print(stderr, "profile check failed: {} problem(s)\n", errors.size());
    return 1;
  }
  fmt::print("profile OK\n");
  return 0;
}

}  // namespace

void add_core_commands(CLI::App& app) {
  app.add_subcommand("version", "Print the cnf version, plugin ABI and build tag")->callback([] { exit_code() = cmd_version(); });

  auto* plugins = app.add_subcommand("plugins", "List the plugins found on the search path (profile plugin_path, $CNF_PLUGIN_PATH, the install directory)");
  static std::string plugins_profile;
  plugins->add_option("--profile,-p", plugins_profile, "Profile whose plugin_path is searched first");
  plugins->callback([] { exit_code() = cmd_plugins(plugins_profile); });

  auto* profile = app.add_subcommand("profile", "Work with profiles");
  profile->require_subcommand(1);
  auto* check = profile->add_subcommand("check", "Resolve a profile: find and validate each part's plugin, or print every error");
  static std::string check_path;
  check->add_option("profile", check_path, "Profile file (TOML)")->required();
  check->callback([] { exit_code() = cmd_profile_check(check_path); });
}

}  // namespace cnf_app
