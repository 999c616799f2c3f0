// The Kubernetes network policy suite's model, shared by the one-node truth table
// (truth_table_test.cpp: the plugins driven directly) and the one in `cnf lab`
// (lab_truth_table_test.cpp: agents on several nodes, policies through `cnf apply`):
//   - the pods: namespaces x, y, z with pods a, b, c each (label pod=<name>; namespace label
//     ns=<name>), and the container ports they name (pod_ports);
//   - the cases: policies as the datastore holds them (api, namespace, name, JSON spec) and the
//     rule that says which (from, to, protocol, port) passes; consecutive cases that share a
//     policy key update it in place (policies updated live);
//   - the prober: servers on TCP and UDP 80 and 81 in every pod, and every one of the
//     9 x 9 x 4 probes sent at once, with one timeout;
//   - the expected matrices and a readable diff.
// Addresses may be IPv4 or IPv6 (the prober and the ipBlock case follow the pods' family).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace truth_table {

struct pod_ref {
  std::string ns, name, ip;
  std::string netns_path;  ///< where its servers listen and its probes start
  std::string node;        ///< "" on one node
  std::string key() const { return ns + "/" + name; }
};

/// The nine pods in the suite's order (x/a, x/b, ..., z/c), without addresses.
inline std::vector<pod_ref> suite_pods() {
  std::vector<pod_ref> v;
  for (const char* ns : {"x", "y", "z"})
    for (const char* n : {"a", "b", "c"}) v.push_back({ns, n, "", "", ""});
  return v;
}

struct port_name {
  std::string name, protocol;
  int port = 0;
};
/// The container ports every pod names, as the suite's pods do (serve-80-tcp, ...), plus
/// "web", which is TCP 80 on pods a and c but TCP 81 on pods b: a policy naming it opens a
/// different number on different pods.
inline std::vector<port_name> pod_ports(const std::string& pod) {
  return {{"serve-80-tcp", "TCP", 80}, {"serve-81-tcp", "TCP", 81}, {"serve-80-udp", "UDP", 80}, {"serve-81-udp", "UDP", 81},
          {"web", "TCP", pod == "b" ? 81 : 80}};
}

enum class api { k8s, calico, calico_global };
struct policy_doc {
  api kind;
  std::string ns, name;  ///< ns empty for a GlobalNetworkPolicy
  std::string spec;      ///< JSON
  /// The same policy in the next case (same kind, namespace and name): updated in place.
  std::string key() const { return std::to_string(static_cast<int>(kind)) + "/" + ns + "/" + name; }
};

using allow_fn = std::function<bool(const pod_ref& from, const pod_ref& to, const std::string& proto, int port)>;

struct test_case {
  std::string name;
  std::vector<policy_doc> policies;
  allow_fn allowed;
  bool ci = true;  ///< in the lab's CI subset (the one-node test runs every case)
  /// Namespace labels besides ns=<name>, for this case only.
  std::map<std::string, std::map<std::string, std::string>> ns_labels = {};
};

/// The address of pod "ns/name" among `pods`.
inline std::string ip_of(const std::vector<pod_ref>& pods, const std::string& key) {
  for (auto& p : pods)
    if (p.key() == key) return p.ip;
  throw std::runtime_error("no pod " + key);
}

/// The cases, in the order they run (each one live after the previous). `pod_cidr` holds
/// every pod address.
inline std::vector<test_case> cases(const std::vector<pod_ref>& pods, const std::string& pod_cidr) {
  auto knp = [](std::string ns, std::string name, std::string spec) { return policy_doc{api::k8s, std::move(ns), std::move(name), std::move(spec)}; };
  auto cnp = [](std::string ns, std::string name, std::string spec) { return policy_doc{api::calico, std::move(ns), std::move(name), std::move(spec)}; };
  auto gnp = [](std::string name, std::string spec) { return policy_doc{api::calico_global, "", std::move(name), std::move(spec)}; };
  const std::string yb = ip_of(pods, "y/b") + (ip_of(pods, "y/b").find(':') == std::string::npos ? "/32" : "/128");
  return {
      {"no policies: everything reaches everything", {}, [](auto&, auto&, auto&, int) { return true; }},
      {"default deny ingress in x",
       {knp("x", "deny", R"j({"podSelector": {}, "policyTypes": ["Ingress"]})j")},
       [](auto&, auto& to, auto&, int) { return to.ns != "x"; }},
      {"x/a: allow from namespace y only",
       {knp("x", "from-y", R"j({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})j")},
       [](auto& from, auto& to, auto&, int) { return !(to.ns == "x" && to.name == "a") || from.ns == "y"; }},
      {"x/a: allow from pods b in any namespace, port 81 only",
       {knp("x", "b-81", R"j({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 81}]}]})j")},
       [](auto& from, auto& to, auto& proto, int port) { return !(to.ns == "x" && to.name == "a") || (from.name == "b" && proto == "TCP" && port == 81); },
       false},
      {"x/a: allow from an ipBlock with an except (y/b's address)",
       {knp("x", "ipblock", R"j({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"ipBlock": {"cidr": ")j" + pod_cidr +
                                R"j(", "except": [")j" + yb + R"j("]}}]}]})j")},
       [](auto& from, auto& to, auto&, int) { return !(to.ns == "x" && to.name == "a") || !(from.ns == "y" && from.name == "b"); }},
      {"egress from y: only to namespace z, port 80 to 80 (endPort)",
       {knp("y", "egress", R"j({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}], "ports": [{"port": 80, "endPort": 80}]}]})j")},
       [](auto& from, auto& to, auto& proto, int port) { return from.ns != "y" || (to.ns == "z" && proto == "TCP" && port == 80); }},
      {"z: a port range, TCP 80 to 81 from namespace x only",
       {knp("z", "range", R"j({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}], "ports": [{"protocol": "TCP", "port": 80, "endPort": 81}]}]})j")},
       [](auto& from, auto& to, auto& proto, int) { return to.ns != "z" || (from.ns == "x" && proto == "TCP"); },
       false},
      {"y: a named port, ingress to \"web\" only (TCP 80 on a and c, TCP 81 on b)",
       {knp("y", "named", R"j({"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]})j")},
       [](auto&, auto& to, auto& proto, int port) { return to.ns != "y" || (proto == "TCP" && port == (to.name == "b" ? 81 : 80)); }},
      {"z: a named port on egress, only to \"serve-81-udp\" of any pod",
       {knp("z", "named-out", R"j({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"protocol": "UDP", "port": "serve-81-udp"}]}]})j")},
       [](auto& from, auto&, auto& proto, int port) { return from.ns != "z" || (proto == "UDP" && port == 81); },
       false},
      {"two policies on x/c add up (from x/a, and from z)",
       {knp("x", "c-from-a", R"j({"podSelector": {"matchLabels": {"pod": "c"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]})j"),
        knp("x", "c-from-z", R"j({"podSelector": {"matchLabels": {"pod": "c"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]})j")},
       [](auto& from, auto& to, auto&, int) { return !(to.ns == "x" && to.name == "c") || (from.ns == "x" && from.name == "a") || from.ns == "z"; }},
      {"updated live: c-from-a now allows x/b and UDP only, c-from-z deleted",
       {knp("x", "c-from-a", R"j({"podSelector": {"matchLabels": {"pod": "c"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"protocol": "UDP", "port": 80}, {"protocol": "UDP", "port": 81}]}]})j")},
       [](auto& from, auto& to, auto& proto, int) { return !(to.ns == "x" && to.name == "c") || (from.ns == "x" && from.name == "b" && proto == "UDP"); }},
      {"namespace labels: y gains team=blue, x/b allows from team=blue",
       {knp("x", "from-blue", R"j({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]})j")},
       [](auto& from, auto& to, auto&, int) { return !(to.ns == "x" && to.name == "b") || from.ns == "y"; },
       false,
       {{"y", {{"team", "blue"}}}}},
      {"Calico: a GlobalNetworkPolicy (order 1) denies port 81 to every pod c before a K8s allow",
       {gnp("deny-81-c", R"j({"order": 1, "selector": "pod == 'c'", "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [81]}}, {"action": "Pass"}]})j"),
        knp("z", "allow-all", R"j({"podSelector": {}, "ingress": [{}]})j")},
       [](auto&, auto& to, auto& proto, int port) { return !(to.name == "c" && proto == "TCP" && port == 81); }},
      {"Calico: order in y: allow from pods a of every namespace (10), deny from x (20), allow the rest (30)",
       {cnp("y", "from-a", R"j({"order": 10, "selector": "all()", "ingress": [{"action": "Allow", "source": {"namespaceSelector": "all()", "selector": "pod == 'a'"}}]})j"),
        cnp("y", "deny-x", R"j({"order": 20, "selector": "all()", "ingress": [{"action": "Deny", "source": {"namespaceSelector": "ns == 'x'"}}]})j"),
        cnp("y", "rest", R"j({"order": 30, "selector": "all()", "ingress": [{"action": "Allow"}]})j")},
       [](auto& from, auto& to, auto&, int) { return to.ns != "y" || from.name == "a" || from.ns != "x"; }},
      {"Calico: Pass from x to pods b goes to the profiles past a K8s default deny in z; the rest ends the tier",
       {gnp("pass-x", R"j({"order": 1, "selector": "pod == 'b'", "ingress": [{"action": "Pass", "source": {"namespaceSelector": "ns == 'x'"}}]})j"),
        knp("z", "deny", R"j({"podSelector": {}, "policyTypes": ["Ingress"]})j")},
       [](auto& from, auto& to, auto&, int) { return to.name == "b" ? from.ns == "x" : to.ns != "z"; }},
  };
}

using matrix = std::vector<std::vector<bool>>;
struct probe_key {
  std::string proto;
  int port;
  friend auto operator<=>(const probe_key&, const probe_key&) = default;
  std::string str() const { return proto + "/" + std::to_string(port); }
};
inline const std::vector<probe_key>& probe_keys() {
  static const std::vector<probe_key> k = {{"TCP", 80}, {"TCP", 81}, {"UDP", 80}, {"UDP", 81}};
  return k;
}
using matrices = std::map<probe_key, matrix>;

/// What the case lets through; a pod always reaches itself (never leaves the pod).
inline matrices expected(const std::vector<pod_ref>& pods, const test_case& tc) {
  matrices out;
  for (auto& k : probe_keys()) {
    matrix m(pods.size(), std::vector<bool>(pods.size()));
    for (std::size_t i = 0; i < pods.size(); ++i)
      for (std::size_t j = 0; j < pods.size(); ++j) m[i][j] = i == j || tc.allowed(pods[i], pods[j], k.proto, k.port);
    out[k] = std::move(m);
  }
  return out;
}

/// The matrices side by side, rows from, columns to: '.' passes, 'X' does not; a cell that
/// differs from `want` is shown as '!' (passed, should not) or '?' (blocked, should pass).
inline std::string diff(const std::vector<pod_ref>& pods, const matrices& want, const matrices& got) {
  std::string s;
  for (auto& k : probe_keys()) {
    const auto& w = want.at(k);
    const auto& g = got.at(k);
    if (w == g) continue;
    s += k.str() + " (from \\ to; '.' passes, 'X' blocked, '!' passed but should not, '?' blocked but should pass)\n        ";
    for (auto& p : pods) s += p.key() + " ";
    s += "\n";
    for (std::size_t i = 0; i < pods.size(); ++i) {
      s += "   " + pods[i].key() + (pods[i].node.empty() ? "  " : " ") + " ";
      for (std::size_t j = 0; j < pods.size(); ++j) s += std::string(1, w[i][j] == g[i][j] ? (g[i][j] ? '.' : 'X') : (g[i][j] ? '!' : '?')) + "   ";
      if (!pods[i].node.empty()) s += " (" + pods[i].node + ")";
      s += "\n";
    }
  }
  return s;
}

/// The calling thread inside the namespace at `path` for the object's lifetime.
class enter_path {
 public:
  explicit enter_path(const std::string& path) {
    old_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    const bool ok = old_ >= 0 && fd >= 0 && ::setns(fd, CLONE_NEWNET) == 0;
    const std::string why = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    if (!ok) {
      if (old_ >= 0) ::close(old_);
      throw std::runtime_error("enter " + path + ": " + why);
    }
  }
  ~enter_path() {
    if (::setns(old_, CLONE_NEWNET) != 0) std::fprintf(stderr, "cannot return to the original netns: %s\n", std::strerror(errno));
    ::close(old_);
  }
  enter_path(const enter_path&) = delete;
  enter_path& operator=(const enter_path&) = delete;

 private:
  int old_ = -1;
};

/// An IPv4 or IPv6 socket address; `len` is the size to pass with it.
struct socket_address {
  sockaddr_storage storage{};
  socklen_t len = 0;
  int family = AF_INET;
  sockaddr* get() { return reinterpret_cast<sockaddr*>(&storage); }
};

inline socket_address address(const std::string& ip, int port) {
  socket_address a;
  if (ip.find(':') != std::string::npos) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(static_cast<std::uint16_t>(port));
    if (::inet_pton(AF_INET6, ip.c_str(), &s6->sin6_addr) != 1) throw std::runtime_error("not an IPv6 address: " + ip);
    a.len = sizeof(sockaddr_in6);
    a.family = AF_INET6;
    return a;
  }
  auto* s4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  s4->sin_family = AF_INET;
  s4->sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, ip.c_str(), &s4->sin_addr) != 1) throw std::runtime_error("not an IPv4 address: " + ip);
  a.len = sizeof(sockaddr_in);
  return a;
}

/// Servers on TCP and UDP 80 and 81 in every pod (sockets of this process, opened inside the
/// pods' namespaces; the kernel completes TCP handshakes without accept()), and the probe.
class prober {
 public:
  explicit prober(std::vector<pod_ref> pods) : pods_(std::move(pods)) {
    for (auto& p : pods_) {
      enter_path in(p.netns_path);
      for (auto& k : probe_keys()) {
        const bool tcp = k.proto == "TCP";
        auto a = address(p.ip, k.port);
        int s = ::socket(a.family, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int one = 1;
        ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (s < 0 || ::bind(s, a.get(), a.len) != 0 || (tcp && ::listen(s, 64) != 0)) {
          const std::string why = std::strerror(errno);
          if (s >= 0) ::close(s);
          throw std::runtime_error("server " + k.str() + " in " + p.key() + " (" + p.ip + "): " + why);
        }
        fds_.push_back(s);
      }
    }
  }
  ~prober() {
    for (int fd : fds_) ::close(fd);
  }
  prober(const prober&) = delete;
  prober& operator=(const prober&) = delete;
  const std::vector<pod_ref>& pods() const { return pods_; }

  /// Every pair, port and protocol at once: a TCP connect that completes, a datagram that
  /// arrives, within `timeout` (a blocked connect or datagram is dropped, never refused).
  matrices probe(std::chrono::milliseconds timeout = std::chrono::milliseconds(700)) {
    const std::size_t n = pods_.size();
    matrices m;
    for (auto& k : probe_keys()) m[k] = matrix(n, std::vector<bool>(n, false));
    std::vector<pollfd> fds;
    std::vector<std::tuple<probe_key, std::size_t, std::size_t>> who;
    for (std::size_t i = 0; i < n; ++i) {
      enter_path in(pods_[i].netns_path);
      for (auto& k : probe_keys()) {
        if (k.proto == "UDP") {
          int s = ::socket(address(pods_[i].ip, 0).family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
          for (std::size_t j = 0; j < n; ++j) {
            auto a = address(pods_[j].ip, k.port);
            const std::string msg = std::to_string(i);
            ::sendto(s, msg.data(), msg.size(), 0, a.get(), a.len);
          }
          ::close(s);
          continue;
        }
        for (std::size_t j = 0; j < n; ++j) {
          auto a = address(pods_[j].ip, k.port);
          int s = ::socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
          if (::connect(s, a.get(), a.len) == 0) {
            m[k][i][j] = true;
            ::close(s);
            continue;
          }
          fds.push_back({s, POLLOUT, 0});
          who.emplace_back(k, i, j);
        }
      }
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (std::size_t open = fds.size(); open > 0;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0 || ::poll(fds.data(), fds.size(), static_cast<int>(left)) <= 0) break;
      for (std::size_t x = 0; x < fds.size(); ++x) {
        if (fds[x].fd < 0 || !(fds[x].revents & (POLLOUT | POLLERR | POLLHUP))) continue;
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fds[x].fd, SOL_SOCKET, SO_ERROR, &err, &len);
        auto& [k, i, j] = who[x];
        m[k][i][j] = err == 0;
        ::close(fds[x].fd);
        fds[x].fd = -1;
        --open;
      }
    }
    // The datagrams had the whole TCP timeout to arrive; a blocked connect takes all of it.
    const auto rest = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (rest.count() > 0) ::usleep(static_cast<useconds_t>(rest.count()) * 1000);
    for (auto& f : fds)
      if (f.fd >= 0) ::close(f.fd);
    for (std::size_t j = 0, x = 0; j < n; ++j)
      for (auto& k : probe_keys()) {
        const int fd = fds_[x++];
        char buf[16];
        if (k.proto == "UDP") {
          for (ssize_t got; (got = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
            const auto from = static_cast<std::size_t>(std::atoi(std::string(buf, static_cast<std::size_t>(got)).c_str()));
            if (from < n) m[k][from][j] = true;
          }
        } else {
          // Empty the accept queue, or the next probe finds it full and its SYNs dropped.
          for (int c; (c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) ::close(c);
        }
      }
    return m;
  }

 private:
  std::vector<pod_ref> pods_;
  std::vector<int> fds_;  ///< per pod, in probe_keys() order
};

}  // namespace truth_table
