// The `local` datastore plugin: configure() reads [datastore] (dir, fsync,
// log_segment_bytes, log_segments_kept); create() opens the store.
#include <cnf/plugin.hpp>
#include <cnf/plugins/local.hpp>

namespace {
cnf::local_datastore_options configure(cnf::settings& s) { return cnf::configure_local_datastore(s); }

cnf::result<cnf::local_datastore> create(const cnf::plugin_context& ctx, cnf::local_datastore_options o) {
  o.exec = ctx.exec;
  o.log = ctx.log;
  return cnf::local_datastore::open(std::move(o));
}
}  // namespace

CNF_PLUGIN(datastore, "local", "0.1.0", configure, create);
