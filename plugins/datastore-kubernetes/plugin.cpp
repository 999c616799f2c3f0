// The `kubernetes` datastore plugin: cnf resources as CRDs through the Kubernetes API.
// Everything lives in cnf_datastore_kubernetes (see <cnf/plugins/kubernetes.hpp>).
#include <cnf/plugin.hpp>
#include <cnf/plugins/kubernetes.hpp>

namespace {

cnf::kubernetes::options configure(cnf::settings& s) { return cnf::kubernetes::configure(s); }

cnf::result<cnf::kubernetes::datastore> create(const cnf::plugin_context& ctx, cnf::kubernetes::options o) {
  return cnf::kubernetes::datastore::open(o, ctx.log, ctx.exec);
}

}  // namespace

CNF_PLUGIN(datastore, "kubernetes", "0.1.0", configure, create);
