#include "app.hpp"

#include <cstdlib>
#include <cstring>
#include <iostream>

int main(int argc, char** argv) {
  // A container runtime execs the plugin with CNI_COMMAND set and no arguments; it may
  // also be installed in a CNI bin directory under another name (its network "type").
  std::string_view self = argv[0] ? argv[0] : "cnf";
  if (auto s = self.rfind('/'); s != std::string_view::npos) self.remove_prefix(s + 1);
  const char* cmd = std::getenv("CNI_COMMAND");
  if ((cmd && argc == 1) || self != "cnf") return cnf_app::run_cni(argc, argv);

  CLI::App app{"cnf: a Kubernetes pod network (CNI) composed from plugins.\n"
               "Run with CNI_COMMAND set (by a container runtime) to act as the CNI plugin;\n"
               "named in another plugin's ipam.type, it acts as that plugin's IPAM.",
               "cnf"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every command");
  cnf_app::add_core_commands(app);
  cnf_app::add_ipam_commands(app);
  cnf_app::add_resource_commands(app);
  cnf_app::add_agent_command(app);
  cnf_app::add_node_commands(app);
  cnf_app::add_lab_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return cnf_app::exit_code();
}
