#include <cnf/cnf.hpp>
#include <cnf/loader.hpp>
#include <cnf/profile.hpp>

std::string odr_b_describe() {
  (void)cnf::parse_profile("", "x.toml");
  return std::string(cnf::to_string(cnf::part::ipam)) + "/" + CNF_BUILD_TAG;
}
