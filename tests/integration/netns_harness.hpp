// tests/integration/netns_harness.hpp — throwaway network namespaces for integration tests.
//
//   cnf_test::test_netns node, pod;                  // cnf-t<pid>-<n>, deleted on scope exit
//   cnf_test::veth_between(node, "n0", pod, "p0");   // both ends up
//   node.exec("ip addr add 10.0.0.1/24 dev n0");
//   REQUIRE(cnf_test::ping_ok(pod, "10.0.0.1"));
//   auto j = cnf_test::json::parse(pod.exec("ip -j addr").output);
//
// Rules the harness keeps: every link/address/route/sysctl change happens inside a
// namespace it created; namespaces are made the way iproute2 makes them (unshare a
// network namespace in a scratch thread and bind-mount it on /var/run/netns/NAME) and
// removed in the destructor on every exit path (Catch2's REQUIRE throws, so RAII
// runs). Leftovers of crashed runs (cnf-t<deadpid>-*) are removed when the first
// namespace of a run is created. Failures to set up throw std::runtime_error (Catch2
// reports them as test failures).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

namespace cnf_test {

inline constexpr const char* netns_dir = "/var/run/netns";

struct command_result {
  int status = -1;          // exit status (-1: did not run / killed)
  std::string output;       // stdout and stderr together
  bool ok() const noexcept { return status == 0; }
};

/// Single-quotes a string for /bin/sh.
inline std::string shell_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

/// Runs a shell command, capturing stdout and stderr.
inline command_result run(const std::string& cmd) {
  command_result r;
  std::string full = cmd + " 2>&1";
  FILE* f = ::popen(full.c_str(), "r");
  if (!f) {
    r.output = "popen failed: " + std::string(std::strerror(errno));
    return r;
  }
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) r.output.append(buf, n);
  int st = ::pclose(f);
  r.status = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
  return r;
}

/// Runs a command and throws with its output if it fails (setup steps).
inline std::string run_or_throw(const std::string& cmd) {
  auto r = run(cmd);
  if (!r.ok()) throw std::runtime_error("command failed (" + std::to_string(r.status) + "): " + cmd + "\n" + r.output);
  return r.output;
}

inline ino_t netns_inode(const char* path) {
  struct stat st {};
  return ::stat(path, &st) == 0 ? st.st_ino : 0;
}

/// True if the calling thread is in the host's (PID 1's) network namespace. Tests call
/// plumbing code only after checking this is false.
inline bool thread_in_host_netns() {
  return netns_inode("/proc/thread-self/ns/net") == netns_inode("/proc/1/ns/net");
}

namespace detail {
inline std::atomic<int>& counter() {
  static std::atomic<int> c{0};
  return c;
}

/// iproute2's preparation of /var/run/netns: a directory that is a shared mount point,
/// so namespace bind mounts propagate to other mount namespaces.
inline void prepare_netns_dir() {
  if (::mkdir(netns_dir, 0755) != 0 && errno != EEXIST)
    throw std::runtime_error(std::string("mkdir ") + netns_dir + ": " + std::strerror(errno));
  if (::mount("", netns_dir, "none", MS_SHARED | MS_REC, nullptr) == 0) return;
  if (errno != EINVAL) throw std::runtime_error(std::string("make ") + netns_dir + " shared: " + std::strerror(errno));
  if (::mount(netns_dir, netns_dir, "none", MS_BIND | MS_REC, nullptr) != 0)
    throw std::runtime_error(std::string("bind ") + netns_dir + ": " + std::strerror(errno));
  if (::mount("", netns_dir, "none", MS_SHARED | MS_REC, nullptr) != 0)
    throw std::runtime_error(std::string("make ") + netns_dir + " shared: " + std::strerror(errno));
}

inline void remove_netns_file(const std::string& path) noexcept {
  ::umount2(path.c_str(), MNT_DETACH);
  ::unlink(path.c_str());
}

/// Deletes cnf-t<pid>-* namespaces whose process is gone (crashed earlier runs).
inline void sweep_stale() noexcept {
  DIR* d = ::opendir(netns_dir);
  if (!d) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("cnf-t", 0) != 0) continue;
    auto dash = n.find('-', 5);
    if (dash == std::string::npos) continue;
    long pid = std::strtol(n.substr(5, dash - 5).c_str(), nullptr, 10);
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) stale.push_back(n);
  }
  ::closedir(d);
  for (const auto& n : stale) remove_netns_file(std::string(netns_dir) + "/" + n);
}
}  // namespace detail

/// A uniquely named network namespace (cnf-t<pid>-<counter>) that exists for the
/// object's lifetime. Its loopback is up. Not copyable or movable.
class test_netns {
 public:
  test_netns() {
    static const bool swept = (detail::sweep_stale(), true);
    (void)swept;
    detail::prepare_netns_dir();
    name_ = "cnf-t" + std::to_string(::getpid()) + "-" + std::to_string(detail::counter()++);
    path_ = std::string(netns_dir) + "/" + name_;
    int fd = ::open(path_.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("create " + path_ + ": " + std::strerror(errno));
    ::close(fd);
    // A scratch thread makes the namespace and pins it with a bind mount; only that
    // thread ever enters it, and it simply ends there.
    std::string err;
    std::thread t([&] {
      if (::unshare(CLONE_NEWNET) != 0) { err = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno); return; }
      if (::mount("/proc/thread-self/ns/net", path_.c_str(), "none", MS_BIND, nullptr) != 0) {
        err = "bind-mount netns on " + path_ + ": " + std::strerror(errno);
        return;
      }
      int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (s < 0) { err = std::string("socket: ") + std::strerror(errno); return; }
      ifreq ifr{};
      std::strcpy(ifr.ifr_name, "lo");
      if (::ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
        if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) err = std::string("set lo up: ") + std::strerror(errno);
      } else {
        err = std::string("get lo flags: ") + std::strerror(errno);
      }
      ::close(s);
    });
    t.join();
    if (!err.empty()) {
      detail::remove_netns_file(path_);
      throw std::runtime_error("test netns " + name_ + ": " + err);
    }
  }
  ~test_netns() { detail::remove_netns_file(path_); }
  test_netns(const test_netns&) = delete;
  test_netns& operator=(const test_netns&) = delete;

  const std::string& name() const noexcept { return name_; }
  /// /var/run/netns/<name>: what a CNI runtime passes as CNI_NETNS.
  const std::string& path() const noexcept { return path_; }

  /// Runs a shell command inside the namespace (`ip netns exec`).
  command_result exec(const std::string& cmd) const {
    return run("ip netns exec " + shell_quote(name_) + " sh -c " + shell_quote(cmd));
  }
  std::string exec_or_throw(const std::string& cmd) const {
    auto r = exec(cmd);
    if (!r.ok()) throw std::runtime_error("in netns " + name_ + ": command failed (" + std::to_string(r.status) + "): " + cmd + "\n" + r.output);
    return r.output;
  }
  /// `ip -n <name> <args>` (no shell inside; args are passed through /bin/sh as given).
  command_result ip(const std::string& args) const { return run("ip -n " + shell_quote(name_) + " " + args); }

  /// Reads a sysctl inside the namespace (e.g. "net.ipv4.ip_forward"); "" if missing.
  std::string sysctl(const std::string& key) const {
    auto r = exec("sysctl -n " + shell_quote(key));
    if (!r.ok()) return {};
    while (!r.output.empty() && (r.output.back() == '\n' || r.output.back() == ' ')) r.output.pop_back();
    return r.output;
  }

 private:
  std::string name_;
  std::string path_;
};

/// One ICMP echo to `addr` from inside `ns`, 1 s timeout.
inline bool ping_ok(const test_netns& ns, const std::string& addr, int count = 1) {
  return ns.exec("ping -n -q -c " + std::to_string(count) + " -W 1 " + shell_quote(addr)).ok();
}

/// A veth with one end in each namespace, both up. IPv6 DAD is off on both ends (set
/// before they go up) so that their link-local addresses, which the kernel needs as the
/// source of neighbour solicitations for forwarded packets, are usable at once instead of
/// after ~1 s.
inline void veth_between(const test_netns& a, const std::string& name_a, const test_netns& b, const std::string& name_b) {
  run_or_throw("ip -n " + shell_quote(a.name()) + " link add " + shell_quote(name_a) + " type veth peer name " +
               shell_quote(name_b) + " netns " + shell_quote(b.name()));
  a.exec_or_throw("sysctl -q -w net.ipv6.conf." + name_a + ".accept_dad=0 && ip link set " + shell_quote(name_a) + " up");
  b.exec_or_throw("sysctl -q -w net.ipv6.conf." + name_b + ".accept_dad=0 && ip link set " + shell_quote(name_b) + " up");
}

/// IPv4 and IPv6 forwarding inside the namespace.
inline void set_ip_forward(const test_netns& ns, bool on = true) {
  const char* v = on ? "1" : "0";
  ns.exec_or_throw(std::string("sysctl -q -w net.ipv4.ip_forward=") + v + " net.ipv6.conf.all.forwarding=" + v);
}

/// Puts the calling thread into `ns` for the object's lifetime (and back on every exit
/// path). Threads it starts meanwhile, and processes they fork, are in `ns` too.
class enter_netns {
 public:
  explicit enter_netns(const test_netns& ns) {
    old_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (old_ < 0) throw std::runtime_error("open own netns: " + std::string(std::strerror(errno)));
    int fd = ::open(ns.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
      std::string why = std::strerror(errno);
      if (fd >= 0) ::close(fd);
      ::close(old_);
      throw std::runtime_error("enter " + ns.path() + ": " + why);
    }
    ::close(fd);
  }
  ~enter_netns() {
    if (::setns(old_, CLONE_NEWNET) != 0) std::fprintf(stderr, "cannot return to the original netns: %s\n", std::strerror(errno));
    ::close(old_);
  }
  enter_netns(const enter_netns&) = delete;
  enter_netns& operator=(const enter_netns&) = delete;

 private:
  int old_ = -1;
};

/// Minimal JSON reader for `ip -j` output: objects, arrays, strings, numbers, bools, null.
namespace json {
struct value;
using object = std::map<std::string, value>;
using array = std::vector<value>;
struct value {
  std::variant<std::nullptr_t, bool, double, std::string, std::shared_ptr<array>, std::shared_ptr<object>> v;

  bool is_object() const { return std::holds_alternative<std::shared_ptr<object>>(v); }
  bool is_array() const { return std::holds_alternative<std::shared_ptr<array>>(v); }
  const array& arr() const {
    static const array empty;
    return is_array() ? *std::get<std::shared_ptr<array>>(v) : empty;
  }
  /// Member `k` of an object (null value if absent or not an object).
  const value& operator[](const std::string& k) const {
    static const value null{};
    if (!is_object()) return null;
    const auto& o = *std::get<std::shared_ptr<object>>(v);
    auto it = o.find(k);
    return it == o.end() ? null : it->second;
  }
  bool has(const std::string& k) const {
    return is_object() && std::get<std::shared_ptr<object>>(v)->count(k) > 0;
  }
  std::string str() const { return std::holds_alternative<std::string>(v) ? std::get<std::string>(v) : std::string(); }
  double num(double def = -1) const { return std::holds_alternative<double>(v) ? std::get<double>(v) : def; }
  bool boolean() const { return std::holds_alternative<bool>(v) && std::get<bool>(v); }
};

namespace detail {
struct parser {
  std::string_view s;
  std::size_t i = 0;
  void ws() { while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) ++i; }
  [[noreturn]] void fail(const char* what) { throw std::runtime_error(std::string("json: ") + what + " at " + std::to_string(i)); }
  bool eat(char c) { ws(); if (i < s.size() && s[i] == c) { ++i; return true; } return false; }
  std::string string() {
    if (!eat('"')) fail("expected string");
    std::string out;
    while (i < s.size() && s[i] != '"') {
      char c = s[i++];
      if (c == '\\' && i < s.size()) {
        char e = s[i++];
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'u': out += '?'; i += 4; break;  // not needed for ip(8) output
          default: out += e;
        }
      } else {
        out += c;
      }
    }
    if (i >= s.size()) fail("unterminated string");
    ++i;
    return out;
  }
  value parse() {
    ws();
    if (i >= s.size()) fail("unexpected end");
    char c = s[i];
    value v;
    if (c == '{') {
      ++i;
      auto o = std::make_shared<object>();
      if (!eat('}')) {
        do {
          ws();
          std::string k = string();
          if (!eat(':')) fail("expected ':'");
          (*o)[k] = parse();
        } while (eat(','));
        if (!eat('}')) fail("expected '}'");
      }
      v.v = o;
    } else if (c == '[') {
      ++i;
      auto a = std::make_shared<array>();
      if (!eat(']')) {
        do a->push_back(parse()); while (eat(','));
        if (!eat(']')) fail("expected ']'");
      }
      v.v = a;
    } else if (c == '"') {
      v.v = string();
    } else if (s.substr(i, 4) == "true") { i += 4; v.v = true; }
    else if (s.substr(i, 5) == "false") { i += 5; v.v = false; }
    else if (s.substr(i, 4) == "null") { i += 4; v.v = nullptr; }
    else {
      std::size_t start = i;
      while (i < s.size() && (std::strchr("+-.eE", s[i]) || (s[i] >= '0' && s[i] <= '9'))) ++i;
      if (start == i) fail("unexpected character");
      v.v = std::strtod(std::string(s.substr(start, i - start)).c_str(), nullptr);
    }
    return v;
  }
};
}  // namespace detail

inline value parse(std::string_view text) {
  detail::parser p{text};
  value v = p.parse();
  p.ws();
  if (p.i != text.size()) p.fail("trailing characters");
  return v;
}
}  // namespace json

}  // namespace cnf_test
