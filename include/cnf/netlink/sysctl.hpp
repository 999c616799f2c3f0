// cnf/netlink/sysctl.hpp — per-namespace sysctls through /proc/sys.
//
//   write_sysctl("net/ipv4/conf/cali1234567890a/proxy_arp", "1");
//   read_sysctl("net/ipv4/ip_forward");                          // "0"
//   node_sysctls().write(...)  // the same, for a process that writes its node's sysctls often
//
// Keys are slash-separated paths below /proc/sys (interface names may contain dots, so
// the dotted form is ambiguous).
//
// Which namespace: /proc/sys/net/* resolves against the network namespace of the
// *calling thread* (the kernel looks at current->nsproxy when the path is looked up), so
// after netns_guard::enter() a thread reads and writes the joined namespace's sysctls,
// while the other threads keep seeing their own. Verified on 6.18 by
// tests/integration/netlink_test.cpp ("sysctl follows the thread"). This differs from
// /proc/net, which is /proc/self/net and follows the thread-group leader; there, use
// /proc/thread-self/net. Do not cache an open /proc/sys file descriptor across setns():
// it stays tied to the namespace it was opened in.
#pragma once
#include <cnf/netlink/netns.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <sys/stat.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

CNF_BEGIN_NAMESPACE
namespace netlink {

namespace detail {
inline bool valid_sysctl_key(std::string_view key) {
  if (key.empty() || key.front() == '/') return false;
  std::size_t start = 0;
  while (start <= key.size()) {
    auto end = key.find('/', start);
    auto part = key.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return true;
}
}  // namespace detail

namespace detail {
// One write or read below `dir` (an open directory, or AT_FDCWD for an absolute `rel`);
// `key` names it in messages.
inline result<void> sysctl_write_at(int dir, const char* rel, const std::string& key, std::string_view value) {
  std::string what = "sysctl " + key + "=" + std::string(value);
  int fd = ::openat(dir, rel, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return error(errc_from_errno(e), what + ": " + errno_text(e));
  }
  unique_fd holder(fd);
  ssize_t n;
  do {
    n = ::write(fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    int e = errno;
    return error(errc_from_errno(e), what + ": " + errno_text(e));
  }
  if (static_cast<std::size_t>(n) != value.size()) return error(errc::io, what + ": short write");
  return {};
}

inline result<std::string> sysctl_read_at(int dir, const char* rel, const std::string& key) {
  int fd = ::openat(dir, rel, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return error(errc_from_errno(e), "read sysctl " + key + ": " + errno_text(e));
  }
  unique_fd holder(fd);
  std::string out;
  char buf[256];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      return error(errc_from_errno(e), "read sysctl " + key + ": " + errno_text(e));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// /proc/sys/net/ipv4 and /proc/sys/net/ipv6 of one network namespace, kept open.
struct sysctl_family_dirs {
  ino_t ns = 0;
  unique_fd ns_fd;  // holds the namespace, so its inode number is not reused while cached
  unique_fd v4, v6;
};

// The calling thread's, from a one-entry cache per process (a node agent plumbs from its
// node namespace for its whole life). Null when /proc/thread-self cannot be read.
inline std::shared_ptr<const sysctl_family_dirs> family_dirs() {
  static std::mutex mu;
  static std::shared_ptr<const sysctl_family_dirs> cur;
  unique_fd ns(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (!ns || ::fstat(ns.get(), &st) != 0) return nullptr;
  std::lock_guard lk(mu);
  if (cur && cur->ns == st.st_ino) return cur;
  auto d = std::make_shared<sysctl_family_dirs>();
  d->ns = st.st_ino;
  d->ns_fd = std::move(ns);
  d->v4 = unique_fd(::open("/proc/sys/net/ipv4", O_PATH | O_DIRECTORY | O_CLOEXEC));
  d->v6 = unique_fd(::open("/proc/sys/net/ipv6", O_PATH | O_DIRECTORY | O_CLOEXEC));  // absent without IPv6
  cur = d;
  return cur;
}

// Where a key is opened: below one of `d`'s directories when it is under net/ipv4/ or
// net/ipv6/ (and `d` has that directory), else by its full /proc/sys path. `d` may be null.
struct sysctl_location {
  int dir;
  std::string rel;
};
inline sysctl_location locate_sysctl(const sysctl_family_dirs* d, const std::string& key) {
  if (d && key.starts_with("net/ipv4/") && d->v4) return {d->v4.get(), key.substr(9)};
  if (d && key.starts_with("net/ipv6/") && d->v6) return {d->v6.get(), key.substr(9)};
  return {AT_FDCWD, "/proc/sys/" + key};
}

inline result<void> sysctl_write(const sysctl_family_dirs* d, std::string_view key, std::string_view value) {
  std::string k(key);
  if (!valid_sysctl_key(key)) return error(errc::invalid, "sysctl " + k + "=" + std::string(value) + ": invalid key");
  auto at = locate_sysctl(d, k);
  return sysctl_write_at(at.dir, at.rel.c_str(), k, value);
}

inline result<std::string> sysctl_read(const sysctl_family_dirs* d, std::string_view key) {
  std::string k(key);
  if (!valid_sysctl_key(key)) return error(errc::invalid, "sysctl " + k + ": invalid key");
  auto at = locate_sysctl(d, k);
  return sysctl_read_at(at.dir, at.rel.c_str(), k);
}
}  // namespace detail

/// Writes `value` to /proc/sys/<key> in the calling thread's namespace.
inline result<void> write_sysctl(std::string_view key, std::string_view value) { return detail::sysctl_write(nullptr, key, value); }

/// Reads /proc/sys/<key> in the calling thread's namespace, trailing newline removed.
inline result<std::string> read_sysctl(std::string_view key) { return detail::sysctl_read(nullptr, key); }

/// Sysctls of the namespace a process works in over and over (the node's): keys below
/// net/ipv4/ and net/ipv6/ are looked up from that namespace's directories, which the
/// process keeps open (one namespace at a time; a thread elsewhere reopens them). Make
/// one per batch of keys, in the namespace they belong to, and use it there.
///
/// Why: /proc/sys/net is one directory for every namespace, and each namespace that has
/// looked up its net/ipv4 (a pod's sysctls, written by its CNI plugin or its runtime)
/// adds a dentry of that name to the same hash chain. The chain grows with the pods on
/// the node, and the node's own entry, made early, sits behind the newer ones: in the CNI
/// bench (1,421 pod namespaces at the end) path lookups through net/ipv4 and net/ipv6 were
/// ~15% of the agent's CPU (proc_sys_compare under link_path_walk, perf record -a -g).
class node_sysctls {
 public:
  node_sysctls() : dirs_(detail::family_dirs()) {}
  /// As write_sysctl.
  result<void> write(std::string_view key, std::string_view value) const { return detail::sysctl_write(dirs_.get(), key, value); }
  /// As read_sysctl.
  result<std::string> read(std::string_view key) const { return detail::sysctl_read(dirs_.get(), key); }

 private:
  std::shared_ptr<const detail::sysctl_family_dirs> dirs_;  // null: full paths
};

}  // namespace netlink
CNF_END_NAMESPACE
