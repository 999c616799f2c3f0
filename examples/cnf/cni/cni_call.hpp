// One CNI call as data, so that it can be run by the process the runtime exec'd or handed
// to `cnf agent` and run there (agent/cmd_agent.cpp). The wire between the plugin and the agent
// is agent_client.hpp's; where the agent listens, agent_listen.hpp's.
#pragma once
#include <cnf/profile.hpp>

#include <sys/stat.h>

#include <string>
#include <vector>

namespace cnf_app {

struct cni_call {
  std::vector<std::string> env;  // "NAME=value": the CNI_* variables and the rest of the environment
  std::string input;             // stdin: the network config
  std::string self;              // argv[0]'s basename (cnf acts as another plugin's IPAM when ipam.type names it)
};

/// What `cnf agent` keeps between calls: its profile and the parts it composes.
struct served_parts {
  std::string path;  // the profile file, as given to the agent
  struct stat id {};  // that file when it was read (a changed file is read again)
  cnf::profile prof;
  cnf::composition parts;
};

/// run_cni_call's status when it runs in the agent and the call names another profile
/// than the agent's; `out` says why, and the plugin does the work itself.
inline constexpr int not_served = -1;

/// Runs one CNI call: the result or error JSON goes to `out`, logs to stderr (and the
/// profile's log file); returns the exit status. `served`: run with the agent's parts
/// instead of composing them; nullptr in the process a runtime exec'd, which hands the
/// call to the agent when the profile names its socket and the agent is running.
int run_cni_call(const cni_call& call, std::string& out, const served_parts* served);

}  // namespace cnf_app
