// cnf/policy/rules.hpp — Calico's policy model, read from resources, and Kubernetes
// NetworkPolicy translated into it.
//
// One model for projectcalico.org/v3 NetworkPolicy and GlobalNetworkPolicy and for
// networking.k8s.io/v1 NetworkPolicy (translated as Calico's kube-controllers do: name
// "knp.default.<name>", order 1000, podSelector -> selector, each peer -> one rule,
// ipBlock.except -> notNets, named ports kept by name for the calculator to resolve).
// NetworkSet / GlobalNetworkSet: labels plus nets, matched by rule selectors like endpoints.
// The readers validate: an error names the resource and the field
// ("NetworkPolicy/ns1/p: spec.ingress[0].source.selector: selector \"a ==\": at 5: ...").
//
//   auto p = cnf::netpol::parse_calico_policy(res).value();       // kind NetworkPolicy or GNP
//   auto k = cnf::netpol::parse_k8s_network_policy(res).value();  // networking.k8s.io/v1
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/net.hpp>
#include <cnf/policy.hpp>
#include <cnf/policy/selector.hpp>

#include <optional>
#include <string>
#include <variant>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netpol {

/// A port, a range, or a name (a container port name, resolved per endpoint).
struct port_spec {
  port_range range;
  std::string name;  ///< not empty: a named port
  friend bool operator==(const port_spec&, const port_spec&) = default;
};

struct icmp_spec {
  std::optional<std::uint8_t> type, code;
  friend bool operator==(const icmp_spec&, const icmp_spec&) = default;
};

/// source or destination of a rule.
struct entity_rule {
  std::vector<ip_prefix> nets, not_nets;
  std::optional<selector> sel, not_sel, namespace_sel, service_account_sel;
  std::vector<port_spec> ports, not_ports;
  friend bool operator==(const entity_rule&, const entity_rule&) = default;
};

struct rule {
  policy_rule::action_type action = policy_rule::action_type::allow;
  std::optional<std::uint8_t> protocol, not_protocol;
  std::optional<icmp_spec> icmp, not_icmp;
  std::optional<ip_family> family;  ///< ipVersion
  entity_rule source, destination;
  friend bool operator==(const rule&, const rule&) = default;
};

struct policy_def {
  std::string kind = "NetworkPolicy";  ///< NetworkPolicy or GlobalNetworkPolicy (k8s ones are NetworkPolicy "knp.default.*")
  std::string ns, name;
  double order = 1000.0;  ///< Calico: unset sorts last; we use +inf for that
  selector sel;           ///< spec.selector (all() when empty)
  std::optional<selector> namespace_sel, service_account_sel;  ///< GNP only
  bool ingress = true, egress = false;  ///< spec.types
  std::vector<rule> ingress_rules, egress_rules;
  std::string key() const { return kind + "/" + ns + "/" + name; }
  friend bool operator==(const policy_def&, const policy_def&) = default;
};

struct network_set {
  std::string ns, name;  ///< ns empty: GlobalNetworkSet
  label_map labels;
  std::vector<ip_prefix> nets;
  std::string key() const { return (ns.empty() ? "GlobalNetworkSet/" : "NetworkSet/" + ns + "/") + name; }
  friend bool operator==(const network_set&, const network_set&) = default;
};

/// projectcalico.org/v3 NetworkPolicy (r.ns set) or GlobalNetworkPolicy (kind GlobalNetworkPolicy).
result<policy_def> parse_calico_policy(const resource& r);
/// networking.k8s.io/v1 NetworkPolicy: r.spec is the object's spec.
result<policy_def> parse_k8s_network_policy(const resource& r);
/// NetworkSet (r.ns set) or GlobalNetworkSet: spec.nets.
result<network_set> parse_network_set(const resource& r);
/// "tcp", "UDP", "icmp", "sctp", "icmpv6", or a number 1..255.
result<std::uint8_t> parse_protocol(std::string_view s);

}  // namespace netpol
CNF_END_NAMESPACE
