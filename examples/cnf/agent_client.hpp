// The plugin side of the agent protocol (cni_call.hpp describes it): hands one CNI call to
// `cnf agent` over its Unix socket. Used by `cnf` in CNI mode and by `cnf-shim`, the thin
// plugin that does nothing else.
#pragma once
#include "cni_call.hpp"

#include <boost/json.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace cnf_app {

/// Reads `fd` to its end (the peer shut down its write side) into `out`. Returns 0, the
/// errno of a failed read, or EFBIG once `out` would pass `max` bytes.
inline int read_to_end(int fd, std::string& out, std::size_t max) {
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<std::size_t>(n));
      if (out.size() > max) return EFBIG;
    } else if (n == 0) {
      return 0;
    } else if (errno != EINTR) {
      return errno;
    }
  }
}

struct agent_answer {
  enum class kind { absent, declined, answered, lost } what = kind::absent;
  int status = 0;
  std::string out;  // answered: the agent's stdout; otherwise why not
};

/// Hands the call to the agent listening on `socket_path`. absent: nothing listens there
/// (no socket file, or a stale one), or the agent went away before it had read the whole
/// call (it runs a call only after reading all of it; the kernel then resets the
/// connection): the caller does the work itself. declined: the agent serves another
/// profile: the same. lost: the agent read the call and closed the connection without an
/// answer (it died mid-call): what it did is unknown, so the caller must not do the work
/// again; it answers 11 (try again later).
inline agent_answer ask_agent(const std::string& socket_path, const cni_call& call) {
  agent_answer a;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    a.out = std::string("socket: ") + std::strerror(errno);
    return a;
  }
  struct closer { int fd; ~closer() { ::close(fd); } } cl{fd};
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, socket_path.c_str(), std::min(socket_path.size(), sizeof sa.sun_path - 1));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    a.out = "connect " + socket_path + ": " + std::strerror(errno);
    return a;
  }
  boost::json::object rq;
  rq["cnf_agent"] = 1;
  rq["self"] = call.self;
  boost::json::array env;
  for (auto& v : call.env) env.emplace_back(v);
  rq["env"] = std::move(env);
  rq["stdin"] = call.input;
  const std::string text = boost::json::serialize(rq);
  for (std::size_t off = 0; off < text.size();) {
    ssize_t n = ::send(fd, text.data() + off, text.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // it went away before reading all of the call: it did nothing
      a.out = "send to " + socket_path + ": " + std::strerror(errno);
      return a;
    }
    off += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string reply;
  if (read_to_end(fd, reply, std::size_t{16} << 20) == ECONNRESET && reply.empty()) {
    // Reset with nothing answered: the agent closed the connection with some of the call
    // unread (stopped while the call waited in its queue): it did nothing.
    a.out = "the agent at " + socket_path + " closed the connection before reading the call";
    return a;
  }
  boost::system::error_code ec;
  auto v = boost::json::parse(reply, ec);
  const auto* o = ec ? nullptr : v.if_object();
  if (o)
    if (auto* d = o->if_contains("declined"); d && d->is_string()) {
      a.what = agent_answer::kind::declined;
      a.out = std::string(d->as_string());
      return a;
    }
  const boost::json::value* st = o ? o->if_contains("exit") : nullptr;
  const boost::json::value* so = o ? o->if_contains("stdout") : nullptr;
  if (!st || !st->is_int64() || !so || !so->is_string()) {
    a.what = agent_answer::kind::lost;
    a.out = reply.empty() ? "the agent at " + socket_path + " closed the connection without an answer"
                          : "the agent at " + socket_path + " answered something that is not a reply";
    return a;
  }
  a.what = agent_answer::kind::answered;
  a.status = static_cast<int>(st->as_int64());
  a.out = std::string(so->as_string());
  return a;
}

}  // namespace cnf_app
