// The host-local IPAM as a cnf plugin: [ipam] plugin = "host-local".
#include <cnf/plugin.hpp>
#include <cnf/plugins/host-local.hpp>

namespace {

cnf::host_local::config configure(cnf::settings& s) { return cnf::host_local::read_config(s); }

cnf::result<cnf::host_local_ipam> create(const cnf::plugin_context& ctx, cnf::host_local::config c) {
  if (!ctx.datastore)
    return cnf::error(cnf::errc::invalid, "host-local: the host gave no datastore; host-local keeps its allocations there");
  return cnf::host_local_ipam(ctx.datastore, std::move(c), ctx.node_name, ctx.log);
}

}  // namespace

CNF_PLUGIN(ipam, "host-local", "0.1.0", configure, create);
