// The agent's health, metrics and status endpoint: HTTP/1.0 on 127.0.0.1, one short request
// per connection, answered on the loop (the requests are a few bytes from this machine).
#include "node_agent.hpp"

#include <fmt/format.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cnf_app {

health_server::~health_server() {
  if (watch_) loop_.unwatch(watch_);
  if (fd_ >= 0) ::close(fd_);
}

cnf::result<void> health_server::listen(unsigned port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return cnf::error(cnf::errc::io, std::string("health endpoint: socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 64) != 0) {
    auto e = cnf::error(cnf::errc::io, fmt::format("health endpoint: cannot listen on 127.0.0.1:{}: {}", port, std::strerror(errno)));
    ::close(fd);
    return e;
  }
  fd_ = fd;
  watch_ = loop_.watch_readable(fd_, [this] { accept_one(); });
  return {};
}

void health_server::accept_one() {
  int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (c < 0) return;
  timeval tv{1, 0};  // a client that sends nothing does not hold the loop for long
  ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string req;
  char buf[2048];
  while (req.find("\r\n\r\n") == std::string::npos && req.find("\n\n") == std::string::npos && req.size() < 8192) {
    ssize_t n = ::recv(c, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    req.append(buf, static_cast<std::size_t>(n));
  }
  reply r;
  std::string_view line(req);
  line = line.substr(0, line.find_first_of("\r\n"));
  if (line.rfind("GET ", 0) != 0) {
    r = {405, "text/plain; charset=utf-8", "only GET\n"};
  } else {
    auto path = line.substr(4);
    path = path.substr(0, path.find(' '));
    path = path.substr(0, path.find('?'));
    try {
      r = h_(path);
    } catch (const std::exception& e) {
      r = {500, "text/plain; charset=utf-8", std::string(e.what()) + "\n"};
    }
  }
  const char* reason = r.status == 200 ? "OK" : r.status == 404 ? "Not Found" : r.status == 503 ? "Service Unavailable" : "Error";
  std::string out = fmt::format("HTTP/1.0 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", r.status, reason,
                                r.content_type, r.body.size());
  out += r.body;
  for (std::size_t off = 0; off < out.size();) {
    ssize_t n = ::send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  ::close(c);
}

}  // namespace cnf_app
