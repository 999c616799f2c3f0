// The calico-ipam plugin: reads the [ipam] section and builds the IPAM on the host's datastore.
#include <cnf/plugin.hpp>
#include <cnf/plugins/calico_ipam.hpp>

namespace {
cnf::calico_ipam::options configure(cnf::settings& s) { return cnf::calico_ipam::configure(s); }

cnf::result<cnf::calico_ipam::ipam> create(const cnf::plugin_context& ctx, cnf::calico_ipam::options o) {
  if (!ctx.datastore)
    return cnf::error(cnf::errc::invalid, "calico-ipam keeps its state in the datastore, but the host gave it none (check the profile's [datastore] section)");
  return cnf::calico_ipam::ipam(ctx.datastore, ctx.node_name, std::move(o), ctx.log);
}
}  // namespace

CNF_PLUGIN(ipam, "calico-ipam", "0.1.0", configure, create);
