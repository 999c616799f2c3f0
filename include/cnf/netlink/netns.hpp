// cnf/netlink/netns.hpp — network namespaces: validated handles and a thread-scoped
// "enter, then always come back" guard.
//
//   auto ns = cnf::netlink::open_netns("/var/run/netns/pod1");     // validated fd
//   if (!ns) return ns.error();     // "netns /var/run/netns/pod1 does not exist"
//   {
//     auto g = cnf::netlink::netns_guard::enter(*ns);
//     if (!g) return g.error();
//     auto sock = cnf::netlink::rtnl_socket::open();              // bound to pod1 for life
//   }                                                             // thread is back here
//
// Facts this relies on (checked on Linux 6.18, see tests/integration/netlink_test.cpp):
//  * setns(fd, CLONE_NEWNET) moves only the calling thread; other threads of the process
//    stay where they are.
//  * A netlink socket stays bound to the namespace it was created in, whatever the thread
//    does afterwards: "join, open socket, leave" is safe.
//  * /proc/sys/net/... resolves against the *calling thread's* network namespace, so
//    sysctl writes after setns() land in the joined namespace. /proc/net (a link to
//    /proc/self/net) follows the thread-group *leader* instead; use /proc/thread-self/net.
//  * The namespace to return to is read from /proc/thread-self/ns/net, never from
//    /proc/self/ns/net (the leader's), which is wrong when this thread is already
//    somewhere else.
#pragma once
#include <cnf/error.hpp>

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

CNF_BEGIN_NAMESPACE
namespace netlink {

namespace detail {
inline std::string errno_text(int e) {
  char buf[128];
  // GNU strerror_r returns the message pointer (which may not be buf).
  const char* s = strerror_r(e, buf, sizeof buf);
  return s ? std::string(s) : std::string("errno ") + std::to_string(e);
}

/// errno -> cnf::errc for kernel and file-system calls.
inline errc errc_from_errno(int e) noexcept {
  switch (e) {
    case ENOENT: case ENODEV: case ESRCH: case ENXIO: case EADDRNOTAVAIL: return errc::not_found;
    case EEXIST: case ENOTEMPTY: return errc::already_exists;
    case EINVAL: case ERANGE: case ENAMETOOLONG: case E2BIG: case ENETUNREACH: return errc::invalid;
    case EOPNOTSUPP: case EAFNOSUPPORT: case EPROTONOSUPPORT: return errc::unsupported;
    case EBUSY: return errc::conflict;
    case EAGAIN: case ENOBUFS: case ETIMEDOUT: case EINTR: return errc::unavailable;
    default: return errc::io;
  }
}

inline const char* ns_type_name(int t) noexcept {
  switch (t) {
    case CLONE_NEWNET: return "net";
    case CLONE_NEWNS: return "mnt";
    case CLONE_NEWUTS: return "uts";
    case CLONE_NEWIPC: return "ipc";
    case CLONE_NEWPID: return "pid";
    case CLONE_NEWUSER: return "user";
    case CLONE_NEWCGROUP: return "cgroup";
#ifdef CLONE_NEWTIME
    case CLONE_NEWTIME: return "time";
#endif
    default: return "unknown";
  }
}
}  // namespace detail

/// Owns one file descriptor; closes it on destruction.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) { reset(); fd_ = std::exchange(o.fd_, -1); }
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

/// An open, validated network-namespace handle (an nsfs file descriptor) and the path
/// it was opened from (used in messages).
class netns_fd {
 public:
  netns_fd() = default;
  netns_fd(unique_fd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  int get() const noexcept { return fd_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(fd_); }
  const std::string& path() const noexcept { return path_; }
  /// The namespace's identity (inode number on nsfs); equal for two handles to the same
  /// namespace. 0 on failure.
  ino_t inode() const noexcept {
    struct stat st {};
    return ::fstat(fd_.get(), &st) == 0 ? st.st_ino : 0;
  }

 private:
  unique_fd fd_;
  std::string path_;
};

/// Opens `path` (e.g. /var/run/netns/NAME or /proc/PID/ns/net) and checks that it really
/// is a network namespace: the file must live on nsfs (a stale /var/run/netns entry whose
/// bind mount is gone is an ordinary empty file) and, where the kernel supports
/// NS_GET_NSTYPE (4.11+), be of type CLONE_NEWNET.
inline result<netns_fd> open_netns(std::string_view path) {
  std::string p(path);
  if (p.empty()) return error(errc::invalid, "netns path is empty");
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) return error(errc::not_found, "netns " + p + " does not exist");
    return error(detail::errc_from_errno(e), "cannot open netns " + p + ": " + detail::errno_text(e));
  }
  unique_fd holder(fd);
  struct statfs sfs {};
  if (::fstatfs(fd, &sfs) != 0) {
    int e = errno;
    return error(errc::io, "cannot stat netns " + p + ": " + detail::errno_text(e));
  }
  if (static_cast<unsigned long>(sfs.f_type) != static_cast<unsigned long>(NSFS_MAGIC))
    return error(errc::invalid, p + " is not a network namespace (not a namespace file; a stale bind mount?)");
#ifdef NS_GET_NSTYPE
  int t = ::ioctl(fd, NS_GET_NSTYPE);
  if (t < 0) {
    int e = errno;
    if (e != ENOTTY && e != EINVAL)
      return error(errc::io, "cannot query namespace type of " + p + ": " + detail::errno_text(e));
    // Older kernel: setns(fd, CLONE_NEWNET) will still refuse a wrong type with EINVAL.
  } else if (t != CLONE_NEWNET) {
    return error(errc::invalid, p + " is not a network namespace (it is a " +
                                    detail::ns_type_name(t) + " namespace)");
  }
#endif
  return netns_fd(std::move(holder), std::move(p));
}

/// The calling thread's current network namespace (/proc/thread-self/ns/net).
inline result<netns_fd> current_netns() { return open_netns("/proc/thread-self/ns/net"); }

/// Moves the calling thread into a network namespace and moves it back when destroyed,
/// on every path. Only this thread moves. Guards nest (restore in reverse order).
///
/// If moving back fails (it cannot, short of the kernel refusing memory), the process is
/// aborted: a thread silently left in a pod namespace would go on to change the wrong
/// namespace. Call restore() to see that error yourself instead.
class netns_guard {
 public:
  /// Opens and validates `path`, then joins it.
  static result<netns_guard> enter(std::string_view path) {
    auto ns = open_netns(path);
    if (!ns) return std::move(ns).error();
    return enter(*ns);
  }
  /// Joins an already opened namespace (the handle may be closed afterwards).
  static result<netns_guard> enter(const netns_fd& target) {
    auto orig = current_netns();
    if (!orig) return error(orig.error().code, "cannot remember the current netns before entering " +
                                                   target.path() + ": " + orig.error().message);
    if (::setns(target.get(), CLONE_NEWNET) != 0) {
      int e = errno;
      return error(detail::errc_from_errno(e), "cannot enter netns " + target.path() + ": " + detail::errno_text(e));
    }
    return netns_guard(std::move(orig).value(), target.path());
  }

  netns_guard(netns_guard&& o) noexcept : orig_(std::move(o.orig_)), path_(std::move(o.path_)) {}
  netns_guard& operator=(netns_guard&&) = delete;
  netns_guard(const netns_guard&) = delete;
  netns_guard& operator=(const netns_guard&) = delete;

  ~netns_guard() {
    if (auto r = restore(); !r) {
      std::fprintf(stderr, "cnf: fatal: %s\n", r.error().message.c_str());
      std::abort();
    }
  }

  /// Moves the thread back now (idempotent). The guard is inactive afterwards.
  result<void> restore() noexcept {
    if (!orig_) return {};
    if (::setns(orig_.get(), CLONE_NEWNET) != 0) {
      int e = errno;
      return error(errc::io, "cannot return from netns " + path_ + " to the original namespace: " + detail::errno_text(e));
    }
    orig_ = netns_fd();
    return {};
  }

  /// Path of the namespace this guard entered.
  const std::string& path() const noexcept { return path_; }

 private:
  netns_guard(netns_fd orig, std::string path) : orig_(std::move(orig)), path_(std::move(path)) {}
  netns_fd orig_;
  std::string path_;
};

/// Runs f() with the calling thread inside `ns`; returns f's result (which must be a
/// cnf::result), or the error of entering.
template <class F>
auto with_netns(const netns_fd& ns, F&& f) -> decltype(f()) {
  auto g = netns_guard::enter(ns);
  if (!g) return std::move(g).error();
  return std::forward<F>(f)();
}

}  // namespace netlink
CNF_END_NAMESPACE
