// Calico's BGPPeer and BGPConfiguration as cnf reads them (cnf/model/bgp.hpp): what `cnf apply`
// accepts and the agent acts on, and the errors that name the resource and the field.
#include <cnf/model/bgp.hpp>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

using Catch::Matchers::Contains;

namespace {
cnf::resource peer(const std::string& spec, const std::string& name = "p") { return {"BGPPeer", "", name, {}, spec, ""}; }
cnf::resource config(const std::string& spec, const std::string& name = "default") { return {"BGPConfiguration", "", name, {}, spec, ""}; }
std::string peer_error(const std::string& spec) {
  auto p = cnf::model::parse_bgp_peer(peer(spec));
  return p ? std::string("(accepted)") : p.error().message;
}
std::string config_error(const std::string& spec, const std::string& name = "default") {
  auto c = cnf::model::parse_bgp_configuration(config(spec, name));
  return c ? std::string("(accepted)") : c.error().message;
}
}  // namespace

TEST_CASE("BGPPeer: the fields, their forms and Calico's node selection") {
  auto p = cnf::model::parse_bgp_peer(peer(R"j({"peerIP": "10.0.0.1:1179", "asNumber": "1.10", "nodeSelector": "rack == 'a'",
    "keepOriginalNextHop": true, "maxRestartTime": "2m30s", "sourceAddress": "None",
    "password": {"secretKeyRef": {"name": "bgp", "key": "pw"}}})j"));
  REQUIRE(p);
  CHECK(p->peer_ip->to_string() == "10.0.0.1");
  CHECK(p->peer_port == 1179);
  CHECK(p->as_number == 65546);
  CHECK(p->keep_original_next_hop);
  CHECK(p->max_restart_time == 150u);
  CHECK(p->source_address == "None");
  CHECK(p->password->name == "bgp");
  CHECK(p->applies_to("n1", {{"rack", "a"}}));
  CHECK_FALSE(p->applies_to("n1", {{"rack", "b"}}));
  CHECK_FALSE(p->global());

  auto v6 = cnf::model::parse_bgp_peer(peer(R"j({"peerIP": "[fd00::1]:180", "asNumber": 64513, "node": "n2"})j"));
  REQUIRE(v6);
  CHECK(v6->peer_ip->to_string() == "fd00::1");
  CHECK(v6->peer_port == 180);
  CHECK(v6->applies_to("n2", {}));
  CHECK_FALSE(v6->applies_to("n1", {}));
  auto global = cnf::model::parse_bgp_peer(peer(R"j({"peerIP": "10.0.0.1", "asNumber": 64513})j"));
  REQUIRE(global);
  CHECK(global->global());
  CHECK(global->applies_to("any", {}));
  CHECK(cnf::model::parse_bgp_peer(peer(R"j({"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"})j")));
}

TEST_CASE("BGPPeer: bad fields are named") {
  CHECK_THAT(peer_error(R"j({"peerIP": "10.0.0.300", "asNumber": 1})j"), Contains("BGPPeer/p: spec.peerIP: '10.0.0.300' is not an IP address"));
  CHECK_THAT(peer_error(R"j({"peerIP": "10.0.0.1:70000", "asNumber": 1})j"), Contains("spec.peerIP: '10.0.0.1:70000': the port must be between 1 and 65535"));
  CHECK_THAT(peer_error(R"j({"peerIP": "10.0.0.1", "asNumber": 0})j"), Contains("spec.asNumber: must be between 1 and 4294967295"));
  CHECK_THAT(peer_error(R"j({"peerIP": "10.0.0.1", "asNumber": 4294967296})j"), Contains("spec.asNumber: must be between 1 and 4294967295"));
  CHECK_THAT(peer_error(R"j({"peerIP": "10.0.0.1"})j"), Contains("spec.asNumber: is required with peerIP"));
  CHECK_THAT(peer_error(R"j({"peerIp": "10.0.0.1", "asNumber": 1})j"), Contains("spec.peerIp: unknown field; did you mean 'peerIP'?"));
  CHECK_THAT(peer_error(R"j({"asNumber": 1})j"), Contains("spec.peerIP: is required"));
  CHECK_THAT(peer_error(R"j({"peerIP": "10.0.0.1", "asNumber": 1, "nodeSelector": "rack =="})j"), Contains("spec.nodeSelector:"));
  CHECK_THAT(peer_error(R"j({"peerIP": "10.0.0.1", "asNumber": 1, "node": "a", "nodeSelector": "all()"})j"), Contains("either node or nodeSelector"));
  CHECK_THAT(peer_error(R"j({"peerIP": "10.0.0.1", "asNumber": 1, "password": {"secretKeyRef": {"name": "x"}}})j"),
             Contains("spec.password.secretKeyRef.key: is required"));
  CHECK_THAT(peer_error(R"j({"peerIP": "10.0.0.1", "asNumber": 1, "password": {"secretKeyRef": {"name": "../etc", "key": "k"}}})j"),
             Contains("spec.password.secretKeyRef.name: '../etc' is not a secret name"));
  CHECK_THAT(peer_error(R"j({"peerIP": "10.0.0.1", "asNumber": 1, "maxRestartTime": "soon"})j"), Contains("spec.maxRestartTime: 'soon' is not a duration"));
  CHECK_THAT(peer_error(R"j({"peerIP": "10.0.0.1", "asNumber": 1, "sourceAddress": "Node"})j"), Contains("spec.sourceAddress: expected UseNodeIP or None"));
}

TEST_CASE("BGPConfiguration: default and node.<name>, bad fields named") {
  auto c = cnf::model::parse_bgp_configuration(config(R"j({"asNumber": 64600, "nodeToNodeMeshEnabled": false, "listenPort": 1179,
    "logSeverityScreen": "Warning", "communities": [{"name": "mine", "value": "64512:100"}],
    "prefixAdvertisements": [{"cidr": "10.244.0.0/16", "communities": ["mine", "64512:200:1"]}]})j"));
  REQUIRE(c);
  CHECK(c->as_number == 64600u);
  CHECK(c->node_to_node_mesh_enabled == false);
  CHECK(c->listen_port == 1179);
  CHECK(c->prefix_advertisements.at(0).communities.size() == 2);
  CHECK(cnf::model::parse_bgp_configuration(config(R"j({"listenPort": 1179})j", "node.n1")));
  CHECK_THAT(config_error("{}", "mine"), Contains("BGPConfiguration/mine: metadata.name: must be 'default'"));
  CHECK_THAT(config_error(R"j({"asNumber": 1})j", "node.n1"), Contains("spec.asNumber: only the 'default' BGPConfiguration sets it"));
  CHECK_THAT(config_error(R"j({"listenPort": 0})j"), Contains("spec.listenPort: must be between 1 and 65535"));
  CHECK_THAT(config_error(R"j({"nodeToNodeMeshEnabled": "no"})j"), Contains("spec.nodeToNodeMeshEnabled: expected true or false"));
  CHECK_THAT(config_error(R"j({"nodeToNodeMeshEnable": false})j"), Contains("did you mean 'nodeToNodeMeshEnabled'?"));
  CHECK_THAT(config_error(R"j({"logSeverityScreen": "loud"})j"), Contains("spec.logSeverityScreen: expected Debug, Info"));
  CHECK_THAT(config_error(R"j({"communities": [{"name": "x", "value": "1"}]})j"), Contains("spec.communities[0].value:"));
  CHECK_THAT(config_error(R"j({"prefixAdvertisements": [{"cidr": "10.0.0.0/33"}]})j"), Contains("spec.prefixAdvertisements[0].cidr:"));
  CHECK_THAT(config_error(R"j({"prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["nope"]}]})j"),
             Contains("'nope' is neither a name in spec.communities nor a community value"));
}

TEST_CASE("secretKeyRef: read where a Kubernetes secret volume puts it") {
  auto dir = std::filesystem::temp_directory_path() / ("cnf-bgp-model-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "bgp");
  std::ofstream(dir / "bgp" / "pw") << "s3cret\n";
  auto pw = cnf::model::read_secret(dir.string(), {"bgp", "pw"});
  CHECK(pw.value() == "s3cret");
  auto missing = cnf::model::read_secret(dir.string(), {"bgp", "other"});
  REQUIRE_FALSE(missing);
  CHECK_THAT(missing.error().message, Contains("secret bgp/other: cannot read " + (dir / "bgp" / "other").string()));
  std::filesystem::remove_all(dir);
}
