// A TCP relay from 127.0.0.1:<port> inside a test network namespace to a server on the
// host's 127.0.0.1 (a test's etcd): processes in the namespace (an agent, the CNI plugin)
// reach the server at an address of their own namespace, and no server listens anywhere
// but on loopback. Sockets keep the namespace they were made in, so the listening socket
// is made inside the namespace and every upstream socket outside it.
// The relay stops (every relayed connection closed) when it goes out of scope.
#pragma once
#include "../integration/netns_harness.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace cnf_test {

class tcp_relay {
 public:
  tcp_relay(const test_netns& ns, int upstream_port) : ns_(ns), upstream_(upstream_port) { open_listener(); }
  ~tcp_relay() { cut(); }
  tcp_relay(const tcp_relay&) = delete;
  tcp_relay& operator=(const tcp_relay&) = delete;

  /// The port on 127.0.0.1 inside the namespace.
  int port() const noexcept { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }


 private:
  void cut() {
    {
      std::lock_guard<std::mutex> l(m_);
      if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
      for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    if (acceptor_.joinable()) acceptor_.join();
    for (auto& t : pumps_)
      if (t.joinable()) t.join();
    pumps_.clear();
    std::lock_guard<std::mutex> l(m_);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
  }

  void open_listener() {
    {
      enter_netns in(ns_);
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(static_cast<std::uint16_t>(port_));
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 64) != 0) {
        ::close(fd);
        throw std::runtime_error("tcp_relay: cannot listen in " + ns_.name());
      }
      socklen_t len = sizeof sa;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
      port_ = ntohs(sa.sin_port);
      listen_fd_ = fd;
    }
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  void accept_loop() {
    for (;;) {
      int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR) continue;
        return;  // shut down by cut()
      }
      int u = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // this thread is in the host's namespace
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(static_cast<std::uint16_t>(upstream_));
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(u, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        ::close(u);
        ::close(c);
        continue;
      }
      std::lock_guard<std::mutex> l(m_);
      open_fds_.push_back(c);
      open_fds_.push_back(u);
      pumps_.emplace_back([this, c, u] { pump(c, u); });
    }
  }

  void pump(int a, int b) {
    pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    char buf[16384];
    for (bool open = true; open;) {
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (int i = 0; i < 2 && open; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t n = ::recv(p[i].fd, buf, sizeof buf, 0);
        if (n <= 0 || ::send(p[1 - i].fd, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) open = false;
      }
    }
    std::lock_guard<std::mutex> l(m_);
    for (int fd : {a, b}) {
      ::shutdown(fd, SHUT_RDWR);
      ::close(fd);
      std::erase(open_fds_, fd);
    }
  }

  const test_netns& ns_;
  int upstream_;
  int port_ = 0;
  int listen_fd_ = -1;
  std::mutex m_;
  std::vector<int> open_fds_;
  std::thread acceptor_;
  std::vector<std::thread> pumps_;
};

}  // namespace cnf_test
