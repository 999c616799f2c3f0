// A TCP proxy in front of a real etcd, for faults that etcd itself cannot be asked to make:
// dropping every connection at once, refusing connections for a while, or answering the
// next watch request with garbage instead of forwarding it. Everything else is forwarded
// byte for byte. POSIX sockets and threads only; listens on 127.0.0.1 with a free port.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace cnf_test {

class tcp_proxy {
 public:
  explicit tcp_proxy(int upstream_port) : upstream_(upstream_port) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    int one = 1;
    ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd_, 64) != 0) {
      ::close(lfd_);
      throw std::runtime_error(std::string("bind/listen: ") + std::strerror(errno));
    }
    socklen_t len = sizeof a;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (::pipe(wake_) != 0) throw std::runtime_error("pipe");
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~tcp_proxy() {
    stop_ = true;
    char c = 0;
    (void)!::write(wake_[1], &c, 1);
    acceptor_.join();
    drop_all();
    std::vector<std::thread> ts;
    {
      std::lock_guard lk(mu_);
      ts.swap(threads_);
    }
    for (auto& t : ts) t.join();
    ::close(lfd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  int port() const noexcept { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

  /// Cuts every open connection (both sides), as a network failure would.
  void drop_all() {
    std::lock_guard lk(mu_);
    for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
  }

  /// While refusing, new connections are closed right after accept.
  void refuse(bool on) { refuse_ = on; }

  /// The next connection whose first request is a watch gets an HTTP 200 chunked reply
  /// carrying `payload` as one chunk, then the connection is closed.
  void garbage_next_watch(std::string payload) {
    std::lock_guard lk(mu_);
    garbage_ = std::move(payload);
  }

  /// How many connections were answered with garbage so far.
  int garbage_sent() const noexcept { return garbage_sent_; }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p[2] = {{lfd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(p, 2, -1) < 0 && errno != EINTR) return;
      if (stop_) return;
      if (!(p[0].revents & POLLIN)) continue;
      int c = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      if (refuse_) {
        ::close(c);
        continue;
      }
      std::lock_guard lk(mu_);
      open_.insert(c);
      threads_.emplace_back([this, c] { serve(c); });
    }
  }

  void forget(int fd) {
    std::lock_guard lk(mu_);
    open_.erase(fd);
    ::close(fd);
  }

  static bool send_all(int fd, const char* p, std::size_t n) {
    while (n) {
      auto w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }

  void serve(int c) {
    // Read the first request head to decide what to do with the connection.
    std::string head;
    char buf[16384];
    while (head.find("\r\n\r\n") == std::string::npos) {
      auto n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) { forget(c); return; }
      head.append(buf, static_cast<std::size_t>(n));
      if (head.size() > (1 << 20)) { forget(c); return; }
    }
    std::optional<std::string> garbage;
    if (head.starts_with("POST /v3/watch ")) {
      std::lock_guard lk(mu_);
      if (garbage_) { garbage.swap(garbage_); }
    }
    if (garbage) {
      char hex[32];
      std::snprintf(hex, sizeof hex, "%zx\r\n", garbage->size());
      std::string reply = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(hex) +
                          *garbage + "\r\n";
      send_all(c, reply.data(), reply.size());
      ++garbage_sent_;
      ::shutdown(c, SHUT_RDWR);
      forget(c);
      return;
    }
    int u = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(upstream_));
    if (u < 0 || ::connect(u, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      if (u >= 0) ::close(u);
      forget(c);
      return;
    }
    {
      std::lock_guard lk(mu_);
      open_.insert(u);
    }
    if (send_all(u, head.data(), head.size())) {
      for (;;) {
        pollfd p[2] = {{c, POLLIN, 0}, {u, POLLIN, 0}};
        if (::poll(p, 2, 500) < 0 && errno != EINTR) break;
        if (stop_) break;
        bool done = false;
        for (int k = 0; k < 2 && !done; ++k) {
          if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
          auto n = ::recv(p[k].fd, buf, sizeof buf, 0);
          if (n <= 0 || !send_all(p[1 - k].fd, buf, static_cast<std::size_t>(n))) done = true;
        }
        if (done) break;
      }
    }
    forget(u);
    forget(c);
  }

  int upstream_;
  int lfd_ = -1;
  int port_ = 0;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::atomic<bool> refuse_{false};
  std::atomic<int> garbage_sent_{0};
  std::mutex mu_;
  std::set<int> open_;
  std::vector<std::thread> threads_;
  std::optional<std::string> garbage_;
  std::thread acceptor_;
};

}  // namespace cnf_test
