// cnf agent: the node agent (with a [routing] section in the profile) and the CNI server
// (with [cni] agent_socket), on one event loop.
//
// The node agent (agent/node_agent.cpp) registers this node as a Calico v3 Node, mirrors
// the datastore (Node, IPAMBlock, BlockAffinity, IPPool), blackholes this node's blocks,
// feeds the routing part the other nodes and puts its routes in the route table, the one
// owner of cnf's kernel routes. Nothing is programmed before the first complete sync.
// Health, metrics and status are served on 127.0.0.1 ([agent] health_port).
//
// The CNI server: a CNI call run by the process the runtime exec'd pays for the process,
// the profile, the parts and the datastore's opening every time; handed to the agent it
// pays for a small process and one round trip. The work itself (IPAM, netlink, the durable
// writes) is the same code (run_cni_call). Calls are served one at a time, in the order
// they arrive. When no agent listens, the plugin does its calls itself, so starting and
// stopping the agent never breaks pod networking.
#include "agent_client.hpp"
#include "app.hpp"
#include "cni_call.hpp"
#include "cni_log.hpp"
#include "agent/node_agent.hpp"

#include <cnf/event_loop.hpp>

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

constexpr std::size_t max_request = 16u << 20;

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

/// Reads the profile and composes the parts a CNI call needs (datastore; IPAM when the
/// profile has one). Their writes wait for the flush at the end of each call.
cnf::result<served_parts> serve(const std::string& path, cni_logger& log, cnf::executor& exec) {
  served_parts s;
  s.path = path;
  if (::stat(path.c_str(), &s.id) != 0) return cnf::error(cnf::errc::not_found, path + ": " + std::strerror(errno));
  auto p = cnf::load_profile(path);
  if (!p) return std::move(p).error();
  s.prof = std::move(*p);
  if (s.prof.cni.agent_socket.empty())
    return cnf::error(cnf::errc::invalid, s.prof.file + ": [cni] agent_socket is not set; the CNI plugin finds the agent there");
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

/// Binds the agent's socket, mode 0600. A socket file nobody listens on (an agent that
/// was killed) is replaced; one that answers belongs to a running agent: an error.
cnf::result<int> listen_on(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (auto dir = fs::path(path).parent_path(); !dir.empty() && !fs::exists(dir, ec)) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      return cnf::error(cnf::errc::io, "agent_socket: cannot create " + dir.string() + ": " + std::strerror(errno));
  }
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size());
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return cnf::error(cnf::errc::already_exists, "agent_socket: " + path + " exists and is not a socket");
    fd_guard probe{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (probe.fd >= 0 && ::connect(probe.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0)
      return cnf::error(cnf::errc::already_exists, "agent_socket: another agent is serving " + path);
    ::unlink(path.c_str());
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return cnf::error(cnf::errc::io, std::string("socket: ") + std::strerror(errno));
  const mode_t old = ::umask(0177);
  const int b = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  const int berr = errno;
  ::umask(old);
  if (b != 0 || ::listen(fd, 512) != 0) {
    auto e = cnf::error(cnf::errc::io, "agent_socket: cannot listen on " + path + ": " + std::strerror(b != 0 ? berr : errno));
    ::close(fd);
    return e;
  }
  return fd;
}

/// Reads one request (until the caller shuts down its write side) and parses it.
cnf::result<cni_call> read_request(int fd) {
  std::string text;
  if (int e = read_to_end(fd, text, max_request); e == EFBIG)
    return cnf::error(cnf::errc::invalid, "request larger than 16 MiB");
  else if (e != 0)
    return cnf::error(cnf::errc::io, std::string("reading the request: ") + std::strerror(e));
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  const auto* o = ec ? nullptr : v.if_object();
  if (!o) return cnf::error(cnf::errc::invalid, "request is not a JSON object");
  const auto* ver = o->if_contains("cnf_agent");
  const auto* self = o->if_contains("self");
  const auto* env = o->if_contains("env");
  const auto* in = o->if_contains("stdin");
  if (!ver || !ver->is_int64() || ver->as_int64() != 1) return cnf::error(cnf::errc::invalid, "request: cnf_agent must be 1");
  if (!self || !self->is_string()) return cnf::error(cnf::errc::invalid, "request: self must be a string");
  if (!env || !env->is_array()) return cnf::error(cnf::errc::invalid, "request: env must be an array");
  if (!in || !in->is_string()) return cnf::error(cnf::errc::invalid, "request: stdin must be a string");
  cni_call call;
  call.self = std::string(self->as_string());
  call.input = std::string(in->as_string());
  for (auto& e : env->as_array()) {
    if (!e.is_string() || e.as_string().find('=') == boost::json::string::npos)
      return cnf::error(cnf::errc::invalid, "request: env entries must be strings NAME=value");
    call.env.emplace_back(e.as_string());
  }
  return call;
}

void write_all(int fd, const std::string& s) {
  for (std::size_t off = 0; off < s.size();) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the caller went away; what was done stays done (as for a killed plugin)
    off += static_cast<std::size_t>(n);
  }
}

std::string command_of(const cni_call& call) {
  for (auto& v : call.env)
    if (v.rfind("CNI_COMMAND=", 0) == 0) return v.substr(12);
  return "?";
}

/// The CNI server on the loop: one call per connection, served to the end before the next
/// (as before the loop: calls are answered in arrival order, one at a time).
struct cni_server {
  cnf::event_loop& loop;
  cni_logger& log;
  const std::string& path;
  served_parts& s;
  std::string sock;
  node_agent* node = nullptr;
  int status = 0;
  std::uint64_t served_calls = 0;

  void serve_one(int lfd) {
    fd_guard cfd{::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC)};
    if (cfd.fd < 0) return;
    // Only callers of the agent's own user (root on a node) may have their calls run.
    ucred cred{};
    socklen_t clen = sizeof cred;
    if (::getsockopt(cfd.fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 || cred.uid != ::geteuid()) {
      log.warn(fmt::format("refused a caller of uid {} (pid {})", cred.uid, cred.pid));
      return;
    }
    timeval tv{5, 0};  // a caller that never finishes its request does not hold the agent
    ::setsockopt(cfd.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto call = read_request(cfd.fd);
    if (!call) {
      log.warn(fmt::format("pid {}: bad request: {}", cred.pid, call.error().message));
      boost::json::object r;
      r["declined"] = call.error().message;
      write_all(cfd.fd, boost::json::serialize(r));
      return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    // The profile changed since it was read: read it and compose the parts again. When
    // that fails, calls are declined (the plugin then does them itself and reports what
    // is wrong with the profile), and the next call tries again.
    std::string declined;
    struct stat now {};
    if (::stat(path.c_str(), &now) != 0) {
      declined = "the agent's profile " + path + " is gone: " + std::strerror(errno);
    } else if (changed(now, s.id)) {
      if (auto n = serve(path, log, loop); !n) {
        declined = "the agent's profile " + path + " changed and cannot be used: " + n.error().message;
      } else if (n->prof.cni.agent_socket != sock) {
        // The plugin now looks for the agent elsewhere: this agent stops (after answering).
        declined = "the agent's profile " + path + " now names another agent_socket (" + n->prof.cni.agent_socket + "); this agent stops";
        status = 1;
      } else {
        (void)s.parts.datastore.sync();  // the old parts' posted work runs on the loop before they go
        s = std::move(*n);
        log.configure(s.prof.cni.level, s.prof.cni.log_file);
        log.info("profile changed: CNI parts composed again (the node's routing keeps the profile it started with)");
      }
    }
    boost::json::object r;
    if (!declined.empty()) {
      log.warn(declined);
      r["declined"] = declined;
    } else {
      std::string out;
      int st = run_cni_call(*call, out, &s);
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
      if (st == not_served) {
        r["declined"] = out;
        log.debug(fmt::format("pid {}: {} declined: {}", cred.pid, command_of(*call), out));
      } else {
        r["exit"] = st;
        r["stdout"] = out;
        ++served_calls;
        if (node) node->count_cni_call();
        log.debug(fmt::format("pid {}: {} served in {} us (exit {})", cred.pid, command_of(*call), us, st));
      }
    }
    write_all(cfd.fd, boost::json::serialize(r));
    if (status != 0) loop.stop();
  }
};

int run_agent(const std::string& profile_arg) {
  const std::string path = profile_arg.empty() ? default_profile_path() : profile_arg;
  cni_logger log;
  log.set_prefix("agent");
  auto prof = cnf::load_profile(path);
  if (!prof) {
    std::cerr << "cnf agent: " << prof.error().message << "\n";
    return 2;
  }
  // With [routing] the agent is the node agent too; with an agent_socket it serves CNI calls.
  const bool node_mode = prof->routing.has_value();
  const bool cni_mode = !prof->cni.agent_socket.empty() || !node_mode;
  log.configure(prof->cni.level, prof->cni.log_file);
  cnf::event_loop loop;  // before the parts, which keep a pointer to it

  std::optional<served_parts> s;
  if (cni_mode) {
    auto r = serve(path, log, loop);
    if (!r) {
      std::cerr << "cnf agent: " << r.error().message << "\n";
      return 2;
    }
    s = std::move(*r);
    log.configure(s->prof.cni.level, s->prof.cni.log_file);
  }

  // SIGTERM, SIGINT, SIGHUP end the agent between two handlers of the loop: a CNI call or a
  // route table apply in progress finishes first.
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int sg : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&sigs, sg);
  ::pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  fd_guard sfd{::signalfd(-1, &sigs, SFD_CLOEXEC)};
  if (sfd.fd < 0) {
    std::cerr << "cnf agent: signalfd: " << std::strerror(errno) << "\n";
    return 1;
  }

  // The node: registration, syncer, route table, routing part.
  cnf::composition node_parts;
  std::unique_ptr<node_agent> node;
  if (node_mode) {
    cnf::plugin_loader loader(plugin_search_path(&*prof));
    cnf::plugin_context ctx;
    ctx.node_name = prof->node_name();
    ctx.log = &log;
    ctx.exec = &loop;
    auto parts = compose_parts(*prof, loader, {cnf::part::datastore, cnf::part::routing}, ctx, /*fail_fast=*/false);
    if (!parts) {
      std::cerr << "cnf agent: " << parts.error().message << "\n";
      return 2;
    }
    node_parts = std::move(*parts);
    node = std::make_unique<node_agent>(loop, log, *prof, node_parts.datastore, node_parts.routing);
    if (auto r = node->start(); !r) {
      std::cerr << "cnf agent: " << r.error().message << "\n";
      return 2;
    }
  }

  std::optional<cni_server> cni;
  fd_guard lfd;
  struct stat mine {};
  if (cni_mode) {
    auto l = listen_on(s->prof.cni.agent_socket);
    if (!l) {
      std::cerr << "cnf agent: " << l.error().message << "\n";
      return 1;
    }
    lfd.fd = *l;
    cni.emplace(cni_server{loop, log, path, *s, s->prof.cni.agent_socket, node.get()});
    ::stat(cni->sock.c_str(), &mine);
    loop.watch_readable(lfd.fd, [&] { cni->serve_one(lfd.fd); });
    log.info(fmt::format("serving CNI calls on {} (profile {}, pid {})", cni->sock, path, ::getpid()));
  }

  health_server health(loop, log, [&](std::string_view p) -> health_server::reply {
    const bool ready = !node || node->ready();
    if (p == "/livez" || p == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
    if (p == "/readyz") return {ready ? 200 : 503, "text/plain; charset=utf-8", ready ? "ready\n" : "not ready: not in sync with the datastore\n"};
    if (p == "/metrics")
      return {200, "text/plain; version=0.0.4; charset=utf-8",
              node ? node->metrics()
                   : fmt::format("# HELP cnf_agent_cni_calls_total CNI calls served\n# TYPE cnf_agent_cni_calls_total counter\n"
                                 "cnf_agent_cni_calls_total {}\n", cni ? cni->served_calls : 0)};
    if (p == "/status")
      return {200, "application/json", node ? node->status_json()
                                            : fmt::format("{{\"pid\":{},\"ready\":true,\"routing\":{{\"plugin\":\"none\",\"peers\":[],\"notes\":[]}}}}\n",
                                                          ::getpid())};
    return {404, "text/plain; charset=utf-8", "not found; try /livez, /readyz, /metrics, /status\n"};
  });
  if (prof->agent.health_port != 0) {
    if (auto h = health.listen(prof->agent.health_port); !h) log.warn(h.error().message + " (the agent runs without it)");
    else log.info(fmt::format("health, metrics and status on http://127.0.0.1:{}/", prof->agent.health_port));
  }

  int signo = 0;
  loop.watch_readable(sfd.fd, [&] {
    signalfd_siginfo si{};
    (void)!::read(sfd.fd, &si, sizeof si);
    signo = static_cast<int>(si.ssi_signo);
    loop.stop();
  });
  loop.run();
  if (signo)
    log.info(fmt::format("signal {}: stopping after {} CNI call(s); what was being applied is complete", signo, cni ? cni->served_calls : 0));

  if (node) node->stop();  // the kernel keeps its routes: a restarted agent takes them over unchanged
  int status = cni ? cni->status : 0;
  if (cni) {
    // The socket goes with the agent (unless another agent has replaced it meanwhile).
    struct stat cur {};
    if (::stat(cni->sock.c_str(), &cur) == 0 && cur.st_dev == mine.st_dev && cur.st_ino == mine.st_ino) ::unlink(cni->sock.c_str());
    if (auto f = s->parts.datastore.sync(); !f) log.warn("datastore: " + f.error().message);
  }
  loop.post([&] { loop.stop(); });  // what the parts posted (the local datastore's files) runs first
  loop.run();
  log.info("stopped");
  return status;
}

}  // namespace

void add_agent_command(CLI::App& app) {
  static std::string profile;
  auto* a = app.add_subcommand(
      "agent",
      "The node agent: registers this node, watches the datastore and programs routes to the other nodes' pod blocks\n"
      "with the profile's [routing] plugin (blackholes for this node's own blocks); health, metrics and status on\n"
      "127.0.0.1:[agent] health_port. With [cni] agent_socket it also serves the CNI plugin's calls there, with the\n"
      "parts loaded once instead of per call (one at a time; a changed profile is read again before the next call).\n"
      "Runs in the foreground until SIGTERM/SIGINT/SIGHUP (it finishes the call or apply in progress, leaves the\n"
      "kernel's routes for the next agent and removes its socket). Start it in the node's network namespace.");
  a->add_option("--profile", profile, "Profile to serve (default: $CNF_PROFILE, else /etc/cnf/profile.toml)");
  a->callback([] { exit_code() = run_agent(profile); });
}

}  // namespace cnf_app
