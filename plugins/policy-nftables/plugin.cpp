// The nftables policy part as a cnf plugin:
//   [policy] plugin = "nftables"   table = "calico"   interface_prefix = "cali"
//            refresh_interval = 10 (seconds between the agent's drift checks; 0: none)
//            ipv6 = true (the ip6 table too; false: IPv4 only)
#include <cnf/plugin.hpp>
#include <cnf/plugins/policy_nftables.hpp>
#include <cnf/policy/host_settings.hpp>

namespace {

cnf::nftables_policy::options configure(cnf::settings& s) {
  cnf::nftables_policy::options o;
  (void)cnf::netpol::read_host_settings(s);  // refresh_interval: the agent's
  o.table = s.get("table", "calico");
  o.ipv6 = s.get("ipv6", true);
  o.interface_prefix = s.get("interface_prefix", "cali");
  if (o.interface_prefix.empty() || o.interface_prefix.size() > 14) s.fail("interface_prefix", "needs 1 to 14 characters");
  o.endpoint_to_host_action = s.get("endpoint_to_host_action", "accept");
  if (o.endpoint_to_host_action != "accept" && o.endpoint_to_host_action != "drop" && o.endpoint_to_host_action != "return")
    s.fail("endpoint_to_host_action", "'" + o.endpoint_to_host_action + "' is not one of \"accept\", \"drop\", \"return\"");
  return o;
}

cnf::nftables_policy::dataplane create(const cnf::plugin_context&, cnf::nftables_policy::options o) {
  return cnf::nftables_policy::dataplane(std::move(o));
}

}  // namespace

CNF_PLUGIN(policy, "nftables", "0.1.0", configure, create);
