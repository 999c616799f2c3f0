// `cnf agent` on a real etcd that goes away: an agent started while etcd is down serves
// /livez but is not ready and programs nothing; once etcd answers it syncs and routes.
// Killed mid-run, etcd takes readiness with it while the kernel keeps every route; back,
// the agent catches up with what changed meanwhile.
//
// etcd listens on the host's 127.0.0.1 only; each node namespace reaches it through a relay
// on the namespace's own 127.0.0.1 (tests/support/tcp_relay.hpp).
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/etcd_server.hpp"
#include "../support/root_gate.hpp"
#include "../support/tcp_relay.hpp"
#include "agent_support.hpp"

CNF_TEST_ROOT_GATE("network namespaces and routes");

using namespace agent_test;
using cnf_test::read_file;
using cnf_test::test_netns;
using namespace std::chrono_literals;

namespace {

std::string etcd_section(const std::string& endpoint) {
  return "[datastore]\nplugin = \"etcd\"\nendpoints = [\"" + endpoint + "\"]\nprefix = \"/cnf-agent-test\"\ntimeout_ms = 2000\n";
}

}  // namespace

TEST_CASE("an agent on etcd: not ready before its first sync, keeps the kernel while etcd is down, catches up after",
          "[integration][agent][etcd]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  if (auto why = cnf_test::etcd_server::unavailable_reason()) cnf_test::exit_77_skipped(*why);
  cnf_test::etcd_server etcd;
  cnf_test::temp_dir dir("/tmp/cnf-agent-etcd-test-");
  test_netns a, b, pod;
  cnf_test::veth_between(a, "eth0", b, "eth0");
  a.exec_or_throw("ip addr add 192.168.78.1/24 dev eth0");
  b.exec_or_throw("ip addr add 192.168.78.2/24 dev eth0");
  for (auto* n : {&a, &b}) n->exec_or_throw("ip route add default via 192.168.78.254 dev eth0");
  cnf_test::tcp_relay ra(a, etcd.client_port()), rb(b, etcd.client_port());
  node_setup na{a, "node-a", "192.168.78.1/24", (dir.path / "a.toml").string(), (dir.path / "a.log").string()};
  node_setup nb{b, "node-b", "192.168.78.2/24", (dir.path / "b.toml").string(), (dir.path / "b.log").string()};
  cnf_test::write_file(na.profile, profile_with(na.name, na.address, etcd_section(ra.endpoint()), na.log));
  cnf_test::write_file(nb.profile, profile_with(nb.name, nb.address, etcd_section(rb.endpoint()), nb.log));
  const auto host_profile = (dir.path / "host.toml").string();
  cnf_test::write_file(host_profile, etcd_section(etcd.endpoint()));
  auto ds = open_store(host_profile);

  // 1. etcd down when B's agent starts: alive, not ready, nothing programmed.
  etcd.kill();
  auto agent_b = launch_agent(nb);
  CHECK(http_get(b, health_port, "/livez") == "200 ok\n");
  std::this_thread::sleep_for(1s);
  CHECK(http_get(b, health_port, "/readyz").rfind("503 not ready", 0) == 0);
  CHECK(cnf_routes(b).empty());
  etcd.start();
  CHECK(wait_for([&] { return http_get(b, health_port, "/readyz") == "200 ready\n"; }, 30s));
  auto agent_a = start_agent(na);

  // A pod on A: B routes its block.
  const std::string pod_ip = add_pod(a, na.profile, pod, "agent-etcd-1");
  const auto block = block_of(pod_ip);
  INFO("B's cnf routes:\n" << cnf_routes(b));
  REQUIRE(wait_for([&] { return cnf_routes(b).find(block + " via 192.168.78.1 dev eth0") != std::string::npos; }));

  // 2. etcd killed mid-run: B says not ready and why, and keeps the kernel as it is.
  const auto routes_before = cnf_routes(b);
  const auto log_mark = read_file(nb.log).size();
  etcd.kill();
  CHECK(wait_for([&] { return http_get(b, health_port, "/readyz").rfind("503", 0) == 0; }, 30s));
  CHECK(read_file(nb.log).find("datastore down", log_mark) != std::string::npos);
  CHECK(cnf_routes(b) == routes_before);
  CHECK(http_get(b, health_port, "/livez") == "200 ok\n");
  CHECK(cnf_test::ping_ok(b, pod_ip));

  // 3. Back: B is ready again and routes a block that appeared after the outage.
  etcd.start();
  REQUIRE(ds.create(ipam_block("10.244.200.0/26", "10-244-200-0-26", "node-a")));
  CHECK(wait_for([&] { return cnf_routes(b).find("10.244.200.0/26 via 192.168.78.1 dev eth0") != std::string::npos; }, 30s));
  CHECK(wait_for([&] { return http_get(b, health_port, "/readyz") == "200 ready\n"; }, 30s));
  CHECK(cnf_routes(b).find(block + " via 192.168.78.1 dev eth0") != std::string::npos);
  INFO("B's log:\n" << read_file(nb.log).substr(log_mark));
  CHECK(read_file(nb.log).find("datastore in sync again", log_mark) != std::string::npos);
}
