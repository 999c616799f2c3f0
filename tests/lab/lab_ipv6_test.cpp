// A dual-stack `cnf lab` (root): `up --ipv6` with examples/profiles/vxlan.toml (direct routing +
// vxlan, the pool CrossSubnet) on the default topology (k8s-m, k8s-w1, k8s-w2 on one subnet,
// k8s-w0 behind the router). The lab adds an IPv6 /64 per subnet, the nodes' IPv6 addresses and
// an IPv6 pool with the IPv4 pool's vxlanMode; every pod gets an address of each family. Every
// pod pair answers over IPv4 (`cnf lab ping`) and over IPv6 (`cnf lab ping -6`), and a capture
// in the router namespace shows IPv6 pod traffic inside UDP 4789 over IPv6 exactly for the pairs
// across subnets (vxlan-v6.calico), plain for the others.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/lab_env.hpp"
#include "../support/process.hpp"
#include "../support/root_gate.hpp"
#include "../support/vxlan_capture.hpp"

#include <boost/json.hpp>

#include <unistd.h>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>

CNF_TEST_ROOT_GATE("network namespaces");

namespace bj = boost::json;
using Catch::Matchers::Contains;
using cnf_test::capture;
using cnf_test::lab_env;
using cnf_test::sh;

namespace {

const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";
const std::string profile = std::string(CNF_TEST_SOURCE_DIR) + "/examples/profiles/vxlan.toml";

using pair_set = std::set<std::pair<std::string, std::string>>;

}  // namespace

TEST_CASE("cnf lab up --ipv6: dual-stack pods, every pair answers on both families, vxlan-v6.calico across subnets only", "[lab][ipv6]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  if (sh("command -v tcpdump").empty()) cnf_test::exit_77_skipped("tcpdump is not installed (scripts/install-deps.sh)");
  lab_env L("ipv6");
  REQUIRE(L.lab({"up", "--ipv6", "--profile", profile, "--pods-per-node", "1"}).status == 0);
  const std::string pre = "cnflab-" + L.id() + "-";

  // The state: an IPv6 /64 per subnet, an IPv6 address per node, and pods of both families.
  auto st = bj::parse(cnf_test::read_file(L.dir / "lab.json")).as_object();
  CHECK(st.at("ipv6").as_bool());
  std::map<std::string, std::int64_t> subnet_of_node, subnet_of_addr6;
  for (auto& n : st.at("nodes").as_array()) {
    auto& o = n.as_object();
    const std::string name(o.at("name").as_string()), a6(o.at("address6").as_string());
    subnet_of_node[name] = o.at("subnet").to_number<std::int64_t>();
    subnet_of_addr6[a6] = subnet_of_node[name];
    INFO("node " << name << " address6 " << a6);
    CHECK(a6.rfind("fd00:cf:", 0) == 0);
    // The address is on eth0, and the node's default IPv6 route is the router's.
    CHECK_THAT(sh("ip -n " + pre + name + " -6 -o addr show dev eth0"), Contains(a6 + "/64"));
    CHECK_THAT(sh("ip -n " + pre + name + " -6 route show default"), Contains("via fd00:cf:"));
  }
  REQUIRE(subnet_of_node.size() == 4);
  std::map<std::string, std::string> node_of_pod6;
  for (auto& p : st.at("pods").as_array()) {
    auto& o = p.as_object();
    std::string v4, v6;
    for (auto& ip : o.at("ips").as_array()) (std::string(ip.as_string()).find(':') == std::string::npos ? v4 : v6) = std::string(ip.as_string());
    INFO("pod " << o.at("name").as_string() << " v4 " << v4 << " v6 " << v6);
    CHECK(!v4.empty());
    CHECK(v6.rfind("fd00:10:244:", 0) == 0);  // the pool the lab added
    node_of_pod6[v6] = std::string(o.at("node").as_string());
  }
  REQUIRE(node_of_pod6.size() == 4);
  pair_set cross, same;
  for (auto& [a, na] : node_of_pod6)
    for (auto& [b, nb] : node_of_pod6)
      if (a != b) (subnet_of_node[na] != subnet_of_node[nb] ? cross : same).insert({a, b});
  REQUIRE(cross.size() == 6);
  REQUIRE(same.size() == 6);

  // Every pair answers on both families once the nodes know each other's tunnels.
  bool all = false;
  for (int i = 0; i < 50 && !all; ++i) {
    all = L.lab({"ping", "--timeout-ms", "500"}).status == 0 && L.lab({"ping", "-6", "--timeout-ms", "500"}).status == 0;
    if (!all) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  REQUIRE(all);

  // vxlan-v6.calico on every node; each node's IPv6 routes to blocks across the router go
  // through it, the ones on its own subnet do not.
  for (auto& [name, subnet] : subnet_of_node) {
    INFO("node " << name);
    CHECK_THAT(sh("ip -n " + pre + name + " -o link show vxlan-v6.calico"), Contains("vxlan-v6.calico"));
    std::size_t across = 0;
    for (auto& [other, os] : subnet_of_node)
      if (other != name && os != subnet) ++across;
    CHECK(sh("ip -n " + pre + name + " -6 route show proto 81 | grep -c 'dev vxlan-v6.calico'") == std::to_string(across) + "\n");
  }

  capture cap(pre + "router", "ip6 and (udp port 4789 or icmp6)", L.files.path / "ipv6.txt");
  auto pr = L.lab({"ping", "-6"});
  CHECK(pr.status == 0);
  CHECK_THAT(pr.out, Contains("12 answered, 0 failed") && Contains("ICMPv6"));
  auto s = cnf_test::parse_vxlan_capture(cap.stop(), /*v6=*/true);
  INFO("capture:\n" << cnf_test::read_file(L.files.path / "ipv6.txt"));
  CHECK(s.vxlan_pairs == cross);  // each pair across subnets, in the IPv6 tunnel
  CHECK(s.plain_pairs == same);   // each pair on one subnet, natively
  REQUIRE_FALSE(s.vxlan_outer.empty());
  for (auto& [a, b] : s.vxlan_outer) {
    INFO("VXLAN over IPv6 " << a << " -> " << b);
    REQUIRE(subnet_of_addr6.count(a));
    REQUIRE(subnet_of_addr6.count(b));
    CHECK(subnet_of_addr6.at(a) != subnet_of_addr6.at(b));
  }
  // IPv4 still works as before in the same lab.
  CHECK_THAT(L.lab({"ping"}).out, Contains("12 answered, 0 failed"));
  CHECK_THAT(L.lab({"status"}).out, Contains("fd00:cf:64::/64"));
}
