// What the agent tests share: agents started inside node namespaces and stopped by PID,
// their health endpoints, profiles, and the datastore they share.
#pragma once
#include "../integration/netns_harness.hpp"

#include <cnf/datastore.hpp>
#include <cnf/loader.hpp>
#include <cnf/profile.hpp>

#include <boost/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>

namespace agent_test {

using cnf_test::read_file;
using cnf_test::run;
using cnf_test::test_netns;
using namespace std::chrono_literals;

inline const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";

inline std::string ip_binary() {
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

inline bool wait_for(const std::function<bool()>& f, std::chrono::milliseconds limit = 15s) {
  for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < limit;) {
    if (f()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return f();
}

/// GET 127.0.0.1:port/path inside `ns`: "<status> <body>", or "" when nothing answers.
inline std::string http_get(const test_netns& ns, unsigned port, const std::string& path) {
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

inline constexpr unsigned health_port = 9099;

struct node_setup {
  test_netns& ns;
  std::string name;
  std::string address;  // for the profile ("autodetect" or a CIDR)
  std::string profile, log;
};

/// A node's profile: direct routing, calico-ipam with one pool, the given [datastore] section.
inline std::string profile_with(const std::string& name, const std::string& addr, const std::string& datastore_section, const std::string& log) {
  return "[node]\nname = \"" + name + "\"\nipv4_address = \"" + addr + "\"\nlabels = { zone = \"z1\" }\n\n" + datastore_section + "\n" +
         "[ipam]\nplugin = \"calico-ipam\"\n[[ipam.pools]]\ncidr = \"10.244.0.0/16\"\nblock_size = 26\n\n" +
         "[routing]\nplugin = \"direct\"\n\n[agent]\nhealth_port = " + std::to_string(health_port) + "\n\n" +
         "[cni]\nlog_file = \"" + log + "\"\nlog_level = \"debug\"\n";
}

/// The same on a local datastore directory.
inline std::string profile_text(const std::string& name, const std::string& addr, const std::filesystem::path& store, const std::string& log) {
  return profile_with(name, addr, "[datastore]\nplugin = \"local\"\ndir = \"" + store.string() + "\"\nfsync = false\n", log);
}

/// The agent of a node, started inside its namespace; returns once it serves its health
/// endpoints (it may not be in sync yet).
inline std::unique_ptr<bg_process> launch_agent(const node_setup& n) {
  const auto before = read_file(n.log).size();
  auto p = std::make_unique<bg_process>(n.ns, std::vector<std::string>{cnf_bin, "agent", "--profile", n.profile}, n.log);
  const std::string tag = " cnf[" + std::to_string(p->pid()) + "] agent: health, metrics and status on";
  if (!wait_for([&] { return read_file(n.log).find(tag, before) != std::string::npos; }))
    throw std::runtime_error("agent of " + n.name + " not serving health after 15 s:\n" + read_file(n.log).substr(before));
  return p;
}

/// The agent of a node: started inside its namespace, in sync when its log says so.
inline std::unique_ptr<bg_process> start_agent(const node_setup& n) {
  const auto before = read_file(n.log).size();
  auto p = std::make_unique<bg_process>(n.ns, std::vector<std::string>{cnf_bin, "agent", "--profile", n.profile}, n.log);
  const std::string tag = " cnf[" + std::to_string(p->pid()) + "] agent: datastore in sync";
  if (!wait_for([&] { return read_file(n.log).find(tag, before) != std::string::npos; }))
    throw std::runtime_error("agent of " + n.name + " not in sync after 15 s:\n" + read_file(n.log).substr(before));
  return p;
}

/// The node agent's routes (its own protocol, 81: the CNI's pod routes keep 80).
inline std::string cnf_routes(const test_netns& ns) { return ns.ip("route show proto 81").output; }

/// The datastore the agents share, opened through the plugin the agents load.
inline cnf::any_datastore open_store(const std::string& profile_path) {
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
inline cnf::resource ipam_block(const std::string& cidr, const std::string& name, const std::string& node) {
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

/// A pod ADD on `node` through the CNI binary run in the node's namespace, as a runtime
/// does; returns the pod's first address (without prefix length). Throws when the ADD fails.
inline std::string add_pod(const test_netns& node, const std::string& profile, const test_netns& pod, const std::string& container_id) {
  const std::string conf = R"({"cniVersion":"1.0.0","name":"k8s-pod-network","type":"cnf","profile":")" + profile + "\"}";
  auto add = cnf_test::run_process({ip_binary(), "netns", "exec", node.name(), cnf_bin},
                                   {"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + container_id, "CNI_NETNS=" + pod.path(), "CNI_IFNAME=eth0",
                                    "CNI_PATH=" + std::string(CNF_TEST_BIN_DIR), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
                                   conf);
  if (add.status != 0) throw std::runtime_error("CNI ADD failed: " + add.describe());
  auto res = boost::json::parse(add.out).as_object();
  std::string ip(res.at("ips").as_array().at(0).as_object().at("address").as_string());
  return ip.substr(0, ip.find('/'));
}

/// The /26 block an address is in (calico-ipam's block size in these tests).
inline std::string block_of(const std::string& ip) {
  return cnf::ip_prefix(cnf::ip_address::parse(ip).value(), 26).canonical().to_string();
}

}  // namespace agent_test
