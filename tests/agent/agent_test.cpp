// `cnf agent` as the node agent with direct routing: two node namespaces joined by a veth on
// one subnet, one local datastore directory shared by both, one agent per node started
// inside its namespace and stopped by PID. Pods are added through the real CNI binary.
// Everything is checked in the kernel of the namespace concerned.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/root_gate.hpp"
#include "agent_support.hpp"

#include <cnf/datastore.hpp>
#include <cnf/loader.hpp>
#include <cnf/profile.hpp>

#include <boost/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

CNF_TEST_ROOT_GATE("network namespaces and routes");

using namespace agent_test;
using cnf_test::test_netns;
using cnf_test::read_file;
using namespace std::chrono_literals;

TEST_CASE("agents with direct routing: blocks routed via node addresses, restart changes nothing, bad input left alone",
          "[integration][agent]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  cnf_test::temp_dir dir("/tmp/cnf-agent-test-");
  test_netns a, b, pod;
  cnf_test::veth_between(a, "eth0", b, "eth0");
  a.exec_or_throw("ip addr add 192.168.77.1/24 dev eth0");
  b.exec_or_throw("ip addr add 192.168.77.2/24 dev eth0");
  // A default route, as nodes have (a gateway that does not answer: no traffic leaves). The
  // pods' gateway 169.254.1.1 is answered by proxy ARP, which needs a route to it, and
  // autodetection on A picks the default route's interface.
  for (auto* n : {&a, &b}) n->exec_or_throw("ip route add default via 192.168.77.254 dev eth0");
  const auto store = dir.path / "store";
  node_setup na{a, "node-a", "autodetect", (dir.path / "a.toml").string(), (dir.path / "a.log").string()};
  node_setup nb{b, "node-b", "192.168.77.2/24", (dir.path / "b.toml").string(), (dir.path / "b.log").string()};
  for (auto* n : {&na, &nb}) cnf_test::write_file(n->profile, profile_text(n->name, n->address, store, n->log));

  // Before an agent runs, nothing answers; once it is in sync it is ready.
  CHECK(http_get(b, health_port, "/readyz").empty());
  auto agent_a = start_agent(na);
  auto agent_b = start_agent(nb);
  CHECK(http_get(a, health_port, "/livez") == "200 ok\n");
  CHECK(http_get(b, health_port, "/readyz") == "200 ready\n");
  CHECK(a.sysctl("net/ipv4/ip_forward") == "1");

  // node-a registered with its autodetected address.
  auto ds = open_store(na.profile);
  auto node_a = ds.get({"Node", "", "node-a"});
  REQUIRE(node_a);
  CHECK(node_a->spec.find("\"ipv4Address\":\"192.168.77.1/24\"") != std::string::npos);
  CHECK(node_a->labels.at("zone") == "z1");

  // A pod ADD on node A, through the CNI binary run in A's namespace.
  const std::string pod_ip = add_pod(a, na.profile, pod, "agent-test-1");
  const auto block = block_of(pod_ip);

  // B routes A's block via A's address; A blackholes it. Checked in each kernel.
  INFO("B's cnf routes:\n" << cnf_routes(b) << "A's cnf routes:\n" << cnf_routes(a));
  CHECK(wait_for([&] { return cnf_routes(b).find(block + " via 192.168.77.1 dev eth0") != std::string::npos; }));
  CHECK(wait_for([&] { return cnf_routes(a).find("blackhole " + block) != std::string::npos; }));
  CHECK(cnf_test::ping_ok(b, pod_ip));

  // cnf node status on B: node-a reachable directly.
  auto st = b.exec(cnf_bin + " node status --profile " + nb.profile);
  INFO(st.output);
  CHECK(st.ok());
  CHECK(st.output.find("IPv4 direct routing status") != std::string::npos);
  CHECK(st.output.find("| node-a ") != std::string::npos);
  CHECK(st.output.find("Reachable") != std::string::npos);

  SECTION("bad input: a malformed Node, a node on another subnet, a person's route over a pod block") {
    cnf::resource bad;
    bad.kind = "Node";
    bad.name = "node-bad";
    bad.spec = R"({"bgp":{"ipv4Address":"10.0.0.300/24"}})";
    REQUIRE(ds.create(bad));
    cnf::resource far;
    far.kind = "Node";
    far.name = "node-c";
    far.spec = R"({"bgp":{"ipv4Address":"10.99.0.5/24"}})";
    REQUIRE(ds.create(far));
    REQUIRE(ds.create(ipam_block("10.244.250.0/26", "10-244-250-0-26", "node-c")));
    // A person's route over a block node-a is about to get.
    b.exec_or_throw("ip route add 10.244.251.0/26 dev eth0 proto static");
    REQUIRE(ds.create(ipam_block("10.244.251.0/26", "10-244-251-0-26", "node-a")));

    CHECK(wait_for([&] { return read_file(nb.log).find("Node/node-bad: spec.bgp.ipv4Address: '10.0.0.300/24' is not an IPv4 address") != std::string::npos; }));
    CHECK(wait_for([&] { return read_file(nb.log).find("10.244.251.0/26") != std::string::npos; }));
    auto js = b.exec(cnf_bin + " node status -o json --profile " + nb.profile);
    INFO(js.output);
    REQUIRE(js.ok());
    auto j = boost::json::parse(js.output).as_object();
    CHECK(j.at("invalid").as_array().size() == 1);
    CHECK(j.at("conflicts").as_array().size() == 1);
    auto text = b.exec(cnf_bin + " node status --profile " + nb.profile).output;
    CHECK(text.find("1 node not on a subnet of this node, not routed directly: node-c") != std::string::npos);
    // The person's route is untouched, node-c's block is not routed, node-a's first block still is.
    CHECK(b.ip("route show 10.244.251.0/26").output.find("proto static") != std::string::npos);
    CHECK(cnf_routes(b).find("10.244.250.0/26") == std::string::npos);
    CHECK(cnf_routes(b).find(block + " via 192.168.77.1") != std::string::npos);
    CHECK(http_get(b, health_port, "/readyz") == "200 ready\n");
    auto metrics = http_get(b, health_port, "/metrics");
    CHECK(metrics.find("cnf_agent_invalid_nodes 1") != std::string::npos);
    CHECK(metrics.find("cnf_route_table_conflicts 1") != std::string::npos);
  }

  SECTION("restart safety: B's agent SIGKILLed and started again changes no cnf route") {
    const auto routes_before = cnf_routes(b);
    REQUIRE(routes_before.find(block) != std::string::npos);
    const std::string mon_log = (dir.path / "monitor.log").string();
    bg_process monitor(b, {ip_binary(), "monitor", "route"}, mon_log);
    std::this_thread::sleep_for(200ms);  // the monitor has subscribed
    CHECK(agent_b->stop(SIGKILL) == 128 + SIGKILL);
    agent_b = start_agent(nb);
    // Past its first apply (which runs right after the sync), plus a margin.
    std::this_thread::sleep_for(1s);
    monitor.stop(SIGTERM);
    const auto seen = read_file(mon_log);
    INFO("route monitor in B:\n" << seen);
    CHECK(seen.find("10.244.") == std::string::npos);
    CHECK(cnf_routes(b) == routes_before);
    CHECK(http_get(b, health_port, "/readyz") == "200 ready\n");
  }

  SECTION("SIGTERM: a clear log line, a clean exit, the kernel's routes stay") {
    const auto before = cnf_routes(a);
    const auto pid = agent_a->pid();
    CHECK(agent_a->stop(SIGTERM) == 0);
    const auto log = read_file(na.log);
    CHECK(log.find(" cnf[" + std::to_string(pid) + "] agent: signal 15: stopping") != std::string::npos);
    CHECK(log.find(" cnf[" + std::to_string(pid) + "] agent: stopped") != std::string::npos);
    CHECK(cnf_routes(a) == before);
  }
}
