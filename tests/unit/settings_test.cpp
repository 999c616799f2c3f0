#include <cnf/settings.hpp>

#include <catch2/catch.hpp>

TEST_CASE("settings read typed keys and report every problem with its position", "[unit][settings]") {
  auto s = cnf::settings::parse("[ipam]\nplugin='x'\nblock_size = 26\nstrict = true\nranges = ['a', 'b']\nname = 'n'\nblck_size = 1\n", "f.toml", "ipam");
  REQUIRE(s);
  CHECK(s->get<std::int64_t>("block_size", 0) == 26);
  CHECK(s->get<bool>("strict", false));
  CHECK(s->get<std::vector<std::string>>("ranges", {}) == std::vector<std::string>{"a", "b"});
  CHECK(s->get("name", "d") == "n");
  CHECK(s->get<std::uint8_t>("block_size", 0) == 26);
  CHECK(s->get("absent", "dflt") == "dflt");
  auto f = s->finish();
  REQUIRE_FALSE(f);
  CHECK(f.error().message == "f.toml:7:1: ipam.blck_size: unknown key; did you mean 'block_size'?");
}

TEST_CASE("settings type and range errors", "[unit][settings]") {
  auto s = cnf::settings::parse("[x]\nn = 300\nb = 'yes'\nl = [1]\n", "f.toml", "x");
  REQUIRE(s);
  CHECK_FALSE(s->get_optional<std::uint8_t>("n"));
  CHECK_FALSE(s->get_optional<bool>("b"));
  CHECK_FALSE(s->get_optional<std::vector<std::string>>("l"));
  (void)s->require<std::string>("needed");
  auto f = s->finish();
  REQUIRE_FALSE(f);
  CHECK_THAT(f.error().message, Catch::Contains("f.toml:2:5: x.n: value 300 is out of range"));
  CHECK_THAT(f.error().message, Catch::Contains("f.toml:3:5: x.b: expected true or false"));
  CHECK_THAT(f.error().message, Catch::Contains("x.l: expected an array of strings"));
  CHECK_THAT(f.error().message, Catch::Contains("x.needed: is required"));
}

TEST_CASE("a syntax error names file, line and column", "[unit][settings]") {
  auto s = cnf::settings::parse("[x]\nn = = 3\n", "bad.toml", "x");
  REQUIRE_FALSE(s);
  CHECK_THAT(s.error().message, Catch::StartsWith("bad.toml:2:"));
}

TEST_CASE("did_you_mean only suggests close words", "[unit][settings]") {
  CHECK(cnf::did_you_mean("endpionts", {"endpoints", "timeout_ms"}) == "endpoints");
  CHECK_FALSE(cnf::did_you_mean("zzzzzzzz", {"endpoints", "timeout_ms"}));
}
