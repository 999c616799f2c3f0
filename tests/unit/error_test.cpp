#include <cnf/error.hpp>

#include <catch2/catch.hpp>

TEST_CASE("result holds a value or an error", "[unit][error]") {
  cnf::result<int> ok = 42;
  REQUIRE(ok);
  CHECK(*ok == 42);
  cnf::result<int> bad = cnf::error(cnf::errc::conflict, "revision 7 is stale");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == cnf::errc::conflict);
  CHECK_THROWS_AS(bad.value(), cnf::error_exception);
  try {
    (void)bad.value();
  } catch (const cnf::error_exception& e) {
    CHECK(std::string(e.what()) == "revision 7 is stale");
    CHECK(e.get().code == cnf::errc::conflict);
  }
  cnf::result<void> v;
  CHECK(v);
  cnf::result<void> ve = cnf::error(cnf::errc::unavailable, "etcd down");
  CHECK_FALSE(ve);
  CHECK_THROWS_AS(ve.value(), cnf::error_exception);
  CHECK(cnf::to_string(cnf::errc::unavailable) == "unavailable");
}

TEST_CASE("guard turns exceptions into errors", "[unit][error]") {
  auto r = cnf::detail::guard<cnf::result<int>>([]() -> cnf::result<int> { throw std::runtime_error("x"); });
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cnf::errc::internal);
  auto e = cnf::detail::guard<cnf::result<int>>([]() -> cnf::result<int> { throw cnf::error_exception(cnf::errc::invalid, "bad"); });
  CHECK(e.error().code == cnf::errc::invalid);
}
