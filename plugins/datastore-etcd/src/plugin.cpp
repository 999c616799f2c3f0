// The `etcd` datastore plugin: the profile section is read by configure_etcd(), the
// store is built by etcd_datastore::open(). Everything else lives in cnf_datastore_etcd.
#include <cnf/plugin.hpp>
#include <cnf/plugins/etcd.hpp>

namespace {
cnf::etcd_config configure(cnf::settings& s) { return cnf::configure_etcd(s); }
cnf::result<cnf::etcd_datastore> create(const cnf::plugin_context& ctx, cnf::etcd_config c) {
  return cnf::etcd_datastore::open(std::move(c), ctx.log, ctx.exec);
}
}  // namespace

CNF_PLUGIN(datastore, "etcd", "0.1.0", configure, create);
