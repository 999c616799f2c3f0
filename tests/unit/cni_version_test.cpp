// Tests for cnf/cni/version.hpp and cnf/cni/command.hpp.
#include <cnf/cni/command.hpp>
#include <cnf/cni/version.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace cnf::cni;

TEST_CASE("supported versions parse exactly and print back", "[cni][version]") {
  REQUIRE(supported_versions.size() == supported_version_strings.size());
  for (std::size_t i = 0; i < supported_versions.size(); ++i) {
    auto v = parse_version(supported_version_strings[i]);
    REQUIRE(v.has_value());
    CHECK(*v == supported_versions[i]);
    CHECK(to_string(*v) == supported_version_strings[i]);
  }
  CHECK(to_string(latest_version) == "1.1.0");
  CHECK(spec_version == "1.1.0");
  // Only exact spellings: libcni compares strings, and so do we.
  CHECK_FALSE(parse_version("1.0").has_value());
  CHECK_FALSE(parse_version("0.2.0").has_value());
  CHECK_FALSE(parse_version("0.1.0").has_value());
  CHECK_FALSE(parse_version("1.2.0").has_value());
  CHECK_FALSE(parse_version("").has_value());
  CHECK_FALSE(parse_version(" 1.0.0").has_value());
  CHECK(is_supported("0.3.1"));
  CHECK_FALSE(is_supported("0.2.0"));
  CHECK(supported_versions_list() == "0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0");
}

TEST_CASE("version enum is ordered like the spec versions", "[cni][version]") {
  CHECK(version::v0_3_0 < version::v0_3_1);
  CHECK(version::v0_3_1 < version::v0_4_0);
  CHECK(version::v0_4_0 < version::v1_0_0);
  CHECK(version::v1_0_0 < version::v1_1_0);
  for (std::size_t i = 1; i < supported_versions.size(); ++i)
    CHECK(to_semver(supported_versions[i - 1]) < to_semver(supported_versions[i]));
}

TEST_CASE("per-version result format facts", "[cni][version]") {
  CHECK(has_ip_version_field(version::v0_3_0));
  CHECK(has_ip_version_field(version::v0_3_1));
  CHECK(has_ip_version_field(version::v0_4_0));
  CHECK_FALSE(has_ip_version_field(version::v1_0_0));
  CHECK_FALSE(has_ip_version_field(version::v1_1_0));
  CHECK_FALSE(has_1_1_fields(version::v1_0_0));
  CHECK_FALSE(has_1_1_fields(version::v0_4_0));
  CHECK(has_1_1_fields(version::v1_1_0));
}

TEST_CASE("semver parses dotted numeric versions", "[cni][version]") {
  auto a = semver::parse("1.1.0");
  REQUIRE(a);
  CHECK(a->major == 1);
  CHECK(a->minor == 1);
  CHECK(a->patch == 0);
  auto b = semver::parse("1");
  REQUIRE(b);
  CHECK(*b == semver{1, 0, 0});
  auto c = semver::parse("0.4");
  REQUIRE(c);
  CHECK(*c == semver{0, 4, 0});
  CHECK(semver::parse("10.20.30")->to_string() == "10.20.30");
  for (const char* bad : {"", ".", "1.", ".1", "1..0", "a.b.c", "1.2.3.4", "-1.0.0", "1.0.0-rc1", "v1.0.0",
                          "1.0.x", "99999999999.0.0", " 1.0.0"})
    CHECK_FALSE(semver::parse(bad).has_value());
}

TEST_CASE("compare_versions orders numerically, not lexically", "[cni][version]") {
  CHECK(compare_versions("0.4.0", "1.0.0") == std::strong_ordering::less);
  CHECK(compare_versions("1.1.0", "1.0.0") == std::strong_ordering::greater);
  CHECK(compare_versions("1.0.0", "1.0.0") == std::strong_ordering::equal);
  CHECK(compare_versions("1.0", "1.0.0") == std::strong_ordering::equal);
  CHECK(compare_versions("0.10.0", "0.9.0") == std::strong_ordering::greater);
  CHECK(compare_versions("2.0.0", "1.99.99") == std::strong_ordering::greater);
  CHECK_FALSE(compare_versions("abc", "1.0.0").has_value());
  CHECK_FALSE(compare_versions("1.0.0", "").has_value());
}

TEST_CASE("negotiate picks the highest supported of cniVersion and cniVersions", "[cni][version]") {
  CHECK(negotiate("1.0.0") == version::v1_0_0);
  CHECK(negotiate("0.3.1", {}) == version::v0_3_1);
  CHECK(negotiate("1.0.0", {"0.4.0", "1.1.0"}) == version::v1_1_0);
  CHECK(negotiate("1.1.0", {"0.3.1", "0.4.0"}) == version::v1_1_0);
  // unsupported entries (too old, too new, garbage) are skipped
  CHECK(negotiate("", {"0.2.0", "0.4.0", "2.0.0", "x"}) == version::v0_4_0);
  CHECK(negotiate("9.9.9", {"1.0.0"}) == version::v1_0_0);
  CHECK_FALSE(negotiate("0.2.0", {"0.1.0", "2.0.0"}).has_value());
  CHECK_FALSE(negotiate("").has_value());
  std::vector<std::string> list{"0.3.0", "1.0.0"};
  CHECK(negotiate("0.3.1", list) == version::v1_0_0);
}

TEST_CASE("commands parse exactly and know their minimum version", "[cni][command]") {
  for (auto c : {command::add, command::del, command::check, command::status, command::gc, command::version}) {
    auto p = parse_command(to_string(c));
    REQUIRE(p.has_value());
    CHECK(*p == c);
  }
  CHECK(to_string(command::del) == "DEL");
  CHECK_FALSE(parse_command("add").has_value());
  CHECK_FALSE(parse_command("DELETE").has_value());
  CHECK_FALSE(parse_command("").has_value());
  CHECK(min_version(command::add) == version::v0_3_0);
  CHECK(min_version(command::del) == version::v0_3_0);
  CHECK(min_version(command::check) == version::v0_4_0);
  CHECK(min_version(command::status) == version::v1_1_0);
  CHECK(min_version(command::gc) == version::v1_1_0);
  CHECK(is_attachment_command(command::check));
  CHECK_FALSE(is_attachment_command(command::gc));
  CHECK_FALSE(is_attachment_command(command::status));
}
