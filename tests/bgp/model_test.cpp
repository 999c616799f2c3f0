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

// ---- BGPFilter ----

namespace {
cnf::resource filter_res(const std::string& spec, const std::string& name = "f") { return {"BGPFilter", "", name, {}, spec, ""}; }
std::string filter_error(const std::string& spec) {
  auto f = cnf::model::parse_bgp_filter(filter_res(spec));
  return f ? std::string("(accepted)") : f.error().message;
}
cnf::ip_prefix P(const char* s) { return cnf::ip_prefix::parse(s).value(); }
bool accepts(const cnf::route_filter& f, cnf::filter_direction d, const char* p, bool from_peer = true) {
  return cnf::filter_accepts(std::span(&f, 1), d, P(p), from_peer);
}
}  // namespace

TEST_CASE("BGPFilter: Calico's sample parses, and its rules decide in order (first match, else Accept)") {
  auto f = cnf::model::parse_bgp_filter(filter_res(R"j({
    "exportV4": [{"action": "Accept", "matchOperator": "In", "cidr": "77.0.0.0/16", "source": "RemotePeers"},
                 {"action": "Reject", "matchOperator": "NotIn", "cidr": "10.244.0.0/16"}],
    "importV4": [{"action": "Accept", "matchOperator": "In", "cidr": "55.0.0.0/16", "prefixLength": {"min": 30}},
                 {"action": "Reject", "matchOperator": "In", "cidr": "55.0.0.0/16"}],
    "importV6": [{"action": "Accept", "matchOperator": "Equal", "cidr": "5000::/64"}, {"action": "Reject"}],
    "exportV6": [{"action": "Reject", "matchOperator": "NotEqual", "cidr": "fd00::/64"}]})j", "my-filter"));
  REQUIRE(f);
  CHECK(f->name == "my-filter");
  CHECK(f->exists);
  REQUIRE(f->import_v4.size() == 2);
  CHECK(f->import_v4[0].min_length == 30);
  CHECK(!f->import_v4[0].max_length);
  using D = cnf::filter_direction;
  // In with prefixLength {min: 30}: only /30 .. /32 inside 55.0/16; the rest of 55.0/16 rejected
  CHECK(accepts(*f, D::import, "55.0.1.4/30"));
  CHECK(accepts(*f, D::import, "55.0.1.4/32"));
  CHECK_FALSE(accepts(*f, D::import, "55.0.1.0/24"));
  CHECK_FALSE(accepts(*f, D::import, "55.0.0.0/16"));
  CHECK(accepts(*f, D::import, "56.0.0.0/16"));  // no rule matches: Accept
  CHECK(accepts(*f, D::import, "55.0.0.0/8"));   // shorter than the cidr: not In
  // source: RemotePeers only matches learned routes; this node's own go on to the next rule
  CHECK(accepts(*f, D::export_, "77.0.3.0/24", true));
  CHECK_FALSE(accepts(*f, D::export_, "77.0.3.0/24", false));
  CHECK(accepts(*f, D::export_, "10.244.1.0/26", false));
  // IPv6: Equal, then a catch-all Reject
  CHECK(accepts(*f, D::import, "5000::/64"));
  CHECK_FALSE(accepts(*f, D::import, "5000::/65"));
  CHECK_FALSE(accepts(*f, D::import, "6000::/64"));
  CHECK(accepts(*f, D::export_, "fd00::/64"));
  CHECK_FALSE(accepts(*f, D::export_, "fd00:1::/64"));
  // v4 rules never decide a v6 prefix and the other way round
  CHECK(accepts(*f, D::export_, "fd00::/64"));

  // Several filters on one peer: the first matching rule of the first filter that has one
  cnf::route_filter a = *f, b;
  b.name = "b";
  b.import_v4 = {cnf::route_filter_rule{cnf::filter_action::reject, cnf::filter_match::any, {}, {}, {}, false}};
  std::vector<cnf::route_filter> both{a, b};
  CHECK(cnf::filter_accepts(both, D::import, P("55.0.1.4/30"), true));   // a accepts first
  CHECK_FALSE(cnf::filter_accepts(both, D::import, P("56.0.0.0/16"), true));  // a has no rule; b rejects
  CHECK(cnf::filter_accepts({}, D::import, P("56.0.0.0/16"), true));     // no filter: Accept

  // NotIn with prefixLength negates the whole match (BIRD's net !~ [cidr{min,max}])
  auto n = cnf::model::parse_bgp_filter(filter_res(
      R"j({"importV4": [{"action": "Reject", "matchOperator": "NotIn", "cidr": "10.0.0.0/8", "prefixLength": {"min": 16, "max": 24}}]})j"));
  REQUIRE(n);
  CHECK(accepts(*n, D::import, "10.1.0.0/16"));
  CHECK(accepts(*n, D::import, "10.1.2.0/24"));
  CHECK_FALSE(accepts(*n, D::import, "10.1.2.0/26"));
  CHECK_FALSE(accepts(*n, D::import, "10.0.0.0/8"));
  CHECK_FALSE(accepts(*n, D::import, "11.0.0.0/16"));
}

TEST_CASE("BGPFilter: bad input names the field") {
  CHECK_THAT(filter_error(R"j({"importv4": []})j"), Contains("BGPFilter/f: spec.importv4: unknown field; did you mean 'importV4'?"));
  CHECK_THAT(filter_error(R"j({"importV4": [{"action": "accept", "matchOperator": "In", "cidr": "10.0.0.0/8"}]})j"),
             Contains("spec.importV4[0].action: expected Accept or Reject (got 'accept')"));
  CHECK_THAT(filter_error(R"j({"importV4": [{"matchOperator": "In", "cidr": "10.0.0.0/8"}]})j"), Contains("spec.importV4[0].action: is required"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "matchOperator": "in", "cidr": "10.0.0.0/8"}]})j"),
             Contains("spec.exportV4[0].matchOperator: expected Equal, NotEqual, In or NotIn (got 'in')"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "matchOperator": "In", "cidr": "10.0.0.1/8"}]})j"),
             Contains("spec.exportV4[0].cidr: invalid CIDR '10.0.0.1/8': host bits set"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "matchOperator": "In", "cidr": "fd00::/64"}]})j"),
             Contains("spec.exportV4[0].cidr: 'fd00::/64' is not an IPv4 CIDR"));
  CHECK_THAT(filter_error(R"j({"exportV6": [{"action": "Reject", "matchOperator": "In", "cidr": "10.0.0.0/8"}]})j"),
             Contains("spec.exportV6[0].cidr: '10.0.0.0/8' is not an IPv6 CIDR"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "cidr": "10.0.0.0/8"}]})j"),
             Contains("spec.exportV4[0].matchOperator: cidr and matchOperator go together"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "matchOperator": "Equal"}]})j"), Contains("spec.exportV4[0].cidr: cidr and matchOperator"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "matchOperator": "Equal", "cidr": "10.0.0.0/8", "prefixLength": {"min": 9}}]})j"),
             Contains("spec.exportV4[0].prefixLength: needs matchOperator In or NotIn"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "matchOperator": "In", "cidr": "10.0.0.0/8", "prefixLength": {"max": 33}}]})j"),
             Contains("spec.exportV4[0].prefixLength.max: must be between 0 and 32"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "matchOperator": "In", "cidr": "10.0.0.0/8", "prefixLength": {"min": 4}}]})j"),
             Contains("spec.exportV4[0].prefixLength.min: must be at least the cidr's length 8"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "matchOperator": "In", "cidr": "10.0.0.0/8", "prefixLength": {"min": 24, "max": 16}}]})j"),
             Contains("spec.exportV4[0].prefixLength: min is above max"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "matchOperator": "In", "cidr": "10.0.0.0/8", "prefixLenght": {}}]})j"),
             Contains("spec.exportV4[0].prefixLenght: unknown field; did you mean 'prefixLength'?"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "source": "Remote"}]})j"), Contains("spec.exportV4[0].source: expected RemotePeers"));
  CHECK_THAT(filter_error(R"j({"exportV4": [{"action": "Reject", "interface": "*.calico"}]})j"), Contains("spec.exportV4[0].interface: not supported by cnf"));
  CHECK_THAT(filter_error(R"j({"exportV4": {"action": "Reject"}})j"), Contains("spec.exportV4: expected a list of rules"));
  CHECK(filter_error(R"j({})j") == "(accepted)");
}

TEST_CASE("BGPPeer filters and BGPConfiguration nodeMeshMaxRestartTime are read") {
  auto p = cnf::model::parse_bgp_peer(peer(R"j({"peerIP": "10.0.0.1", "asNumber": 64512, "filters": ["a", "b"], "maxRestartTime": "15s"})j"));
  REQUIRE(p);
  CHECK(p->filters == std::vector<std::string>{"a", "b"});
  CHECK(p->max_restart_time == 15u);
  auto c = cnf::model::parse_bgp_configuration(config(R"j({"nodeMeshMaxRestartTime": "1m"})j"));
  REQUIRE(c);
  CHECK(c->node_mesh_max_restart_time == 60u);
  CHECK_THAT(config_error(R"j({"nodeMeshMaxRestartTime": 60})j"), Contains("spec.nodeMeshMaxRestartTime: expected a duration"));
}

TEST_CASE("BGPConfiguration communities: standard values are 16-bit pairs, large ones 32-bit triples") {
  CHECK(config_error(R"j({"communities": [{"name": "a", "value": "65535:65535"}, {"name": "b", "value": "4294967295:0:4294967295"}]})j") == "(accepted)");
  CHECK_THAT(config_error(R"j({"communities": [{"name": "a", "value": "65536:1"}]})j"),
             Contains("spec.communities[0].value: expected aa:nn (standard, 16-bit numbers) or aa:nn:mm (large, 32-bit numbers)"));
  CHECK_THAT(config_error(R"j({"communities": [{"name": "a", "value": "1:2:3:4"}]})j"), Contains("spec.communities[0].value:"));
  CHECK_THAT(config_error(R"j({"communities": [{"name": "a", "value": "1:4294967296:3"}]})j"), Contains("spec.communities[0].value:"));
  CHECK_THAT(config_error(R"j({"communities": [{"name": "a", "value": "1::3"}]})j"), Contains("spec.communities[0].value:"));
  CHECK_THAT(config_error(R"j({"prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["70000:1"]}]})j"),
             Contains("spec.prefixAdvertisements[0].communities: '70000:1' is neither a name in spec.communities nor a community value"));
}

TEST_CASE("BGPConfiguration prefixAdvertisements as a node applies them: names resolved, node.<name> over default per family") {
  auto d = cnf::model::parse_bgp_configuration(config(R"j({"communities": [{"name": "std", "value": "65000:100"}, {"name": "big", "value": "65000:300:1"}],
    "prefixAdvertisements": [{"cidr": "10.244.0.0/16", "communities": ["std", "big", "65000:9"]},
                             {"cidr": "fd00:244::/48", "communities": ["std"]}]})j"));
  REQUIRE(d);
  auto v = cnf::model::effective_prefix_advertisements(&*d, nullptr);
  REQUIRE(v.size() == 2);
  CHECK(v[0].cidr.to_string() == "10.244.0.0/16");
  CHECK(v[0].communities == std::vector<std::string>{"65000:100", "65000:300:1", "65000:9"});
  CHECK(v[1].communities == std::vector<std::string>{"65000:100"});
  // A node's own IPv4 entries replace the default's IPv4 ones; its IPv6 ones (none) leave the default's.
  auto n = cnf::model::parse_bgp_configuration(config(R"j({"communities": [{"name": "std", "value": "65001:1"}],
    "prefixAdvertisements": [{"cidr": "10.244.1.0/24", "communities": ["std"]}], "logSeverityScreen": "Debug"})j", "node.n1"));
  REQUIRE(n);
  v = cnf::model::effective_prefix_advertisements(&*d, &*n);
  REQUIRE(v.size() == 2);
  CHECK(v[0].cidr.to_string() == "10.244.1.0/24");
  CHECK(v[0].communities == std::vector<std::string>{"65001:1"});
  CHECK(v[1].cidr.to_string() == "fd00:244::/48");
  CHECK(cnf::model::effective_prefix_advertisements(nullptr, nullptr).empty());
  CHECK(n->log_severity_screen == "Debug");
}
