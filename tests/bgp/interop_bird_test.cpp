// cnf's BGP part against real BIRD 2 and GoBGP, each in its own network namespace joined by a veth
// (root). The cnf side runs as in the agent: the part on an event loop, its learned routes
// put into a route_table that programs the kernel of its namespace. Checks: the session
// comes up, prefixes go both ways and into both kernels, cnf's withdraw reaches BIRD,
// BIRD stopping withdraws its prefixes from cnf's kernel, a wrong AS is refused with a
// logged reason, and cnf's stop() reaches BIRD as a Cease.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include "interop_fixture.hpp"

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using cnf_test::enter_netns;
using cnf_test::test_netns;
using namespace cnf_test::bgp;  // bird, gobgp, cnf_side, table_sink, capture_log, wait_for

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

std::string bird_conf(std::uint32_t cnf_as, const std::string& password = {}, const std::string& extra = {}) {
  return "router id 10.99.0.1;\n"
         "protocol device { scan time 10; }\n"
         "protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; learn off; }\n"
         "protocol static { ipv4; route 10.200.1.0/24 blackhole; route 10.200.2.0/24 blackhole; }\n"
         "protocol bgp cnf { local 10.99.0.1 as 64512; neighbor 10.99.0.2 as " + std::to_string(cnf_as) + ";\n"
         "  ipv4 { import all; export where source = RTS_STATIC; next hop self; };\n"
         "  direct;\n" + (password.empty() ? std::string() : "  password \"" + password + "\";\n") + extra +
         "  hold time 9; connect retry time 1; connect delay time 0; error wait time 1, 2; }\n";
}

std::string gobgp_conf() {
  return "[global.config]\n  as = 64512\n  router-id = \"10.98.0.1\"\n  port = 179\n  local-address-list = [\"10.98.0.1\"]\n"
         "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"10.98.0.2\"\n    peer-as = 64512\n"
         "  [neighbors.transport.config]\n    local-address = \"10.98.0.1\"\n"
         "  [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n"
         "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n";
}

}  // namespace
CATCH_REGISTER_LISTENER(gate)

TEST_CASE("bgp interop: cnf and BIRD 2 in two namespaces (iBGP)", "[integration][bgp]") {
  test_netns ns_cnf, ns_bird;
  cnf_test::veth_between(ns_cnf, "c0", ns_bird, "b0");
  ns_cnf.exec_or_throw("ip addr add 10.99.0.2/24 dev c0");
  ns_bird.exec_or_throw("ip addr add 10.99.0.1/24 dev b0");
  cnf_test::temp_dir dir("/tmp/cnf-bgp-bird-test-");
  bird b(ns_bird, dir.path);
  b.start(bird_conf(64512));

  enter_netns in(ns_cnf);  // the loop, the route table and the speaker's sockets live here
  capture_log log;
  cnf::event_loop loop;
  std::thread loop_thread([&] { loop.run(); });
  struct joiner {
    cnf::event_loop& l;
    std::thread& t;
    ~joiner() { l.stop(); if (t.joinable()) t.join(); }
  } join_loop{loop, loop_thread};

  // Everything the part and the table do runs on the loop's thread, as in the agent.
  auto on_loop = [&](auto f) {
    std::promise<void> done;
    loop.post([&] { f(); done.set_value(); });
    done.get_future().wait();
  };
  std::unique_ptr<cnf::route_table> rt;
  std::unique_ptr<table_sink> sink;
  std::unique_ptr<cnf::bgp::routing> part;
  std::string start_error = "not started";
  on_loop([&] {
    cnf::route_table::options ro;
    ro.protocol = 81;
    rt = std::make_unique<cnf::route_table>(loop, ro);
    rt->set_ready(true);
    sink = std::make_unique<table_sink>(*rt);
    cnf::bgp::routing_settings s;
    s.as_number = 64512;
    s.hold_time = 9;
    s.connect_retry = 1000ms;
    part = std::make_unique<cnf::bgp::routing>(s, &loop, &log);
    cnf::node_info self;
    self.name = "cnf-node";
    self.addresses = {cnf::ip_prefix::parse("10.99.0.2/24", true).value()};
    start_error = "";
    if (auto r = part->start(self, *sink); !r) start_error = r.error().message;
    part->upsert_peer({"bird", cnf::ip_address::parse("10.99.0.1").value(), 64512, "global"});
    part->advertise(cnf::ip_prefix::parse("10.244.1.0/26").value());
  });
  struct stopper {
    std::function<void()> f;
    ~stopper() { f(); }
  } stop_part{[&] { on_loop([&] { if (part) part->stop(); part.reset(); sink.reset(); rt.reset(); }); }};

  REQUIRE(start_error == "");
  auto established = [&] { return sink->peer("bird").state == "Established"; };
  auto kernel = [&](const char* dst) { return ns_cnf.exec("ip route show " + std::string(dst)).output; };

  INFO(log.all());
  REQUIRE(wait_for(established));
  // BIRD's prefixes: in the sink, then in this namespace's kernel via BIRD's address
  REQUIRE(wait_for([&] { return kernel("10.200.1.0/24").find("via 10.99.0.1 dev c0") != std::string::npos; }));
  CHECK(wait_for([&] { return kernel("10.200.2.0/24").find("via 10.99.0.1") != std::string::npos; }));
  CHECK(kernel("10.200.1.0/24").find("proto 81") != std::string::npos);
  // cnf's prefix: in BIRD's table, and in BIRD's kernel via cnf's address
  CHECK(wait_for([&] { return b.c("show route 10.244.1.0/26").find("10.244.1.0/26") != std::string::npos; }));
  CHECK(wait_for([&] { return ns_bird.exec("ip route show 10.244.1.0/26").output.find("via 10.99.0.2") != std::string::npos; }));

  // cnf withdraws: BIRD forgets it
  on_loop([&] { part->withdraw(cnf::ip_prefix::parse("10.244.1.0/26").value()); });
  CHECK(wait_for([&] { return b.c("show route 10.244.1.0/26").find("10.244.1.0/26") == std::string::npos; }));

  // BIRD stops: its prefixes leave cnf's kernel (a Cease, no hold-timer wait)
  b.stop();
  CHECK(wait_for([&] { return kernel("10.200.1.0/24").empty(); }, 5s));
  CHECK(!established());

  // A wrong AS: cnf expects 64999, BIRD says 64512 -> refused, with the reason logged
  b.start(bird_conf(64512));
  REQUIRE(wait_for(established));
  on_loop([&] { part->upsert_peer({"bird", cnf::ip_address::parse("10.99.0.1").value(), 64999, "global"}); });
  CHECK(wait_for([&] { return log.has("Bad Peer AS") && log.has("configured AS 64999"); }));
  std::this_thread::sleep_for(1500ms);
  CHECK(!established());
  CHECK_THAT(sink->peer("bird").info, Catch::Contains("Bad Peer AS"));

  // Back to the right AS, then stop(): BIRD hears a Cease
  on_loop([&] { part->upsert_peer({"bird", cnf::ip_address::parse("10.99.0.1").value(), 64512, "global"}); });
  REQUIRE(wait_for(established));
  on_loop([&] { part->stop(); });
  CHECK(wait_for([&] { return b.c("show protocols all cnf").find("Administrative shutdown") != std::string::npos; }, 5s));
  INFO(b.c("show protocols all cnf"));
}

TEST_CASE("bgp interop: cnf with GoBGP, and one ECMP route from BIRD and GoBGP", "[integration][bgp]") {
  if (cnf_test::run("command -v gobgpd && command -v gobgp").status != 0) {
    cnf_test::exit_77_skipped("GoBGP is not installed (scripts/install-deps.sh installs gobgpd)");
  }
  test_netns ns_cnf, ns_bird, ns_gobgp;
  cnf_test::veth_between(ns_cnf, "c0", ns_bird, "b0");
  cnf_test::veth_between(ns_cnf, "c1", ns_gobgp, "g0");
  ns_cnf.exec_or_throw("ip addr add 10.99.0.2/24 dev c0 && ip addr add 10.98.0.2/24 dev c1");
  ns_bird.exec_or_throw("ip addr add 10.99.0.1/24 dev b0");
  ns_gobgp.exec_or_throw("ip addr add 10.98.0.1/24 dev g0 && ip link set lo up");
  cnf_test::temp_dir dir("/tmp/cnf-bgp-gobgp-test-");
  bird b(ns_bird, dir.path);
  b.start(bird_conf(64512));
  gobgp g(ns_gobgp, dir.path);
  g.start(gobgp_conf());

  enter_netns in(ns_cnf);
  cnf_side cnf;
  // GoBGP's session from c1's own address, not the node's (10.99.0.2): GoBGP refuses a connection
  // from an address that is not its neighbor's, and the session would wait for GoBGP to connect
  auto to_gobgp = peer("gobgp", "10.98.0.1", 64512);
  to_gobgp.bind_source = false;
  cnf.start({"10.99.0.2/24", "10.98.0.2/24"}, {peer("bird", "10.99.0.1", 64512), to_gobgp});
  REQUIRE(cnf.start_error == "");
  INFO(cnf.log.all());
  auto kernel = [&](const char* dst) { return ns_cnf.exec("ip route show " + std::string(dst)).output; };
  REQUIRE(wait_for([&] { return cnf.sink->peer("gobgp").state == "Established" && cnf.sink->peer("bird").state == "Established"; }));

  // GoBGP injects a prefix: it reaches cnf's kernel via GoBGP's address
  g.c("global rib add -a ipv4 10.201.1.0/24");
  REQUIRE(wait_for([&] { return kernel("10.201.1.0/24").find("via 10.98.0.1 dev c1") != std::string::npos; }));
  // cnf's prefix reaches GoBGP with cnf's address as next hop
  cnf.on_loop([&] { cnf.part->advertise(cnf::ip_prefix::parse("10.244.7.0/26").value()); });
  CHECK(wait_for([&] {
    auto r = g.c("global rib -a ipv4 10.244.7.0/26");
    return r.find("10.244.7.0/26") != std::string::npos && r.find("10.98.0.2") != std::string::npos;
  }));
  // iBGP split horizon: GoBGP's prefix is not passed on to BIRD
  std::this_thread::sleep_for(300ms);
  CHECK(b.c("show route 10.201.1.0/24").find("10.201.1.0/24") == std::string::npos);

  // The same prefix from BIRD and GoBGP, equal attributes: one route, two next hops
  g.c("global rib add -a ipv4 10.200.1.0/24 origin igp");
  CHECK(wait_for([&] {
    auto r = kernel("10.200.1.0/24");
    return r.find("nexthop via 10.99.0.1") != std::string::npos && r.find("nexthop via 10.98.0.1") != std::string::npos;
  }));
  INFO(kernel("10.200.1.0/24"));

  // GoBGP withdraws, then stops: its next hop and its prefix go
  g.c("global rib del -a ipv4 10.200.1.0/24");
  CHECK(wait_for([&] { auto r = kernel("10.200.1.0/24"); return r.find("via 10.99.0.1") != std::string::npos && r.find("10.98.0.1") == std::string::npos; }));
  g.stop();
  CHECK(wait_for([&] { return kernel("10.201.1.0/24").empty(); }, 5s));
}

TEST_CASE("bgp interop: TCP MD5 (RFC 2385) with BIRD: the right password peers, a wrong one never does", "[integration][bgp]") {
  test_netns ns_cnf, ns_bird;
  cnf_test::veth_between(ns_cnf, "c0", ns_bird, "b0");
  ns_cnf.exec_or_throw("ip addr add 10.99.0.2/24 dev c0");
  ns_bird.exec_or_throw("ip addr add 10.99.0.1/24 dev b0");
  cnf_test::temp_dir dir("/tmp/cnf-bgp-md5-test-");
  bird b(ns_bird, dir.path);
  b.start(bird_conf(64512, "s3cret"));
  enter_netns in(ns_cnf);
  const cnf::peer_config peer{"bird", cnf::ip_address::parse("10.99.0.1").value(), 64512, "global"};
  {
    cnf_side cnf;
    cnf.start({"10.99.0.2/24"}, {peer}, "s3cret");
    REQUIRE(cnf.start_error == "");
    INFO(cnf.log.all());
    CHECK(wait_for([&] { return cnf.sink->peer("bird").state == "Established"; }));
    CHECK(wait_for([&] { return ns_cnf.exec("ip route show 10.200.1.0/24").output.find("via 10.99.0.1") != std::string::npos; }));
  }
  {
    cnf_side cnf;
    cnf.start({"10.99.0.2/24"}, {peer}, "wrong");
    REQUIRE(cnf.start_error == "");
    std::this_thread::sleep_for(3s);
    CHECK(cnf.sink->peer("bird").state != "Established");
    CHECK(b.c("show protocols cnf").find("Established") == std::string::npos);
  }
  {
    cnf_side cnf;  // and none at all
    cnf.start({"10.99.0.2/24"}, {peer});
    std::this_thread::sleep_for(2s);
    CHECK(cnf.sink->peer("bird").state != "Established");
  }
}

TEST_CASE("bgp interop: graceful restart helper keeps BIRD's routes through a crash, until its End-of-RIB", "[integration][bgp]") {
  test_netns ns_cnf, ns_bird;
  cnf_test::veth_between(ns_cnf, "c0", ns_bird, "b0");
  ns_cnf.exec_or_throw("ip addr add 10.99.0.2/24 dev c0");
  ns_bird.exec_or_throw("ip addr add 10.99.0.1/24 dev b0");
  cnf_test::temp_dir dir("/tmp/cnf-bgp-gr-test-");
  const std::string gr = "  graceful restart on; graceful restart time 30;\n";
  bird b(ns_bird, dir.path);
  b.start(bird_conf(64512, {}, gr));
  enter_netns in(ns_cnf);
  cnf_side cnf;
  cnf.start({"10.99.0.2/24"}, {{"bird", cnf::ip_address::parse("10.99.0.1").value(), 64512, "global"}});
  REQUIRE(cnf.start_error == "");
  INFO(cnf.log.all());
  auto kernel = [&](const char* dst) { return ns_cnf.exec("ip route show " + std::string(dst)).output; };
  REQUIRE(wait_for([&] { return kernel("10.200.2.0/24").find("via 10.99.0.1") != std::string::npos; }));
  b.stop(SIGKILL);  // no Cease: the connection just goes
  CHECK(wait_for([&] { return cnf.log.has("graceful restart"); }, 5s));
  std::this_thread::sleep_for(1s);
  CHECK(kernel("10.200.1.0/24").find("via 10.99.0.1") != std::string::npos);  // kept, stale
  CHECK(kernel("10.200.2.0/24").find("via 10.99.0.1") != std::string::npos);
  // BIRD comes back with one static route less: after its End-of-RIB that one is gone
  std::string conf = bird_conf(64512, {}, gr);
  conf.replace(conf.find(" route 10.200.2.0/24 blackhole;"), std::string(" route 10.200.2.0/24 blackhole;").size(), "");
  b.start(conf);
  REQUIRE(wait_for([&] { return cnf.sink->peer("bird").state == "Established"; }));
  CHECK(wait_for([&] { return kernel("10.200.2.0/24").empty(); }, 10s));
  CHECK(kernel("10.200.1.0/24").find("via 10.99.0.1") != std::string::npos);
}
