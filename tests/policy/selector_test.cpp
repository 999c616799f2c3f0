#include <cnf/policy/selector.hpp>

#include <catch2/catch.hpp>

using cnf::netpol::parse_selector;

TEST_CASE("selectors evaluate as Calico's", "[unit]") {
  cnf::netpol::label_map web{{"app", "web"}, {"tier", "front"}};
  cnf::netpol::label_map db{{"app", "db"}};
  auto m = [](std::string_view s, const cnf::netpol::label_map& l) { return parse_selector(s).value().matches(l); };
  CHECK(m("all()", web));
  CHECK(m("app == 'web'", web));
  CHECK_FALSE(m("app == 'web'", db));
  CHECK(m("app != 'web'", db));
  CHECK(m("missing != 'x'", db));  // absent label: != is true
  CHECK(m("app in {'db', 'cache'}", db));
  CHECK_FALSE(m("app in {}", db));
  CHECK(m("app not in {'web'}", db));
  CHECK(m("missing not in {'web'}", db));
  CHECK(m("has(tier)", web));
  CHECK(m("!has(tier)", db));
  CHECK(m("app == \"web\" && tier == 'front'", web));
  CHECK_FALSE(m("app == 'web' && tier == 'back'", web));
  CHECK(m("app == 'db' || tier == 'front'", web));
  CHECK(m("!(app == 'db' || has(x))", web));
  CHECK(m("(app == 'db' || app == 'web') && !has(canary)", web));
  CHECK(m("projectcalico.org/namespace == 'ns1'", {{"projectcalico.org/namespace", "ns1"}}));
  CHECK(m("a-b_c.d/e == 'x'", {{"a-b_c.d/e", "x"}}));
}

TEST_CASE("the canonical text ignores spacing and quotes and reparses to the same selector", "[unit]") {
  auto a = parse_selector("  app=='web'&&has( tier )").value();
  auto b = parse_selector("app == \"web\" && has(tier)").value();
  CHECK(a == b);
  CHECK(a.to_string() == "app == \"web\" && has(tier)");
  for (auto t : {"all()", "a in {'y', 'x'}", "!(a == 'b') || c not in {'d'}", "((a == 'b'))", "!has(x) && (y == 'z' || w != 'v')"}) {
    auto s = parse_selector(t).value();
    auto again = parse_selector(s.to_string());
    REQUIRE(again);
    CHECK(again.value() == s);
  }
  CHECK(parse_selector("a in {'y', 'x'}").value().to_string() == "a in {\"x\", \"y\"}");
}

TEST_CASE("bad selectors name the position and the problem", "[unit]") {
  auto err = [](std::string_view s) {
    auto r = parse_selector(s);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == cnf::errc::invalid);
    return r.error().message;
  };
  CHECK(err("") == "selector \"\": at 1: the selector is empty (use all() to select everything)");
  CHECK(err("app ==") == "selector \"app ==\": at 7: expected a quoted string in '=='");
  CHECK(err("app = 'x'") == "selector \"app = 'x'\": at 5: expected an operator (==, !=, in, not in) after label 'app'");
  CHECK(err("app == 'x") == "selector \"app == 'x\": at 8: unterminated string");
  CHECK(err("has(app") == "selector \"has(app\": at 8: expected ')' after the label name in has()");
  CHECK(err("a == 'b' &&") == "selector \"a == 'b' &&\": at 12: expected a label expression, found the end");
  CHECK(err("(a == 'b'") == "selector \"(a == 'b'\": at 10: expected ')'");
  CHECK(err("a in {'x' 'y'}") == "selector \"a in {'x' 'y'}\": at 11: expected ',' or '}' in the set of values");
  CHECK(err("a not {'x'}") == "selector \"a not {'x'}\": at 7: expected 'in' after 'not'");
  CHECK(err("a == 'b' c") == "selector \"a == 'b' c\": at 10: unexpected 'c' (expected '&&', '||' or the end)");
  CHECK(err("== 'b'") == "selector \"== 'b'\": at 1: expected a label name, found '='");
}

TEST_CASE("prefixed and combined selectors", "[unit]") {
  auto s = parse_selector("team == 'a'").value();
  auto p = s.prefixed("pcns.", "projectcalico.org/namespace");
  CHECK(p.to_string() == "pcns.team == \"a\"");
  CHECK(parse_selector("all()").value().prefixed("pcns.", "projectcalico.org/namespace").to_string() == "has(projectcalico.org/namespace)");
  auto both = cnf::netpol::selector::both(s, cnf::netpol::selector::label_equals("x", "y"));
  CHECK(both.to_string() == "team == \"a\" && x == \"y\"");
  CHECK(cnf::netpol::selector::both(cnf::netpol::selector(), s) == s);
}
