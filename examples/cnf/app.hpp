// The reference distribution: one multi-call program, as calico-node is. It answers as a
// CNI plugin when a container runtime execs it, and as a command-line tool otherwise.
#pragma once
#include <cnf/cni/engine.hpp>
#include <cnf/loader.hpp>
#include <cnf/profile.hpp>

#include <CLI/CLI.hpp>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

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
/// cnf ipam show|check|release|configure (cli/cmd_ipam.cpp); cnf apply|get|delete
/// (cli/cmd_resources.cpp). Both register nothing when built without calico-ipam or yaml-cpp.
void add_ipam_commands(CLI::App& app);
void add_resource_commands(CLI::App& app);
/// cnf agent (agent/cmd_agent.cpp): serves the CNI plugin's calls over the profile's agent_socket.
void add_agent_command(CLI::App& app);
/// cnf node status (cli/cmd_node.cpp): the running agent's view, like calicoctl node status.
void add_node_commands(CLI::App& app);
/// cnf lab up|down|pod|exec|ping|status (cli/cmd_lab.cpp, lab/): a cluster in a box.
void add_lab_command(CLI::App& app);

/// CNI mode: the framework's engine (cnf/cni/engine.hpp) with this program's hooks
/// (cni/cni_main.cpp): stdin config, CNI_* environment, result or error JSON on stdout.
cnf::cni::engine_hooks cni_hooks();
int run_cni(int argc, char** argv);

/// cnf::compose, except that the parts linked into this program (builtin.cpp; CMake
/// option CNF_CNI_BUILTIN_PLUGINS) are made without loading their plugin library.
/// fail_fast: the datastore is wrapped in fail_fast_datastore (cnf/cni/fail_fast.hpp) before the
/// other parts get it: for a CNI call, which must fail within one datastore timeout.
cnf::result<cnf::composition> compose_parts(const cnf::profile& prof, const cnf::plugin_loader& loader, const std::set<cnf::part>& which,
                                            cnf::plugin_context ctx, bool fail_fast = false);
/// "part/name" of each part linked into this program; empty when none is.
std::vector<std::string> builtin_plugin_names();

}  // namespace cnf_app
