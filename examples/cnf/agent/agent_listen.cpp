#include "agent/agent_listen.hpp"

#include <sys/epoll.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

namespace cnf_app {
namespace {

constexpr std::size_t max_request = 16u << 20;

struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

cnf::result<int> bind_listen(const std::string& address) {
  sockaddr_un sa{};
  socklen_t len = 0;
  if (!agent_sockaddr(address, sa, len)) return cnf::error(cnf::errc::invalid, "agent address '" + address + "' is too long");
  fd_guard fd{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
  if (fd.fd < 0) return cnf::error(cnf::errc::io, std::string("socket: ") + std::strerror(errno));
  const mode_t old = ::umask(0177);  // a path socket: 0600
  const int b = ::bind(fd.fd, reinterpret_cast<sockaddr*>(&sa), len);
  const int berr = errno;
  ::umask(old);
  if (b != 0 && berr == EADDRINUSE && address[0] == '@') {
    // Who holds it: the listener's pid, from a connection to it (then closed unread).
    std::string who = "another process";
    fd_guard probe{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    ucred cr{};
    socklen_t cl = sizeof cr;
    if (probe.fd >= 0 && ::connect(probe.fd, reinterpret_cast<sockaddr*>(&sa), len) == 0 &&
        ::getsockopt(probe.fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0 && cr.pid > 0)
      who = "another cnf agent (pid " + std::to_string(cr.pid) + ")";
    return cnf::error(cnf::errc::already_exists,
                      who + " already serves CNI calls at " + address +
                          " in this network namespace; one agent per node namespace (stop it first)");
  }
  if (b != 0 || ::listen(fd.fd, 512) != 0)
    return cnf::error(cnf::errc::io, "cannot listen at " + address + ": " + std::strerror(b != 0 ? berr : errno));
  return fd.release();
}

/// The profile's socket file: a file nobody answers on (an agent that was killed) is
/// replaced; one that answers belongs to a running agent: an error.
cnf::result<int> listen_on_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (auto dir = fs::path(path).parent_path(); !dir.empty() && !fs::exists(dir, ec)) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      return cnf::error(cnf::errc::io, "agent_socket: cannot create " + dir.string() + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return cnf::error(cnf::errc::already_exists, "agent_socket: " + path + " exists and is not a socket");
    sockaddr_un sa{};
    socklen_t len = 0;
    fd_guard probe{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (agent_sockaddr(path, sa, len) && probe.fd >= 0 && ::connect(probe.fd, reinterpret_cast<sockaddr*>(&sa), len) == 0)
      return cnf::error(cnf::errc::already_exists, "agent_socket: another agent is serving " + path);
    ::unlink(path.c_str());
  }
  auto fd = bind_listen(path);
  if (!fd) return cnf::error(fd.error().code, "agent_socket: " + fd.error().message);
  return fd;
}

}  // namespace

cnf::result<agent_listener> agent_listener::open(const std::string& socket_path) {
  agent_listener l;
  auto a = bind_listen(agent_abstract_address);
  if (!a) return std::move(a).error();
  l.abstract_ = *a;
  if (!socket_path.empty()) {
    auto p = listen_on_path(socket_path);
    if (!p) return std::move(p).error();
    l.path_fd_ = *p;
    l.path_ = socket_path;
    ::stat(socket_path.c_str(), &l.mine_);
  }
  l.epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (l.epoll_ < 0) return cnf::error(cnf::errc::io, std::string("epoll_create1: ") + std::strerror(errno));
  for (int fd : {l.abstract_, l.path_fd_}) {
    if (fd < 0) continue;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(l.epoll_, EPOLL_CTL_ADD, fd, &ev) != 0) return cnf::error(cnf::errc::io, std::string("epoll_ctl: ") + std::strerror(errno));
  }
  return l;
}

agent_listener::agent_listener(agent_listener&& o) noexcept
    : epoll_(std::exchange(o.epoll_, -1)),
      abstract_(std::exchange(o.abstract_, -1)),
      path_fd_(std::exchange(o.path_fd_, -1)),
      path_(std::move(o.path_)),
      mine_(o.mine_) {
  o.path_.clear();
}

agent_listener::~agent_listener() {
  if (path_fd_ >= 0) {
    struct stat cur {};
    if (::stat(path_.c_str(), &cur) == 0 && cur.st_dev == mine_.st_dev && cur.st_ino == mine_.st_ino) ::unlink(path_.c_str());
  }
  for (int fd : {epoll_, abstract_, path_fd_})
    if (fd >= 0) ::close(fd);
}

std::string agent_listener::where() const { return path_.empty() ? agent_abstract_address : agent_abstract_address + " and " + path_; }

agent_listener::caller agent_listener::accept() {
  caller c;
  for (int l : {abstract_, path_fd_}) {
    if (l < 0) continue;
    fd_guard fd{::accept4(l, nullptr, nullptr, SOCK_CLOEXEC)};
    if (fd.fd < 0) continue;
    socklen_t len = sizeof c.cred;
    if (::getsockopt(fd.fd, SOL_SOCKET, SO_PEERCRED, &c.cred, &len) != 0 || c.cred.uid != ::geteuid()) {
      c.refused = "refused a caller of uid " + std::to_string(c.cred.uid) + " (pid " + std::to_string(c.cred.pid) + ")";
      return c;
    }
    timeval tv{5, 0};
    ::setsockopt(fd.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    c.fd = fd.release();
    return c;
  }
  return c;
}

cnf::result<plugin_call> read_call(int fd) {
  std::string text;
  if (int e = read_to_end(fd, text, max_request); e == EFBIG)
    return cnf::error(cnf::errc::invalid, "request larger than 16 MiB");
  else if (e != 0)
    return cnf::error(cnf::errc::io, std::string("reading the request: ") + std::strerror(e));
  if (text.empty()) return cnf::error(cnf::errc::invalid, "empty request (a caller that sent nothing: a second agent looking for this one?)");
  return decode_request(text);
}

void send_reply(int fd, const agent_reply& r) {
  const std::string s = encode_reply(r);
  for (std::size_t off = 0; off < s.size();) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<std::size_t>(n);
  }
}

}  // namespace cnf_app
