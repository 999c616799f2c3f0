// cnf/policy/dataplane.hpp: what the kernel-facing policy parts share.
#include <cnf/policy/dataplane.hpp>

#include <catch2/catch.hpp>

using namespace cnf::netpol;

namespace {
cnf::ip_prefix pfx(std::string s) { return cnf::ip_prefix::parse(s).value(); }
}  // namespace

TEST_CASE("chain names fit 28 characters; hashes are stable and of the asked length", "[unit]") {
  CHECK(short_hash("x", 16).size() == 16);
  CHECK(short_hash("x", 16) == short_hash("x", 16));
  CHECK(short_hash("x", 16) != short_hash("y", 16));
  CHECK(chain_name("cali-pi-", "default.web") == "cali-pi-default.web");
  const auto long_name = chain_name("cali-pi-", "a-namespace.a-policy-with-a-long-name");
  CHECK(long_name.size() == 28);
  CHECK(long_name.starts_with("cali-pi-_"));
  CHECK(chain_name("cali-pi-", "has space").starts_with("cali-pi-_"));
  cnf::network_policy p;
  p.name = "gnp";
  CHECK(policy_display_name(p) == "gnp");
  p.ns = "x";
  CHECK(policy_display_name(p) == "x.gnp");
  CHECK(protocol_name(58) == "ipv6-icmp");
  CHECK(protocol_name(47) == "47");
}

TEST_CASE("rules belong to the families their nets and protocol allow", "[unit]") {
  cnf::policy_rule r;
  CHECK(rule_in_family(r, cnf::ip_family::v4));
  CHECK(rule_in_family(r, cnf::ip_family::v6));
  r.protocol = 58;
  CHECK_FALSE(rule_in_family(r, cnf::ip_family::v4));
  r.protocol.reset();
  r.source_nets = {pfx("10.0.0.0/8")};
  CHECK(rule_in_family(r, cnf::ip_family::v4));
  CHECK_FALSE(rule_in_family(r, cnf::ip_family::v6));
}

TEST_CASE("a tracked set keeps members and the difference since the last apply", "[unit]") {
  tracked_set s;
  const std::vector<cnf::ip_prefix> ab{pfx("10.0.0.1/32"), pfx("fd00::1/128")};
  s.add(ab, false);  // IPv6 off: the v6 member is skipped
  CHECK(s.members == std::set{pfx("10.0.0.1/32")});
  s.applied();
  CHECK_FALSE(s.fresh[0]);
  const std::vector<cnf::ip_prefix> b{pfx("10.0.0.2/32")}, a{pfx("10.0.0.1/32")};
  s.add(b, true);
  s.remove(a);
  CHECK(s.added == std::set{pfx("10.0.0.2/32")});
  CHECK(s.removed == std::set{pfx("10.0.0.1/32")});
  s.add(a, true);  // back before the apply: no change for the kernel
  CHECK(s.removed.empty());
  CHECK(s.added == std::set{pfx("10.0.0.2/32")});
  CHECK(set_difference(s.members, cnf::ip_family::v4, {"10.0.0.1/32", "10.0.0.2/32"}).empty());
  CHECK(set_difference(s.members, cnf::ip_family::v4, {"10.0.0.1/32", "10.9.9.9/32"}) == "1 member missing, 1 not cnf's");
  CHECK(chain_difference({"a", "b"}, {"a", "b", "c"}) == "holds 2 of its 3 rules");
  CHECK(chain_difference({"b", "a"}, {"a", "b"}) == "holds 2 of its 2 rules out of order");
  CHECK(chain_difference({"a", "x"}, {"a"}) == "holds 1 of its 1 rules, and 1 rule cnf did not write");
}
