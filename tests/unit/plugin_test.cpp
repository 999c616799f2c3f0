// plugin.hpp alone: parts, the descriptor layout contract, and the thunks without a loader.
#include <cnf/plugin.hpp>

#include <archetypes.hpp>
#include <catch2/catch.hpp>

#include <cstddef>

namespace {
struct cfg_t { std::int64_t n = 0; };
cfg_t configure(cnf::settings& s) { return {s.get<std::int64_t>("n", 1)}; }
cnf::result<cnf_test::routing_archetype> create(const cnf::plugin_context& ctx, cfg_t c) {
  if (c.n < 0) return cnf::error(cnf::errc::invalid, "negative n on " + ctx.node_name);
  return cnf_test::routing_archetype{};
}
}  // namespace

static_assert(offsetof(cnf::plugin_descriptor, magic) == 0 && offsetof(cnf::plugin_descriptor, abi_version) == 4,
              "magic and ABI number must stay first in every ABI");

TEST_CASE("parts have names", "[unit][plugin]") {
  cnf::part p{};
  REQUIRE(cnf::parse_part("encapsulation", p));
  CHECK(p == cnf::part::encapsulation);
  CHECK_FALSE(cnf::parse_part("router", p));
}

TEST_CASE("factory thunk: configure, finish, create", "[unit][plugin]") {
  cnf::plugin_context ctx;
  ctx.node_name = "n1";
  cnf::factory_output out;
  std::string text = "[routing]\nplugin='x'\nn = -1\n";
  cnf::detail::factory_thunk<cnf::part::routing, configure, create>(ctx, {text, "p.toml", "routing"}, out);
  CHECK_FALSE(out.ok);
  CHECK(out.err.message == "negative n on n1");

  cnf::factory_output good;
  std::string ok_text = "[routing]\nplugin='x'\nn = 2\n";
  cnf::detail::factory_thunk<cnf::part::routing, configure, create>(ctx, {ok_text, "p.toml", "routing"}, good);
  REQUIRE(good.ok);
  cnf::any_routing r(std::static_pointer_cast<cnf::detail::routing_iface>(good.object));
  CHECK(r.status());

  cnf::factory_output v;
  std::string typo = "[routing]\nplugin='x'\nm = 2\n";
  cnf::detail::validate_thunk<configure>({typo, "p.toml", "routing"}, v);
  CHECK_FALSE(v.ok);
  CHECK(v.err.message == "p.toml:3:1: routing.m: unknown key; did you mean 'n'?");
}
