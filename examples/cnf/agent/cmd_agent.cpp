// cnf agent: the node agent (with a [routing] section in the profile) and the CNI server
// (@cnf-agent in its network namespace, and the profile's [cni] agent_socket if set:
// agent_listen.hpp), on one event loop.
//
// The node agent (agent/node_agent.cpp) registers this node as a Calico v3 Node, mirrors
// the datastore (Node, IPAMBlock, BlockAffinity, IPPool), blackholes this node's blocks,
// feeds the routing part the other nodes and puts its routes in the route table, the one
// owner of cnf's kernel routes; with a [policy] part it also mirrors endpoints, policies,
// network sets and namespaces and programs the node's policy through that part. Nothing is
// programmed before the first complete sync.
// Health, metrics and status are served on 127.0.0.1 ([agent] health_port).
//
// The CNI server: a CNI call run by the process the runtime exec'd pays for the process,
// the profile, the parts and the datastore's opening every time; handed to the agent it
// pays for a small process and one round trip. The work itself (IPAM, netlink, the durable
// writes) is the same code (cnf::cni::run_call). Calls are served one at a time, in the order
// they arrive. When no agent listens, the plugin does its calls itself, so starting and
// stopping the agent never breaks pod networking.
#include "agent/agent_listen.hpp"
#include "app.hpp"
#include "agent/node_agent.hpp"

#include <cnf/cni/env.hpp>
#include <cnf/cni/logger.hpp>
#include <cnf/cni/workload.hpp>
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

using cnf::cni::call_logger;
using cnf::cni::not_served;
using cnf::cni::served_parts;
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

/// Reads the profile and composes the parts a CNI call needs (datastore; IPAM when the
/// profile has one). Their writes wait for the flush at the end of each call.
cnf::result<served_parts> serve(const std::string& path, call_logger& log, cnf::executor& exec) {
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

std::string command_of(const plugin_call& call) {
  for (auto& v : call.env)
    if (v.rfind("CNI_COMMAND=", 0) == 0) return v.substr(12);
  return "?";
}

/// The WorkloadEndpoint a served ADD wrote (named as the plugin names it); nullopt when the
/// call's environment does not say.
std::optional<cnf::resource_key> endpoint_of(const plugin_call& call, const std::string& node) {
  auto env = cnf::cni::parse_env_with([&](std::string_view name) -> std::optional<std::string_view> {
    for (auto& v : call.env)
      if (v.size() > name.size() && v.compare(0, name.size(), name) == 0 && v[name.size()] == '=') return std::string_view(v).substr(name.size() + 1);
    return std::nullopt;
  });
  if (!env || env->cmd != cnf::cni::command::add) return std::nullopt;
  auto pod = cnf::cni::pod_identity::from(env->args);
  return cnf::resource_key{std::string(cnf::kinds::workload_endpoint), cnf::cni::workload_endpoint_ns(pod),
                           cnf::cni::workload_endpoint_name(node, pod, env->container_id, env->ifname)};
}

/// The CNI server on the loop: one call per connection, served to the end before the next
/// (as before the loop: calls are answered in arrival order, one at a time).
struct cni_server {
  cnf::event_loop& loop;
  call_logger& log;
  const std::string& path;
  served_parts& s;
  std::string sock;
  node_agent* node = nullptr;
  int status = 0;
  std::uint64_t served_calls = 0;

  void serve_one(agent_listener& l) {
    auto caller = l.accept();  // only callers of the agent's own user (root on a node)
    if (!caller.refused.empty()) log.warn(caller.refused);
    fd_guard cfd{caller.fd};
    if (cfd.fd < 0) return;
    const ucred cred = caller.cred;
    auto call = read_call(cfd.fd);
    if (!call) {
      log.warn(fmt::format("pid {}: bad request: {}", cred.pid, call.error().message));
      send_reply(cfd.fd, {.declined = call.error().message});
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
    agent_reply r;
    if (!declined.empty()) {
      log.warn(declined);
      r.declined = declined;
    } else {
      std::string out;
      auto hooks = cni_hooks();
      if (node) hooks.pod_mtu = [this] { return node->pod_mtu(); };
      int st = cnf::cni::run_call(*call, out, &s, hooks);
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
      if (st == not_served) {
        r.declined = out;
        log.debug(fmt::format("pid {}: {} declined: {}", cred.pid, command_of(*call), out));
      } else {
        r.exit = st;
        r.out = out;
        // The pod's policy is in the kernel before the runtime hears that the pod is ready.
        if (node && node->hosts_policy() && st == 0)
          if (auto key = endpoint_of(*call, s.prof.node_name()))
            if (auto p = node->policy_endpoint_now(*key); !p) log.warn(p.error().message + " (the syncer programs it when it arrives)");
        ++served_calls;
        if (node) node->count_cni_call();
        log.debug(fmt::format("pid {}: {} served in {} us (exit {})", cred.pid, command_of(*call), us, st));
      }
    }
    send_reply(cfd.fd, r);
    if (status != 0) loop.stop();
  }
};

/// The profile has no [encapsulation]: what an earlier run with one left on this node (a
/// VXLAN device, eBPF filters) goes, as Felix removes vxlan.calico once VXLAN is off. Each
/// encapsulation plugin of the reference set that the loader finds is composed with an
/// empty section and stopped without being started, which the Encapsulation contract says
/// removes its leftovers (cnf/encap.hpp). Routes are the route table's: it sweeps them.
void sweep_encapsulation(const cnf::profile& prof, const cnf::plugin_loader& loader, cnf::plugin_context ctx, call_logger& log) {
  for (const char* name : {"vxlan", "ipip"}) {
    if (!loader.find(cnf::part::encapsulation, name)) continue;  // not shipped with this build
    auto p = cnf::parse_profile(std::string("[encapsulation]\nplugin = \"") + name + "\"\n", prof.file);
    if (!p) continue;
    p->plugin_path = prof.plugin_path;
    auto parts = compose_parts(*p, loader, {cnf::part::encapsulation}, ctx, /*fail_fast=*/false);
    if (!parts || !parts->encapsulation) {
      log.warn(std::string("encapsulation: cannot load ") + name + " to remove what it may have left: " +
               (parts ? std::string("no part") : parts.error().message));
      continue;
    }
    if (auto r = parts->encapsulation.stop(); !r)
      log.warn(std::string("encapsulation: removing what ") + name + " left: " + r.error().message);
  }
}

int run_agent(const std::string& profile_arg) {
  const std::string path = profile_arg.empty() ? default_profile_path() : profile_arg;
  call_logger log;
  log.set_prefix("agent");
  auto prof = cnf::load_profile(path);
  if (!prof) {
    std::cerr << "cnf agent: " << prof.error().message << "\n";
    return 2;
  }
  // With [routing] the agent is the node agent too; it always serves CNI calls at @cnf-agent.
  const bool node_mode = prof->routing.has_value() || prof->encapsulation.has_value() || prof->policy.has_value();
  log.configure(prof->cni.level, prof->cni.log_file);
  cnf::event_loop loop;  // before the parts, which keep a pointer to it

  std::optional<served_parts> s;
  {
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
    if (!prof->encapsulation) sweep_encapsulation(*prof, loader, ctx, log);
    std::set<cnf::part> which{cnf::part::datastore, cnf::part::routing};
    if (prof->encapsulation) {
      which.insert(cnf::part::encapsulation);
      if (prof->ipam) which.insert(cnf::part::ipam);  // this node's tunnel address
    }
    if (prof->policy) which.insert(cnf::part::policy);
    auto parts = compose_parts(*prof, loader, which, ctx, /*fail_fast=*/false);
    if (!parts) {
      std::cerr << "cnf agent: " << parts.error().message << "\n";
      return 2;
    }
    node_parts = std::move(*parts);
    node = std::make_unique<node_agent>(loop, log, *prof, node_parts.datastore, node_parts.routing);
    if (node_parts.encapsulation) node->set_encapsulation(node_parts.encapsulation, node_parts.ipam);
    if (node_parts.policy) node->set_policy(node_parts.policy, prof->policy->plugin);
    if (auto r = node->start(); !r) {
      std::cerr << "cnf agent: " << r.error().message << "\n";
      return 2;
    }
  }

  std::optional<cni_server> cni;
  std::optional<agent_listener> listener;
  {
    auto l = agent_listener::open(s->prof.cni.agent_socket);  // @cnf-agent, and the profile's agent_socket if set
    if (!l) {
      std::cerr << "cnf agent: " << l.error().message << "\n";
      return 1;
    }
    listener.emplace(std::move(*l));
    cni.emplace(cni_server{loop, log, path, *s, s->prof.cni.agent_socket, node.get()});
    loop.watch_readable(listener->fd(), [&] { cni->serve_one(*listener); });
    log.info(fmt::format("serving CNI calls on {} (profile {}, pid {})", listener->where(), path, ::getpid()));
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
  listener.reset();  // the socket file goes with the agent (unless another agent has replaced it meanwhile)
  if (cni)
    if (auto f = s->parts.datastore.sync(); !f) log.warn("datastore: " + f.error().message);
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
      "with the profile's [routing] plugin (blackholes for this node's own blocks), and this node's network policy\n"
      "with its [policy] plugin (iptables or nftables; a pod's ADD served here programs its policy before it answers);\n"
      "health, metrics and status on\n"
      "127.0.0.1:[agent] health_port. It also serves the CNI plugin's calls at @cnf-agent (the abstract socket of its\n"
      "network namespace, where cnf-shim looks) and at [cni] agent_socket if set, with the parts loaded once instead\n"
      "of per call (one at a time; a changed profile is read again before the next call).\n"
      "Runs in the foreground until SIGTERM/SIGINT/SIGHUP (it finishes the call or apply in progress, leaves the\n"
      "kernel's routes for the next agent and removes its socket). Start it in the node's network namespace.");
  a->add_option("--profile", profile, "Profile to serve (default: $CNF_PROFILE, else /etc/cnf/profile.toml)");
  a->callback([] { exit_code() = run_agent(profile); });
}

}  // namespace cnf_app
