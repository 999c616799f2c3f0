// The Kubernetes network policy suite's model, on one node: namespaces x, y, z with pods a, b,
// c each, servers on TCP and UDP 80 and 81 in every pod; for each case (truth_table.hpp, every
// one of them, applied live one after the other) the full 9 x 9 matrix per port and protocol
// is probed (every connect or datagram at once, one timeout) and compared with the matrix the
// case expects, on every policy plugin, driven directly (no agent, no datastore).
// The pods are dual-stack (fd00:66::<n>/128 beside 10.66.0.<n>/32, default via fe80::1 on the
// host side): after the IPv4 pass, a few cases run again over IPv6 (default deny, allow from a
// namespace, an ipBlock with an except as IPv6 CIDRs), and while that ipBlock is live IPv4 is
// probed too (a rule with IPv6 nets only is not in the IPv4 chains: x/a takes no IPv4).
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../integration/netns_harness.hpp"
#include "../support/root_gate.hpp"
#include "support.hpp"
#include "truth_table.hpp"

#include <cnf/plugins/policy_iptables.hpp>
#ifdef CNF_TEST_HAVE_NFTABLES
#include <cnf/plugins/policy_nftables.hpp>
#endif

#include <memory>
#include <set>

CNF_TEST_ROOT_GATE("network namespaces and a firewall");

using namespace cnf::netpol;
using cnf_test::test_netns;

namespace {

struct cluster {
  test_netns node;
  std::vector<std::unique_ptr<test_netns>> nets;
  std::vector<truth_table::pod_ref> pods = truth_table::suite_pods();
  std::vector<truth_table::pod_ref> pods6;  // the same pods, by their IPv6 addresses
  std::unique_ptr<truth_table::prober> probe, probe6;
  static std::string iface(const truth_table::pod_ref& p) { return "cali" + p.ns + p.name + "00000000"; }
  cluster() {
    cnf_test::set_ip_forward(node);
    node.exec_or_throw("ip link add up0 type veth peer name up1 && ip link set up1 up && ip link set up0 up && ip route add default dev up0");
    int n = 0;
    for (auto& p : pods) {
      p.ip = "10.66.0." + std::to_string(++n);
      nets.push_back(std::make_unique<test_netns>());
      p.netns_path = nets.back()->path();
      cnf_test::veth_between(node, iface(p), *nets.back(), "eth0");
      auto p6 = p;
      p6.ip = "fd00:66::" + std::to_string(n);
      node.exec_or_throw("sysctl -q -w net.ipv4.conf." + iface(p) + ".proxy_arp=1 net.ipv4.neigh." + iface(p) + ".proxy_delay=0 && ip route add " + p.ip +
                         "/32 dev " + iface(p) + " && ip -6 addr add fe80::1/64 dev " + iface(p) + " nodad && ip -6 route add " + p6.ip + "/128 dev " +
                         iface(p));
      nets.back()->exec_or_throw("ip addr add " + p.ip + "/32 dev eth0 && ip route add 169.254.1.1 dev eth0 scope link && ip route add default via 169.254.1.1" +
                                 " && ip -6 addr add " + p6.ip + "/128 dev eth0 nodad && ip -6 route add default via fe80::1 dev eth0");
      pods6.push_back(p6);
    }
    probe = std::make_unique<truth_table::prober>(pods);
    probe6 = std::make_unique<truth_table::prober>(pods6);
  }
};

policy_def parse(const truth_table::policy_doc& d) {
  if (d.kind == truth_table::api::k8s) return policy_test::k8s(d.ns, d.name, d.spec);
  cnf::resource r;
  r.kind = d.kind == truth_table::api::calico ? "NetworkPolicy" : "GlobalNetworkPolicy";
  r.ns = d.ns;
  r.name = d.name;
  r.spec = d.spec;
  auto p = parse_calico_policy(r);
  if (!p) throw std::runtime_error(p.error().message);
  return *p;
}

void run_cases(cluster& c, const std::function<cnf::any_policy()>& make) {
  cnf_test::enter_netns in(c.node);
  cnf::any_policy plugin = make();
  calculator calc("node1");
  for (std::size_t i = 0; i < c.pods.size(); ++i) {
    auto& p = c.pods[i];
    std::vector<named_port> ports;
    for (auto& n : truth_table::pod_ports(p.name)) ports.push_back({n.name, static_cast<std::uint8_t>(n.protocol == "TCP" ? 6 : 17), static_cast<std::uint16_t>(n.port)});
    auto w = policy_test::pod(p.ns, p.ns + p.name, cluster::iface(p), p.ip, {{"pod", p.name}});
    w.ip_networks.push_back(cnf::ip_prefix::parse(c.pods6[i].ip + "/128").value());
    calc.upsert_endpoint(w, std::move(ports));
  }
  std::map<std::string, std::string> live;  // policy_doc key -> policy_def key
  auto v4 = truth_table::cases(c.pods, "10.66.0.0/24");
  auto v6 = truth_table::cases(c.pods6, "fd00:66::/64");
  const std::set<std::string> v6_cases{"no policies: everything reaches everything", "default deny ingress in x", "x/a: allow from namespace y only",
                                       "x/a: allow from an ipBlock with an except (y/b's address)"};
  std::vector<std::pair<truth_table::test_case, bool>> all;  // case, over IPv6
  for (auto& tc : v4) all.emplace_back(tc, false);
  for (auto& tc : v6)
    if (v6_cases.count(tc.name)) all.emplace_back(tc, true);
  REQUIRE(all.size() == v4.size() + v6_cases.size());
  for (auto& [tc, over6] : all) {
    // Policies updated live: the previous case's go unless this case has them (then they
    // are updated in place), this case's come, all in one flush.
    for (std::string ns : {"x", "y", "z"}) {
      label_map l{{"ns", ns}};
      if (auto it = tc.ns_labels.find(ns); it != tc.ns_labels.end()) l.insert(it->second.begin(), it->second.end());
      calc.upsert_namespace(ns, l);
    }
    std::map<std::string, std::string> next;
    for (auto& d : tc.policies) {
      auto p = parse(d);
      next[d.key()] = p.key();
      calc.upsert_policy(p);
    }
    for (auto& [doc, key] : live)
      if (!next.count(doc)) calc.remove_policy(key);
    live = std::move(next);
    REQUIRE(calc.flush(plugin));
    const auto& pods = over6 ? c.pods6 : c.pods;
    auto want = truth_table::expected(pods, tc);
    auto got = (over6 ? c.probe6 : c.probe)->probe();
    INFO((over6 ? "IPv6: " : "") << tc.name << "\n" << truth_table::diff(pods, want, got));
    const bool same = got == want;
    CHECK(same);
    if (over6 && tc.name.find("ipBlock") != std::string::npos) {
      // The ipBlock's nets are IPv6 only: its rule is not in the IPv4 chains, so the policy
      // selecting x/a lets no IPv4 in.
      truth_table::test_case split = tc;
      split.allowed = [](auto&, auto& to, auto&, int) { return !(to.ns == "x" && to.name == "a"); };
      auto want4 = truth_table::expected(c.pods, split);
      auto got4 = c.probe->probe();
      INFO("IPv4 while an IPv6-only ipBlock is live\n" << truth_table::diff(c.pods, want4, got4));
      const bool same4 = got4 == want4;
      CHECK(same4);
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
