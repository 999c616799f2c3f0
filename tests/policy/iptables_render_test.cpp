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
