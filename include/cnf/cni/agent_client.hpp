// The wire between a CNI plugin process and `cnf agent`, and its plugin side: hands one CNI
// call to the agent. Used by the CNI engine (engine.hpp; at the profile's [cni] agent_socket) and
// spoken by `cnf-shim` (examples/cnf-shim/main.c, at the abstract address), which carries
// no parser: so neither direction is JSON.
//
// A Unix stream socket; each side writes one message and shuts down its write side.
//   request: "cnf-agent/2\n" <self> NUL (<NAME=value> NUL)* NUL <stdin, to the end>
//            self: argv[0]'s basename (cnf acts as another plugin's IPAM when ipam.type
//            names it); the environment as the plugin had it (empty strings left out);
//            the network config's bytes as they came.
//   reply:   "exit <status> <n>\n" and n bytes: the call ran; its stdout and exit status.
//            "declined <n>\n" and n bytes: why the agent does not run it (the config names
//            another profile than the agent's, ...): the plugin does the work itself.
// Addresses: "@<name>" is a name in the abstract namespace (agent_address.h), anything else
// a socket file's path.
#pragma once
#include <cnf/cni/agent_address.h>
#include <cnf/cni/engine.hpp>

#include <cnf/error.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE
namespace cni {

/// The agent's address every plugin knows: the abstract name of agent_address.h.
inline const std::string agent_abstract_address = std::string("@") + CNF_AGENT_ABSTRACT_NAME;

/// The sockaddr for `address` ("@name": abstract, else a path); false when it does not fit.
inline bool agent_sockaddr(const std::string& address, sockaddr_un& sa, socklen_t& len) {
  sa = sockaddr_un{};
  sa.sun_family = AF_UNIX;
  if (address.size() >= sizeof sa.sun_path || address.empty()) return false;
  std::memcpy(sa.sun_path, address.data(), address.size());
  if (address[0] == '@') {
    sa.sun_path[0] = '\0';
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size());
  } else {
    len = sizeof sa;
  }
  return true;
}

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

inline std::string encode_request(const plugin_call& call) {
  std::string t = CNF_AGENT_WIRE_MAGIC;
  t.append(call.self).push_back('\0');
  for (auto& v : call.env)
    if (!v.empty()) t.append(v).push_back('\0');
  t.push_back('\0');
  t += call.input;
  return t;
}

/// The call in a request, or what is wrong with it.
inline cnf::result<plugin_call> decode_request(std::string_view t) {
  constexpr std::string_view magic = CNF_AGENT_WIRE_MAGIC;
  if (!t.starts_with(magic)) {
    if (t.starts_with("{"))
      return cnf::error(cnf::errc::invalid, "request in the JSON wire format of an older cnf-shim or cnf: install the cnf-shim built with this cnf");
    return cnf::error(cnf::errc::invalid, "request does not start with \"cnf-agent/2\"");
  }
  t.remove_prefix(magic.size());
  auto next = [&](std::string_view& s) {
    auto z = t.find('\0');
    if (z == std::string_view::npos) return false;
    s = t.substr(0, z);
    t.remove_prefix(z + 1);
    return true;
  };
  plugin_call call;
  std::string_view s;
  if (!next(s)) return cnf::error(cnf::errc::invalid, "request: the plugin's name is not NUL-terminated");
  call.self = std::string(s);
  for (;;) {
    if (!next(s)) return cnf::error(cnf::errc::invalid, "request: the environment does not end with an empty string");
    if (s.empty()) break;
    if (s.find('=') == std::string_view::npos)
      return cnf::error(cnf::errc::invalid, "request: environment entry '" + std::string(s.substr(0, 64)) + "' is not NAME=value");
    call.env.emplace_back(s);
  }
  call.input = std::string(t);
  return call;
}

/// What the agent answers: `declined` set (why), or the call's exit status and stdout.
struct agent_reply {
  std::optional<std::string> declined;
  int exit = 0;
  std::string out;
};

inline std::string encode_reply(const agent_reply& r) {
  const std::string& body = r.declined ? *r.declined : r.out;
  std::string t = r.declined ? "declined " + std::to_string(body.size()) + "\n"
                             : "exit " + std::to_string(r.exit & 0xff) + " " + std::to_string(body.size()) + "\n";
  return t + body;
}

/// A whole reply, or nothing (a reply cut short by a dying agent is not one).
inline std::optional<agent_reply> decode_reply(std::string_view t) {
  agent_reply r;
  auto num = [&](char stop, long& v) {
    const auto* e = t.data() + t.size();
    auto [p, ec] = std::from_chars(t.data(), e, v);
    if (ec != std::errc() || p == t.data() || p == e || *p != stop || v < 0) return false;
    t.remove_prefix(static_cast<std::size_t>(p + 1 - t.data()));
    return true;
  };
  long len = 0, st = 0;
  if (t.starts_with("exit ")) {
    t.remove_prefix(5);
    if (!num(' ', st) || st > 255) return std::nullopt;
    r.exit = static_cast<int>(st);
  } else if (t.starts_with("declined ")) {
    t.remove_prefix(9);
    r.declined.emplace();
  } else {
    return std::nullopt;
  }
  if (!num('\n', len) || static_cast<std::size_t>(len) != t.size()) return std::nullopt;
  (r.declined ? *r.declined : r.out) = std::string(t);
  return r;
}

struct agent_answer {
  enum class kind { absent, declined, answered, lost } what = kind::absent;
  int status = 0;
  std::string out;  // answered: the agent's stdout; otherwise why not
};

/// Hands the call to the agent listening at `address`. absent: nothing listens there (no
/// socket file, or a stale one), or the agent went away before it had read the whole call
/// (it runs a call only after reading all of it; the kernel then resets the connection):
/// the caller does the work itself. declined: the agent serves another profile: the same.
/// lost: the agent read the call and closed the connection without an answer (it died
/// mid-call): what it did is unknown, so the caller must not do the work again; it answers
/// 11 (try again later).
inline agent_answer ask_agent(const std::string& address, const plugin_call& call) {
  agent_answer a;
  sockaddr_un sa{};
  socklen_t salen = 0;
  if (!agent_sockaddr(address, sa, salen)) {
    a.out = "agent address '" + address + "' does not fit a Unix socket address";
    return a;
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    a.out = std::string("socket: ") + std::strerror(errno);
    return a;
  }
  struct closer { int fd; ~closer() { ::close(fd); } } cl{fd};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), salen) != 0) {
    a.out = "connect " + address + ": " + std::strerror(errno);
    return a;
  }
  const std::string text = encode_request(call);
  for (std::size_t off = 0; off < text.size();) {
    ssize_t n = ::send(fd, text.data() + off, text.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // it went away before reading all of the call: it did nothing
      a.out = "send to " + address + ": " + std::strerror(errno);
      return a;
    }
    off += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string reply;
  if (read_to_end(fd, reply, std::size_t{16} << 20) == ECONNRESET && reply.empty()) {
    // Reset with nothing answered: the agent closed the connection with some of the call
    // unread (it refused the caller, or stopped while the call waited): it did nothing.
    a.out = "the agent at " + address + " closed the connection before reading the call";
    return a;
  }
  auto r = decode_reply(reply);
  if (!r) {
    a.what = agent_answer::kind::lost;
    a.out = reply.empty() ? "the agent at " + address + " closed the connection without an answer"
                          : "the agent at " + address + " answered something that is not a reply";
    return a;
  }
  if (r->declined) {
    a.what = agent_answer::kind::declined;
    a.out = std::move(*r->declined);
    return a;
  }
  a.what = agent_answer::kind::answered;
  a.status = r->exit;
  a.out = std::move(r->out);
  return a;
}

}  // namespace cni
CNF_END_NAMESPACE
