// The reference distribution: one multi-call program, as calico-node is. It answers as a
// CNI plugin when a container runtime execs it, and as a command-line tool otherwise.
#pragma once
#include <cnf/loader.hpp>
#include <cnf/profile.hpp>

#include <CLI/CLI.hpp>

#include <filesystem>
#include <string>

namespace cnf_app {

/// Where this executable lives; plugins are at <exe>/../lib/cnf/plugins (installed and
/// build trees share that layout).
std::filesystem::path exe_dir();
std::filesystem::path install_plugin_dir();
std::vector<std::filesystem::path> plugin_search_path(const cnf::profile* p);

/// The default profile: $CNF_PROFILE, else /etc/cnf/profile.toml.
std::string default_profile_path();

/// Subcommand callbacks store the process exit code here.
inline int& exit_code() {
  static int rc = 0;
  return rc;
}

void add_core_commands(CLI::App& app);

/// CNI mode: stdin config, CNI_* environment, result or error JSON on stdout.
int run_cni(int argc, char** argv);

}  // namespace cnf_app
