// Calico's BGP configuration model applied live to real agents: a two-node `cnf lab` with the
// bgp plugin, and BIRD 2 in the lab's router namespace as an external peer (AS 64513). Through
// `cnf apply -f` / `cnf delete`: BGPPeers toward BIRD (per node, one with a TCP MD5 password
// read from a secret file, wrong then right), BGPConfiguration `default` turning the
// node-to-node mesh off, bad resources refused naming the field, a bad BGPPeer written past
// `cnf apply` reported by the agent, communities (prefixAdvertisements, standard and large, the
// default's then node.<name>'s over them) seen on the blocks in BIRD's table and changed live,
// logSeverityScreen per node, and a deleted BGPPeer closing its session. Throughout,
// a session a change does not concern is never reset: BIRD's protocol keeps its `since` and the
// agent logs its Established once.
// Root only (else "skipped", exit 77); BIRD stopped by PID and `cnf lab down` on every exit path.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/lab_datastore.hpp"
#include "../support/root_gate.hpp"
#include "bird_lab.hpp"

#include <cnf/model/node.hpp>

#include <string>
#include <thread>

CNF_TEST_ROOT_GATE("network namespaces");

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using namespace cnf_test::bird_lab;
namespace bj = boost::json;

TEST_CASE("BGPPeer and BGPConfiguration applied live: only the sessions a change concerns are touched", "[integration][bgp]") {
  require_cnf_and_bird();
  env L("bgpconf");
  const auto secrets = L.files.path / "secrets";
  std::filesystem::create_directories(secrets / "bgp");
  cnf_test::write_file(secrets / "bgp" / "right", "s3cret\n");
  cnf_test::write_file(secrets / "bgp" / "wrong", "not-it\n");
  const auto profile = L.files.path / "lab-bgpconf.toml";
  cnf_test::write_file(profile, cnf_test::read_file(std::string(CNF_TEST_SOURCE_DIR) + "/tests/bgp/lab-bgp.toml") + "secrets_dir = \"" +
                                    secrets.string() + "\"\n");
  REQUIRE(L.lab({"up", "--nodes", "2", "--subnets", "1", "--pods-per-node", "1", "--profile", profile.string()}).status == 0);
  CHECK(wait_for([&] { return peer_state(L.status("node-1"), "node-2") == "Established"; }));

  // BIRD in the router namespace (10.100.0.1, AS 64513), one protocol per node; node-2's with a password.
  bird b(L);
  REQUIRE(b.start("route 10.200.1.0/24 blackhole;", bird::protocol("n1", "10.100.0.10") + bird::protocol("n2", "10.100.0.11", "password \"s3cret\";")));

  auto peer = [](const char* name, const char* node, const char* extra) {
    return std::string("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: ") + name + "\nspec:\n  node: " + node +
           "\n  peerIP: 10.100.0.1\n  asNumber: 64513\n" + extra + "---\n";
  };
  const std::string wrong_pw = "  password:\n    secretKeyRef:\n      name: bgp\n      key: wrong\n";
  const std::string right_pw = "  password:\n    secretKeyRef:\n      name: bgp\n      key: right\n";

  // 1. BGPPeers applied live: node-1 to BIRD comes up, prefixes both ways; node-2's wrong password does not.
  REQUIRE(L.apply("peers.yaml", peer("bird-n1", "node-1", "") + peer("bird-n2", "node-2", wrong_pw.c_str())).status == 0);
  CHECK(wait_for([&] { return b.established("n1"); }));
  CHECK(wait_for([&] { return b.c("show route protocol n1").find("10.244.") != std::string::npos; }));
  CHECK(wait_for([&] { return L.run({"exec", "node-1", "--", "ip", "route", "show", "proto", "81"}).out.find("10.200.1.0/24 via 10.100.0.1") != std::string::npos; }));
  CHECK(peer_state(L.status("node-1"), "bird-n1") == "Established");
  std::this_thread::sleep_for(3s);  // several connect retries on both sides
  CHECK_FALSE(b.established("n2"));
  CHECK(peer_state(L.status("node-2"), "bird-n2") != "Established");
  const std::string n1_since = b.line("n1");
  INFO("BIRD n1: " << n1_since);

  // 2. The right password: node-2's session comes up; node-1's is untouched.
  REQUIRE(L.apply("peers.yaml", peer("bird-n1", "node-1", "") + peer("bird-n2", "node-2", right_pw.c_str())).status == 0);
  CHECK(wait_for([&] { return b.established("n2"); }));
  CHECK(wait_for([&] { return b.c("show route protocol n2").find("10.244.") != std::string::npos; }));

  // 3. The mesh off: the node-to-node sessions go, the BIRD sessions stay.
  REQUIRE(L.apply("config.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n"
                                 "spec:\n  nodeToNodeMeshEnabled: false\n  logSeverityScreen: Info\n")
              .status == 0);
  CHECK(wait_for([&] { return peer_state(L.status("node-1"), "node-2") == "(none)"; }));
  CHECK(wait_for([&] { return L.agent_log("node-2").find("node-to-node mesh disabled") != std::string::npos; }));
  const std::string n2_since = b.line("n2");
  INFO("BIRD n2: " << n2_since);

  // 3b. Communities (Calico's prefixAdvertisements): both nodes' blocks reach BIRD with the
  // default's communities, standard and large, names resolved; then node.node-1 overrides them
  // for node-1 only, live, with its own logSeverityScreen Debug. No session resets.
  REQUIRE(L.apply("communities.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n"
                                      "spec:\n  nodeToNodeMeshEnabled: false\n  logSeverityScreen: Info\n"
                                      "  communities:\n  - name: bgp-large-community\n    value: 65000:300:1\n  - name: mine\n    value: 65000:100\n"
                                      "  prefixAdvertisements:\n  - cidr: 10.244.0.0/16\n    communities: [mine, bgp-large-community]\n")
              .status == 0);
  auto bird_routes = [&](const char* proto) { return b.c(std::string("show route all protocol ") + proto); };
  auto shows = [&](const char* proto, const char* what) { return bird_routes(proto).find(what) != std::string::npos; };
  CHECK(wait_for([&] { return shows("n1", "BGP.community: (65000,100)") && shows("n1", "BGP.large_community: (65000, 300, 1)"); }));
  CHECK(wait_for([&] { return shows("n2", "BGP.community: (65000,100)") && shows("n2", "BGP.large_community: (65000, 300, 1)"); }));
  REQUIRE(L.apply("node-1.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node-1\n"
                                 "spec:\n  logSeverityScreen: Debug\n  prefixAdvertisements:\n  - cidr: 10.244.0.0/16\n    communities: ['65000:200']\n")
              .status == 0);
  CHECK(wait_for([&] { return shows("n1", "BGP.community: (65000,200)") && !shows("n1", "BGP.large_community"); }));
  INFO("BIRD n1 routes: " << bird_routes("n1") << "\nBIRD n2 routes: " << bird_routes("n2"));
  CHECK(shows("n2", "BGP.community: (65000,100)"));  // node-2 keeps the default's
  CHECK_THAT(L.agent_log("node-1"), Contains("bgp: log level debug (BGPConfiguration logSeverityScreen Debug)"));
  CHECK_THAT(L.agent_log("node-1"), Contains("with communities 65000:200"));
  CHECK_THAT(L.agent_log("node-2"), !Contains("logSeverityScreen Debug"));
  CHECK(b.line("n1") == n1_since);
  CHECK(b.line("n2") == n2_since);

  // 4. Bad resources: refused by apply, naming the field; nothing written.
  auto bad = L.apply("bad.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: bad1\nspec:\n  peerIP: 10.0.0.300\n  asNumber: 64513\n"
                                 "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: bad2\nspec:\n  peerIP: 10.0.0.3\n  asNumber: 4294967296\n"
                                 "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: bad3\nspec:\n  peerIp: 10.0.0.3\n  asNumber: 64513\n"
                                 "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node-1\nspec:\n  asNumber: 64600\n");
  CHECK(bad.status != 0);
  CHECK_THAT(bad.err, Contains("BGPPeer/bad1): spec.peerIP: '10.0.0.300' is not an IP address"));
  CHECK_THAT(bad.err, Contains("BGPPeer/bad2): spec.asNumber: must be between 1 and 4294967295"));
  CHECK_THAT(bad.err, Contains("BGPPeer/bad3): spec.peerIp: unknown field; did you mean 'peerIP'?"));
  CHECK_THAT(bad.err, Contains("BGPConfiguration/node.node-1): spec.asNumber: only the 'default' BGPConfiguration sets it"));
  CHECK_THAT(L.cnf({"get", "bgppeers"}).out, !Contains("bad1"));

  // 5. A bad BGPPeer written past `cnf apply`: the agent reports it and keeps its sessions.
  {
    cnf::resource r{"BGPPeer", "", "broken", {}, R"({"peerIP": "10.0.0.300", "asNumber": 64513})", ""};
    REQUIRE(cnf_test::lab_datastore(L).create(r));
  }
  CHECK(wait_for([&] { return bj::serialize(L.status("node-1")["invalid"]).find("BGPPeer/broken: spec.peerIP") != std::string::npos; }));
  CHECK_THAT(L.agent_log("node-1"), Contains("BGPPeer/broken: spec.peerIP: '10.0.0.300' is not an IP address"));

  // 6. Deleting a BGPPeer closes just its session.
  CHECK(b.line("n1") == n1_since);
  REQUIRE(L.cnf({"delete", "bgppeer", "bird-n1"}).status == 0);
  CHECK(wait_for([&] { return !b.established("n1"); }));
  CHECK(wait_for([&] { return peer_state(L.status("node-1"), "bird-n1") == "(none)"; }));
  CHECK(b.established("n2"));
  CHECK(b.line("n2") == n2_since);
  // node-1's session to BIRD came up once, through every change until its own deletion.
  CHECK(count(L.agent_log("node-1"), "peer bird-n1 (10.100.0.1): Established") == 1);
  CHECK(count(L.agent_log("node-2"), "peer bird-n2 (10.100.0.1): Established") == 1);
  CHECK(n1_since.find("Established") != std::string::npos);

  // 7. Route reflection chosen by label, as Calico: node-1 labelled route-reflector=true with a
  // cluster id (its speaker restarts: the id is in its OPENs), every node peers with it.
  {
    auto ds = cnf_test::lab_datastore(L);
    auto cur = ds.get({"Node", "", "node-1"});
    REQUIRE(cur);
    auto n = cnf::model::parse_node(*cur);
    REQUIRE(n);
    n->labels["route-reflector"] = "true";
    n->bgp->route_reflector_cluster_id = "224.0.0.1";
    auto res = cnf::model::to_resource(*n);
    res.revision = cur->revision;
    REQUIRE(ds.update(res));
  }
  REQUIRE(L.apply("rr.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-rr\n"
                             "spec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n")
              .status == 0);
  CHECK(wait_for([&] { return peer_state(L.status("node-2"), "node-1") == "Established"; }));
  CHECK(wait_for([&] { return peer_state(L.status("node-1"), "node-2") == "Established"; }));
  INFO("node-1: " << bj::serialize(L.status("node-1")["routing"]) << "\nnode-2: " << bj::serialize(L.status("node-2")["routing"]) << "\n"
                  << L.agent_log("node-1").substr(L.agent_log("node-1").size() > 3000 ? L.agent_log("node-1").size() - 3000 : 0));
  CHECK_THAT(L.agent_log("node-1"), Contains("route reflector cluster 224.0.0.1"));
  // BIRD's prefix reaches node-1 through node-2 over the reflector session; node-2's BIRD session untouched.
  CHECK(wait_for([&] { return L.run({"exec", "node-1", "--", "ip", "route", "show", "proto", "81"}).out.find("10.200.1.0/24 via 10.100.0.11") != std::string::npos; }));
  CHECK(b.line("n2") == n2_since);
}
