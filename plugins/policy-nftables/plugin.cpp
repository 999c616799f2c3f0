// The nftables policy part as a cnf plugin:
//   [policy] plugin = "nftables"   table = "calico"   interface_prefix = "cali"
#include <cnf/plugin.hpp>
#include <cnf/plugins/policy_nftables.hpp>

namespace {

cnf::nftables_policy::options configure(cnf::settings& s) {
  cnf::nftables_policy::options o;
  o.table = s.get("table", "calico");
  o.interface_prefix = s.get("interface_prefix", "cali");
  if (o.interface_prefix.empty() || o.interface_prefix.size() > 14) s.fail("interface_prefix", "needs 1 to 14 characters");
  return o;
}

cnf::nftables_policy::dataplane create(const cnf::plugin_context&, cnf::nftables_policy::options o) {
  return cnf::nftables_policy::dataplane(std::move(o));
}

}  // namespace

CNF_PLUGIN(policy, "nftables", "0.1.0", configure, create);
