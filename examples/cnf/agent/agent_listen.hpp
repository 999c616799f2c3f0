// Where `cnf agent` listens for CNI calls, and how it takes one in (the wire is
// agent_client.hpp's).
//
// The agent always listens at the abstract address @cnf-agent (agent_address.h): per network
// namespace, so it is the one agent of its node, where cnf-shim finds it without reading a
// config or a profile. A second agent in the same namespace is refused at start, naming the
// pid of the first. When the profile also names [cni] agent_socket, the agent listens on
// that path too: that is how `cnf` itself, named as the plugin, finds the agent (it asks
// only when the profile says where, so a node without an agent pays no connect per call).
//
// An abstract address has no file permissions: accept() takes only callers of the agent's
// own user id (SO_PEERCRED) and closes the others' connections unread (the caller then does
// its call itself). One pollable fd stands for both addresses, so an event loop watches one.
#pragma once
#include <cnf/cni/agent_client.hpp>
#include <cnf/cni/engine.hpp>

#include <cnf/error.hpp>

#include <sys/socket.h>
#include <sys/stat.h>

#include <string>

namespace cnf_app {

// The engine's wire (cnf/cni/agent_client.hpp), as the agent side speaks it.
using cnf::cni::agent_abstract_address;
using cnf::cni::agent_reply;
using cnf::cni::agent_sockaddr;
using cnf::cni::decode_request;
using cnf::cni::encode_reply;
using cnf::cni::plugin_call;
using cnf::cni::read_to_end;

class agent_listener {
 public:
  /// Binds @cnf-agent and, when `socket_path` is not empty, that path (mode 0600, its
  /// directory made 0700 when missing; a socket file nobody answers on is replaced).
  static cnf::result<agent_listener> open(const std::string& socket_path);

  agent_listener(agent_listener&& o) noexcept;
  agent_listener& operator=(agent_listener&&) = delete;
  agent_listener(const agent_listener&) = delete;
  /// Closes both; removes the socket file unless another agent has replaced it meanwhile.
  ~agent_listener();

  /// Readable (POLLIN) while a caller waits at either address.
  int fd() const { return epoll_; }
  /// "@cnf-agent", or "@cnf-agent and <path>": for the log.
  std::string where() const;

  struct caller {
    int fd = -1;          // the connection (the caller closes it); -1: none taken
    ucred cred{};         // who called
    std::string refused;  // set when a caller of another uid was turned away (a log line)
  };
  /// Takes one waiting caller (non-blocking: fd -1 when none waits), with a 5 s receive
  /// timeout so that a caller that never finishes its request does not hold the agent.
  caller accept();

 private:
  agent_listener() = default;
  int epoll_ = -1, abstract_ = -1, path_fd_ = -1;
  std::string path_;
  struct stat mine_ {};
};

/// Reads one request (until the caller shuts down its write side) and decodes it.
cnf::result<plugin_call> read_call(int fd);

/// Sends the reply; a caller that went away loses it (what was done stays done, as for a
/// killed plugin).
void send_reply(int fd, const agent_reply& r);

}  // namespace cnf_app
