// cnf under a real container runtime: Debian 12's containerd 1.6 and runc start a
// container, and `ctr run --cni` networks it through cnf, the way a node would.
//
// Nothing changes on the host. containerd runs inside a throw-away node network namespace
// (nsenter --net) and a private mount namespace (unshare -m --propagation private) in which
//   /run              is a tmpfs (containerd's shim sockets, runc's state, ctr's FIFOs),
//   /opt              is a tmpfs holding /opt/cni/bin = the test's CNI bin directory,
//   /etc              is an overlay whose upper layer is in the test's temp dir, with
//                     /etc/cni/net.d = the test's conf directory (the directories ctr
//                     1.6's go-cni reads; they cannot be configured),
//   /var/lib          is such an overlay too (libcni caches each ADD's result in
//                     /var/lib/cni/results and hands it to DEL as prevResult);
// containerd's root, state, socket and config are in the temp dir, its CRI plugin is off,
// and the container's root filesystem is a directory holding a static busybox (--rootfs:
// no image, no network access). containerd, its shims and the container are stopped by
// PID, the runtime's cgroups (/sys/fs/cgroup/*/<namespace>) are removed, and the temp dir
// and namespaces go away on every exit path.
//
// The CNI bin directory's `cnf` is a shell wrapper that records each call (command,
// CNI_* variables, stdin) and execs the built cnf with the same environment and stdin.
//
// In containerd 1.6, `ctr run --cni` makes the CNI calls itself (go-cni, in the ctr
// process): ADD after the task is created and before it starts, DEL after the task has
// exited and been deleted (so with an empty CNI_NETNS), and only when ctr waits for the
// container (not with --detach). containerd's daemon calls CNI only from its CRI plugin.
//
// Root only (else "skipped: needs root", exit 77).
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../support/process.hpp"
#include "../support/root_gate.hpp"
#include "netns_harness.hpp"
#include "store_view.hpp"

#include <cnf/datastore.hpp>
#include <cnf/loader.hpp>
#include <cnf/profile.hpp>

#include <boost/json.hpp>

#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace fs = std::filesystem;
namespace bj = boost::json;
using cnf_test::shell_quote;
using cnf_test::test_netns;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

CNF_TEST_ROOT_GATE("network and mount namespaces, containerd");

namespace {

const std::string cnf_bin = [] {
  const char* e = std::getenv("CNF_TEST_CNF");
  return e && *e ? std::string(e) : std::string(CNF_TEST_BIN_DIR) + "/cnf";
}();
constexpr const char* network = "cnf-containerd";

/// The absolute path of a program from Debian's packages, "" when none.
std::string program(const std::string& name) {
  for (const char* d : {"/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"})
    if (::access((d + name).c_str(), X_OK) == 0) return d + name;
  return {};
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

template <class F>
bool eventually(F&& pred, int ms) {
  for (int waited = 0;; waited += 50) {
    if (pred()) return true;
    if (waited >= ms) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// ---- a child process in the background -----------------------------------------------

/// argv[0] (absolute) run with the test's environment, stdin from /dev/null, stdout and
/// stderr appended to `log`. Stopped by its PID and reaped on every exit path.
class background {
 public:
  background(const std::vector<std::string>& argv, const std::string& log) {
    std::vector<std::string> args = argv;
    std::vector<char*> a;
    for (auto& s : args) a.push_back(s.data());
    a.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::setpgid(0, 0);  // its own process group: a terminal's signals stay with the test
      int in = ::open("/dev/null", O_RDONLY);
      int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (in < 0 || out < 0) ::_exit(126);
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(out, 2);
      ::execve(a[0], a.data(), environ);
      ::_exit(127);
    }
  }
  ~background() { stop(SIGKILL, 0); }
  background(const background&) = delete;
  background& operator=(const background&) = delete;

  pid_t pid() const noexcept { return pid_; }
  /// The exit status once it has ended (128+N for signal N), else nullopt.
  std::optional<int> poll() {
    if (!status_ && pid_ > 0) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    return status_;
  }
  std::optional<int> wait_for(int ms) {
    eventually([&] { return poll().has_value(); }, ms);
    return status_;
  }
  /// `sig`, then SIGKILL after `grace_ms`; reaps it.
  void stop(int sig = SIGTERM, int grace_ms = 5000) noexcept {
    if (pid_ <= 0 || poll()) return;
    ::kill(pid_, sig);
    if (grace_ms > 0 && wait_for(grace_ms)) return;
    ::kill(pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {}
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// ---- the datastore, read through the same plugins the binary loads -------------------

using cnf_test::read_store;
using cnf_test::store_view;

std::string jstr(const bj::object& o, const char* k) {
  auto* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// ---- the host: what must not change --------------------------------------------------

/// The host network namespace's links, addresses and routes, and whether the directories
/// the private mount namespace covers exist on the host.
std::string host_snapshot() {
  std::string s;
  for (const char* c : {"ip -o link show", "ip -o addr show", "ip route show table all", "ip -6 route show table all"}) {
    auto r = cnf_test::run(c);
    s += std::string("$ ") + c + "\n" + r.output;
  }
  // Link statistics change all the time: keep names, flags and addresses only.
  std::string out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) {
    for (const char* noisy : {" valid_lft", " preferred_lft"}) {
      auto at = line.find(noisy);
      if (at != std::string::npos) line.erase(at);
    }
    out += line + "\n";
  }
  for (const char* d : {"/etc/cni", "/opt/cni", "/run/containerd", "/var/lib/containerd", "/var/lib/cni"})
    out += std::string(d) + (fs::exists(d) ? " exists\n" : " absent\n");
  return out;
}

// ---- the node: containerd in its own network and mount namespaces -------------------

/// One CNI call as the wrapper recorded it.
struct cni_call {
  std::string command, container_id, netns, ifname, args, path;
};

class containerd_node {
 public:
  containerd_node(const test_netns& node, const fs::path& dir)
      : node_(node), dir_(dir), ns_("cnf-t" + std::to_string(::getpid()) + "-ctr") {
    containerd_ = program("containerd");
    ctr_ = program("ctr");
    nsenter_ = program("nsenter");
    unshare_ = program("unshare");
    for (auto* p : {&containerd_, &ctr_, &nsenter_, &unshare_})
      if (p->empty()) throw std::runtime_error("containerd, ctr, nsenter and unshare are needed (scripts/install-deps.sh)");
    if (program("runc").empty() || program("containerd-shim-runc-v2").empty())
      throw std::runtime_error("runc and containerd-shim-runc-v2 are needed (scripts/install-deps.sh)");
    for (const char* d : {"root", "state", "opt", "etc-upper", "etc-work", "varlib-upper", "varlib-work", "cni-bin", "cni-conf"})
      fs::create_directories(dir_ / d);
    const auto sock = (dir_ / "containerd.sock").string();
    cnf_test::write_file(dir_ / "containerd.toml",
                         "version = 2\n"
                         "root = \"" + (dir_ / "root").string() + "\"\n"
                         "state = \"" + (dir_ / "state").string() + "\"\n"
                         "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
                         "[grpc]\n  address = \"" + sock + "\"\n"
                         "[ttrpc]\n  address = \"" + sock + ".ttrpc\"\n"
                         "[debug]\n  level = \"info\"\n"
                         "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"" + (dir_ / "opt").string() + "\"\n");
    // Everything below runs inside the new mount namespace only (private propagation:
    // nothing reaches the host's mount table), then becomes containerd.
    cnf_test::write_file(dir_ / "node.sh",
                         "set -e\n"
                         "mount -t tmpfs -o mode=0755 cnf-test-run /run\n"
                         "mount -t tmpfs -o mode=0755 cnf-test-opt /opt\n"
                         "mkdir -p /opt/cni/bin\n"
                         "mount --bind " + shell_quote((dir_ / "cni-bin").string()) + " /opt/cni/bin\n"
                         "mount -t overlay cnf-test-etc -o lowerdir=/etc,upperdir=" + (dir_ / "etc-upper").string() +
                         ",workdir=" + (dir_ / "etc-work").string() + " /etc\n"
                         "mkdir -p /etc/cni/net.d\n"
                         "mount --bind " + shell_quote((dir_ / "cni-conf").string()) + " /etc/cni/net.d\n"
                         "mount -t overlay cnf-test-varlib -o lowerdir=/var/lib,upperdir=" + (dir_ / "varlib-upper").string() +
                         ",workdir=" + (dir_ / "varlib-work").string() + " /var/lib\n"
                         "exec " + containerd_ + " --config " + shell_quote((dir_ / "containerd.toml").string()) + "\n");
  }

  /// Writes the CNI bin and conf directories; call before start().
  void write_cni(const std::string& conflist) {
    cnf_test::write_file(dir_ / "cni-conf" / "10-cnf.conflist", conflist);
    const auto wrapper = dir_ / "cni-bin" / "cnf";
    cnf_test::write_file(wrapper,
                         "#!/bin/sh\n"
                         "# Records the call, then runs the real cnf with the same environment and stdin.\n"
                         "in=$(cat)\n"
                         "printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' \"$CNI_COMMAND\" \"$CNI_CONTAINERID\" \"$CNI_NETNS\" "
                         "\"$CNI_IFNAME\" \"$CNI_ARGS\" \"$CNI_PATH\" >> " + shell_quote(calls_file()) + "\n"
                         "printf '%s %s\\n' \"$CNI_COMMAND\" \"$in\" >> " + shell_quote((dir_ / "cni-stdin.log").string()) + "\n"
                         "printf '%s' \"$in\" | exec " + shell_quote(cnf_bin) + " \"$@\"\n");
    fs::permissions(wrapper, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                 fs::perms::others_read | fs::perms::others_exec);
  }

  void start() {
    daemon_.emplace(std::vector<std::string>{nsenter_, "--net=" + node_.path(), unshare_, "-m", "--propagation", "private",
                                             "/bin/sh", (dir_ / "node.sh").string()},
                    (dir_ / "containerd.log").string());
    const auto sock = dir_ / "containerd.sock";
    bool up = eventually([&] { return fs::exists(sock) || daemon_->poll().has_value(); }, 15000);
    if (!up || daemon_->poll()) throw std::runtime_error("containerd did not start:\n" + cnf_test::read_file(dir_ / "containerd.log"));
    // Its private mount namespace, whose processes shutdown() ends: never the test's own
    // or PID 1's (containerd is running, so unshare has happened).
    // The namespace is held open until shutdown() has swept it: a namespace's inode number
    // is freed with it and handed to the next namespace made on the machine (once that was
    // the mount namespace of an `ip netns exec` of another test, whose process the sweep
    // then killed). Held, the number stays containerd's.
    struct stat mine {}, init {}, st {};
    const bool init_known = ::stat("/proc/1/ns/mnt", &init) == 0;  // not always readable
    const int fd = ::open(("/proc/" + std::to_string(daemon_->pid()) + "/ns/mnt").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && ::fstat(fd, &st) == 0 && ::stat("/proc/self/ns/mnt", &mine) == 0 && st.st_ino != mine.st_ino &&
        (!init_known || st.st_ino != init.st_ino)) {
      mount_ns_ = st.st_ino;
      mount_ns_dev_ = st.st_dev;
      mount_ns_fd_ = fd;
    } else if (fd >= 0) {
      ::close(fd);
    }
    else
      throw std::runtime_error("containerd is not in a mount namespace of its own");
    // The socket exists before the services answer: wait for `ctr version`.
    if (!eventually([&] { return ctr("version").ok(); }, 10000))
      throw std::runtime_error("containerd does not answer:\n" + cnf_test::read_file(dir_ / "containerd.log"));
  }

  ~containerd_node() { shutdown(); }
  containerd_node(const containerd_node&) = delete;
  containerd_node& operator=(const containerd_node&) = delete;

  pid_t pid() const { return daemon_ ? daemon_->pid() : -1; }
  const std::string& ctr_namespace() const { return ns_; }
  std::string calls_file() const { return (dir_ / "cni-calls.tsv").string(); }
  std::string log() const { return cnf_test::read_file(dir_ / "containerd.log"); }

  /// argv of a ctr command inside containerd's namespaces (mount: /etc/cni, /opt/cni, /run;
  /// network: the node's), talking to this containerd in this test's ctr namespace.
  std::vector<std::string> ctr_argv(const std::vector<std::string>& args) const {
    std::vector<std::string> a{nsenter_, "-t", std::to_string(pid()), "-m", "-n", ctr_, "--address",
                               (dir_ / "containerd.sock").string(), "--namespace", ns_};
    a.insert(a.end(), args.begin(), args.end());
    return a;
  }
  cnf_test::command_result ctr(const std::string& args) const {
    std::string cmd;
    for (auto& s : ctr_argv({})) cmd += shell_quote(s) + " ";
    return cnf_test::run(cmd + args);
  }

  std::vector<cni_call> calls() const {
    std::vector<cni_call> v;
    std::istringstream in(cnf_test::read_file(calls_file()));
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> f;
      std::size_t at = 0;
      for (;;) {
        auto tab = line.find('\t', at);
        f.push_back(line.substr(at, tab - at));
        if (tab == std::string::npos) break;
        at = tab + 1;
      }
      f.resize(6);
      v.push_back({f[0], f[1], f[2], f[3], f[4], f[5]});
    }
    return v;
  }

 private:
  /// Every process of the node's runtime, by PID: the containers (their init.pid in
  /// containerd's state), then containerd, then whatever is left in its private mount
  /// namespace (the shims, a ctr); then the cgroups runc made for this ctr namespace. The
  /// mount namespace, and every mount in it, ends with its last process.
  void shutdown() noexcept {
    if (!daemon_) return;
    std::error_code ec;
    const auto tasks = dir_ / "state" / "io.containerd.runtime.v2.task" / ns_;
    if (fs::exists(tasks, ec))
      for (auto& e : fs::directory_iterator(tasks, ec))
        if (pid_t p = static_cast<pid_t>(std::atol(cnf_test::read_file(e.path() / "init.pid").c_str())); p > 1) kill_if_ours(p);
    daemon_->stop(SIGTERM, 5000);
    for (int round = 0; round < 100; ++round) {
      auto left = processes_in(mount_ns_);
      if (left.empty()) break;
      for (pid_t p : left) kill_if(p, [&] { return in_mount_ns(p, mount_ns_, mount_ns_dev_); });
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (mount_ns_fd_ >= 0) ::close(mount_ns_fd_);
    mount_ns_fd_ = -1;
    mount_ns_ = 0;
    remove_cgroups();
  }
  /// SIGKILL to `p` only while it is still a container of this runtime: its cgroup is
  /// under /<ns_>/. init.pid outlives a container that already ended, and its PID may by
  /// now belong to anything else on the machine (once it was a `cnf` DEL of another test
  /// running alongside). The check and the signal go through one pidfd, so both address
  /// the same process.
  void kill_if_ours(pid_t p) const noexcept {
    kill_if(p, [&] { return cnf_test::read_file("/proc/" + std::to_string(p) + "/cgroup").find("/" + ns_ + "/") != std::string::npos; });
  }
  template <class Pred>
  static void kill_if(pid_t p, Pred still_ours) noexcept {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, p, 0));
    if (fd < 0) return;
    if (still_ours()) ::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0);
    ::close(fd);
  }
  static bool in_mount_ns(pid_t p, ino_t ns, dev_t dev) noexcept {
    struct stat st {};
    return ::stat(("/proc/" + std::to_string(p) + "/ns/mnt").c_str(), &st) == 0 && st.st_ino == ns && st.st_dev == dev;
  }
  /// Live (not zombie) processes in containerd's mount namespace (held open, so its inode
  /// number is no other namespace's).
  std::vector<pid_t> processes_in(ino_t ns) const {
    std::vector<pid_t> v;
    if (ns == 0) return v;
    std::error_code ec;
    for (auto& e : fs::directory_iterator("/proc", ec)) {
      const auto name = e.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      struct stat st {};
      if (::stat((e.path() / "ns" / "mnt").c_str(), &st) != 0 || st.st_ino != ns || st.st_dev != mount_ns_dev_) continue;
      const auto stat_line = cnf_test::read_file(e.path() / "stat");
      const auto paren = stat_line.rfind(')');
      if (paren != std::string::npos && paren + 2 < stat_line.size() && stat_line[paren + 2] == 'Z') continue;
      v.push_back(static_cast<pid_t>(std::atol(name.c_str())));
    }
    return v;
  }
  void remove_cgroups() const noexcept {
    std::error_code ec;
    // cgroup v2: /sys/fs/cgroup/<ns>; v1 (and hybrid): /sys/fs/cgroup/<controller>/<ns>.
    std::vector<fs::path> tops{fs::path("/sys/fs/cgroup") / ns_};
    for (auto& ctl : fs::directory_iterator("/sys/fs/cgroup", ec)) tops.push_back(ctl.path() / ns_);
    for (const auto& top : tops) {
      if (!fs::is_directory(top, ec)) continue;
      // Deepest first: rmdir(2) removes an empty cgroup (its control files go with it).
      std::vector<fs::path> dirs{top};
      for (auto it = fs::recursive_directory_iterator(top, ec); it != fs::recursive_directory_iterator(); it.increment(ec))
        if (it->is_directory(ec) && !it->is_symlink(ec)) dirs.push_back(it->path());
      std::sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) { return a.string().size() > b.string().size(); });
      for (auto& d : dirs)
        for (int i = 0; i < 50 && ::rmdir(d.c_str()) != 0 && errno == EBUSY; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  const test_netns& node_;
  fs::path dir_;
  std::string ns_;
  std::string containerd_, ctr_, nsenter_, unshare_;
  std::optional<background> daemon_;
  ino_t mount_ns_ = 0;  ///< containerd's private mount namespace
  dev_t mount_ns_dev_ = 0;
  int mount_ns_fd_ = -1;  ///< holds that namespace (and its inode number) until the sweep
};

/// True for an ELF executable without a program interpreter (statically linked).
bool static_elf(const std::string& path) {
  const std::string f = cnf_test::read_file(path);
  if (f.size() < sizeof(Elf64_Ehdr) || f.compare(0, 4, ELFMAG) != 0 || f[EI_CLASS] != ELFCLASS64) return false;
  Elf64_Ehdr eh;
  std::memcpy(&eh, f.data(), sizeof eh);
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    const std::size_t at = eh.e_phoff + std::size_t{i} * eh.e_phentsize;
    if (at + sizeof(Elf64_Phdr) > f.size()) return false;
    Elf64_Phdr ph;
    std::memcpy(&ph, f.data() + at, sizeof ph);
    if (ph.p_type == PT_INTERP) return false;
  }
  return true;
}

/// A root filesystem with a static busybox: sh, ip, ping, sleep, cat.
void make_rootfs(const fs::path& root) {
  const std::string busybox = program("busybox");
  if (busybox.empty()) throw std::runtime_error("busybox is needed (busybox-static, scripts/install-deps.sh)");
  if (!static_elf(busybox)) throw std::runtime_error(busybox + " is not a static executable: install busybox-static");
  for (const char* d : {"bin", "proc", "sys", "dev", "etc", "tmp", "run"}) fs::create_directories(root / d);
  fs::copy_file(busybox, root / "bin" / "busybox");
  for (const char* a : {"sh", "ip", "ping", "sleep", "cat"}) fs::create_symlink("busybox", root / "bin" / a);
}

std::string profile_text(const fs::path& dir) {
  return "[node]\nname = \"node-1\"\n\n"
         "[datastore]\nplugin = \"local\"\ndir = \"" + (dir / "state-cnf").string() + "\"\nfsync = false\n\n"
         "[ipam]\nplugin = \"host-local\"\nranges = [[{ subnet = \"10.88.0.0/24\" }]]\n\n"
         "[cni]\nmtu = 1400\nlog_file = \"" + (dir / "cnf.log").string() + "\"\nlog_level = \"debug\"\n";
}

std::string sha1_11(const std::string& s) { return cnf_test::run_or_throw("printf %s " + shell_quote(s) + " | sha1sum").substr(0, 11); }

/// The inode of a namespace file (/proc/PID/ns/net, /var/run/netns/NAME).
ino_t inode(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

}  // namespace

// =======================================================================================

TEST_CASE("containerd + runc run a container networked by cnf (ctr run --cni), and its end removes it", "[integration][containerd]") {
  const std::string host_before = host_snapshot();
  test_netns node, upstream;
  cnf_test::veth_between(node, "up0", upstream, "up1");
  node.exec_or_throw("ip addr add 192.168.50.1/24 dev up0 && ip route add default via 192.168.50.2");
  upstream.exec_or_throw("ip addr add 192.168.50.2/24 dev up1");
  cnf_test::set_ip_forward(node);

  cnf_test::temp_dir dir("/tmp/cnf-containerd-test-");  // outlives everything below
  const auto profile = (dir.path / "profile.toml").string();
  cnf_test::write_file(profile, profile_text(dir.path));
  make_rootfs(dir.path / "rootfs");

  containerd_node rt(node, dir.path);
  rt.write_cni(bj::serialize(bj::object{
      {"cniVersion", "1.0.0"}, {"name", network}, {"plugins", bj::array{bj::object{{"type", "cnf"}, {"profile", profile}}}}}));
  rt.start();
  // What went on, for any failure below (read when it is reported).
  auto diag = [&] {
    return "containerd log:\n" + rt.log() + "\nctr run output:\n" + cnf_test::read_file(dir.path / "ctr-run.log") +
           "\nCNI calls:\n" + cnf_test::read_file(rt.calls_file()) + "cnf log:\n" + cnf_test::read_file(dir.path / "cnf.log");
  };
  // containerd runs in the node's network namespace and in a mount namespace of its own.
  CHECK(inode("/proc/" + std::to_string(rt.pid()) + "/ns/net") == inode(node.path()));
  CHECK(inode("/proc/" + std::to_string(rt.pid()) + "/ns/mnt") != inode("/proc/self/ns/mnt"));

  // `ctr run` in the foreground, as a background process of the test: it creates the
  // task, calls CNI ADD, starts it, waits for it, then deletes it, calls CNI DEL (--cni)
  // and removes the container (--rm).
  const std::string id = "web";
  const std::string full_id = rt.ctr_namespace() + "-" + id;  // what ctr passes as CNI_CONTAINERID
  std::optional<background> run;
  run.emplace(rt.ctr_argv({"run", "--rm", "--cni", "--rootfs", (dir.path / "rootfs").string(), id, "/bin/sleep", "600"}),
              (dir.path / "ctr-run.log").string());

  pid_t task_pid = 0;
  bool running = eventually([&] {
    if (run->poll()) return true;  // ended early: reported below
    auto ls = rt.ctr("task ls");
    std::istringstream in(ls.output);
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::string task, pid, status;
      f >> task >> pid >> status;
      if (task == id && status == "RUNNING") {
        task_pid = static_cast<pid_t>(std::atol(pid.c_str()));
        return true;
      }
    }
    return false;
  }, 30000);
  {
    INFO(diag());
    REQUIRE(running);
    REQUIRE_FALSE(run->poll().has_value());
    REQUIRE(task_pid > 1);
  }
  const std::string task_netns = "/proc/" + std::to_string(task_pid) + "/ns/net";
  CHECK(inode(task_netns) != inode(node.path()));

  // One ADD, with the runtime's view of the container.
  auto calls = rt.calls();
  INFO(cnf_test::read_file(rt.calls_file()));
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].command == "ADD");
  CHECK(calls[0].container_id == full_id);
  CHECK(calls[0].netns == task_netns);
  CHECK(calls[0].ifname == "eth0");
  CHECK_THAT(calls[0].path, StartsWith("/opt/cni/bin"));  // Debian's go-cni appends :/usr/lib/cni
  // libcni cached the result in the overlay's upper layer, not on the host.
  CHECK(fs::exists(dir.path / "varlib-upper" / "cni" / "results" / (std::string(network) + "-" + full_id + "-eth0")));

  // Inside the container (busybox, through the runtime): eth0 with one address from cnf's pool.
  auto exec = [&](const std::string& exec_id, const std::string& cmd) { return rt.ctr("task exec --exec-id " + exec_id + " " + id + " " + cmd); };
  auto addr = exec("addr", "/bin/ip -4 -o addr show dev eth0");
  INFO("ip addr in the container: " << addr.output);
  REQUIRE(addr.ok());
  auto inet = addr.output.find("inet ");
  REQUIRE(inet != std::string::npos);
  const std::string cidr = addr.output.substr(inet + 5, addr.output.find(' ', inet + 5) - inet - 5);
  CHECK_THAT(cidr, StartsWith("10.88.0.") && Catch::Matchers::EndsWith("/32"));
  const std::string pod_ip = cidr.substr(0, cidr.find('/'));
  // Its routes, read through the task's network namespace.
  auto routes = cnf_test::run("nsenter --net=" + task_netns + " ip route show");
  CHECK_THAT(routes.output, Contains("default via 169.254.1.1 dev eth0") && Contains("169.254.1.1 dev eth0"));

  // The node: cnf's host veth, named from the container id (no Kubernetes pod name), and a
  // route to the container.
  const std::string veth = "cali" + sha1_11(full_id);
  auto node_links = node.exec_or_throw("ip -o link show");
  CHECK_THAT(node_links, Contains(veth + "@"));
  CHECK_THAT(node.exec_or_throw("ip route show proto 80"), Contains(pod_ip + " dev " + veth));

  // The container and the node reach each other.
  bool pinged = false;
  for (int i = 0; i < 3 && !pinged; ++i) pinged = exec("ping" + std::to_string(i), "/bin/ping -c 1 -W 1 192.168.50.1").ok();
  CHECK(pinged);
  CHECK((cnf_test::ping_ok(node, pod_ip, 1) || cnf_test::ping_ok(node, pod_ip, 1)));

  // The datastore: the address, and the WorkloadEndpoint naming the container.
  {
    auto s = read_store(profile);
    INFO(s.describe());
    REQUIRE(s.allocations.size() == 1);
    CHECK(s.allocations[0].address.to_string() == pod_ip);
    CHECK(s.allocations[0].handle == std::string(network) + "." + full_id);
    REQUIRE(s.endpoints.size() == 1);
    CHECK(jstr(s.endpoints[0], "containerID") == full_id);
    CHECK(jstr(s.endpoints[0], "interfaceName") == veth);
    CHECK(jstr(s.endpoints[0], "endpoint") == "eth0");
    CHECK(bj::serialize(s.endpoints[0].at("ipNetworks")) == "[\"" + cidr + "\"]");
  }

  // Stop the container: ctr sees it exit, deletes the task, calls DEL, removes the container.
  REQUIRE(rt.ctr("task kill --signal SIGKILL " + id).ok());
  auto ended = run->wait_for(30000);
  INFO(diag());
  REQUIRE(ended.has_value());
  CHECK(*ended == 137);  // ctr run exits with the container's status: SIGKILL
  calls = rt.calls();
  REQUIRE(calls.size() == 2);
  CHECK(calls[1].command == "DEL");
  CHECK(calls[1].container_id == full_id);
  CHECK(calls[1].ifname == "eth0");
  CHECK(calls[1].netns.empty());  // the task, and its network namespace, are gone by then
  CHECK_THAT(cnf_test::read_file(dir.path / "cnf.log"), Contains("DEL " + full_id) && Contains("released"));
  CHECK(trim(rt.ctr("task ls -q").output).empty());
  CHECK(trim(rt.ctr("containers ls -q").output).empty());

  // Nothing is left: no veth, no route, no allocation, no endpoint.
  CHECK_THAT(node.exec_or_throw("ip -o link show"), !Contains("cali"));
  CHECK(trim(node.exec_or_throw("ip route show proto 80")).empty());
  {
    auto s = read_store(profile);
    INFO(s.describe());
    CHECK(s.empty());
  }
  run.reset();
  CHECK(host_snapshot() == host_before);
  // With -s: what the runtime passed (command, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
  // CNI_ARGS, CNI_PATH; then each call's stdin).
  WARN("CNI calls by ctr:\n" << cnf_test::read_file(rt.calls_file()) << cnf_test::read_file(dir.path / "cni-stdin.log"));
}
