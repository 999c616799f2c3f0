// The CNI command engine (engine.hpp): the plugin a container runtime execs (CNI spec 1.1,
// plugin side), for any distribution built on cnf.
//
// stdin: network config; environment: CNI_*; stdout: only the result or the error JSON;
// logs: stderr and, when the profile names one, a log file. Only the parts a command
// needs are loaded (datastore and IPAM), never routing or policy.
#include <cnf/cni/agent_client.hpp>
#include <cnf/cni/config.hpp>
#include <cnf/cni/engine.hpp>
#include <cnf/cni/env.hpp>
#include <cnf/cni/error.hpp>
#include <cnf/cni/fail_fast.hpp>
#include <cnf/cni/logger.hpp>
#include <cnf/cni/result.hpp>
#include <cnf/cni/workload.hpp>
#include <cnf/netlink/link.hpp>
#include <cnf/netlink/netns.hpp>
#include <cnf/netlink/veth_plumbing.hpp>

#include <fmt/format.h>

#include <fcntl.h>
#include <malloc.h>
#include <spawn.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <iostream>
#include <set>
#include <span>
#include <thread>

extern char** environ;

CNF_BEGIN_NAMESPACE
namespace cni {
namespace {

namespace cni = cnf::cni;
namespace nl = cnf::netlink;
using cni::error_code;

cni::error make(error_code c, std::string msg, std::string details = {}) { return cni::error{c, std::move(msg), std::move(details)}; }

/// Maps a part's error to a CNI error; `what` says which step failed.
cni::error from_part(const cnf::error& e, std::string_view what) {
  auto c = cni::to_cni_code(e.code);
  if (e.code == cnf::errc::not_found || e.code == cnf::errc::internal) c = error_code::datastore_error;
  return make(c, fmt::format("{}: {}", what, e.message));
}

/// All of stdin. A read error (stdin closed, or not readable such as a directory) is an
/// I/O failure (code 5), not an empty config (which would be reported as code 6).
cni::result<std::string> read_stdin() {
  std::string s;
  if (int e = read_to_end(0, s, std::string().max_size()); e != 0)
    return make(error_code::io_failure, "stdin: cannot read the network config: " + std::string(std::strerror(e)));
  return s;
}

/// The version an error is written in when the config could not be parsed: the one the
/// input negotiates if it names a supported version, otherwise the latest (echoing an
/// unsupported "9.9.9" back would give the runtime a reply in no known format).
std::string reply_version(std::string_view in) {
  boost::system::error_code ec;
  auto v = boost::json::parse(in, ec);
  std::string cv;
  std::vector<std::string> cvs;
  if (!ec)
    if (auto* o = v.if_object()) {
      if (auto* p = o->if_contains("cniVersion"); p && p->is_string()) cv = std::string(p->as_string());
      if (auto* p = o->if_contains("cniVersions"); p && p->is_array())
        for (auto& e : p->as_array())
          if (e.is_string()) cvs.emplace_back(e.as_string());
    }
  auto n = cni::negotiate(cv, std::span<const std::string>(cvs));
  return std::string(cni::to_string(n.value_or(cni::latest_version)));
}

// ---- delegation to an IPAM binary (CNI spec: "delegated plugins") ---------------------

struct exec_result {
  int status = -1;
  std::string out;
};

/// Runs `binary` with the call's environment (`vars`, "NAME=value"), CNI_COMMAND set to
/// `command`, and `stdin_text` on its stdin.
cnf::result<exec_result> exec_plugin(const std::string& binary, const std::string& command, const std::string& stdin_text,
                                     const std::vector<std::string>& vars) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC)) return cnf::error(cnf::errc::io, "pipe: " + std::string(std::strerror(errno)));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  std::vector<std::string> env_store;
  for (auto& v : vars)
    if (v.rfind("CNI_COMMAND=", 0) != 0) env_store.push_back(v);
  env_store.push_back("CNI_COMMAND=" + command);
  std::vector<char*> envp;
  for (auto& s : env_store) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string arg0 = binary;
  char* argv[] = {arg0.data(), nullptr};
  pid_t pid = -1;
  int rc = posix_spawn(&pid, binary.c_str(), &fa, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    return cnf::error(cnf::errc::io, "cannot run " + binary + ": " + std::strerror(rc));
  }
  // Write and read concurrently so neither side blocks on a full pipe.
  std::thread writer([&] {
    std::size_t off = 0;
    while (off < stdin_text.size()) {
      ssize_t n = ::write(in[1], stdin_text.data() + off, stdin_text.size() - off);
      if (n <= 0 && errno != EINTR) break;
      if (n > 0) off += static_cast<std::size_t>(n);
    }
    ::close(in[1]);
  });
  exec_result r;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n > 0) r.out.append(buf, static_cast<std::size_t>(n));
    else if (n == 0 || errno != EINTR) break;
  }
  ::close(out[0]);
  writer.join();
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

cni::result<std::string> find_binary(const cni::environment& env, const std::string& type) {
  for (auto& dir : env.path) {
    auto p = std::filesystem::path(dir) / type;
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return make(error_code::invalid_config, fmt::format("ipam.type: IPAM plugin '{}' not found on CNI_PATH ({})", type, env.path_raw));
}

/// Runs the delegated IPAM binary; on ADD returns its parsed result.
cni::result<cni::add_result> delegate_ipam(const cni::environment& env, const std::vector<std::string>& vars, const cni::net_config& cfg,
                                           std::string_view command) {
  auto bin = find_binary(env, cfg.ipam->type);
  if (!bin) return bin.error();
  auto r = exec_plugin(*bin, std::string(command), cfg.raw, vars);
  if (!r) return make(error_code::io_failure, "ipam " + cfg.ipam->type + ": " + r.error().message);
  if (r->status != 0) {
    auto e = cni::parse_error_output(r->out);
    e.msg = fmt::format("ipam {} {}: {}", cfg.ipam->type, command, e.msg);
    return e;
  }
  if (command != "ADD") return cni::add_result{};
  auto res = cni::parse_result(r->out, cfg.version);
  if (!res) return make(error_code::decoding_failure, "ipam " + cfg.ipam->type + " result: " + res.error().msg);
  return *res;
}

// ---- dataplane work started early -------------------------------------------------------

/// The kernel work a command can start before the plugins are loaded, on a thread of its
/// own (threads start in the node namespace, like the main thread), so that it runs while
/// the plugins load and the IPAM assigns:
///  ADD: the veth with its sysctls (begin_plumb_pod, which needs no address); cmd_add
///       finishes it once the addresses are known, or, when it could not be started
///       (a name is taken, ...), does everything itself as before (plumb_pod);
///  DEL: the veth delete, which waits for an RCU grace period in the kernel (~17 ms here).
/// A veth started for ADD and not taken is removed when this goes away, on every path.
class early_dataplane {
 public:
  struct veth {
    nl::rtnl_socket node;  // opened in the node namespace
    nl::pod_plumbing_started started;
  };
  early_dataplane() = default;
  early_dataplane(const early_dataplane&) = delete;
  early_dataplane& operator=(const early_dataplane&) = delete;
  ~early_dataplane() {
    discard();
    if (unplumb_.valid()) unplumb_.wait();
  }

  /// ADD: never replaces an existing interface (begin_plumb_pod with replace_stale false).
  void start_add(nl::pod_plumbing_request pr, bool v4, bool v6) {
    add_ = std::async(std::launch::async, [pr = std::move(pr), v4, v6]() -> cnf::result<veth> {
      auto node = nl::rtnl_socket::open();
      if (!node) return std::move(node).error();
      auto st = nl::begin_plumb_pod(*node, pr, v4, v6, /*replace_stale=*/false);
      if (!st) return std::move(st).error();
      return veth{std::move(*node), std::move(*st)};
    });
  }
  /// The veth started for ADD, or nullopt when none was started or starting it failed
  /// (nothing is left behind then). Waits for the thread.
  std::optional<veth> take() {
    if (!add_.valid()) return std::nullopt;
    auto r = add_.get();
    if (!r) return std::nullopt;
    return std::move(*r);
  }
  /// Removes a veth started for ADD that nobody took (waits for the thread first).
  void discard() {
    if (auto v = take()) (void)nl::abort_plumb_pod(v->node, v->started);
  }

  void start_del(std::string host_ifname) {
    unplumb_ = std::async(std::launch::async, [h = std::move(host_ifname)] { return nl::unplumb_pod(h); });
  }
  bool add_started() const noexcept { return add_.valid(); }
  bool del_started() const noexcept { return unplumb_.valid(); }
  cnf::result<void> del_result() { return unplumb_.get(); }

 private:
  std::future<cnf::result<veth>> add_;
  std::future<cnf::result<void>> unplumb_;
};

/// The profile of a call whose network config names none: the call's $CNF_PROFILE, else
/// the distribution's default, else /etc/cnf/profile.toml.
std::string default_profile(const std::vector<std::string>& env, const engine_hooks& h) {
  for (auto& v : env)
    if (v.starts_with("CNF_PROFILE=") && v.size() > 12) return v.substr(12);
  if (h.default_profile) return h.default_profile();
  return "/etc/cnf/profile.toml";
}

cnf::result<cnf::composition> compose_fail_fast(const cnf::profile& prof, const cnf::plugin_loader& loader, const std::set<cnf::part>& need,
                                                cnf::plugin_context ctx) {
  cnf::compose_hooks h;
  h.wrap_datastore = [](cnf::any_datastore d) { return cnf::any_datastore(fail_fast_datastore(std::move(d))); };
  return cnf::compose(prof, loader, need, std::move(ctx), h);
}

// ---- the command context --------------------------------------------------------------

struct context {
  const engine_hooks* hooks = nullptr;
  std::vector<std::string> vars;  // the call's environment, "NAME=value" (passed on to a delegated IPAM)
  cni::environment env;
  cni::net_config cfg;
  cnf::profile prof;
  call_logger log;
  cnf::composition parts;
  bool delegated_ipam = false;
  bool ipam_mode = false;  // cnf is another plugin's IPAM (ipam_invocation)
  std::string node;
  pod_identity pod;
  // Where a command's time goes, for the debug log (log_level = "debug"): each mark()
  // closes a phase that began at the previous mark (the first at run_cni's start).
  std::chrono::steady_clock::time_point since = std::chrono::steady_clock::now();
  std::vector<std::pair<const char*, long long>> phases;
  void mark(const char* phase) {
    auto now = std::chrono::steady_clock::now();
    phases.emplace_back(phase, std::chrono::duration_cast<std::chrono::microseconds>(now - since).count());
    since = now;
  }
  void log_phases() {
    if (!log.enabled(cnf::log_level::debug)) return;
    std::string s;
    long long total = 0;
    for (auto& [what, us] : phases) {
      s += fmt::format("{}{} {}", s.empty() ? "" : ", ", what, us);
      total += us;
    }
    log.debug(fmt::format("phases (us): {}; total {}", s, total));
  }
  std::optional<cnf::mac_address> pod_mac;  // chosen once per command: pod_mac_for
  early_dataplane early;  // last: its work is undone or waited for before the rest goes
};

/// IPAM built into cnf (from the profile) unless the network config names another binary.
bool uses_delegated_ipam(const cni::net_config& cfg) {
  return cfg.ipam && !cfg.ipam->type.empty() && cfg.ipam->type != "cnf" && cfg.ipam->type != cfg.type;
}

void start_early_dataplane(context& c);

/// A failure to compose the parts as a CNI error: a setting or a plugin the profile names
/// is wrong: 7. The datastore cannot be reached: 11 (retry later). It answered, but
/// unusably (its directory is a file, ...): 101. STATUS turns the last two into 50.
cni::error compose_error(const cnf::error& e) {
  auto code = error_code::invalid_config;
  switch (e.code) {
    case cnf::errc::unavailable: code = error_code::try_again_later; break;
    case cnf::errc::invalid: case cnf::errc::not_found: case cnf::errc::unsupported: break;
    default: code = error_code::datastore_error;
  }
  return make(code, e.message);
}

/// The profile's settings for this call (c.prof, the logger, the node name).
cni::result<void> use_profile(context& c, cnf::profile prof) {
  c.prof = std::move(prof);
  c.mark("profile");
  c.log.configure(c.prof.cni.level, c.prof.cni.log_file);
  c.node = c.prof.node_name();
  if (!c.delegated_ipam && !c.prof.ipam)
    return make(error_code::invalid_config, c.prof.file + ": no [ipam] section, and the network config names no IPAM plugin");
  return {};
}

cni::result<void> load_profile(context& c, const std::string& profile) {
  std::string path = profile.empty() ? default_profile(c.vars, *c.hooks) : profile;
  auto p = cnf::load_profile(path);
  if (!p) return make(error_code::invalid_config, "profile: " + p.error().message);
  return use_profile(c, std::move(*p));
}

/// The parts a command needs (datastore, and IPAM unless delegated), composed for this
/// call; the kernel work that can start early starts first, and runs while they load.
cni::result<void> load_parts(context& c) {
  std::set<cnf::part> need{cnf::part::datastore};
  if (!c.delegated_ipam) need.insert(cnf::part::ipam);
  start_early_dataplane(c);
  cnf::plugin_loader loader(c.hooks->plugin_path ? c.hooks->plugin_path(&c.prof)
                                                  : cnf::plugin_loader::default_search_path(c.prof.plugin_path, {}));
  cnf::plugin_context ctx;
  ctx.node_name = c.node;
  ctx.log = &c.log;
  auto parts = c.hooks->compose ? c.hooks->compose(c.prof, loader, need, ctx) : compose_fail_fast(c.prof, loader, need, ctx);
  if (!parts) return compose_error(parts.error());
  c.parts = std::move(*parts);
  // Writes wait for no flush until the command is done (run_call calls sync()): one
  // flush per command instead of one per write. A no-op for etcd and Kubernetes.
  c.parts.datastore.defer_sync(true);
  c.mark("plugins");
  return {};
}

cnf::result<std::string> veth_name_for(const context& c) {
  const std::string& prefix = c.cfg.veth_prefix.empty() ? c.prof.cni.veth_prefix : c.cfg.veth_prefix;
  if (c.pod.k8s()) return nl::host_veth_name(prefix, c.pod.ns, c.pod.name);
  if (prefix.size() > 4) return cnf::error(cnf::errc::invalid, "vethPrefix '" + prefix + "' is longer than 4 characters");
  return prefix + nl::detail::sha1_hex(c.env.container_id).substr(0, 11);
}

std::string handle_for(const context& c) { return c.cfg.name + "." + c.env.container_id; }

/// What ADD asks the built-in IPAM for: one address per family the profile assigns, or
/// exactly the requested ones (runtimeConfig/args "ips", CNI_ARGS IP).
cni::result<cnf::assign_request> assign_request_for(const context& c, const std::string& handle) {
  cnf::assign_request req;
  req.handle = handle;
  req.node = c.node;
  req.attributes = {{"node", c.node}, {"containerID", c.env.container_id}};
  if (c.pod.k8s()) {
    req.attributes["namespace"] = c.pod.ns;
    req.attributes["pod"] = c.pod.name;
  }
  req.num_v4 = c.prof.cni.assign_ipv4 ? 1 : 0;
  req.num_v6 = c.prof.cni.assign_ipv6 ? 1 : 0;
  for (auto* list : {&c.cfg.runtime.ips, &c.cfg.args_ips})
    for (auto& ip : *list) req.requested.push_back(ip.address);
  if (auto ip = c.env.args.get("IP"))
    for (auto part : split(*ip, ',')) {
      auto a = cnf::ip_prefix::parse(std::string(part), true);
      auto addr = a ? cnf::result<cnf::ip_address>(a->address()) : cnf::ip_address::parse(part);
      if (!addr) return make(error_code::invalid_environment, "CNI_ARGS IP: " + addr.error().message);
      req.requested.push_back(*addr);
    }
  if (!req.requested.empty()) {
    req.num_v4 = req.num_v6 = 0;
    for (auto& a : req.requested) (a.is_v4() ? req.num_v4 : req.num_v6)++;
  }
  return req;
}

/// The pod interface's MAC: runtimeConfig "mac" when given, else a random locally
/// administered unicast address (what the kernel would pick), chosen here rather than by
/// the kernel so that ADD can record the workload endpoint, MAC included, before the veth
/// exists, and flush it together with the addresses in one durable write that overlaps
/// the kernel's work.
const cnf::mac_address& pod_mac_for(context& c) {
  if (c.pod_mac) return *c.pod_mac;
  if (c.cfg.runtime.mac) return c.pod_mac.emplace(*c.cfg.runtime.mac);
  cnf::mac_address m;
  std::size_t got = 0;
  while (got < m.bytes.size()) {
    ssize_t n = ::getrandom(m.bytes.data() + got, m.bytes.size() - got, 0);
    if (n > 0) got += static_cast<std::size_t>(n);
    else if (errno != EINTR) {  // no entropy source at all: vary by time and pid
      auto t = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^ (std::uint64_t(::getpid()) << 32);
      for (std::size_t i = 0; i < m.bytes.size(); ++i) m.bytes[i] = static_cast<std::uint8_t>(t >> (8 * i));
      break;
    }
  }
  m.bytes[0] = static_cast<std::uint8_t>((m.bytes[0] & 0xfe) | 0x02);  // unicast, locally administered
  if (m == nl::host_side_mac()) m.bytes[5] ^= 1;
  return c.pod_mac.emplace(m);
}

/// The MTU of the pod's veth: the network config's, else the profile's, else the one the
/// agent serving the call detected, else the profile's fallback. `checking` (CHECK, or an
/// ADD that finds the pod attached): with nothing to go by but the fallback, 0, so the
/// MTU is not compared with a figure the pod was never given.
unsigned pod_mtu(const context& c, bool checking) {
  if (c.cfg.mtu) return *c.cfg.mtu;
  if (c.prof.cni.mtu_set) return c.prof.cni.mtu;
  if (c.hooks && c.hooks->pod_mtu)
    if (unsigned m = c.hooks->pod_mtu(); m >= cni::min_mtu && m <= cni::max_mtu) return m;
  return checking ? 0 : c.prof.cni.mtu;
}

/// The plumbing request of this attachment, without addresses.
nl::pod_plumbing_request plumbing_request_for(context& c, const std::string& host_if) {
  nl::pod_plumbing_request pr;
  pr.netns_path = c.env.netns;
  pr.pod_ifname = c.env.ifname;
  pr.host_ifname = host_if;
  pr.mtu = pod_mtu(c, false);
  // One TX and one RX queue per end, as Calico's default num_queues: the same real queue
  // count the kernel ends up with by default, without the two RCU grace periods (under
  // the RTNL lock) it spends cutting a veth's per-CPU queues down to one.
  pr.queues = 1;
  if (c.env.cmd == cni::command::add) pr.pod_mac = pod_mac_for(c);
  return pr;
}

/// Called by load_parts once the profile is read, before the plugins load. Starts only
/// what cannot do harm: anything unusual (delegated IPAM, a bad name) is left to the
/// command, which then does all of its work itself and reports the problem.
void start_early_dataplane(context& c) {
  if (c.ipam_mode) return;  // no interface of ours
  if (c.env.cmd == cni::command::del) {
    if (auto h = veth_name_for(c)) c.early.start_del(*h);
    return;
  }
  if (c.env.cmd != cni::command::add || c.delegated_ipam) return;
  auto h = veth_name_for(c);
  auto req = assign_request_for(c, handle_for(c));
  if (!h || !req || (req->num_v4 == 0 && req->num_v6 == 0)) return;
  c.early.start_add(plumbing_request_for(c, *h), req->num_v4 > 0, req->num_v6 > 0);
}

// ---- ADD ------------------------------------------------------------------------------

/// The ADD result for an attachment: the host veth, the pod interface in its sandbox,
/// the pod's addresses (/32, /128) and a default route per family.
cni::add_result attachment_result(const context& c, const std::string& host_if, const cnf::mac_address& host_mac,
                                  const cnf::mac_address& pod_mac, const std::vector<cnf::ip_prefix>& addresses,
                                  const cni::dns_config& dns) {
  cni::add_result res;
  res.interfaces.push_back({host_if, host_mac.to_string()});
  res.interfaces.push_back({c.env.ifname, pod_mac.to_string(), 0, c.env.netns});
  for (auto& a : addresses) res.ips.push_back({a, std::nullopt, 1u});
  bool v4 = false, v6 = false;
  for (auto& a : addresses) (a.address().is_v4() ? v4 : v6) = true;
  if (v4) res.routes.push_back({cnf::ip_prefix::parse("0.0.0.0/0").value(), nl::pod_gateway_v4()});
  if (v6) res.routes.push_back({cnf::ip_prefix::parse("::/0").value(), nl::pod_gateway_v6()});
  res.dns = dns;
  return res;
}

/// The IPAM refused to assign because `handle` already holds addresses: this container
/// was ADDed to this network before. The spec says a runtime must not ADD the same
/// attachment twice without a DEL between, but retries happen (a runtime restarted
/// mid-call), so:
///  * the same attachment (same CNI_IFNAME), recorded and intact in the kernel: success,
///    with the same result as the first ADD (nothing is changed);
///  * anything else — the attachment is recorded but broken, the container holds another
///    interface on this network, or an earlier ADD died before recording anything — is
///    error 103 naming what is there; the runtime's DEL (which it sends after a failed
///    ADD) removes it, and the next ADD starts clean.
/// nullopt when the handle holds nothing: the conflict was about something else (a
/// requested address held by another pod), and the caller reports that.
std::optional<cni::result<cni::add_result>> repeated_add(context& c, const std::string& handle, const std::string& host_if,
                                                         const std::vector<cnf::ip_address>& requested) {
  auto addrs = c.parts.ipam.addresses_of(handle);
  if (!addrs) return std::nullopt;
  std::vector<cnf::ip_prefix> held;
  for (auto& a : *addrs) held.emplace_back(a, a.bits());
  if (held.empty()) return std::nullopt;
  const std::string what = fmt::format("container {} already holds {} on network {}", c.env.container_id, join_prefixes(held), c.cfg.name);

  auto wep = get_workload_endpoint(c.parts.datastore, c.node, c.pod, c.env.container_id, c.env.ifname);
  if (wep && wep->handle == handle) {
    std::vector<std::string> problems;
    if (wep->netns != c.env.netns) problems.push_back("it was added in netns " + wep->netns + ", this ADD names " + c.env.netns);
    if (wep->host_ifname != host_if) problems.push_back("its host interface is " + wep->host_ifname + ", this ADD would use " + host_if);
    for (auto& r : requested) {
      bool ok = false;
      for (auto& a : wep->addresses) ok = ok || a.address() == r;
      if (!ok) problems.push_back("it holds " + join_prefixes(wep->addresses) + ", this ADD requests " + r.to_string());
    }
    if (problems.empty()) {
      nl::pod_plumbing_request pr;
      pr.netns_path = c.env.netns;
      pr.pod_ifname = c.env.ifname;
      pr.host_ifname = host_if;
      pr.addresses = wep->addresses;
      pr.mtu = pod_mtu(c, true);
      pr.pod_mac = c.cfg.runtime.mac;
      for (auto& e : nl::check_pod(pr)) problems.push_back(e.message);
    }
    if (problems.empty()) {
      c.log.info(fmt::format("{} {}: already attached and intact; returning the same result", c.pod.describe(), c.env.ifname));
      return attachment_result(c, host_if, nl::host_side_mac(), wep->mac, wep->addresses, c.cfg.dns);
    }
    return make(error_code::interface_exists,
                fmt::format("{} as {}, but that attachment is not intact ({}); DEL it before adding it again", what, c.env.ifname,
                            fmt::join(problems, "; ")));
  }
  if (auto eps = list_workload_endpoints(c.parts.datastore, c.node))
    for (auto& e : *eps)
      if (e.handle == handle && e.network == c.cfg.name)
        return make(error_code::interface_exists,
                    fmt::format("{} through interface {} (host side {}); cnf gives a container one interface per network", what,
                                e.pod_ifname, e.host_ifname));
  return make(error_code::interface_exists,
              fmt::format("{} from an earlier ADD that did not finish; DEL it before adding it again", what));
}

cni::result<cni::add_result> cmd_add(context& c) {
  // Refuse an unusable netns before allocating anything.
  if (auto ns = nl::open_netns(c.env.netns); !ns)
    return make(error_code::invalid_environment, "CNI_NETNS: " + ns.error().message);
  auto host_if = veth_name_for(c);
  if (!host_if) return make(error_code::invalid_config, host_if.error().message);
  const std::string handle = handle_for(c);

  // Addresses: the IPAM's, or the delegated binary's.
  std::vector<cnf::ip_prefix> addrs;
  std::vector<cnf::assigned_address> assigned;
  auto release = [&] {
    if (c.delegated_ipam) {
      if (auto r = delegate_ipam(c.env, c.vars, c.cfg, "DEL"); !r) c.log.warn("rollback: " + r.error().msg);
    } else if (auto r = c.parts.ipam.release_handle(handle); !r) {
      c.log.warn("rollback: release " + handle + ": " + r.error().message);
    }
  };
  cni::add_result ipam_result;
  if (c.delegated_ipam) {
    auto r = delegate_ipam(c.env, c.vars, c.cfg, "ADD");
    if (!r) return r.error();
    ipam_result = *r;
    for (auto& ip : r->ips) addrs.push_back(ip.address);
    if (addrs.empty()) {
      release();
      return make(error_code::invalid_config, "ipam " + c.cfg.ipam->type + " returned no address");
    }
  } else {
    auto rq = assign_request_for(c, handle);
    if (!rq) return rq.error();
    const cnf::assign_request& req = *rq;
    auto r = c.parts.ipam.assign(req);
    c.mark("ipam");
    if (!r) c.early.discard();  // before repeated_add looks at the kernel
    if (!r && r.error().code == cnf::errc::already_exists) {
      if (auto again = repeated_add(c, handle, *host_if, req.requested)) return std::move(*again);
      // A requested address (runtimeConfig/args "ips", CNI_ARGS IP) is another pod's: no
      // address this pod may have is free.
      return make(error_code::ipam_exhausted, "ipam " + c.prof.ipam->plugin + ": " + r.error().message);
    }
    if (!r) return from_part(r.error(), "ipam " + c.prof.ipam->plugin);
    assigned = *r;
    for (auto& a : assigned) addrs.push_back(a.address);
  }

  nl::pod_plumbing_request pr = plumbing_request_for(c, *host_if);
  for (auto& a : addrs) pr.addresses.push_back(nl::detail::host_prefix(a));
  // The endpoint is recorded with the addresses, before the veth is finished: one flush
  // makes the addresses, the handle and the endpoint durable (and visible to other
  // processes) together, while the kernel still creates the veth on the early thread,
  // and before the runtime hears of them. Every failure after it undoes all three (the
  // exit path flushes the undoing).
  workload_endpoint_record rec{c.node, c.pod, c.env.container_id, c.env.ifname, *host_if, c.cfg.name, handle, c.env.netns,
                               pr.addresses, *pr.pod_mac};
  auto undo_records = [&] {
    if (auto d = delete_workload_endpoint(c.parts.datastore, c.node, c.pod, c.env.container_id, c.env.ifname); !d)
      c.log.warn("rollback: workload endpoint: " + d.error().message);
    release();
  };
  if (auto w = put_workload_endpoint(c.parts.datastore, rec); !w) {
    c.early.discard();
    release();
    return from_part(w.error(), "datastore: workload endpoint");
  }
  c.mark("endpoint record");
  if (auto s = c.parts.datastore.sync(); !s) {
    c.early.discard();
    undo_records();
    return from_part(s.error(), "datastore");
  }
  c.mark("sync");
  // The veth is usually there already (begin_plumb_pod ran while the IPAM assigned and
  // the flush waited for the disk); when it could not be started, everything is done here.
  auto early = c.early.take();
  c.mark(early ? "wait for veth" : "no early veth");
  auto plumbed = early ? nl::finish_plumb_pod(early->node, early->started, pr) : nl::plumb_pod(pr);
  if (!plumbed) {
    undo_records();
    const auto& e = plumbed.error();
    auto code = e.code == cnf::errc::already_exists ? error_code::interface_exists : error_code::dataplane_failure;
    if (e.code == cnf::errc::invalid) code = error_code::invalid_config;
    return make(code, e.message);
  }

  c.mark("plumb");
  c.log_phases();
  c.log.info(fmt::format("{} {}: {} on {} ({} us in netlink)", c.pod.describe(), c.env.ifname, join_prefixes(pr.addresses), *host_if,
                         plumbed->elapsed.count()));
  return attachment_result(c, *host_if, plumbed->host_mac, plumbed->pod_mac, pr.addresses,
                           c.delegated_ipam && !ipam_result.dns.empty() ? ipam_result.dns : c.cfg.dns);
}

// ---- DEL ------------------------------------------------------------------------------

cni::result<void> cmd_del(context& c) {
  auto host_if = veth_name_for(c);
  if (!host_if) return make(error_code::invalid_config, host_if.error().message);
  const std::string handle = handle_for(c);
  // The kernel's veth delete waits for an RCU grace period (~17 ms here): it was started
  // before the plugins loaded (start_early_dataplane). The datastore work runs meanwhile,
  // the endpoint's removal beside the release (their durable writes then overlap).
  if (!c.early.del_started()) c.early.start_del(*host_if);
  auto wep = std::async(std::launch::async, [&] {
    return delete_workload_endpoint(c.parts.datastore, c.node, c.pod, c.env.container_id, c.env.ifname);
  });
  std::optional<cni::error> first;
  if (c.delegated_ipam) {
    if (auto r = delegate_ipam(c.env, c.vars, c.cfg, "DEL"); !r) first = r.error();
  } else if (auto r = c.parts.ipam.release_handle(handle); !r && r.error().code != cnf::errc::not_found) {
    first = from_part(r.error(), "ipam: release " + handle);
  }
  c.mark("release");
  if (auto r = wep.get(); !r && !first) first = from_part(r.error(), "datastore: workload endpoint");
  // Flush both while the kernel still deletes the veth, not after it.
  if (auto s = c.parts.datastore.sync(); !s && !first) first = from_part(s.error(), "datastore");
  c.mark("endpoint");
  auto u = c.early.del_result();
  c.mark("wait for veth delete");
  if (!u && !first) first = make(error_code::dataplane_failure, u.error().message);
  if (first) return *first;
  c.log_phases();
  c.log.info(fmt::format("{} {}: released {}, removed {}", c.pod.describe(), c.env.ifname, handle, *host_if));
  return {};
}

// ---- CHECK ----------------------------------------------------------------------------

cni::result<void> cmd_check(context& c) {
  if (!c.cfg.prev_result) return make(error_code::invalid_config, "prevResult: required for CHECK");
  if (auto ns = nl::open_netns(c.env.netns); !ns) return make(error_code::unknown_container, "CNI_NETNS: " + ns.error().message);
  auto host_if = veth_name_for(c);
  if (!host_if) return make(error_code::invalid_config, host_if.error().message);
  nl::pod_plumbing_request pr;
  pr.netns_path = c.env.netns;
  pr.pod_ifname = c.env.ifname;
  pr.host_ifname = *host_if;
  for (auto& ip : c.cfg.prev_result->ips) pr.addresses.push_back(nl::detail::host_prefix(ip.address));
  pr.mtu = pod_mtu(c, true);
  std::vector<std::string> problems;
  for (auto& e : nl::check_pod(pr)) problems.push_back(e.message);
  bool host_listed = false;
  for (auto& i : c.cfg.prev_result->interfaces) host_listed |= i.name == *host_if;
  if (!host_listed) problems.push_back("prevResult lists no host interface " + *host_if);
  auto wep = get_workload_endpoint(c.parts.datastore, c.node, c.pod, c.env.container_id, c.env.ifname);
  if (!wep) problems.push_back("workload endpoint: " + wep.error().message);
  if (c.delegated_ipam) {
    // The delegate checks its own allocation (the spec: CHECK is passed on to delegates).
    if (auto r = delegate_ipam(c.env, c.vars, c.cfg, "CHECK"); !r) problems.push_back(r.error().msg);
  } else {
    auto addrs = c.parts.ipam.addresses_of(handle_for(c));
    if (!addrs) return from_part(addrs.error(), "ipam: addresses of " + handle_for(c));
    const std::set<cnf::ip_address> held(addrs->begin(), addrs->end());
    for (auto& a : pr.addresses)
      if (!held.count(a.address())) problems.push_back("ipam: " + a.address().to_string() + " is not allocated to " + handle_for(c));
  }
  if (problems.empty()) return {};
  std::string msg = fmt::format("CHECK found {} problem(s): ", problems.size());
  for (std::size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
  return make(error_code::dataplane_failure, msg, fmt::format("{}", fmt::join(problems, "\n")));
}

// ---- STATUS ---------------------------------------------------------------------------

cni::result<void> pass_to_delegate(context& c, std::string_view command);

cni::result<void> cmd_status(context& c) {
  auto st = c.parts.datastore.status();
  if (!st) return make(error_code::plugin_not_available, "datastore unreachable: " + st.error().message);
  if (c.delegated_ipam) return pass_to_delegate(c, "STATUS");
  auto u = c.parts.ipam.usage();
  if (!u) return make(error_code::plugin_not_available, "ipam: " + u.error().message);
  if (u->pools.empty()) return make(error_code::plugin_not_available, "ipam " + c.prof.ipam->plugin + ": no address pool is configured");
  for (auto& p : u->pools)
    if (p.in_use < p.total) return {};
  return make(error_code::plugin_not_available, "ipam " + c.prof.ipam->plugin + ": every pool is full; no address can be assigned");
}

// ---- GC -------------------------------------------------------------------------------

cni::result<void> cmd_gc(context& c) {
  std::set<std::string> valid;
  std::set<std::pair<std::string, std::string>> valid_att;
  for (auto& a : *c.cfg.valid_attachments) {
    valid.insert(c.cfg.name + "." + a.container_id);
    valid_att.insert({a.container_id, a.ifname});
  }
  std::size_t released = 0, removed_links = 0, removed_eps = 0;
  if (c.delegated_ipam) {
    if (auto r = pass_to_delegate(c, "GC"); !r) return r;
  } else {
    auto r = c.parts.ipam.gc(c.cfg.name + ".", valid);
    if (!r) return from_part(r.error(), "ipam: gc");
    released = r->released_handles.size();
  }
  auto eps = list_workload_endpoints(c.parts.datastore, c.node);
  if (!eps) return from_part(eps.error(), "datastore: list workload endpoints");
  std::set<std::string> live_ifs;
  for (auto& e : *eps) {
    if (e.network != c.cfg.name) {
      live_ifs.insert(e.host_ifname);
      continue;
    }
    if (valid_att.count({e.container_id, e.pod_ifname})) {
      live_ifs.insert(e.host_ifname);
      continue;
    }
    if (auto u = nl::unplumb_pod(e.host_ifname); !u) c.log.warn("gc: " + u.error().message);
    else ++removed_links;
    if (auto r = remove_workload_endpoint(c.parts.datastore, e); r) ++removed_eps;
  }
  // Host veths with our prefix that no workload endpoint owns: an ADD killed midway.
  auto node_sock = nl::rtnl_socket::open();
  if (node_sock) {
    auto links = nl::list_links(*node_sock, c.prof.cni.veth_prefix, "veth");
    if (links)
      for (auto& l : *links)
        if (!live_ifs.count(l.name) && nl::unplumb_pod(*node_sock, l.name)) ++removed_links;
  }
  c.log.info(fmt::format("GC: released {} handle(s), removed {} endpoint(s), {} host interface(s)", released, removed_eps, removed_links));
  return {};
}

// ---- cnf as another plugin's IPAM ----------------------------------------------------
//
// A main plugin (ptp, bridge, another CNI) that names cnf in "ipam": {"type": ...} execs
// it with the whole network config: cnf then only assigns and releases addresses, with
// the IPAM its profile composes (ipam.profile, else the top-level "profile", else the
// default), under the handle <network>.<container id>, as Calico's calico-ipam binary
// does. No interface, route or workload endpoint is made: those are the main plugin's.

/// True when this process was exec'd as the IPAM of another plugin: ipam.type names this
/// binary and the network's own type does not.
bool ipam_invocation(const cni::net_config& cfg, std::string_view self) {
  return cfg.ipam && cfg.ipam->type == self && cfg.type != self;
}

/// The addresses `handle` holds (bare addresses: allocations carry no prefix). The IPAM
/// finds them by the handle, not by listing every allocation.
cnf::result<std::vector<cnf::ip_address>> held_by(context& c, const std::string& handle) { return c.parts.ipam.addresses_of(handle); }

cni::result<cni::add_result> ipam_add(context& c) {
  const std::string handle = handle_for(c);
  auto rq = assign_request_for(c, handle);
  if (!rq) return rq.error();
  auto r = c.parts.ipam.assign(*rq);
  c.mark("ipam");
  if (!r && r.error().code == cnf::errc::already_exists) {
    // The handle holds addresses already: a second ADD without a DEL, which the spec does
    // not allow. Like the reference host-local, refuse it (the main plugin then DELs,
    // which releases them); a requested address held by another pod is 100.
    auto held = held_by(c, handle);
    if (!held) return from_part(held.error(), "ipam " + c.prof.ipam->plugin);
    if (held->empty()) return make(error_code::ipam_exhausted, "ipam " + c.prof.ipam->plugin + ": " + r.error().message);
    std::vector<cnf::ip_prefix> hp;
    for (auto& a : *held) hp.emplace_back(a, a.bits());
    return make(error_code::interface_exists, fmt::format("container {} already holds {} on network {} (handle {}); DEL it before adding it again",
                                                          c.env.container_id, join_prefixes(hp), c.cfg.name, handle));
  }
  if (!r) return from_part(r.error(), "ipam " + c.prof.ipam->plugin);
  // Durable before the main plugin hears of them; undone when that fails.
  if (auto s = c.parts.datastore.sync(); !s) {
    if (auto u = c.parts.ipam.release_handle(handle); !u) c.log.warn("rollback: release " + handle + ": " + u.error().message);
    return from_part(s.error(), "datastore");
  }
  cni::add_result res;
  res.dns = c.cfg.dns;
  for (auto& a : *r) res.ips.push_back({a.address, a.gateway, std::nullopt});
  c.mark("ipam sync");
  c.log_phases();
  std::vector<cnf::ip_prefix> addrs;
  for (auto& ip : res.ips) addrs.push_back(ip.address);
  c.log.info(fmt::format("{}: {}", handle, join_prefixes(addrs)));
  return res;
}

cni::result<void> ipam_del(context& c) {
  const std::string handle = handle_for(c);
  if (auto r = c.parts.ipam.release_handle(handle); !r && r.error().code != cnf::errc::not_found)
    return from_part(r.error(), "ipam: release " + handle);
  c.log.info("released " + handle);
  return {};
}

/// CHECK: the handle holds addresses, and every address of prevResult is one of them.
cni::result<void> ipam_check(context& c) {
  const std::string handle = handle_for(c);
  auto held = held_by(c, handle);
  if (!held) return from_part(held.error(), "ipam: allocations");
  std::vector<std::string> problems;
  if (held->empty()) problems.push_back("ipam: " + handle + " holds no address");
  if (c.cfg.prev_result)
    for (auto& ip : c.cfg.prev_result->ips)
      if (std::find(held->begin(), held->end(), ip.address.address()) == held->end())
        problems.push_back("ipam: " + ip.address.address().to_string() + " is not allocated to " + handle);
  if (problems.empty()) return {};
  return make(error_code::dataplane_failure, fmt::format("CHECK found {} problem(s): {}", problems.size(), fmt::join(problems, "; ")));
}

cni::result<void> ipam_gc(context& c) {
  std::set<std::string> valid;
  for (auto& a : *c.cfg.valid_attachments) valid.insert(c.cfg.name + "." + a.container_id);
  auto r = c.parts.ipam.gc(c.cfg.name + ".", valid);
  if (!r) return from_part(r.error(), "ipam: gc");
  c.log.info(fmt::format("GC: released {} handle(s)", r->released_handles.size()));
  return {};
}

/// GC and STATUS are passed on to a delegated IPAM (the spec asks it). A delegate that
/// predates them (spec < 1.1, such as Debian 12's reference plugins, which answer 3
/// "missing containerID") answers 1, 3 or 4: that is logged, not an error of ours.
cni::result<void> pass_to_delegate(context& c, std::string_view command) {
  auto r = delegate_ipam(c.env, c.vars, c.cfg, command);
  if (r) return {};
  const auto code = r.error().code;
  if (code == error_code::incompatible_version || code == error_code::unknown_container || code == error_code::invalid_environment) {
    c.log.warn(fmt::format("ipam {} cannot {} ({}); skipped", c.cfg.ipam->type, command, r.error().msg));
    return {};
  }
  return r.error();
}

void emit_error(const cni::error& e, std::string_view version, call_logger* log, std::string& out) {
  if (log) log->error(fmt::format("error {}: {}", cni::to_uint(e.code), e.msg));
  out += e.to_json(version);
  out += '\n';
}

bool same_file(const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; }

}  // namespace

int run_call(const plugin_call& call, std::string& out, const served_parts* served, const engine_hooks& hooks) {
  const auto started = std::chrono::steady_clock::now();
  const std::string& in = call.input;
  std::vector<const char*> envp;
  for (auto& v : call.env) envp.push_back(v.c_str());
  envp.push_back(nullptr);
  auto env = cni::parse_env(envp.data());
  if (!env) {
    // Errors are written in the config's version when it can be read.
    emit_error(env.error(), reply_version(in), nullptr, out);
    return 1;
  }
  if (env->cmd == cni::command::version) {
    out += cni::version_output(cni::version_request_version(in)) + "\n";
    return 0;
  }
  auto cfg = cni::parse_config(in, env->cmd);
  if (!cfg) {
    emit_error(cfg.error(), reply_version(in), nullptr, out);
    return 1;
  }

  context c;
  c.hooks = &hooks;
  c.since = started;
  c.mark("config");
  c.env = std::move(*env);
  c.cfg = std::move(*cfg);
  c.log.set_prefix(c.env.container_id.empty() ? std::string(cni::to_string(c.env.cmd))
                                               : fmt::format("{} {}", cni::to_string(c.env.cmd), c.env.container_id));
  const std::string ver(cni::to_string(c.cfg.version));
  auto fail = [&](const cni::error& e) {
    emit_error(e, ver, &c.log, out);
    return 1;
  };
  c.pod = pod_identity::from(c.env.args);
  c.vars = call.env;
  c.ipam_mode = ipam_invocation(c.cfg, call.self);
  // The profile: the network's "profile"; as another plugin's IPAM, "ipam.profile" first.
  std::string profile = c.cfg.profile;
  if (c.ipam_mode)
    if (auto it = c.cfg.ipam->json.find("profile"); it != c.cfg.ipam->json.end()) {
      if (!it->value().is_string() || it->value().as_string().empty() || it->value().as_string()[0] != '/')
        return fail(make(error_code::invalid_config, "ipam.profile: must be an absolute path (a string starting with '/')"));
      profile = std::string(it->value().as_string());
    }
  // cnf gives pods routed /32 and /128 addresses; it does not masquerade (outgoing NAT is
  // the IP pool's natOutgoing, done by the node agent).
  if (!c.ipam_mode)
    if (auto it = c.cfg.json.find("ipMasq"); it != c.cfg.json.end() && it->value().is_bool() && it->value().as_bool())
      return fail(make(error_code::unsupported_field,
                       "ipMasq: true is not supported by cnf; outgoing NAT is the IP pool's natOutgoing (remove ipMasq or set it false)"));
  c.delegated_ipam = !c.ipam_mode && uses_delegated_ipam(c.cfg);  // before the CNI_PATH check below needs it
  if (c.cfg.veth_prefix.size() > 4)
    return fail(make(error_code::invalid_config, "vethPrefix: at most 4 characters (the host veth name adds 11 hex digits)"));
  if (c.delegated_ipam && c.env.path.empty() &&
      (c.env.cmd == cni::command::add || c.env.cmd == cni::command::del || c.env.cmd == cni::command::check))
    return fail(make(error_code::invalid_environment, "CNI_PATH: required to run the IPAM plugin '" + c.cfg.ipam->type + "'"));
  // STATUS asks "can ADD work now?": a datastore that cannot be opened or reached is
  // "not available" (50); a broken profile stays a config error (7).
  auto setup_failed = [&](const cni::error& e) {
    if (c.env.cmd == cni::command::status && e.code != error_code::invalid_config)
      return fail(make(error_code::plugin_not_available, "datastore unavailable: " + e.msg));
    return fail(e);
  };
  if (served) {
    // In the agent: its parts serve this call when the call names the agent's profile
    // (with none in the config: the caller's $CNF_PROFILE, else the default, as in cnf).
    std::string path = profile.empty() ? default_profile(call.env, hooks) : profile;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !same_file(st, served->id)) {
      out = fmt::format("this agent serves {}, the call names {}", served->path, path);
      return not_served;
    }
    if (auto r = use_profile(c, served->prof); !r) return fail(r.error());
    start_early_dataplane(c);  // the kernel works while the IPAM assigns
    c.parts = served->parts;
    c.mark("plugins");
  } else {
    if (auto r = load_profile(c, profile); !r) return setup_failed(r.error());
    // The profile names an agent socket: hand the call over when the agent runs there.
    if (const auto& sock = c.prof.cni.agent_socket; !sock.empty()) {
      auto a = ask_agent(sock, call);
      switch (a.what) {
        case agent_answer::kind::answered:
          out += a.out;
          return a.status;
        case agent_answer::kind::lost:
          return fail(make(error_code::try_again_later, a.out + "; what it did is unknown: try the call again"));
        case agent_answer::kind::declined:
          c.log.warn("agent at " + sock + " declined the call (" + a.out + "); doing it here");
          break;
        case agent_answer::kind::absent:
          c.log.debug("no agent: " + a.out + "; doing the call here");
          break;
      }
      c.mark("agent");
    }
    if (auto r = load_parts(c); !r) return setup_failed(r.error());
  }

  // Every write of the command is flushed before its answer is written (ADD flushes its
  // own, undoing its work when that fails); a failed command's rollback is flushed too.
  struct flush_at_exit {
    context& c;
    ~flush_at_exit() {
      if (!c.parts.datastore) return;
      if (auto s = c.parts.datastore.sync(); !s) c.log.warn("datastore: " + s.error().message);
    }
  } flush{c};
  auto synced = [&](cni::result<void> r) -> cni::result<void> {
    if (!r) return r;
    if (auto s = c.parts.datastore.sync(); !s) return from_part(s.error(), "datastore");
    return r;
  };
  auto done = [&](const cni::result<void>& r) { return r ? 0 : fail(r.error()); };
  // As another plugin's IPAM, the same commands touch addresses only (STATUS is the same).
  using command_fn = cni::result<void> (*)(context&);
  const command_fn del = c.ipam_mode ? ipam_del : cmd_del;
  const command_fn check = c.ipam_mode ? ipam_check : cmd_check;
  const command_fn gc = c.ipam_mode ? ipam_gc : cmd_gc;
  switch (c.env.cmd) {
    case cni::command::add: {
      auto r = c.ipam_mode ? ipam_add(c) : cmd_add(c);
      if (!r) return fail(r.error());
      out += cni::to_json(*r, c.cfg.version) + "\n";
      return 0;
    }
    case cni::command::del: return done(synced(del(c)));
    case cni::command::check: return done(synced(check(c)));
    case cni::command::status: return done(synced(cmd_status(c)));
    case cni::command::gc: return done(synced(gc(c)));
    case cni::command::version: break;
  }
  return 0;
}

int run_plugin_main(char** argv, const engine_hooks& hooks) {
  // One malloc arena for the few helper threads of a CNI call: a thread's own arena
  // costs page faults (~0.1 ms each on a busy VM) for nothing in a process this short.
  ::mallopt(M_ARENA_MAX, 1);
  plugin_call call;
  for (char** e = environ; *e; ++e) call.env.emplace_back(*e);
  std::string_view self = argv && argv[0] ? argv[0] : "cnf";
  if (auto s = self.rfind('/'); s != std::string_view::npos) self.remove_prefix(s + 1);
  call.self = std::string(self);
  std::string out;
  int status = 1;
  if (auto in = read_stdin(); !in) {
    emit_error(in.error(), cni::spec_version, nullptr, out);
  } else {
    call.input = std::move(*in);
    status = run_call(call, out, nullptr, hooks);
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return status;
}

}  // namespace cni
CNF_END_NAMESPACE
