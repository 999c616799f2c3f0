// ipam.hpp, routing.hpp, encap.hpp, policy.hpp, node.hpp each compile alone (see the
// per-header translation units below) and their wrappers forward every operation.
#include <cnf/encap.hpp>
#include <cnf/ipam.hpp>
#include <cnf/node.hpp>
#include <cnf/policy.hpp>
#include <cnf/routing.hpp>

#include <archetypes.hpp>
#include <catch2/catch.hpp>

TEST_CASE("ipam wrapper forwards", "[unit][ipam]") {
  struct counting : cnf_test::ipam_archetype {
    std::shared_ptr<int> n = std::make_shared<int>(0);
    cnf::gc_report gc(std::string_view prefix, const std::set<std::string>& valid) {
      ++*n;
      return {{std::string(prefix) + std::to_string(valid.size())}, 3};
    }
  };
  counting c;
  auto n = c.n;
  cnf::any_ipam ipam = c;
  auto r = ipam.gc("net.", {"a", "b"});
  REQUIRE(r);
  CHECK(r->released_handles == std::vector<std::string>{"net.2"});
  CHECK(r->released_addresses == 3);
  CHECK(*n == 1);
}

TEST_CASE("encap modes print as Calico names them", "[unit][encap]") {
  CHECK(cnf::to_string(cnf::encap_mode::cross_subnet) == "CrossSubnet");
  CHECK(cnf::to_string(cnf::encap_mode::always) == "Always");
  CHECK(cnf::to_string(cnf::encap_mode::never) == "Never");
}

TEST_CASE("routing and policy wrappers report errors from the part", "[unit][routing][policy]") {
  struct failing_routing : cnf_test::routing_archetype {
    cnf::result<void> advertise(const cnf::ip_prefix& p) { return cnf::error(cnf::errc::unavailable, "no session for " + p.to_string()); }
  };
  cnf::any_routing r = failing_routing{};
  auto a = r.advertise(cnf::ip_prefix::parse("10.0.0.0/26").value());
  REQUIRE_FALSE(a);
  CHECK(a.error().message == "no session for 10.0.0.0/26");
  struct failing_policy : cnf_test::policy_archetype {
    void apply() { throw cnf::error_exception(cnf::errc::io, "iptables-restore failed"); }
  };
  cnf::any_policy p = failing_policy{};
  CHECK(p.upsert_endpoint({}));
  auto s = p.apply();
  REQUIRE_FALSE(s);
  CHECK(s.error().code == cnf::errc::io);
}
