// What the iptables part would program, without a kernel: names, rules, the dispatch tree.
#include <cnf/plugins/policy_iptables.hpp>

#include <catch2/catch.hpp>

using namespace cnf::iptables_policy;

namespace {
cnf::workload_endpoint ep(int i) {
  cnf::workload_endpoint w;
  w.ns = "default";
  w.name = "n-k8s-p" + std::to_string(i) + "-eth0";
  w.interface_name = "cali" + std::string(1, "0123456789abcdef"[i % 16]) + std::to_string(1000000 + i);
  w.profiles = {"kns.default"};
  return w;
}
std::vector<std::string> bodies(const chain& c) {
  std::vector<std::string> out;
  for (auto& r : c.rules) out.push_back(r.substr(r.find("\" ") + 2));
  return out;
}
}  // namespace

TEST_CASE("chain and set names follow Felix's", "[unit]") {
  CHECK(chain_name("cali-pi-", "default.allow") == "cali-pi-default.allow");
  CHECK(chain_name("cali-pri-", "ksa.default.default") == "cali-pri-ksa.default.default");  // 28: fits
  auto long_name = chain_name("cali-pi-", "a-namespace.a-policy-with-a-long-name");
  CHECK(long_name.size() == 28);
  CHECK(long_name.starts_with("cali-pi-_"));
  CHECK(chain_name("cali-pi-", "a-namespace.a-policy-with-a-long-name") == long_name);  // stable
  CHECK(ipset_name("s:abcdefghijklmnopqrstuv") == "cali40s:abcdefghijklmnopqrstuv");
  auto c = render_chain("cali-x", {"-j ACCEPT", "-j DROP"});
  REQUIRE(c.rules.size() == 2);
  CHECK(c.rules[0] == "-m comment --comment \"cali:" + c.hashes[0] + "\" -j ACCEPT");
  CHECK(c.hashes[0].size() == 16);
  // The hash chains: the same rule after a different predecessor hashes differently.
  CHECK(render_chain("cali-x", {"-j DROP"}).hashes[0] != c.hashes[1]);
}

TEST_CASE("a policy's rules render as Felix's", "[unit]") {
  dataplane dp;
  cnf::network_policy p;
  p.ns = "default";
  p.name = "web";
  p.endpoints = {"default/n-k8s-p1-eth0"};
  cnf::policy_rule allow;
  allow.protocol = 6;
  allow.source_ip_sets = {"s:abcdefghijklmnopqrstuv"};
  allow.not_source_nets = {cnf::ip_prefix::parse("10.1.0.0/16").value()};
  for (std::uint16_t port = 1; port <= 16; ++port) allow.destination_ports.push_back({port, port});
  cnf::policy_rule deny;
  deny.action = cnf::policy_rule::action_type::deny;
  deny.protocol = 1;
  deny.icmp_type = 8;
  deny.source_nets = {cnf::ip_prefix::parse("192.168.0.0/24").value(), cnf::ip_prefix::parse("192.168.1.0/24").value()};
  cnf::policy_rule v6only;
  v6only.destination_nets = {cnf::ip_prefix::parse("fd00::/64").value()};
  p.ingress = {allow, deny, v6only};
  REQUIRE(dp.upsert_policy(p));
  REQUIRE(dp.upsert_endpoint(ep(1)));
  auto want = dp.desired();
  REQUIRE(want.contains("cali-pi-default.web"));
  auto b = bodies(want.at("cali-pi-default.web"));
  REQUIRE(b.size() == 5);
  CHECK(b[0].starts_with("-p tcp -m set --match-set cali40s:abcdefghijklmnopqrstuv src -m set ! --match-set cali40n:"));
  CHECK(b[0].ends_with(" src -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 -j MARK --set-xmark 0x10000/0x10000"));
  CHECK(b[1].ends_with(" src -m multiport --dports 16 -j MARK --set-xmark 0x10000/0x10000"));  // multiport holds 15
  CHECK(b[2] == "-m mark --mark 0x10000/0x10000 -j RETURN");
  CHECK(b[3] == "-p icmp -m icmp --icmp-type 8 -s 192.168.0.0/24 -j DROP");
  CHECK(b[4] == "-p icmp -m icmp --icmp-type 8 -s 192.168.1.0/24 -j DROP");
  // The endpoint's chain runs the policy before its profiles.
  auto tw = bodies(want.at("cali-tw-" + ep(1).interface_name));
  CHECK(std::find(tw.begin(), tw.end(), "-m mark --mark 0x0/0x20000 -j cali-pi-default.web") != tw.end());
  CHECK(tw.back() == "-m comment --comment \"Drop if no profiles matched\" -j DROP");
  auto st = dp.status().value();
  CHECK(st.policies == 1);
  CHECK(st.ip_sets == 2);  // the selector's set and the not-nets set
  CHECK(st.pending > 0);
}

TEST_CASE("the dispatch chains split into a tree past 100 endpoints", "[unit]") {
  dataplane dp;
  for (int i = 0; i < 100; ++i) REQUIRE(dp.upsert_endpoint(ep(i)));
  auto flat = dp.desired();
  CHECK(flat.at("cali-from-wl-dispatch").rules.size() == 101);
  CHECK_FALSE(flat.contains("cali-from-wl-dispatch-0"));
  for (int i = 100; i < 160; ++i) REQUIRE(dp.upsert_endpoint(ep(i)));
  auto tree = dp.desired();
  auto top = bodies(tree.at("cali-from-wl-dispatch"));
  REQUIRE(top.size() == 17);  // 16 first characters + unknown interface
  CHECK(top[0] == "-i cali0+ -g cali-from-wl-dispatch-0");
  CHECK(top[16] == "-m comment --comment \"Unknown interface\" -j DROP");
  auto leaf = bodies(tree.at("cali-to-wl-dispatch-a"));
  CHECK(leaf.size() == 11);  // 10 endpoints whose interface starts cali a, and the drop
  CHECK(leaf[0] == "-o " + ep(10).interface_name + " -g cali-tw-" + ep(10).interface_name);
}

TEST_CASE("IPv6: each rule only in the family of its nets, ICMPv6 in ip6tables, cali60 sets", "[unit]") {
  dataplane dp;
  cnf::network_policy p;
  p.ns = "default";
  p.name = "mixed";
  p.endpoints = {"default/n-k8s-p1-eth0"};
  auto rule = [](std::vector<std::string> src, cnf::policy_rule::action_type a = cnf::policy_rule::action_type::allow) {
    cnf::policy_rule r;
    r.action = a;
    for (auto& s : src) r.source_nets.push_back(cnf::ip_prefix::parse(s).value());
    return r;
  };
  auto v4only = rule({"10.1.0.0/16"});
  auto v6only = rule({"fd00:1::/64"}, cnf::policy_rule::action_type::deny);
  auto both = rule({"10.2.0.0/16", "fd00:2::/64"}, cnf::policy_rule::action_type::deny);
  cnf::policy_rule sel;  // a selector's set: in both families, under each family's name
  sel.source_ip_sets = {"s:abcdefghijklmnopqrstuv"};
  sel.not_source_nets = {cnf::ip_prefix::parse("10.1.2.0/24").value(), cnf::ip_prefix::parse("fd00:1:2::/48").value()};
  sel.action = cnf::policy_rule::action_type::deny;
  cnf::policy_rule icmp4, icmp6, only6;
  icmp4.protocol = 1, icmp4.icmp_type = 8, icmp4.action = cnf::policy_rule::action_type::deny;
  icmp6.protocol = 58, icmp6.icmp_type = 128, icmp6.action = cnf::policy_rule::action_type::deny;
  only6.family = cnf::ip_family::v6, only6.action = cnf::policy_rule::action_type::log;
  p.ingress = {v4only, v6only, both, sel, icmp4, icmp6, only6};
  REQUIRE(dp.upsert_policy(p));
  REQUIRE(dp.upsert_endpoint(ep(1)));
  auto b4 = bodies(dp.desired(cnf::ip_family::v4).at("cali-pi-default.mixed"));
  auto b6 = bodies(dp.desired(cnf::ip_family::v6).at("cali-pi-default.mixed"));
  REQUIRE(b4.size() == 5);
  CHECK(b4[0] == "-s 10.1.0.0/16 -j MARK --set-xmark 0x10000/0x10000");
  CHECK(b4[1] == "-m mark --mark 0x10000/0x10000 -j RETURN");
  CHECK(b4[2] == "-s 10.2.0.0/16 -j DROP");
  CHECK(b4[3].starts_with("-m set --match-set cali40s:abcdefghijklmnopqrstuv src -m set ! --match-set cali40n:"));
  CHECK(b4[4] == "-p icmp -m icmp --icmp-type 8 -j DROP");
  REQUIRE(b6.size() == 5);
  CHECK(b6[0] == "-s fd00:1::/64 -j DROP");
  CHECK(b6[1] == "-s fd00:2::/64 -j DROP");
  CHECK(b6[2].starts_with("-m set --match-set cali60s:abcdefghijklmnopqrstuv src -m set ! --match-set cali60n:"));
  CHECK(b6[3] == "-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j DROP");
  CHECK(b6[4].starts_with("-j LOG"));
  // The not-nets sets differ per family (each holds its family's nets).
  CHECK(b4[3].substr(b4[3].find("cali40n:") + 6, 24) != b6[2].substr(b6[2].find("cali60n:") + 6, 24));
  // Workloads' router and neighbour discovery reach the host ahead of their egress policy.
  auto to_host = bodies(dp.desired(cnf::ip_family::v6).at("cali-wl-to-host"));
  REQUIRE(to_host.size() == 8);
  CHECK(to_host[4] == "-p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT");
  CHECK(to_host[6] == "-j cali-from-wl-dispatch");
  CHECK(bodies(dp.desired(cnf::ip_family::v4).at("cali-wl-to-host")).size() == 2);
  CHECK(ipset_name("s:x", cnf::ip_family::v6) == "cali60s:x");
}
