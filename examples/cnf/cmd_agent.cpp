// cnf agent: serves the CNI plugin's calls over a Unix socket (@cnf-agent in its network
// namespace, and the profile's [cni] agent_socket if set: agent_listen.hpp), with the
// profile read and the parts composed once, not per call.
//
// A CNI call run by the process the runtime exec'd pays for the process, the profile, the
// parts and the datastore's opening every time; handed to the agent it pays for a small
// process and one round trip. The work itself (IPAM, netlink, the durable writes) is the
// same code (run_cni_call). Calls are served one at a time, in the order they arrive.
// When no agent listens, the plugin does its calls itself, so starting and stopping the
// agent never breaks pod networking.
#include "agent_client.hpp"
#include "agent_listen.hpp"
#include "app.hpp"
#include "cni_call.hpp"
#include "cni_log.hpp"

#include <cnf/executor.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <set>

namespace cnf_app {
namespace {

struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

bool changed(const struct stat& a, const struct stat& b) {
  return a.st_dev != b.st_dev || a.st_ino != b.st_ino || a.st_size != b.st_size || a.st_mtim.tv_sec != b.st_mtim.tv_sec ||
         a.st_mtim.tv_nsec != b.st_mtim.tv_nsec || a.st_ctim.tv_sec != b.st_ctim.tv_sec || a.st_ctim.tv_nsec != b.st_ctim.tv_nsec;
}

/// The agent's executor for its parts: what they post runs on the agent's thread between
/// two calls, after the answer to the last one is sent (the local datastore writes the
/// files of a call's records there; they are durable and visible before the answer).
class between_calls final : public cnf::executor {
 public:
  using clock = std::chrono::steady_clock;
  void post(std::function<void()> f) override { (void)post_at(clock::now(), std::move(f)); }
  timer_id post_after(std::chrono::milliseconds d, std::function<void()> f) override { return post_at(clock::now() + d, std::move(f)); }
  bool cancel(timer_id id) override {
    std::lock_guard l(mu_);
    for (auto it = due_.begin(); it != due_.end(); ++it)
      if (it->second.first == id) {
        due_.erase(it);
        return true;
      }
    return false;
  }
  /// Runs what is due; returns poll()'s timeout until the next (ms), -1 when none.
  int run_due() {
    for (;;) {
      std::function<void()> f;
      {
        std::lock_guard l(mu_);
        if (due_.empty()) return -1;
        auto now = clock::now();
        if (due_.begin()->first > now)  // poll() again within a minute at most (a far timer)
          return static_cast<int>(std::min<std::chrono::milliseconds::rep>(
              std::chrono::ceil<std::chrono::milliseconds>(due_.begin()->first - now).count(), 60000));
        f = std::move(due_.begin()->second.second);
        due_.erase(due_.begin());
      }
      f();
    }
  }

 private:
  timer_id post_at(clock::time_point t, std::function<void()> f) {
    std::lock_guard l(mu_);
    due_.emplace(t, std::pair(++last_id_, std::move(f)));
    return last_id_;
  }
  std::mutex mu_;
  timer_id last_id_ = 0;
  std::multimap<clock::time_point, std::pair<timer_id, std::function<void()>>> due_;
};

/// Reads the profile and composes the parts a CNI call needs (datastore; IPAM when the
/// profile has one). Their writes wait for the flush at the end of each call.
cnf::result<served_parts> serve(const std::string& path, cni_logger& log, cnf::executor& exec) {
  served_parts s;
  s.path = path;
  if (::stat(path.c_str(), &s.id) != 0) return cnf::error(cnf::errc::not_found, path + ": " + std::strerror(errno));
  auto p = cnf::load_profile(path);
  if (!p) return std::move(p).error();
  s.prof = std::move(*p);
  std::set<cnf::part> need{cnf::part::datastore};
  if (s.prof.ipam) need.insert(cnf::part::ipam);
  cnf::plugin_loader loader(plugin_search_path(&s.prof));
  cnf::plugin_context ctx;
  ctx.node_name = s.prof.node_name();
  ctx.log = &log;
  ctx.exec = &exec;
  auto parts = compose_parts(s.prof, loader, need, ctx, /*fail_fast=*/false);
  if (!parts) return std::move(parts).error();
  s.parts = std::move(*parts);
  s.parts.datastore.defer_sync(true);
  return s;
}

std::string command_of(const cni_call& call) {
  for (auto& v : call.env)
    if (v.rfind("CNI_COMMAND=", 0) == 0) return v.substr(12);
  return "?";
}

int run_agent(const std::string& profile_arg) {
  const std::string path = profile_arg.empty() ? default_profile_path() : profile_arg;
  cni_logger log;
  log.set_prefix("agent");
  between_calls exec;  // before the parts, which keep a pointer to it
  auto s = serve(path, log, exec);
  if (!s) {
    std::cerr << "cnf agent: " << s.error().message << "\n";
    return 2;
  }
  log.configure(s->prof.cni.level, s->prof.cni.log_file);
  const std::string sock = s->prof.cni.agent_socket;

  // SIGTERM, SIGINT, SIGHUP end the agent between two calls (never in the middle of one).
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int sg : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&sigs, sg);
  ::pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  fd_guard sfd{::signalfd(-1, &sigs, SFD_CLOEXEC)};
  if (sfd.fd < 0) {
    std::cerr << "cnf agent: signalfd: " << std::strerror(errno) << "\n";
    return 1;
  }
  auto listener = agent_listener::open(sock);  // @cnf-agent, and the profile's agent_socket if set
  if (!listener) {
    std::cerr << "cnf agent: " << listener.error().message << "\n";
    return 1;
  }
  log.info(fmt::format("serving CNI calls on {} (profile {}, pid {})", listener->where(), path, ::getpid()));

  int status = 0;
  std::uint64_t served_calls = 0;
  for (;;) {
    const int timeout = exec.run_due();  // the last call is answered: the parts' deferred work
    pollfd p[2] = {{listener->fd(), POLLIN, 0}, {sfd.fd, POLLIN, 0}};
    if (::poll(p, 2, timeout) < 0) {
      if (errno == EINTR) continue;
      log.error(std::string("poll: ") + std::strerror(errno));
      status = 1;
      break;
    }
    if (p[1].revents & POLLIN) {
      signalfd_siginfo si{};
      (void)!::read(sfd.fd, &si, sizeof si);
      log.info(fmt::format("signal {}: stopping after {} call(s)", si.ssi_signo, served_calls));
      break;
    }
    if (!(p[0].revents & POLLIN)) continue;
    auto caller = listener->accept();  // only callers of the agent's own user (root on a node)
    if (!caller.refused.empty()) log.warn(caller.refused);
    fd_guard cfd{caller.fd};
    if (cfd.fd < 0) continue;
    const ucred cred = caller.cred;
    auto call = read_call(cfd.fd);
    if (!call) {
      log.warn(fmt::format("pid {}: bad request: {}", cred.pid, call.error().message));
      send_reply(cfd.fd, {.declined = call.error().message});
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    // The profile changed since it was read: read it and compose the parts again. When
    // that fails, calls are declined (the plugin then does them itself and reports what
    // is wrong with the profile), and the next call tries again.
    std::string declined;
    struct stat now {};
    if (::stat(path.c_str(), &now) != 0) {
      declined = "the agent's profile " + path + " is gone: " + std::strerror(errno);
    } else if (changed(now, s->id)) {
      if (auto n = serve(path, log, exec); !n) {
        declined = "the agent's profile " + path + " changed and cannot be used: " + n.error().message;
      } else if (n->prof.cni.agent_socket != sock) {
        // The plugin now looks for the agent elsewhere: this agent stops (after answering).
        declined = "the agent's profile " + path + " now names another agent_socket (" + n->prof.cni.agent_socket + "); this agent stops";
        status = 1;
      } else {
        (void)s->parts.datastore.sync();
        exec.run_due();  // what the old parts left to do, before they go
        *s = std::move(*n);
        log.configure(s->prof.cni.level, s->prof.cni.log_file);
        log.info("profile changed: parts composed again");
      }
    }
    agent_reply r;
    if (!declined.empty()) {
      log.warn(declined);
      r.declined = declined;
    } else {
      std::string out;
      int st = run_cni_call(*call, out, &*s);
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
      if (st == not_served) {
        r.declined = out;
        log.debug(fmt::format("pid {}: {} declined: {}", cred.pid, command_of(*call), out));
      } else {
        r.exit = st;
        r.out = out;
        ++served_calls;
        log.debug(fmt::format("pid {}: {} served in {} us (exit {})", cred.pid, command_of(*call), us, st));
      }
    }
    send_reply(cfd.fd, r);
    if (status != 0) break;
  }
  if (auto f = s->parts.datastore.sync(); !f) log.warn("datastore: " + f.error().message);
  exec.run_due();
  return status;
}

}  // namespace

void add_agent_command(CLI::App& app) {
  static std::string profile;
  auto* a = app.add_subcommand(
      "agent",
      "Serve the CNI plugin's calls at @cnf-agent in this network namespace (and the profile's [cni] agent_socket if set),\n"
      "with the parts loaded once instead of per call. One agent per network namespace.\n"
      "Runs in the foreground, one call at a time, until SIGTERM/SIGINT/SIGHUP (it finishes the call in progress and\n"
      "removes its socket). While no agent listens there, the plugin does every call itself; a changed profile is\n"
      "read again before the next call. Start it in the node's network namespace.");
  a->add_option("--profile", profile, "Profile to serve (default: $CNF_PROFILE, else /etc/cnf/profile.toml)");
  a->callback([] { exit_code() = run_agent(profile); });
}

}  // namespace cnf_app
