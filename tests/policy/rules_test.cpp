#include <cnf/policy/rules.hpp>

#include <catch2/catch.hpp>
#include <netinet/in.h>

using namespace cnf::netpol;

namespace {
cnf::resource res(std::string kind, std::string ns, std::string name, std::string spec) {
  cnf::resource r;
  r.kind = std::move(kind);
  r.ns = std::move(ns);
  r.name = std::move(name);
  r.spec = std::move(spec);
  return r;
}
std::string k8s_error(std::string spec) {
  auto r = parse_k8s_network_policy(res("NetworkPolicy", "ns1", "p", std::move(spec)));
  REQUIRE_FALSE(r);
  return r.error().message;
}
std::string calico_error(std::string kind, std::string spec) {
  auto r = parse_calico_policy(res(kind, kind == "NetworkPolicy" ? "ns1" : "", "p", std::move(spec)));
  REQUIRE_FALSE(r);
  return r.error().message;
}
}  // namespace

TEST_CASE("a Calico NetworkPolicy reads into the model", "[unit]") {
  auto p = parse_calico_policy(res("NetworkPolicy", "ns1", "web", R"j({
    "order": 100, "selector": "app == 'web'", "types": ["Ingress", "Egress"],
    "ingress": [{"action": "Allow", "protocol": "TCP",
                 "source": {"selector": "role == 'fe'", "namespaceSelector": "team == 'a'", "notNets": ["10.1.0.0/16"]},
                 "destination": {"ports": [80, "8000:8080", "http"]}},
                {"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8}}],
    "egress": [{"action": "Pass", "destination": {"nets": ["192.168.0.0/24", "10.0.0.1"]}},
               {"action": "Log", "notProtocol": "UDP"}]})j"))
               .value();
  CHECK(p.key() == "NetworkPolicy/ns1/web");
  CHECK(p.order == 100.0);
  CHECK(p.sel.to_string() == "app == \"web\"");
  CHECK(p.ingress);
  CHECK(p.egress);
  REQUIRE(p.ingress_rules.size() == 2);
  const auto& r0 = p.ingress_rules[0];
  CHECK(r0.action == cnf::policy_rule::action_type::allow);
  CHECK(r0.protocol == IPPROTO_TCP);
  CHECK(r0.source.namespace_sel->to_string() == "team == \"a\"");
  CHECK(r0.source.not_nets[0].to_string() == "10.1.0.0/16");
  REQUIRE(r0.destination.ports.size() == 3);
  CHECK(r0.destination.ports[1].range == cnf::port_range{8000, 8080});
  CHECK(r0.destination.ports[2].name == "http");
  CHECK(p.ingress_rules[1].icmp->type == 8);
  CHECK(p.egress_rules[0].action == cnf::policy_rule::action_type::pass);
  CHECK(p.egress_rules[0].destination.nets[1].to_string() == "10.0.0.1/32");
  CHECK(p.egress_rules[1].not_protocol == IPPROTO_UDP);
}

TEST_CASE("Calico's types default: Ingress, and Egress when there are egress rules", "[unit]") {
  auto a = parse_calico_policy(res("GlobalNetworkPolicy", "", "g", R"j({"selector": "all()"})j")).value();
  CHECK(a.ingress);
  CHECK_FALSE(a.egress);
  CHECK(a.order == std::numeric_limits<double>::infinity());
  auto b = parse_calico_policy(res("GlobalNetworkPolicy", "", "g", R"j({"egress": [{"action": "Allow"}], "namespaceSelector": "x == 'y'"})j")).value();
  CHECK(b.ingress);
  CHECK(b.egress);
  CHECK(b.namespace_sel->to_string() == "x == \"y\"");
}

TEST_CASE("bad Calico policies name the resource and the field", "[unit]") {
  CHECK(calico_error("NetworkPolicy", R"j({"selector": "app =="})j") ==
        "NetworkPolicy/ns1/p: spec.selector: selector \"app ==\": at 7: expected a quoted string in '=='");
  CHECK(calico_error("NetworkPolicy", R"j({"ingres": []})j") ==
        "NetworkPolicy/ns1/p: spec.ingres: unknown field (known: order, tier, selector, serviceAccountSelector, types, ingress, egress, "
        "performanceHints)");
  CHECK(calico_error("NetworkPolicy", R"j({"ingress": [{"action": "Accept"}]})j") ==
        "NetworkPolicy/ns1/p: spec.ingress[0].action: 'Accept' is not one of Allow, Deny, Pass, Log");
  CHECK(calico_error("NetworkPolicy", R"j({"ingress": [{}]})j") == "NetworkPolicy/ns1/p: spec.ingress[0].action: missing (Allow, Deny, Pass or Log)");
  CHECK(calico_error("GlobalNetworkPolicy", R"j({"egress": [{"action": "Allow", "destination": {"nets": ["10.0.0.1/8"]}}]})j") ==
        "GlobalNetworkPolicy/p: spec.egress[0].destination.nets[0]: '10.0.0.1/8' is not a network (host bits are set)");
  CHECK(calico_error("GlobalNetworkPolicy", R"j({"egress": [{"action": "Allow", "destination": {"nets": ["banana"]}}]})j") ==
        "GlobalNetworkPolicy/p: spec.egress[0].destination.nets[0]: 'banana' is not a CIDR");
  CHECK(calico_error("NetworkPolicy", R"j({"ingress": [{"action": "Allow", "destination": {"ports": [80]}}]})j") ==
        "NetworkPolicy/ns1/p: spec.ingress[0].destination.ports: ports need protocol TCP, UDP, SCTP or UDPLite");
  CHECK(calico_error("NetworkPolicy", R"j({"ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": ["90:80"]}}]})j") ==
        "NetworkPolicy/ns1/p: spec.ingress[0].destination.ports[0]: '90:80' is not a port range (first:last, 0..65535, first <= last)");
  CHECK(calico_error("NetworkPolicy", R"j({"ingress": [{"action": "Allow", "protocol": "GRE"}]})j") ==
        "NetworkPolicy/ns1/p: spec.ingress[0].protocol: 'GRE' is not a protocol (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1..255)");
  CHECK(calico_error("NetworkPolicy", R"j({"types": ["Inbound"]})j") == "NetworkPolicy/ns1/p: spec.types[0]: 'Inbound' is neither \"Ingress\" nor \"Egress\"");
  CHECK(calico_error("NetworkPolicy", R"j({"ingress": [{"action": "Allow", "icmp": {"type": 8}}]})j") ==
        "NetworkPolicy/ns1/p: spec.ingress[0].icmp: icmp needs protocol ICMP or ICMPv6");
  CHECK(calico_error("NetworkPolicy", R"j({"tier": "security"})j") == "NetworkPolicy/ns1/p: spec.tier: only the 'default' tier is supported, not 'security'");
}

TEST_CASE("a K8s NetworkPolicy translates as Calico's kube-controllers do", "[unit]") {
  auto p = parse_k8s_network_policy(res("NetworkPolicy", "x", "allow", R"j({
    "podSelector": {"matchLabels": {"pod": "a"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}},
                          {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                          {"namespaceSelector": {}, "podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}},
                          {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                 "ports": [{"port": 80}, {"protocol": "UDP", "port": 81}, {"port": 8000, "endPort": 8100}, {"port": "serve-80"}]}],
    "policyTypes": ["Ingress", "Egress"]})j"))
               .value();
  CHECK(p.key() == "NetworkPolicy/x/knp.default.allow");
  CHECK(p.order == 1000.0);
  CHECK(p.sel.to_string() == "pod == \"a\" && tier not in {\"db\"} && projectcalico.org/orchestrator == \"k8s\"");
  CHECK(p.ingress);
  CHECK(p.egress);
  CHECK(p.egress_rules.empty());  // egress declared with no rules: deny all egress
  // 4 peers x 2 protocols (TCP: 80, 8000-8100, serve-80; UDP: 81)
  REQUIRE(p.ingress_rules.size() == 8);
  const auto& tcp_b = p.ingress_rules[0];
  CHECK(tcp_b.protocol == IPPROTO_TCP);
  CHECK(tcp_b.source.sel->to_string() == "pod == \"b\" && projectcalico.org/orchestrator == \"k8s\"");
  CHECK_FALSE(tcp_b.source.namespace_sel);
  REQUIRE(tcp_b.destination.ports.size() == 3);
  CHECK(tcp_b.destination.ports[1].range == cnf::port_range{8000, 8100});
  CHECK(tcp_b.destination.ports[2].name == "serve-80");
  CHECK(p.ingress_rules[1].protocol == IPPROTO_UDP);
  CHECK(p.ingress_rules[1].destination.ports[0].range == cnf::port_range{81, 81});
  CHECK(p.ingress_rules[2].source.namespace_sel->to_string() == "ns == \"y\"");
  CHECK(p.ingress_rules[4].source.namespace_sel->is_all());
  CHECK(p.ingress_rules[4].source.sel->to_string() == "has(pod) && projectcalico.org/orchestrator == \"k8s\"");
  CHECK(p.ingress_rules[6].source.nets[0].to_string() == "10.0.0.0/8");
  CHECK(p.ingress_rules[6].source.not_nets[0].to_string() == "10.1.0.0/16");
  CHECK_FALSE(p.ingress_rules[6].source.sel);
}

TEST_CASE("K8s policyTypes default and empty rules", "[unit]") {
  auto a = parse_k8s_network_policy(res("NetworkPolicy", "x", "deny", R"j({"podSelector": {}})j")).value();
  CHECK(a.ingress);
  CHECK_FALSE(a.egress);
  CHECK(a.ingress_rules.empty());
  CHECK(a.sel.to_string() == "projectcalico.org/orchestrator == \"k8s\"");
  auto b = parse_k8s_network_policy(res("NetworkPolicy", "x", "e", R"j({"podSelector": {}, "egress": [{}]})j")).value();
  CHECK(b.egress);
  REQUIRE(b.egress_rules.size() == 1);  // allow all egress
  CHECK_FALSE(b.egress_rules[0].destination.sel);
  CHECK_FALSE(b.egress_rules[0].protocol);
}

TEST_CASE("bad K8s NetworkPolicies name the resource and the field", "[unit]") {
  CHECK(k8s_error(R"j({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]})j") ==
        "NetworkPolicy/ns1/p: spec.ingress[0].from[0].ipBlock.except[0]: 192.168.0.0/16 is not inside 10.0.0.0/8");
  CHECK(k8s_error(R"j({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.1/8"}}]}]})j") ==
        "NetworkPolicy/ns1/p: spec.ingress[0].from[0].ipBlock.cidr: '10.0.0.1/8' is not a network CIDR");
  CHECK(k8s_error(R"j({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}})j") ==
        "NetworkPolicy/ns1/p: spec.podSelector.matchExpressions[0].operator: 'Is' is not one of In, NotIn, Exists, DoesNotExist");
  CHECK(k8s_error(R"j({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 70}]}]})j") ==
        "NetworkPolicy/ns1/p: spec.ingress[0].ports[0].endPort: 70 is below port or above 65535");
  CHECK(k8s_error(R"j({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]})j") ==
        "NetworkPolicy/ns1/p: spec.ingress[0].ports[0].endPort: cannot be used with a named port");
  CHECK(k8s_error(R"j({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]})j") ==
        "NetworkPolicy/ns1/p: spec.ingress[0].ports[0].protocol: 'ICMP' is not one of TCP, UDP, SCTP");
  CHECK(k8s_error(R"j({"podSelector": {}, "egress": [{"from": []}]})j") == "NetworkPolicy/ns1/p: spec.egress[0].from: unknown field (known: to, ports)");
  CHECK(k8s_error(R"j({"podSelector": {}, "policyTypes": ["Both"]})j") == "NetworkPolicy/ns1/p: spec.policyTypes[0]: expected \"Ingress\" or \"Egress\"");
  CHECK(k8s_error("[]") == "NetworkPolicy/ns1/p: spec: not a JSON object");
}

TEST_CASE("network sets", "[unit]") {
  auto r = res("GlobalNetworkSet", "", "external", R"j({"nets": ["1.2.3.0/24", "2001:db8::/32"]})j");
  r.labels = {{"role", "ext"}};
  auto n = parse_network_set(r).value();
  CHECK(n.key() == "GlobalNetworkSet/external");
  CHECK(n.nets.size() == 2);
  CHECK(n.labels.at("role") == "ext");
  auto bad = parse_network_set(res("NetworkSet", "ns1", "s", R"j({"nets": ["1.2.3.4/24"]})j"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == "NetworkSet/ns1/s: spec.nets[0]: '1.2.3.4/24' is not a network (host bits are set)");
}
