// cnf/netlink/sysctl.hpp — per-namespace sysctls through /proc/sys.
//
//   write_sysctl("net/ipv4/conf/cali1234567890a/proxy_arp", "1");
//   read_sysctl("net/ipv4/ip_forward");                          // "0"
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

#include <cerrno>
#include <string>
#include <string_view>

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

/// Writes `value` to /proc/sys/<key> in the calling thread's namespace.
inline result<void> write_sysctl(std::string_view key, std::string_view value) {
  std::string k(key);
  std::string what = "sysctl " + k + "=" + std::string(value);
  if (!detail::valid_sysctl_key(key)) return error(errc::invalid, what + ": invalid key");
  std::string path = "/proc/sys/" + k;
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return error(detail::errc_from_errno(e), what + ": " + detail::errno_text(e));
  }
  unique_fd holder(fd);
  ssize_t n;
  do {
    n = ::write(fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    int e = errno;
    return error(detail::errc_from_errno(e), what + ": " + detail::errno_text(e));
  }
  if (static_cast<std::size_t>(n) != value.size()) return error(errc::io, what + ": short write");
  return {};
}

/// Reads /proc/sys/<key> in the calling thread's namespace, trailing newline removed.
inline result<std::string> read_sysctl(std::string_view key) {
  std::string k(key);
  if (!detail::valid_sysctl_key(key)) return error(errc::invalid, "sysctl " + k + ": invalid key");
  std::string path = "/proc/sys/" + k;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return error(detail::errc_from_errno(e), "read sysctl " + k + ": " + detail::errno_text(e));
  }
  unique_fd holder(fd);
  std::string out;
  char buf[256];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      return error(detail::errc_from_errno(e), "read sysctl " + k + ": " + detail::errno_text(e));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace netlink
CNF_END_NAMESPACE
