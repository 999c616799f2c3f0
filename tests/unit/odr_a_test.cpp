// ODR: the umbrella header (and the host headers) in two translation units of one
// program; odr_b.cpp is the second unit. Linking proves no non-inline definitions.
#include <cnf/cnf.hpp>
#include <cnf/loader.hpp>
#include <cnf/profile.hpp>

#include <catch2/catch.hpp>

std::string odr_b_describe();

TEST_CASE("umbrella header in two translation units", "[unit][odr]") {
  CHECK(odr_b_describe() == std::string(cnf::to_string(cnf::part::ipam)) + "/" + CNF_BUILD_TAG);
  CHECK(&cnf::default_logger() != nullptr);
}
