// cnf/executor.hpp — where long-running work of a part runs.
//
// The host owns the event loop (in the reference distribution, a Boost.Asio io_context;
// see <cnf/asio.hpp>) and hands parts this small interface, so a part that needs no
// Asio never includes it. Parts post completions and timers here; a part that drives
// its own sockets with Asio may run its own io_context thread and post results back.
#pragma once
#include <cnf/config.hpp>

#include <chrono>
#include <functional>

CNF_BEGIN_NAMESPACE

class executor {
 public:
  virtual ~executor() = default;
  /// Runs f soon, on the host's loop; thread-safe.
  virtual void post(std::function<void()> f) = 0;
  /// Runs f after a delay, on the host's loop; thread-safe.
  virtual void post_after(std::chrono::milliseconds delay, std::function<void()> f) = 0;
};

CNF_END_NAMESPACE
