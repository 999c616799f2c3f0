// Tests for cnf/cni/env.hpp: CNI_* variables per command, validation, CNI_ARGS.
#include <cnf/cni/env.hpp>

#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <string_view>

using namespace cnf::cni;
using Catch::Matchers::Contains;
using vars = std::map<std::string, std::string>;

namespace {
const std::string cid = "0b0c76bd8d8d1a8e7a5c4e9f7a3d2b1c0b0c76bd8d8d1a8e7a5c4e9f7a3d2b1c";

vars add_env(std::string cmd = "ADD") {
  return {{"CNI_COMMAND", std::move(cmd)},
          {"CNI_CONTAINERID", cid},
          {"CNI_NETNS", "/var/run/netns/cni-1234"},
          {"CNI_IFNAME", "eth0"},
          {"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
                       "K8S_POD_INFRA_CONTAINER_ID=" + cid + ";K8S_POD_UID=3f1c2b7e-1d2a-4c55-9b1e-0a1b2c3d4e5f"},
          {"CNI_PATH", "/opt/cni/bin::/usr/libexec/cni:"}};
}

cnf::cni::error env_error(const vars& v, const env_options& o = {}) {
  auto r = parse_env(v, o);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == error_code::invalid_environment);
  return r.error();
}
}  // namespace

TEST_CASE("ADD environment parses completely", "[cni][env]") {
  auto r = parse_env(add_env());
  REQUIRE(r);
  CHECK(r->cmd == command::add);
  CHECK(r->container_id == cid);
  CHECK(r->netns == "/var/run/netns/cni-1234");
  CHECK(r->ifname == "eth0");
  CHECK(r->args.k8s_pod_namespace == "default");
  CHECK(r->args.k8s_pod_name == "web-0");
  CHECK(r->args.k8s_pod_infra_container_id == cid);
  CHECK(r->args.k8s_pod_uid == "3f1c2b7e-1d2a-4c55-9b1e-0a1b2c3d4e5f");
  CHECK(r->args.ignore_unknown);
  CHECK(r->path_raw == "/opt/cni/bin::/usr/libexec/cni:");
  REQUIRE(r->path.size() == 2);  // empty entries dropped
  CHECK(r->path[0] == "/opt/cni/bin");
  CHECK(r->path[1] == "/usr/libexec/cni");
}

TEST_CASE("ADD names every missing variable in one error", "[cni][env]") {
  auto e = env_error({{"CNI_COMMAND", "ADD"}});
  CHECK_THAT(e.msg, Contains("CNI_CONTAINERID"));
  CHECK_THAT(e.msg, Contains("CNI_NETNS"));
  CHECK_THAT(e.msg, Contains("CNI_IFNAME"));
  CHECK_THAT(e.msg, Contains("for ADD"));
  CHECK_THAT(e.msg, !Contains("CNI_PATH"));  // optional for ADD
  CHECK_THAT(e.msg, !Contains("CNI_ARGS"));
  // empty counts as missing
  auto v = add_env();
  v["CNI_NETNS"] = "";
  v["CNI_IFNAME"] = "";
  auto e2 = env_error(v);
  CHECK_THAT(e2.msg, Contains("CNI_NETNS, CNI_IFNAME"));
  CHECK_THAT(e2.msg, !Contains("CNI_CONTAINERID"));
}

TEST_CASE("CHECK needs the same variables as ADD", "[cni][env]") {
  auto v = add_env("CHECK");
  REQUIRE(parse_env(v));
  v.erase("CNI_NETNS");
  auto e = env_error(v);
  CHECK_THAT(e.msg, Contains("CNI_NETNS"));
  CHECK_THAT(e.msg, Contains("for CHECK"));
}

TEST_CASE("DEL allows an empty or absent CNI_NETNS", "[cni][env]") {
  auto v = add_env("DEL");
  v["CNI_NETNS"] = "";
  auto r = parse_env(v);
  REQUIRE(r);
  CHECK(r->cmd == command::del);
  CHECK(r->netns.empty());
  v.erase("CNI_NETNS");
  CHECK(parse_env(v));
  v.erase("CNI_IFNAME");
  auto e = env_error(v);
  CHECK_THAT(e.msg, Contains("CNI_IFNAME"));
  CHECK_THAT(e.msg, !Contains("CNI_NETNS"));
}

TEST_CASE("GC needs only CNI_PATH", "[cni][env]") {
  auto r = parse_env(vars{{"CNI_COMMAND", "GC"}, {"CNI_PATH", "/opt/cni/bin"}});
  REQUIRE(r);
  CHECK(r->cmd == command::gc);
  REQUIRE(r->path.size() == 1);
  auto e = env_error({{"CNI_COMMAND", "GC"}});
  CHECK_THAT(e.msg, Contains("CNI_PATH"));
  CHECK_THAT(e.msg, !Contains("CNI_CONTAINERID"));
  CHECK_THAT(e.msg, !Contains("CNI_IFNAME"));
  // attachment variables are not validated for GC
  CHECK(parse_env(vars{{"CNI_COMMAND", "GC"}, {"CNI_PATH", "/x"}, {"CNI_IFNAME", "bad/name"}, {"CNI_ARGS", "junk"}}));
}

TEST_CASE("STATUS needs only CNI_COMMAND unless the caller requires CNI_PATH", "[cni][env]") {
  auto r = parse_env(vars{{"CNI_COMMAND", "STATUS"}});
  REQUIRE(r);
  CHECK(r->cmd == command::status);
  env_options o;
  o.require_path = true;
  auto e = env_error({{"CNI_COMMAND", "STATUS"}}, o);
  CHECK_THAT(e.msg, Contains("CNI_PATH"));
  auto v = add_env();
  v.erase("CNI_PATH");
  CHECK(parse_env(v));
  CHECK_THAT(env_error(v, o).msg, Contains("CNI_PATH"));
}

TEST_CASE("VERSION needs only CNI_COMMAND and ignores the rest", "[cni][env]") {
  auto r = parse_env(vars{{"CNI_COMMAND", "VERSION"}, {"CNI_IFNAME", "../../etc"}, {"CNI_ARGS", "x"}});
  REQUIRE(r);
  CHECK(r->cmd == command::version);
}

TEST_CASE("CNI_COMMAND missing or unknown", "[cni][env]") {
  auto e = env_error({});
  CHECK_THAT(e.msg, Contains("CNI_COMMAND"));
  auto e2 = env_error({{"CNI_COMMAND", "add"}});
  CHECK_THAT(e2.msg, Contains("CNI_COMMAND \"add\""));
  CHECK_THAT(e2.msg, Contains("unknown command"));
}

TEST_CASE("invalid container ids name the variable and the problem", "[cni][env]") {
  struct bad_case {
    std::string id;
    std::string problem;
  };
  for (const auto& c : {bad_case{"a/b", "'/'"}, bad_case{"../etc", "start with a letter or digit"},
                        bad_case{"abc..def", "\"..\""}, bad_case{"-abc", "start with a letter or digit"},
                        bad_case{"abc def", "space"}, bad_case{"abc\ndef", "byte 0x0a"},
                        bad_case{"caf\xc3\xa9", "byte 0xc3"}, bad_case{"a:b", "':'"},
                        bad_case{std::string(256, 'a'), "256 bytes long"}}) {
    INFO(c.id);
    auto v = add_env();
    v["CNI_CONTAINERID"] = c.id;
    auto e = env_error(v);
    CHECK_THAT(e.msg, Contains("CNI_CONTAINERID"));
    CHECK_THAT(e.msg, Contains(c.problem));
    CHECK_FALSE(validate_container_id(c.id));
  }
  for (std::string ok : {std::string("a"), std::string("A1"), std::string("abc_def.ghi-jkl"), std::string("0"), std::string(255, 'f')}) {
    INFO(ok);
    CHECK(validate_container_id(ok));
    auto v = add_env();
    v["CNI_CONTAINERID"] = ok;
    CHECK(parse_env(v));
  }
  CHECK_FALSE(validate_container_id(""));
}

TEST_CASE("invalid interface names name the variable and the problem", "[cni][env]") {
  struct bad_case {
    std::string name;
    std::string problem;
  };
  for (const auto& c : {bad_case{"eth0/1", "'/'"}, bad_case{".", "\".\" or \"..\""}, bad_case{"..", "\".\" or \"..\""},
                        bad_case{"eth0:1", "':'"}, bad_case{"eth 0", "space"}, bad_case{"eth\t0", "byte 0x09"},
                        bad_case{"abcdefghijklmnop", "16 bytes long"}}) {
    INFO(c.name);
    auto v = add_env();
    v["CNI_IFNAME"] = c.name;
    auto e = env_error(v);
    CHECK_THAT(e.msg, Contains("CNI_IFNAME"));
    CHECK_THAT(e.msg, Contains(c.problem));
    auto direct = validate_ifname(c.name);
    REQUIRE_FALSE(direct);
    CHECK(direct.error().code == error_code::invalid_environment);
    CHECK_THAT(direct.error().msg, Contains("CNI_IFNAME"));
  }
  for (std::string ok : {"eth0", "abcdefghijklmno", "net1.100", "a..b", "veth-x_y"}) {
    INFO(ok);
    CHECK(validate_ifname(ok));
  }
  CHECK_FALSE(validate_ifname(""));
}

TEST_CASE("missing and invalid variables are reported together", "[cni][env]") {
  auto v = add_env();
  v.erase("CNI_NETNS");
  v["CNI_IFNAME"] = "eth0/evil";
  v["CNI_ARGS"] = "FOO=bar";
  auto e = env_error(v);
  CHECK_THAT(e.msg, Contains("CNI_NETNS"));
  CHECK_THAT(e.msg, Contains("CNI_IFNAME \"eth0/evil\""));
  CHECK_THAT(e.msg, Contains("CNI_ARGS"));
  CHECK_THAT(e.msg, Contains("FOO"));
}

TEST_CASE("CNI_ARGS parses known keys and keeps every pair", "[cni][env][args]") {
  auto a = parse_cni_args("K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1;IP=10.1.2.3");
  REQUIRE(a);
  CHECK(a->k8s_pod_namespace == "kube-system");
  CHECK(a->k8s_pod_name == "coredns-1");
  CHECK(a->ip == "10.1.2.3");
  CHECK_FALSE(a->ignore_unknown);
  REQUIRE(a->pairs.size() == 3);
  CHECK(a->pairs[0].first == "K8S_POD_NAMESPACE");
  CHECK(a->get("K8S_POD_NAME") == std::optional<std::string_view>("coredns-1"));
  CHECK_FALSE(a->get("NOPE").has_value());
  // empty value is allowed
  auto b = parse_cni_args("K8S_POD_UID=");
  REQUIRE(b);
  CHECK(b->k8s_pod_uid.empty());
  REQUIRE(b->pairs.size() == 1);
  // empty input: no arguments
  auto c = parse_cni_args("");
  REQUIRE(c);
  CHECK(c->pairs.empty());
}

TEST_CASE("CNI_ARGS unknown keys are an error unless IgnoreUnknown", "[cni][env][args]") {
  auto a = parse_cni_args("FOO=1;K8S_POD_NAME=x;BAR=2");
  REQUIRE_FALSE(a);
  CHECK(a.error().code == error_code::invalid_environment);
  CHECK_THAT(a.error().msg, Contains("CNI_ARGS"));
  CHECK_THAT(a.error().msg, Contains("FOO, BAR"));
  CHECK_THAT(a.error().msg, Contains("IgnoreUnknown"));
  for (const char* yes : {"1", "true", "TRUE", "True"}) {
    INFO(yes);
    // IgnoreUnknown may come after the unknown key
    auto b = parse_cni_args(std::string("FOO=1;IgnoreUnknown=") + yes);
    REQUIRE(b);
    CHECK(b->ignore_unknown);
    CHECK(b->get("FOO") == std::optional<std::string_view>("1"));
  }
  for (const char* no : {"0", "false", "FALSE"}) {
    INFO(no);
    CHECK_FALSE(parse_cni_args(std::string("FOO=1;IgnoreUnknown=") + no));
  }
  // key matching is case-sensitive, as in libcni
  CHECK_FALSE(parse_cni_args("k8s_pod_name=x"));
  // the caller can declare more keys
  std::string_view extra[] = {"MAC", "FOO"};
  auto c = parse_cni_args("FOO=1;MAC=aa:bb:cc:dd:ee:ff", extra);
  REQUIRE(c);
  CHECK(c->get("MAC") == std::optional<std::string_view>("aa:bb:cc:dd:ee:ff"));
}

TEST_CASE("CNI_ARGS malformed input is reported", "[cni][env][args]") {
  struct bad_case {
    std::string args;
    std::string problem;
  };
  for (const auto& c : {bad_case{"FOO", "invalid pair \"FOO\""}, bad_case{"A=b=c", "invalid pair \"A=b=c\""},
                        bad_case{"K8S_POD_NAME=a;;K8S_POD_UID=b", "empty pair at position 1"},
                        bad_case{"K8S_POD_NAME=a;", "empty pair at position 1"}, bad_case{";", "empty pair at position 0"},
                        bad_case{"=v", "empty key"}, bad_case{"IgnoreUnknown=yes", "IgnoreUnknown: invalid boolean \"yes\""}}) {
    INFO(c.args);
    auto a = parse_cni_args(c.args);
    REQUIRE_FALSE(a);
    CHECK(a.error().code == error_code::invalid_environment);
    CHECK_THAT(a.error().msg, Contains("CNI_ARGS"));
    CHECK_THAT(a.error().msg, Contains(c.problem));
  }
  auto v = add_env();
  v["CNI_ARGS"] = "K8S_POD_NAME";
  CHECK_THAT(env_error(v).msg, Contains("CNI_ARGS: invalid pair"));
}

TEST_CASE("environment block parsing: first occurrence wins, exact names", "[cni][env]") {
  const char* block[] = {"PATH=/usr/bin",
                         "CNI_COMMANDX=VERSION",
                         "CNI_COMMAND=DEL",
                         "CNI_COMMAND=ADD",
                         "CNI_CONTAINERID=abc",
                         "CNI_IFNAME=eth0",
                         "CNI_ARGS=K8S_POD_NAME=a",
                         "CNI_NETNS",
                         nullptr};
  auto r = parse_env(block);
  REQUIRE(r);
  CHECK(r->cmd == command::del);
  CHECK(r->container_id == "abc");
  CHECK(r->args.k8s_pod_name == "a");  // value may contain '='
  CHECK(r->netns.empty());             // "CNI_NETNS" without '=' is not a definition

  char a0[] = "CNI_COMMAND=ADD";
  char* mutable_block[] = {a0, nullptr};  // main()'s envp is char**
  auto e = parse_env(mutable_block);
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().msg, Contains("CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME"));
}
