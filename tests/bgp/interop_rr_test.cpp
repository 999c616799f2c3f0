// cnf's BGP part in route reflection with real daemons, and with a 2-octet AS speaker
// (root; each daemon in its own network namespace, the links between them in namespaces only):
//  - cnf reflects between two BIRD 2 clients on one LAN: each client's prefix reaches the
//    other with ORIGINATOR_ID, CLUSTER_LIST and its own next hop, both reach cnf's kernel,
//    cnf's prefix reaches both; a client that stops is withdrawn everywhere; a client in the
//    wrong AS is refused with the reason logged.
//  - GoBGP reflects between cnf and a BIRD client: cnf learns the BIRD prefix with BIRD's
//    next hop into its kernel, cnf's prefix reaches BIRD reflected; stops withdraw.
//  - cnf in a 4-octet AS against BIRD with `enable as4 off` (RFC 6793): BIRD sees cnf's real
//    AS through AS4_PATH, cnf merges BIRD's AS4_PATH (a loop through cnf's own AS is refused).
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include "interop_fixture.hpp"

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using cnf_test::enter_netns;
using cnf_test::test_netns;
using cnf_test::bgp::wait_for;

namespace {

struct gate : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testRunStarting(Catch::TestRunInfo const& info) override {
    cnf_test::exit_77_unless_root("network namespaces");
    if (cnf_test::run("command -v bird && command -v birdc").status != 0) cnf_test::exit_77_skipped("BIRD 2 is not installed (apt-get install bird2)");
    ::signal(SIGPIPE, SIG_IGN);
    TestEventListenerBase::testRunStarting(info);
  }
};

// A BIRD iBGP speaker in AS `local_as` at `self` with one neighbor (cnf or a reflector), exporting
// its static routes with itself as next hop.
std::string bird_conf(const std::string& self, std::uint32_t local_as, const std::string& neighbor, std::uint32_t neighbor_as,
                      const std::string& statics, const std::string& extra = {}) {
  return "router id " + self + ";\n"
         "protocol device { scan time 10; }\n"
         "protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; learn off; }\n"
         "protocol static { ipv4; " + statics + " }\n"
         "protocol bgp up { local " + self + " as " + std::to_string(local_as) + "; neighbor " + neighbor + " as " + std::to_string(neighbor_as) + ";\n"
         "  ipv4 { import all; export where source = RTS_STATIC; next hop self; };\n"
         "  direct;\n" + extra +
         "  hold time 9; connect retry time 1; connect delay time 0; error wait time 1, 2; }\n";
}

// A LAN: a bridge in `hub` with each spoke's veth on it.
void lan(const test_netns& hub, const std::string& hub_addr, std::vector<std::pair<const test_netns*, std::string>> spokes) {
  hub.exec_or_throw("ip link add br0 type bridge && ip link set br0 up && ip addr add " + hub_addr + " dev br0");
  int i = 0;
  for (auto& [ns, addr] : spokes) {
    const std::string port = "p" + std::to_string(i++);
    cnf_test::veth_between(hub, port, *ns, "eth0");
    hub.exec_or_throw("ip link set " + port + " master br0");
    ns->exec_or_throw("ip addr add " + addr + " dev eth0");
  }
}

bool has(const std::string& text, std::initializer_list<const char*> parts) {
  for (auto* p : parts)
    if (text.find(p) == std::string::npos) return false;
  return true;
}

}  // namespace
CATCH_REGISTER_LISTENER(gate)

TEST_CASE("bgp interop: cnf reflects between two BIRD 2 clients (RFC 4456)", "[integration][bgp]") {
  test_netns ns_cnf, ns_a, ns_b;
  lan(ns_cnf, "10.97.0.3/24", {{&ns_a, "10.97.0.1/24"}, {&ns_b, "10.97.0.2/24"}});
  cnf_test::temp_dir dir("/tmp/cnf-bgp-rr-test-");
  cnf_test::bgp::bird a(ns_a, dir.path / "a"), b(ns_b, dir.path / "b");
  const std::string a_conf = bird_conf("10.97.0.1", 64512, "10.97.0.3", 64512, "route 10.200.1.0/24 blackhole;");
  a.start(a_conf);
  const std::string b_conf =
      bird_conf("10.97.0.2", 64512, "10.97.0.3", 64512, "route 10.200.2.0/24 blackhole;", "  graceful restart on; graceful restart time 30;\n");
  b.start(b_conf);

  enter_netns in(ns_cnf);
  cnf_test::bgp::cnf_side cnf;
  cnf.settings.route_reflector_cluster_id = "1.1.1.1";
  cnf.start({"10.97.0.3/24"}, {cnf_test::bgp::peer("a", "10.97.0.1", 64512), cnf_test::bgp::peer("b", "10.97.0.2", 64512)});
  REQUIRE(cnf.start_error == "");
  INFO(cnf.log.all());
  cnf.advertise("10.244.1.0/26");
  auto kernel = [&](const char* dst) { return ns_cnf.exec("ip route show " + std::string(dst)).output; };
  REQUIRE(wait_for([&] { return cnf.established("a") && cnf.established("b"); }));

  // Each client's prefix in cnf's kernel via the client
  CHECK(wait_for([&] { return kernel("10.200.1.0/24").find("via 10.97.0.1 dev br0") != std::string::npos; }));
  CHECK(wait_for([&] { return kernel("10.200.2.0/24").find("via 10.97.0.2 dev br0") != std::string::npos; }));
  // ... and reflected to the other client: next hop unchanged, ORIGINATOR_ID the originating
  // client's router id, CLUSTER_LIST cnf's cluster id; in that client's kernel via the first
  auto reflected = [&](const cnf_test::bgp::bird& to, const char* prefix, const char* origin) {
    auto r = to.c(std::string("show route ") + prefix + " all");
    return has(r, {prefix}) && r.find(std::string("BGP.next_hop: ") + origin) != std::string::npos &&
           r.find(std::string("BGP.originator_id: ") + origin) != std::string::npos && r.find("BGP.cluster_list: 1.1.1.1") != std::string::npos;
  };
  CHECK(wait_for([&] { return reflected(b, "10.200.1.0/24", "10.97.0.1"); }));
  CHECK(wait_for([&] { return reflected(a, "10.200.2.0/24", "10.97.0.2"); }));
  INFO(b.c("show route 10.200.1.0/24 all"));
  CHECK(wait_for([&] { return ns_b.exec("ip route show 10.200.1.0/24").output.find("via 10.97.0.1") != std::string::npos; }));
  // cnf's own prefix in both clients, cnf as next hop, not reflected (no ORIGINATOR_ID)
  for (auto* x : {&a, &b}) {
    CHECK(wait_for([&] { return x->c("show route 10.244.1.0/26 all").find("BGP.next_hop: 10.97.0.3") != std::string::npos; }));
    CHECK(x->c("show route 10.244.1.0/26 all").find("BGP.originator_id") == std::string::npos);
  }

  // B crashes (graceful restart agreed): cnf keeps its prefix, in its kernel and reflected to A,
  // until B is back
  b.stop(SIGKILL);
  CHECK(wait_for([&] { return cnf.log.has("graceful restart"); }, 5s));
  std::this_thread::sleep_for(500ms);
  CHECK(kernel("10.200.2.0/24").find("via 10.97.0.2") != std::string::npos);
  CHECK(reflected(a, "10.200.2.0/24", "10.97.0.2"));
  b.start(b_conf);
  REQUIRE(wait_for([&] { return cnf.established("b"); }));

  // A stops (Cease): its prefix leaves cnf's kernel and B
  a.stop();
  CHECK(wait_for([&] { return kernel("10.200.1.0/24").empty(); }, 5s));
  CHECK(wait_for([&] { return b.c("show route 10.200.1.0/24").find("10.200.1.0/24") == std::string::npos; }, 5s));
  CHECK(kernel("10.200.2.0/24").find("via 10.97.0.2") != std::string::npos);  // B's stays

  // A comes back in the wrong AS: refused with the reason logged, nothing learned from it
  std::string wrong = a_conf;
  wrong.replace(wrong.find("as 64512;"), 9, "as 64513;");
  a.start(wrong);
  CHECK(wait_for([&] { return cnf.log.has("Bad Peer AS") && cnf.log.has("peer says AS 64513"); }));
  CHECK(!cnf.established("a"));
  CHECK_THAT(cnf.sink->peer("a").info, Catch::Contains("Bad Peer AS"));
  CHECK(kernel("10.200.1.0/24").empty());
  CHECK(cnf.established("b"));
}

TEST_CASE("bgp interop: GoBGP reflects between cnf and a BIRD 2 client", "[integration][bgp]") {
  if (cnf_test::run("command -v gobgpd && command -v gobgp").status != 0) {
    cnf_test::exit_77_skipped("GoBGP is not installed (scripts/install-deps.sh installs gobgpd)");
  }
  test_netns ns_g, ns_cnf, ns_bird;
  lan(ns_g, "10.96.0.1/24", {{&ns_cnf, "10.96.0.2/24"}, {&ns_bird, "10.96.0.3/24"}});
  cnf_test::temp_dir dir("/tmp/cnf-bgp-gobgp-rr-test-");
  cnf_test::bgp::gobgp g(ns_g, dir.path / "g");
  std::string conf = "[global.config]\n  as = 64512\n  router-id = \"10.96.0.1\"\n  port = 179\n  local-address-list = [\"10.96.0.1\"]\n";
  for (auto* client : {"10.96.0.2", "10.96.0.3"})
    conf += std::string("[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"") + client + "\"\n    peer-as = 64512\n"
            "  [neighbors.transport.config]\n    local-address = \"10.96.0.1\"\n"
            "  [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n"
            "  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"10.96.0.1\"\n"
            "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n";
  g.start(conf);
  cnf_test::bgp::bird b(ns_bird, dir.path / "b");
  b.start(bird_conf("10.96.0.3", 64512, "10.96.0.1", 64512, "route 10.200.3.0/24 blackhole;"));

  enter_netns in(ns_cnf);
  cnf_test::bgp::cnf_side cnf;
  cnf.start({"10.96.0.2/24"}, {cnf_test::bgp::peer("gobgp", "10.96.0.1", 64512)});
  REQUIRE(cnf.start_error == "");
  INFO(cnf.log.all());
  INFO(g.log());
  cnf.advertise("10.244.2.0/26");
  auto kernel = [&](const char* dst) { return ns_cnf.exec("ip route show " + std::string(dst)).output; };
  REQUIRE(wait_for([&] { return cnf.established("gobgp"); }));

  // BIRD's prefix reflected to cnf with BIRD's own next hop, into cnf's kernel
  CHECK(wait_for([&] { return kernel("10.200.3.0/24").find("via 10.96.0.3 dev eth0") != std::string::npos; }));
  // cnf's prefix reflected to BIRD: cnf's next hop and router id, GoBGP's cluster id
  CHECK(wait_for([&] {
    auto r = b.c("show route 10.244.2.0/26 all");
    return has(r, {"BGP.next_hop: 10.96.0.2", "BGP.originator_id: 10.96.0.2", "BGP.cluster_list: 10.96.0.1"});
  }));
  INFO(b.c("show route 10.244.2.0/26 all"));
  CHECK(wait_for([&] { return ns_bird.exec("ip route show 10.244.2.0/26").output.find("via 10.96.0.2") != std::string::npos; }));

  // cnf withdraws: gone from BIRD; BIRD stops: gone from cnf's kernel; GoBGP stops: session down
  cnf.withdraw("10.244.2.0/26");
  CHECK(wait_for([&] { return b.c("show route 10.244.2.0/26").find("10.244.2.0/26") == std::string::npos; }, 5s));
  b.stop();
  CHECK(wait_for([&] { return kernel("10.200.3.0/24").empty(); }, 5s));
  g.stop();
  CHECK(wait_for([&] { return !cnf.established("gobgp"); }, 5s));
}

// BIRD with `enable as4 off` refuses a neighbor AS above 65535 in its configuration and reads
// the 4-octet AS capability anyway (a neighbor configured as AS_TRANS gets Bad Peer AS), so
// cnf's own AS stays a 2-octet one here; the 4-octet AS numbers come from the paths: GoBGP
// in AS 4200000077 on one side, a prepend of 4200000099 by BIRD on the other.
TEST_CASE("bgp interop: 4-octet AS paths across a 2-octet BIRD (AS4_PATH, RFC 6793)", "[integration][bgp]") {
  if (cnf_test::run("command -v gobgpd && command -v gobgp").status != 0) {
    cnf_test::exit_77_skipped("GoBGP is not installed (scripts/install-deps.sh installs gobgpd)");
  }
  test_netns ns_cnf, ns_bird, ns_g;
  cnf_test::veth_between(ns_cnf, "c0", ns_bird, "b0");
  cnf_test::veth_between(ns_cnf, "c1", ns_g, "g0");
  ns_cnf.exec_or_throw("ip addr add 10.95.0.2/24 dev c0 && ip addr add 10.94.0.2/24 dev c1");
  ns_bird.exec_or_throw("ip addr add 10.95.0.1/24 dev b0");
  ns_g.exec_or_throw("ip addr add 10.94.0.1/24 dev g0");
  cnf_test::temp_dir dir("/tmp/cnf-bgp-as4-test-");
  cnf_test::bgp::bird b(ns_bird, dir.path / "b");
  b.start("router id 10.95.0.1;\n"
          "protocol device { scan time 10; }\n"
          "protocol static { ipv4; route 10.202.1.0/24 blackhole; }\n"
          "protocol bgp up { local 10.95.0.1 as 65001; neighbor 10.95.0.2 as 64512; enable as4 off;\n"
          "  ipv4 { import all; export filter { if source != RTS_STATIC then reject; bgp_path.prepend(4200000099); accept; }; };\n"
          "  hold time 9; connect retry time 1; connect delay time 0; error wait time 1, 2; }\n");
  cnf_test::bgp::gobgp g(ns_g, dir.path / "g");
  g.start("[global.config]\n  as = 4200000077\n  router-id = \"10.94.0.1\"\n  port = 179\n  local-address-list = [\"10.94.0.1\"]\n"
          "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"10.94.0.2\"\n    peer-as = 64512\n"
          "  [neighbors.transport.config]\n    local-address = \"10.94.0.1\"\n"
          "  [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n"
          "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n");

  enter_netns in(ns_cnf);
  cnf_test::bgp::cnf_side cnf;
  auto to_gobgp = cnf_test::bgp::peer("gobgp", "10.94.0.1", 4200000077u);
  to_gobgp.bind_source = false;  // not from the node's address (10.95.0.2): from c1's own
  cnf.start({"10.95.0.2/24", "10.94.0.2/24"}, {cnf_test::bgp::peer("bird", "10.95.0.1", 65001), to_gobgp});
  REQUIRE(cnf.start_error == "");
  INFO(cnf.log.all());
  INFO(g.log());
  auto kernel = [&](const char* dst) { return ns_cnf.exec("ip route show " + std::string(dst)).output; };
  REQUIRE(wait_for([&] { return cnf.established("bird") && cnf.established("gobgp"); }));
  {  // BIRD really speaks 2-octet AS numbers: its "Session:" line lacks "AS4"
    auto p = b.c("show protocols all up");
    auto at = p.find("Session:");
    REQUIRE(at != std::string::npos);
    const auto line = p.substr(at, p.find('\n', at) - at);
    CHECK_THAT(line, Catch::Contains("external") && !Catch::Contains("AS4"));
  }
  g.c("global rib add -a ipv4 10.203.1.0/24");

  // GoBGP -> cnf -> BIRD: BIRD reads the real path from AS4_PATH (AS_TRANS in AS_PATH)
  CHECK(wait_for([&] { return b.c("show route 10.203.1.0/24 all").find("BGP.as_path: 64512 4200000077") != std::string::npos; }));
  INFO(b.c("show route 10.203.1.0/24 all"));
  // BIRD -> cnf -> GoBGP: cnf merged BIRD's AS4_PATH, so GoBGP sees no AS_TRANS either
  CHECK(wait_for([&] { return kernel("10.202.1.0/24").find("via 10.95.0.1 dev c0") != std::string::npos; }));
  CHECK(wait_for([&] { return g.c("global rib -a ipv4 10.202.1.0/24").find("64512 65001 4200000099") != std::string::npos; }));
  INFO(g.c("global rib -a ipv4 10.202.1.0/24"));
  CHECK(g.c("global rib -a ipv4 10.202.1.0/24").find("23456") == std::string::npos);
  // Withdrawn when BIRD stops
  b.stop();
  CHECK(wait_for([&] { return g.c("global rib -a ipv4 10.202.1.0/24").find("10.202.1.0/24") == std::string::npos; }, 5s));
}
