// CNI mode of the reference distribution: the framework's CNI engine (cnf/cni/engine.hpp,
// compiled in cnf::cni) with what is this program's own: the parts linked into it
// (builtin.cpp) and where its plugins live. The agent (agent/cmd_agent.cpp) runs the calls
// it serves through the same engine with the same hooks.
#include "app.hpp"

#include <cnf/cni/engine.hpp>

namespace cnf_app {

cnf::cni::engine_hooks cni_hooks() {
  cnf::cni::engine_hooks h;
  h.plugin_path = plugin_search_path;
  h.compose = [](const cnf::profile& prof, const cnf::plugin_loader& loader, const std::set<cnf::part>& which, cnf::plugin_context ctx) {
    return compose_parts(prof, loader, which, std::move(ctx), /*fail_fast=*/true);
  };
  return h;
}

int run_cni(int, char** argv) { return cnf::cni::run_plugin_main(argv, cni_hooks()); }

}  // namespace cnf_app
