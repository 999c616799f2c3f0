// The CNI command engine: ADD, DEL, CHECK, STATUS, GC and VERSION (CNI spec 1.1, plugin
// side) over the parts a profile composes, for any distribution built on cnf. A call is
// data (plugin_call), so the process a container runtime exec'd can run it, or hand it to
// the node agent (agent_client.hpp) and the agent runs it with the parts it keeps loaded.
// Compiled once in the library cnf::cni (src/cni/engine.cpp); a distribution supplies
// only what is its own: how it composes parts, where its plugins and profile live.
#pragma once
#include <cnf/loader.hpp>
#include <cnf/profile.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace cni {

struct plugin_call {
  std::vector<std::string> env;  // "NAME=value": the CNI_* variables and the rest of the environment
  std::string input;             // stdin: the network config
  std::string self;              // argv[0]'s basename (the engine acts as another plugin's IPAM when ipam.type names it)
};

/// What an agent keeps between calls: its profile and the parts it composes.
struct served_parts {
  std::string path;  // the profile file, as given to the agent
  struct stat id {};  // that file when it was read (a changed file is read again)
  cnf::profile prof;
  cnf::composition parts;
};

/// What a distribution tells the engine. Every member may be left empty.
struct engine_hooks {
  /// The profile file when neither the network config nor the call's $CNF_PROFILE names
  /// one (default: /etc/cnf/profile.toml).
  std::function<std::string()> default_profile;
  /// Where plugin libraries are searched for a profile (default: the profile's
  /// plugin_path, else the loader's default).
  std::function<std::vector<std::filesystem::path>(const cnf::profile*)> plugin_path;
  /// Composes the parts a command needs (the datastore, and IPAM unless the network config
  /// delegates it). Default: cnf::compose with the datastore wrapped in
  /// fail_fast_datastore (fail_fast.hpp), so that a call fails within one datastore timeout.
  std::function<cnf::result<cnf::composition>(const cnf::profile&, const cnf::plugin_loader&, const std::set<cnf::part>&,
                                               cnf::plugin_context)>
      compose;
  /// The MTU of a new pod's veth when neither the network config nor the profile sets one
  /// (`cnf agent` answers with the MTU it detected: the tunnel's, else the uplink's); 0 or
  /// empty: unknown, then the profile's fallback (1500), and CHECK leaves the MTU alone.
  std::function<unsigned()> pod_mtu;
};

/// run_call's status when it runs in an agent and the call names another profile than the
/// agent's; `out` says why, and the plugin does the work itself.
inline constexpr int not_served = -1;

/// Runs one CNI call: the result or error JSON goes to `out`, logs to stderr (and the
/// profile's log file); returns the exit status. `served`: run with the agent's parts
/// instead of composing them; nullptr in the process a runtime exec'd, which hands the
/// call to the agent when the profile names its socket and the agent is running.
int run_call(const plugin_call& call, std::string& out, const served_parts* served, const engine_hooks& hooks = {});

/// The whole plugin process: the call from this process's environment, stdin and argv[0],
/// its answer on stdout; returns the exit status.
int run_plugin_main(char** argv, const engine_hooks& hooks = {});

}  // namespace cni
CNF_END_NAMESPACE
