// Shared by the policy plugin tests: pods in throw-away namespaces and the reachability
// scenario every policy plugin must pass (default deny blocks TCP, an allow policy opens one
// port, a relabelled client loses it, removing the policies opens everything again).
#pragma once
#include "../integration/netns_harness.hpp"

#include <cnf/policy/calculator.hpp>

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <functional>

namespace policy_test {

using namespace cnf::netpol;
using cnf_test::test_netns;

inline cnf::workload_endpoint pod(std::string ns, std::string name, std::string iface, std::string ip, label_map labels) {
  cnf::workload_endpoint w;
  w.ns = ns;
  w.name = "node1-k8s-" + name + "-eth0";
  w.pod = name;
  w.orchestrator = "k8s";
  w.node = "node1";
  w.container_id = "c-" + name;
  w.endpoint = "eth0";
  w.interface_name = iface;
  w.ip_networks = {cnf::ip_prefix::parse(ip + "/32").value()};
  w.labels = std::move(labels);
  w.profiles = {"kns." + ns, "ksa." + ns + ".default"};
  w.service_account_name = "default";
  return w;
}

inline policy_def k8s(std::string ns, std::string name, std::string spec) {
  cnf::resource r;
  r.kind = "NetworkPolicy";
  r.ns = std::move(ns);
  r.name = std::move(name);
  r.spec = std::move(spec);
  return parse_k8s_network_policy(r).value();
}

/// A listening TCP socket inside `ns` (the kernel completes handshakes without accept()).
inline int listen_in(const test_netns& ns, const std::string& ip, int port) {
  cnf_test::enter_netns in(ns);
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 16) != 0) throw std::runtime_error("listen " + ip);
  return s;
}

/// A TCP connect from inside `ns`, 700 ms to complete.
inline bool connects(const test_netns& ns, const std::string& ip, int port) {
  cnf_test::enter_netns in(ns);
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (!ok && errno == EINPROGRESS) {
    pollfd p{s, POLLOUT, 0};
    if (::poll(&p, 1, 700) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
      ok = err == 0;
    }
  }
  ::close(s);
  return ok;
}


/// Two pods behind `node` (Calico's plumbing), then the policy cases against `plugin`.
inline void reachability_scenario(const std::function<cnf::any_policy()>& make_plugin) {
  test_netns node, a, b;
  // Calico's plumbing: /32 in the pod, default via 169.254.1.1, proxy ARP on the host side.
  cnf_test::set_ip_forward(node);
  // Proxy ARP answers for 169.254.1.1 only with a route to it: a default via a spare link.
  node.exec_or_throw("ip link add up0 type veth peer name up1 && ip link set up1 up && ip link set up0 up && ip route add default dev up0");
  for (auto [p, ifc, ip] : {std::tuple{&a, "calia0000000001", "10.65.0.1"}, std::tuple{&b, "calib0000000002", "10.65.0.2"}}) {
    cnf_test::veth_between(node, ifc, *p, "eth0");
    node.exec_or_throw(std::string("sysctl -q -w net.ipv4.conf.") + ifc + ".proxy_arp=1 net.ipv4.neigh." + ifc + ".proxy_delay=0 && ip route add " + ip + "/32 dev " + ifc);
    p->exec_or_throw(std::string("ip addr add ") + ip + "/32 dev eth0 && ip route add 169.254.1.1 dev eth0 scope link && ip route add default via 169.254.1.1");
  }
  int s80 = listen_in(b, "10.65.0.2", 8080), s81 = listen_in(b, "10.65.0.2", 8081);
  node.exec_or_throw("ip addr add 10.99.0.1/32 dev up0");
  int host = listen_in(node, "10.99.0.1", 9000);  // a service of the host itself
  REQUIRE(connects(a, "10.65.0.2", 8080));  // no policy programmed yet: plain forwarding

  cnf_test::enter_netns in(node);
  cnf::any_policy plugin = make_plugin();
  calculator calc("node1");
  calc.upsert_namespace("default", {});
  calc.upsert_endpoint(pod("default", "a", "calia0000000001", "10.65.0.1", {{"app", "client"}}));
  calc.upsert_endpoint(pod("default", "b", "calib0000000002", "10.65.0.2", {{"app", "server"}}));
  REQUIRE(calc.flush(plugin));
  CHECK(connects(a, "10.65.0.2", 8080));  // profiles: kns.default allows
  CHECK(connects(a, "10.99.0.1", 9000));  // to the host: egress allows, then the endpoint-to-host action

  calc.upsert_policy(k8s("default", "deny-all", R"j({"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"]})j"));
  REQUIRE(calc.flush(plugin));
  CHECK_FALSE(connects(a, "10.65.0.2", 8080));
  CHECK_FALSE(connects(a, "10.65.0.2", 8081));

  calc.upsert_policy(k8s("default", "allow-client", R"j({"podSelector": {"matchLabels": {"app": "server"}},
      "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 8080}]}]})j"));
  REQUIRE(calc.flush(plugin));
  CHECK(connects(a, "10.65.0.2", 8080));
  CHECK_FALSE(connects(a, "10.65.0.2", 8081));

  // Calico's order: a GlobalNetworkPolicy (order 10) denying 8080 from the client's network
  // runs before the K8s policies (order 1000); one that passes skips the other policies and
  // hands over to the profiles (Calico's next tier; kns.default allows).
  auto gnp = [](std::string name, std::string spec) {
    cnf::resource r;
    r.kind = "GlobalNetworkPolicy";
    r.name = std::move(name);
    r.spec = std::move(spec);
    return parse_calico_policy(r).value();
  };
  calc.upsert_policy(gnp("deny-8080", R"j({"order": 10, "selector": "app == 'server'", "ingress": [
      {"action": "Deny", "protocol": "TCP", "source": {"nets": ["10.65.0.0/24"], "notNets": ["10.65.0.9/32"]}, "destination": {"ports": [8080]}}]})j"));
  REQUIRE(calc.flush(plugin));
  CHECK_FALSE(connects(a, "10.65.0.2", 8080));
  calc.upsert_policy(gnp("deny-8080", R"j({"order": 10, "selector": "app == 'server'", "ingress": [
      {"action": "Pass", "protocol": "TCP", "destination": {"ports": [8080]}}]})j"));
  REQUIRE(calc.flush(plugin));
  CHECK(connects(a, "10.65.0.2", 8080));
  calc.remove_policy("GlobalNetworkPolicy//deny-8080");

  // Egress on the client: only to an ipBlock (minus one address) on port 8081.
  calc.upsert_policy(k8s("default", "client-out", R"j({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
      "egress": [{"to": [{"ipBlock": {"cidr": "10.65.0.0/24", "except": ["10.65.0.3/32"]}}], "ports": [{"port": 8081}]}]})j"));
  REQUIRE(calc.flush(plugin));
  CHECK_FALSE(connects(a, "10.65.0.2", 8080));  // egress: port not allowed
  CHECK_FALSE(connects(a, "10.99.0.1", 9000));  // egress policy applies to the host too
  CHECK(connects(b, "10.99.0.1", 9000));        // not to other pods' traffic
  CHECK_FALSE(connects(a, "10.65.0.2", 8081));  // egress allows, ingress (deny-all, allow 8080 only) does not
  calc.upsert_policy(k8s("default", "allow-client", R"j({"podSelector": {"matchLabels": {"app": "server"}},
      "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 8080, "endPort": 8081}]}]})j"));
  REQUIRE(calc.flush(plugin));
  CHECK(connects(a, "10.65.0.2", 8081));  // both directions allow (port range on ingress)
  calc.upsert_policy(k8s("default", "client-out", R"j({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
      "egress": [{"to": [{"ipBlock": {"cidr": "10.65.0.0/24", "except": ["10.65.0.2/32"]}}], "ports": [{"port": 8081}]}]})j"));
  REQUIRE(calc.flush(plugin));
  CHECK_FALSE(connects(a, "10.65.0.2", 8081));  // now excepted
  calc.remove_policy("NetworkPolicy/default/knp.default.client-out");
  REQUIRE(calc.flush(plugin));
  CHECK(connects(a, "10.65.0.2", 8080));

  // The client relabelled: it leaves the IP set, the port closes again.
  calc.upsert_endpoint(pod("default", "a", "calia0000000001", "10.65.0.1", {{"app", "other"}}));
  REQUIRE(calc.flush(plugin));
  CHECK_FALSE(connects(a, "10.65.0.2", 8080));
  calc.remove_policy("NetworkPolicy/default/knp.default.deny-all");
  calc.remove_policy("NetworkPolicy/default/knp.default.allow-client");
  REQUIRE(calc.flush(plugin));
  CHECK(connects(a, "10.65.0.2", 8081));
  ::close(s80);
  ::close(s81);
  ::close(host);
}

}  // namespace policy_test
