// The Kubernetes network policy suite's model, on one node: namespaces x, y, z with pods a, b,
// c each, servers on TCP and UDP 80 and 81 in every pod; for each case the full 9 x 9 matrix per
// port and protocol is probed (every connect or datagram at once, one timeout) and compared with
// the matrix the case expects, on every policy plugin.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../integration/netns_harness.hpp"
#include "../support/root_gate.hpp"
#include "support.hpp"

#include <cnf/plugins/policy_iptables.hpp>
#ifdef CNF_TEST_HAVE_NFTABLES
#include <cnf/plugins/policy_nftables.hpp>
#endif

#include <memory>

CNF_TEST_ROOT_GATE("network namespaces and a firewall");

using namespace cnf::netpol;
using cnf_test::test_netns;

namespace {

struct pod_t {
  std::string ns, name, ip, iface;
  std::unique_ptr<test_netns> net;
  int listeners[2] = {-1, -1};
  int udp[2] = {-1, -1};
};

struct cluster {
  test_netns node;
  std::vector<pod_t> pods;
  cluster() {
    cnf_test::set_ip_forward(node);
    node.exec_or_throw("ip link add up0 type veth peer name up1 && ip link set up1 up && ip link set up0 up && ip route add default dev up0");
    int n = 0;
    for (std::string ns : {"x", "y", "z"})
      for (std::string name : {"a", "b", "c"}) {
        pod_t p;
        p.ns = ns;
        p.name = name;
        p.ip = "10.66.0." + std::to_string(++n);
        p.iface = "cali" + ns + name + "00000000";
        p.net = std::make_unique<test_netns>();
        cnf_test::veth_between(node, p.iface, *p.net, "eth0");
        node.exec_or_throw("sysctl -q -w net.ipv4.conf." + p.iface + ".proxy_arp=1 net.ipv4.neigh." + p.iface +
                           ".proxy_delay=0 && ip route add " + p.ip + "/32 dev " + p.iface);
        p.net->exec_or_throw("ip addr add " + p.ip + "/32 dev eth0 && ip route add 169.254.1.1 dev eth0 scope link && ip route add default via 169.254.1.1");
        p.listeners[0] = policy_test::listen_in(*p.net, p.ip, 80);
        p.listeners[1] = policy_test::listen_in(*p.net, p.ip, 81);
        for (int fd : p.listeners) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
        for (int k = 0; k < 2; ++k) p.udp[k] = udp_in(*p.net, p.ip, 80 + k);
        pods.push_back(std::move(p));
      }
  }
  ~cluster() {
    for (auto& p : pods)
      for (int fd : {p.listeners[0], p.listeners[1], p.udp[0], p.udp[1]})
        if (fd >= 0) ::close(fd);
  }
  static int udp_in(const test_netns& ns, const std::string& ip, int port) {
    cnf_test::enter_netns in(ns);
    int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("udp bind " + ip);
    return s;
  }
  /// matrix[from][to]: a UDP datagram to `port` arrived within 400 ms. All 81 sent at once.
  std::vector<std::vector<bool>> probe_udp(int port) {
    const std::size_t n = pods.size();
    std::vector<std::vector<bool>> m(n, std::vector<bool>(n, false));
    for (std::size_t i = 0; i < n; ++i) {
      cnf_test::enter_netns in(*pods[i].net);
      int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      for (std::size_t j = 0; j < n; ++j) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        ::inet_pton(AF_INET, pods[j].ip.c_str(), &a.sin_addr);
        const std::string msg = std::to_string(i);
        ::sendto(s, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a);
      }
      ::close(s);
    }
    ::usleep(400 * 1000);  // a datagram crosses two veths in microseconds
    for (std::size_t j = 0; j < n; ++j) {
      char buf[16];
      for (ssize_t got; (got = ::recv(pods[j].udp[port - 80], buf, sizeof buf, 0)) > 0;) {
        auto from = static_cast<std::size_t>(std::atoi(std::string(buf, static_cast<std::size_t>(got)).c_str()));
        if (from < n) m[from][j] = true;
      }
    }
    return m;
  }
  /// matrix[from][to]: a TCP connect to `port` completed within 700 ms. All 81 at once.
  std::vector<std::vector<bool>> probe(int port) {
    const std::size_t n = pods.size();
    std::vector<pollfd> fds;
    std::vector<std::pair<std::size_t, std::size_t>> who;
    std::vector<std::vector<bool>> m(n, std::vector<bool>(n, false));
    for (std::size_t i = 0; i < n; ++i) {
      cnf_test::enter_netns in(*pods[i].net);
      for (std::size_t j = 0; j < n; ++j) {
        int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        ::inet_pton(AF_INET, pods[j].ip.c_str(), &a.sin_addr);
        if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
          m[i][j] = true;
          ::close(s);
          continue;
        }
        fds.push_back({s, POLLOUT, 0});
        who.emplace_back(i, j);
      }
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(700);
    std::size_t open = fds.size();
    while (open > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0 || ::poll(fds.data(), fds.size(), static_cast<int>(left)) <= 0) break;
      for (std::size_t k = 0; k < fds.size(); ++k) {
        if (fds[k].fd < 0 || !(fds[k].revents & (POLLOUT | POLLERR | POLLHUP))) continue;
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fds[k].fd, SOL_SOCKET, SO_ERROR, &err, &len);
        m[who[k].first][who[k].second] = err == 0;
        ::close(fds[k].fd);
        fds[k].fd = -1;
        --open;
      }
    }
    for (auto& f : fds)
      if (f.fd >= 0) ::close(f.fd);
    // Empty the accept queues, or the next probe finds them full and its SYNs dropped.
    for (auto& p : pods)
      for (int fd : p.listeners)
        for (int c; (c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) ::close(c);
    return m;
  }
};

std::string render(const cluster& c, const std::vector<std::vector<bool>>& m) {
  std::string s = "      ";
  for (auto& p : c.pods) s += p.ns + "/" + p.name + " ";
  s += "\n";
  for (std::size_t i = 0; i < m.size(); ++i) {
    s += c.pods[i].ns + "/" + c.pods[i].name + "   ";
    for (bool b : m[i]) s += b ? " .  " : " X  ";
    s += "\n";
  }
  return s;
}

using expect_fn = std::function<bool(const pod_t& from, const pod_t& to, const std::string& proto, int port)>;

struct test_case {
  std::string name;
  std::vector<policy_def> policies;
  expect_fn allowed;
};

policy_def knp(std::string ns, std::string name, std::string spec) { return policy_test::k8s(std::move(ns), std::move(name), std::move(spec)); }
policy_def gnp(std::string name, std::string spec) {
  cnf::resource r;
  r.kind = "GlobalNetworkPolicy";
  r.name = std::move(name);
  r.spec = std::move(spec);
  return parse_calico_policy(r).value();
}

std::vector<test_case> cases() {
  return {
      {"no policies: everything reaches everything", {}, [](auto&, auto&, auto&, int) { return true; }},
      {"default deny ingress in x",
       {knp("x", "deny", R"j({"podSelector": {}, "policyTypes": ["Ingress"]})j")},
       [](auto&, auto& to, auto&, int) { return to.ns != "x"; }},
      {"x/a: allow from namespace y only",
       {knp("x", "from-y", R"j({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})j")},
       [](auto& from, auto& to, auto&, int) { return !(to.ns == "x" && to.name == "a") || from.ns == "y"; }},
      {"x/a: allow from pods b in any namespace, port 81 only",
       {knp("x", "b-81", R"j({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 81}]}]})j")},
       [](auto& from, auto& to, auto& proto, int port) { return !(to.ns == "x" && to.name == "a") || (from.name == "b" && proto == "TCP" && port == 81); }},
      {"x/a: allow from an ipBlock with an except (y/b's address)",
       {knp("x", "ipblock", R"j({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.66.0.0/24", "except": ["10.66.0.5/32"]}}]}]})j")},
       [](auto& from, auto& to, auto&, int) { return !(to.ns == "x" && to.name == "a") || !(from.ns == "y" && from.name == "b"); }},
      {"egress from y: only to namespace z, port 80 to 80 (endPort)",
       {knp("y", "egress", R"j({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}], "ports": [{"port": 80, "endPort": 80}]}]})j")},
       [](auto& from, auto& to, auto& proto, int port) { return from.ns != "y" || (to.ns == "z" && proto == "TCP" && port == 80); }},
      {"two policies on x/c add up (from x/a, and from z)",
       {knp("x", "c-from-a", R"j({"podSelector": {"matchLabels": {"pod": "c"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]})j"),
        knp("x", "c-from-z", R"j({"podSelector": {"matchLabels": {"pod": "c"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]})j")},
       [](auto& from, auto& to, auto&, int) { return !(to.ns == "x" && to.name == "c") || (from.ns == "x" && from.name == "a") || from.ns == "z"; }},
      {"Calico: a GlobalNetworkPolicy (order 1) denies port 81 to every pod c before a K8s allow",
       {gnp("deny-81-c", R"j({"order": 1, "selector": "pod == 'c'", "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [81]}}, {"action": "Pass"}]})j"),
        knp("z", "allow-all", R"j({"podSelector": {}, "ingress": [{}]})j")},
       [](auto&, auto& to, auto& proto, int port) { return !(to.name == "c" && proto == "TCP" && port == 81); }},
  };
}

void run_cases(cluster& c, const std::function<cnf::any_policy()>& make) {
  cnf_test::enter_netns in(c.node);
  cnf::any_policy plugin = make();
  calculator calc("node1");
  for (std::string ns : {"x", "y", "z"}) calc.upsert_namespace(ns, {{"ns", ns}});
  for (auto& p : c.pods) calc.upsert_endpoint(policy_test::pod(p.ns, p.ns + p.name, p.iface, p.ip, {{"pod", p.name}}));
  std::vector<std::string> live;
  for (auto& tc : cases()) {
    // Policies updated live: the previous case's go, this case's come, in one flush.
    for (auto& k : live) calc.remove_policy(k);
    live.clear();
    for (auto& p : tc.policies) {
      calc.upsert_policy(p);
      live.push_back(p.key());
    }
    REQUIRE(calc.flush(plugin));
    for (auto [proto, port] : {std::pair{std::string("TCP"), 80}, std::pair{std::string("TCP"), 81}, std::pair{std::string("UDP"), 80}, std::pair{std::string("UDP"), 81}}) {
      auto got = proto == "TCP" ? c.probe(port) : c.probe_udp(port);
      std::vector<std::vector<bool>> want(c.pods.size(), std::vector<bool>(c.pods.size()));
      for (std::size_t i = 0; i < c.pods.size(); ++i)
        for (std::size_t j = 0; j < c.pods.size(); ++j) want[i][j] = i == j || tc.allowed(c.pods[i], c.pods[j], proto, port);  // to itself: never leaves the pod
      INFO(tc.name << ", " << proto << " " << port << "\nexpected:\n" << render(c, want) << "probed:\n" << render(c, got));
      CHECK(got == want);
    }
  }
}

}  // namespace

TEST_CASE("truth table: the K8s suite's cases and Calico's order, Deny and Pass, on iptables-nft", "[integration]") {
  cluster c;
  run_cases(c, [] { return cnf::any_policy{cnf::iptables_policy::dataplane({.backend = "nft"})}; });
}

TEST_CASE("truth table: the same on iptables-legacy", "[integration]") {
  cluster c;
  if (!c.node.exec("iptables-legacy-save -t filter >/dev/null").ok()) {
    WARN("iptables-legacy does not work in a network namespace here; case skipped");
    return;
  }
  run_cases(c, [] { return cnf::any_policy{cnf::iptables_policy::dataplane({.backend = "legacy"})}; });
}

#ifdef CNF_TEST_HAVE_NFTABLES
TEST_CASE("truth table: the same on nftables", "[integration]") {
  cluster c;
  run_cases(c, [] { return cnf::any_policy{cnf::nftables_policy::dataplane()}; });
}
#endif
