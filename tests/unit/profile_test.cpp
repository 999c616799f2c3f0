// Every profile error path names file:line:column and the key path.
#include <cnf/profile.hpp>

#include <catch2/catch.hpp>

#include <fstream>

namespace {
std::string err(const std::string& text) {
  auto p = cnf::parse_profile(text, "p.toml");
  REQUIRE_FALSE(p);
  CHECK(p.error().code == cnf::errc::invalid);
  return p.error().message;
}
const std::filesystem::path lib_dir = CNF_TEST_BINARY_DIR "/tests/plugins/lib";
}  // namespace

TEST_CASE("a complete profile parses", "[unit][profile]") {
  auto p = cnf::parse_profile(R"(
plugin_path = ["plugins", "/abs"]
[cni]
mtu = 1450
veth_prefix = "cnf"
log_level = "debug"
log_file = "/var/log/cnf.log"
[node]
name = "node-1"
[datastore]
plugin = "local"
dir = "/tmp/x"
[ipam]
plugin = "host-local"
[routing]
plugin = "bgp"
)", "/etc/cnf/profile.toml");
  REQUIRE(p);
  CHECK(p->cni.mtu == 1450);
  CHECK(p->cni.mtu_set);
  CHECK(p->cni.veth_prefix == "cnf");
  CHECK(p->cni.level == cnf::log_level::debug);
  CHECK(p->cni.log_file == "/var/log/cnf.log");
  CHECK(p->node_name() == "node-1");
  REQUIRE(p->plugin_path.size() == 2);
  CHECK(p->plugin_path[0] == "/etc/cnf/plugins");  // relative to the profile
  CHECK(p->plugin_path[1] == "/abs");
  REQUIRE(p->datastore);
  CHECK(p->datastore->plugin == "local");
  CHECK(p->datastore->line == 11);
  CHECK(p->ipam->plugin == "host-local");
  CHECK(p->routing->plugin == "bgp");
  CHECK_FALSE(p->encapsulation);
  CHECK_FALSE(p->policy);
}

TEST_CASE("defaults: local datastore, mtu 1500, cali prefix", "[unit][profile]") {
  auto p = cnf::parse_profile("[ipam]\nplugin = 'host-local'\n", "p.toml");
  REQUIRE(p);
  CHECK(p->datastore->plugin == "local");
  CHECK(p->cni.mtu == 1500);
  CHECK_FALSE(p->cni.mtu_set);  // a served call takes the agent's MTU (pod_mtu hook), else 1500
  CHECK(p->cni.veth_prefix == "cali");
  CHECK(p->cni.agent_socket.empty());
  CHECK(p->cni.level == cnf::log_level::info);
}

TEST_CASE("profile errors", "[unit][profile]") {
  CHECK_THAT(err("[ipam\nplugin='x'\n"), Catch::StartsWith("p.toml:1:"));
  CHECK_THAT(err("[cni]\nmut = 1450\n"), Catch::Contains("p.toml:2:1: cni.mut: unknown key; did you mean 'mtu'?"));
  CHECK_THAT(err("[cni]\nmtu = 20\n"), Catch::Contains("p.toml:2:7: cni.mtu: must be between 68 and 65535"));
  CHECK_THAT(err("[cni]\nmtu = 'big'\n"), Catch::Contains("p.toml:2:7: cni.mtu: expected an integer"));
  CHECK_THAT(err("[cni]\nveth_prefix = 'toolong'\n"), Catch::Contains("cni.veth_prefix: must be 1 to 4 characters"));
  CHECK_THAT(err("[cni]\nveth_prefix = 'c/a'\n"), Catch::Contains("cni.veth_prefix: may contain only"));
  CHECK_THAT(err("[cni]\nlog_level = 'loud'\n"), Catch::Contains("cni.log_level: must be one of error, warn, info, debug, trace"));
  CHECK_THAT(err("[cni]\nagent_socket = 'run/cni.sock'\n"), Catch::Contains("cni.agent_socket: must be an absolute path"));
  CHECK_THAT(err("[cni]\nagent_socket = '/" + std::string(120, 'a') + "'\n"), Catch::Contains("cni.agent_socket: is longer than a Unix socket path"));
  CHECK_THAT(err("[node]\nnmae = 'x'\n"), Catch::Contains("p.toml:2:1: node.nmae: unknown key; did you mean 'name'?"));
  CHECK_THAT(err("[ipma]\nplugin = 'x'\n"), Catch::Contains("p.toml:1:2: ipma: unknown section; did you mean 'ipam'?"));
  CHECK_THAT(err("plugins_path = ['x']\n"), Catch::Contains("p.toml:1:1: plugins_path: unknown key; did you mean 'plugin_path'?"));
  CHECK_THAT(err("plugin_path = 3\n"), Catch::Contains("p.toml:1:15: plugin_path: expected a string or an array of strings"));
  CHECK_THAT(err("[ipam]\ntype = 'host-local'\n"), Catch::Contains("p.toml:1:1: ipam.plugin: is required"));
  CHECK_THAT(err("[ipam]\nplugin = 7\n"), Catch::Contains("p.toml:2:10: ipam.plugin: expected a string"));
  CHECK_THAT(err("ipam = 'host-local'\n"), Catch::Contains("ipam: expected a table ([ipam])"));
  // Several problems are all reported, one per line.
  auto many = err("[cni]\nmtu = 1\nfoo = 2\n[node]\nbar = 3\n");
  CHECK(std::count(many.begin(), many.end(), '\n') == 2);
}

TEST_CASE("a missing profile file is an I/O error naming it", "[unit][profile]") {
  auto p = cnf::load_profile("/nonexistent/profile.toml");
  REQUIRE_FALSE(p);
  CHECK(p.error().code == cnf::errc::io);
  CHECK_THAT(p.error().message, Catch::Contains("/nonexistent/profile.toml"));
}

TEST_CASE("compose builds the parts a host asks for, datastore first", "[unit][profile]") {
  auto text = "plugin_path = ['" + lib_dir.string() + "']\n[datastore]\nplugin='settings'\ndir='/d'\n[ipam]\nplugin='archetype'\n[routing]\nplugin='archetype'\n";
  auto p = cnf::parse_profile(text, "p.toml");
  REQUIRE(p);
  cnf::plugin_loader loader(p->plugin_path);
  auto c = cnf::compose(*p, loader, {cnf::part::datastore, cnf::part::ipam}, {});
  REQUIRE(c);
  CHECK(c->datastore);
  CHECK(c->ipam);
  CHECK_FALSE(c->routing);  // not asked for: a CNI process never loads routing
  CHECK(c->datastore.status()->endpoint.rfind("/d|", 0) == 0);

  auto missing = cnf::parse_profile("plugin_path = ['" + lib_dir.string() + "']\n[ipam]\nplugin='nope'\n", "q.toml");
  REQUIRE(missing);
  auto m = cnf::compose(*missing, loader, {cnf::part::ipam}, {});
  REQUIRE_FALSE(m);
  CHECK_THAT(m.error().message, Catch::Contains("q.toml:3:8: ipam.plugin: plugin not found: nope"));

  auto typo = cnf::parse_profile("plugin_path = ['" + lib_dir.string() + "']\n[datastore]\nplugin='settings'\ndri='/d'\n", "r.toml");
  REQUIRE(typo);
  auto t = cnf::compose(*typo, loader, {cnf::part::datastore}, {});
  REQUIRE_FALSE(t);
  CHECK_THAT(t.error().message, Catch::Contains("r.toml:4:1: datastore.dri: unknown key; did you mean 'dir'?"));
}
