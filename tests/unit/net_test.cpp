#include <cnf/net.hpp>

#include <catch2/catch.hpp>

TEST_CASE("net.hpp is self-contained and parses addresses", "[unit][net]") {
  auto a = cnf::ip_address::parse("10.244.1.7");
  REQUIRE(a);
  CHECK(a->is_v4());
  CHECK(a->to_string() == "10.244.1.7");
  CHECK(a->offset(250).to_string() == "10.244.2.1");
  auto b = cnf::ip_address::parse("fd00::1");
  REQUIRE(b);
  CHECK(b->is_v6());
  CHECK(b->offset(0xffff).to_string() == "fd00::1:0");
  CHECK_FALSE(cnf::ip_address::parse("10.0.0.256"));
  CHECK_FALSE(cnf::ip_address::parse(""));
  CHECK(cnf::ip_address::parse("nonsense").error().message.find("nonsense") != std::string::npos);
}

TEST_CASE("prefixes", "[unit][net]") {
  auto p = cnf::ip_prefix::parse("10.244.1.0/26");
  REQUIRE(p);
  CHECK(p->size() == 64);
  CHECK(p->last().to_string() == "10.244.1.63");
  CHECK(p->contains(cnf::ip_address::parse("10.244.1.63").value()));
  CHECK_FALSE(p->contains(cnf::ip_address::parse("10.244.1.64").value()));
  CHECK_FALSE(p->contains(cnf::ip_address::parse("fd00::1").value()));
  auto bad = cnf::ip_prefix::parse("10.244.1.1/26");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("host bits") != std::string::npos);
  CHECK(cnf::ip_prefix::parse("10.244.1.1/26", true));
  CHECK_FALSE(cnf::ip_prefix::parse("10.0.0.0/33"));
  CHECK_FALSE(cnf::ip_prefix::parse("10.0.0.0"));
  CHECK_FALSE(cnf::ip_prefix::parse("10.0.0.0/x"));
  auto v6 = cnf::ip_prefix::parse("fd00:10::/122");
  REQUIRE(v6);
  CHECK(v6->size() == 64);
  CHECK(v6->overlaps(cnf::ip_prefix::parse("fd00:10::/64").value()));
  CHECK_FALSE(v6->overlaps(cnf::ip_prefix::parse("fd00:11::/64").value()));
}

TEST_CASE("mac addresses", "[unit][net]") {
  auto m = cnf::mac_address::parse("EE:ee:ee:ee:ee:01");
  REQUIRE(m);
  CHECK(m->to_string() == "ee:ee:ee:ee:ee:01");
  CHECK_FALSE(cnf::mac_address::parse("ee:ee:ee:ee:ee"));
  CHECK_FALSE(cnf::mac_address::parse("ee-ee-ee-ee-ee-ee"));
}
