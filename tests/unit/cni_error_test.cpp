// Tests for cnf/cni/error.hpp: codes, the error object's JSON, cnf::errc mapping,
// cni::result<T>.
#include <cnf/cni/error.hpp>
#include <cnf/cni/result.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <string>

using namespace cnf::cni;
using Catch::Matchers::Contains;

TEST_CASE("error codes have the spec's values", "[cni][error]") {
  CHECK(to_uint(error_code::incompatible_version) == 1);
  CHECK(to_uint(error_code::unsupported_field) == 2);
  CHECK(to_uint(error_code::unknown_container) == 3);
  CHECK(to_uint(error_code::invalid_environment) == 4);
  CHECK(to_uint(error_code::io_failure) == 5);
  CHECK(to_uint(error_code::decoding_failure) == 6);
  CHECK(to_uint(error_code::invalid_config) == 7);
  CHECK(to_uint(error_code::try_again_later) == 11);
  CHECK(to_uint(error_code::plugin_not_available) == 50);
  CHECK(to_uint(error_code::limited_connectivity) == 51);
  CHECK(to_uint(error_code::ipam_exhausted) == 100);
  CHECK(to_uint(error_code::datastore_error) == 101);
  CHECK(to_uint(error_code::dataplane_failure) == 102);
  CHECK(to_uint(error_code::interface_exists) == 103);
  CHECK_FALSE(is_plugin_specific(error_code::limited_connectivity));
  CHECK(is_plugin_specific(error_code::ipam_exhausted));
  CHECK(description(error_code::invalid_config) == "Invalid network config");
  CHECK(description(static_cast<error_code>(4242)).empty());
}

TEST_CASE("error JSON has exactly the spec's four keys", "[cni][error]") {
  error e{error_code::invalid_config, "Invalid Configuration", "Network 192.168.0.0/31 too small to allocate from."};
  CHECK(e.to_json() ==
        R"({"cniVersion":"1.1.0","code":7,"msg":"Invalid Configuration","details":"Network 192.168.0.0/31 too small to allocate from."})");
  CHECK(e.to_json("0.4.0") ==
        R"({"cniVersion":"0.4.0","code":7,"msg":"Invalid Configuration","details":"Network 192.168.0.0/31 too small to allocate from."})");
  // details present even when empty: runtimes always find the same shape
  error e2{error_code::try_again_later, "datastore unreachable", {}};
  CHECK(e2.to_json("1.0.0") == R"({"cniVersion":"1.0.0","code":11,"msg":"datastore unreachable","details":""})");
  // escaping keeps the output valid JSON whatever the message holds
  error e3{error_code::internal, "bad \"name\"\n\tx\\y\x01", "caf\xc3\xa9"};
  std::string j = e3.to_json();
  CHECK(j == "{\"cniVersion\":\"1.1.0\",\"code\":999,\"msg\":\"bad \\\"name\\\"\\n\\tx\\\\y\\u0001\",\"details\":\"caf\xc3\xa9\"}");
  auto v = boost::json::parse(j);
  CHECK(v.at("msg").as_string() == "bad \"name\"\n\tx\\y\x01");
  CHECK(v.at("code").to_number<int>() == 999);
  CHECK(e3.to_string() == std::string("bad \"name\"\n\tx\\y\x01") + "; caf\xc3\xa9");
  CHECK(e2.to_string() == "datastore unreachable");
}

TEST_CASE("cnf::errc maps to CNI codes", "[cni][error]") {
  CHECK(to_cni_code(cnf::errc::unavailable) == error_code::try_again_later);
  CHECK(to_cni_code(cnf::errc::conflict) == error_code::try_again_later);
  CHECK(to_cni_code(cnf::errc::invalid) == error_code::invalid_config);
  CHECK(to_cni_code(cnf::errc::not_found) == error_code::invalid_config);
  CHECK(to_cni_code(cnf::errc::exhausted) == error_code::ipam_exhausted);
  CHECK(to_cni_code(cnf::errc::already_exists) == error_code::interface_exists);
  CHECK(to_cni_code(cnf::errc::unsupported) == error_code::unsupported_field);
  CHECK(to_cni_code(cnf::errc::io) == error_code::io_failure);
  CHECK(to_cni_code(cnf::errc::internal) == error_code::internal);
  CHECK(to_cni_code(cnf::errc::ok) == error_code::internal);
  auto e = from_cnf(cnf::error(cnf::errc::exhausted, "pool 10.244.0.0/16 has no free block"));
  CHECK(e.code == error_code::ipam_exhausted);
  CHECK(e.msg == "pool 10.244.0.0/16 has no free block");
  CHECK(e.to_json() == R"({"cniVersion":"1.1.0","code":100,"msg":"pool 10.244.0.0/16 has no free block","details":""})");
}

namespace {
cnf::result<int> cnf_fails() { return cnf::error(cnf::errc::unavailable, "etcd timed out"); }
result<int> propagate() {
  auto r = cnf_fails();
  if (!r) return r.error();  // cnf::error converts, keeping the meaning
  return *r;
}
result<void> void_fails() { return make_error(error_code::io_failure, "stdin closed"); }
}  // namespace

TEST_CASE("cni::result carries values and CNI errors", "[cni][error]") {
  result<int> ok = 5;
  REQUIRE(ok);
  CHECK(*ok == 5);
  auto r = propagate();
  REQUIRE_FALSE(r);
  CHECK(r.error().code == error_code::try_again_later);
  CHECK(r.error().msg == "etcd timed out");
  try {
    (void)r.value();
    FAIL("value() of an error must throw");
  } catch (const error_exception& ex) {
    CHECK(ex.get().code == error_code::try_again_later);
    CHECK(std::string(ex.what()) == "etcd timed out");
  }
  auto v = void_fails();
  REQUIRE_FALSE(v);
  CHECK(v.error().code == error_code::io_failure);
  CHECK_THROWS_AS(v.value(), error_exception);
  result<void> fine;
  CHECK(fine);
  result<std::string> s = std::string("x");
  CHECK(*s == "x");
  result<std::string> se = make_error(error_code::decoding_failure, "y");
  CHECK_FALSE(se);
}

TEST_CASE("a delegated plugin's error output is read back", "[cni][error]") {
  auto e = parse_error_output(R"({"cniVersion":"1.0.0","code":7,"msg":"no ranges","details":"ipam.ranges is empty"})");
  CHECK(e.code == error_code::invalid_config);
  CHECK(e.msg == "no ranges");
  CHECK(e.details == "ipam.ranges is empty");
  auto e2 = parse_error_output(R"({"code":142,"msg":"custom"})");
  CHECK(to_uint(e2.code) == 142);
  CHECK(e2.details.empty());
  // round trip through our own printer
  error mine{error_code::ipam_exhausted, "full", "pool a"};
  CHECK(parse_error_output(mine.to_json()) == mine);
  // not an error object: keep the text, code internal
  auto e3 = parse_error_output("panic: runtime error\n");
  CHECK(e3.code == error_code::internal);
  CHECK(e3.details == "panic: runtime error");
  CHECK(parse_error_output(R"({"code":-1})").code == error_code::internal);
  CHECK(parse_error_output(R"({"code":"7"})").code == error_code::internal);
  CHECK(parse_error_output("").code == error_code::internal);
}
