// `cnf agent` as the node agent with direct routing: two node namespaces joined by a veth on
// one subnet, one local datastore directory shared by both, one agent per node started
// inside its namespace and stopped by PID. Pods are added through the real CNI binary.
// Everything is checked in the kernel of the namespace concerned.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../integration/netns_harness.hpp"
#include "../support/root_gate.hpp"

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

namespace {

using cnf_test::read_file;
using cnf_test::run;
using cnf_test::test_netns;
using namespace std::chrono_literals;

const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";

std::string ip_binary() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (::access(p, X_OK) == 0) return p;
  throw std::runtime_error("ip(8) not found");
}

/// A background process inside a namespace (`ip netns exec NS argv...`), output to `log`;
/// SIGKILLed by its PID when it goes out of scope.
class bg_process {
 public:
  bg_process(const test_netns& ns, std::vector<std::string> argv, const std::string& log) {
    argv.insert(argv.begin(), {ip_binary(), "netns", "exec", ns.name()});
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execv(a[0], a.data());
      ::_exit(127);
    }
  }
  ~bg_process() { stop(SIGKILL); }
  bg_process(const bg_process&) = delete;
  bg_process& operator=(const bg_process&) = delete;
  pid_t pid() const { return pid_; }
  int stop(int sig) {
    if (pid_ <= 0) return status_;
    ::kill(pid_, sig);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {}
    pid_ = -1;
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return status_;
  }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

bool wait_for(const std::function<bool()>& f, std::chrono::milliseconds limit = 15s) {
  for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < limit;) {
    if (f()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return f();
}

/// GET 127.0.0.1:port/path inside `ns`: "<status> <body>", or "" when nothing answers.
std::string http_get(const test_netns& ns, unsigned port, const std::string& path) {
  cnf_test::enter_netns in(ns);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return "";
  }
  std::string req = "GET " + path + " HTTP/1.0\r\n\r\n";
  (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string resp;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) resp.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  auto body = resp.find("\r\n\r\n");
  if (resp.size() < 12 || body == std::string::npos) return "";
  return resp.substr(9, 3) + " " + resp.substr(body + 4);
}

constexpr unsigned health_port = 9099;

struct node_setup {
  test_netns& ns;
  std::string name;
  std::string address;  // for the profile ("autodetect" or a CIDR)
  std::string profile, log;
};

std::string profile_text(const std::string& name, const std::string& addr, const std::filesystem::path& store, const std::string& log) {
  return "[node]\nname = \"" + name + "\"\nipv4_address = \"" + addr + "\"\nlabels = { zone = \"z1\" }\n\n" +
         "[datastore]\nplugin = \"local\"\ndir = \"" + store.string() + "\"\nfsync = false\n\n" +
         "[ipam]\nplugin = \"calico-ipam\"\n[[ipam.pools]]\ncidr = \"10.244.0.0/16\"\nblock_size = 26\n\n" +
         "[routing]\nplugin = \"direct\"\n\n[agent]\nhealth_port = " + std::to_string(health_port) + "\n\n" +
         "[cni]\nlog_file = \"" + log + "\"\nlog_level = \"debug\"\n";
}

/// The agent of a node: started inside its namespace, in sync when its log says so.
std::unique_ptr<bg_process> start_agent(const node_setup& n) {
  const auto before = read_file(n.log).size();
  auto p = std::make_unique<bg_process>(n.ns, std::vector<std::string>{cnf_bin, "agent", "--profile", n.profile}, n.log);
  const std::string tag = " cnf[" + std::to_string(p->pid()) + "] agent: datastore in sync";
  if (!wait_for([&] { return read_file(n.log).find(tag, before) != std::string::npos; }))
    throw std::runtime_error("agent of " + n.name + " not in sync after 15 s:\n" + read_file(n.log).substr(before));
  return p;
}

std::string cnf_routes(const test_netns& ns) { return ns.ip("route show proto 80").output; }

/// The datastore the agents share, opened through the plugin the agents load.
cnf::any_datastore open_store(const std::string& profile_path) {
  auto p = cnf::load_profile(profile_path);
  if (!p) throw std::runtime_error(p.error().message);
  cnf::plugin_loader loader({std::filesystem::path(CNF_TEST_PLUGIN_DIR)});
  cnf::plugin_context ctx;
  ctx.node_name = "test";
  auto c = cnf::compose(*p, loader, {cnf::part::datastore}, ctx);
  if (!c) throw std::runtime_error(c.error().message);
  return c->datastore;
}

/// A valid, empty IPAMBlock affine to `node` (calico-ipam's shape).
cnf::resource ipam_block(const std::string& cidr, const std::string& name, const std::string& node) {
  boost::json::object spec;
  spec["cidr"] = cidr;
  spec["affinity"] = "host:" + node;
  boost::json::array alloc, unalloc;
  for (int i = 0; i < 64; ++i) {
    alloc.push_back(nullptr);
    unalloc.push_back(i);
  }
  spec["allocations"] = alloc;
  spec["unallocated"] = unalloc;
  spec["attributes"] = boost::json::array();
  spec["strictAffinity"] = false;
  spec["deleted"] = false;
  cnf::resource r;
  r.kind = "IPAMBlock";
  r.name = name;
  r.spec = boost::json::serialize(spec);
  return r;
}

}  // namespace

TEST_CASE("agents with direct routing: blocks routed via node addresses, restart changes nothing, bad input left alone",
          "[integration][agent]") {
  if (::access(cnf_bin.c_str(), X_OK) != 0) cnf_test::exit_77_skipped("cnf binary not built: " + cnf_bin);
  cnf_test::temp_dir dir("/tmp/cnf-agent-test-");
  test_netns a, b, pod;
  cnf_test::veth_between(a, "eth0", b, "eth0");
  a.exec_or_throw("ip addr add 192.168.77.1/24 dev eth0");
  b.exec_or_throw("ip addr add 192.168.77.2/24 dev eth0");
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
  const std::string conf = R"({"cniVersion":"1.0.0","name":"k8s-pod-network","type":"cnf","profile":")" + na.profile + "\"}";
  auto add = cnf_test::run_process({ip_binary(), "netns", "exec", a.name(), cnf_bin},
                                   {"CNI_COMMAND=ADD", "CNI_CONTAINERID=agent-test-1", "CNI_NETNS=" + pod.path(), "CNI_IFNAME=eth0",
                                    "CNI_PATH=" + std::string(CNF_TEST_BIN_DIR), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
                                   conf);
  INFO(add.describe());
  REQUIRE(add.status == 0);
  auto res = boost::json::parse(add.out).as_object();
  std::string pod_ip(res.at("ips").as_array().at(0).as_object().at("address").as_string());
  pod_ip = pod_ip.substr(0, pod_ip.find('/'));
  auto block = cnf::ip_prefix(cnf::ip_address::parse(pod_ip).value(), 26).canonical().to_string();

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
