// Named network namespaces (made the way iproute2 makes them) and processes started in
// them, known and stopped by PID and start time only.
#include "lab/lab.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace cnf_app::lab {
namespace {

constexpr const char* netns_dir = "/var/run/netns";

std::string errno_text(int e) { return std::strerror(e); }

/// iproute2's preparation of /var/run/netns: a shared mount point, so that namespace bind
/// mounts propagate to other mount namespaces.
void prepare_netns_dir() {
  if (::mkdir(netns_dir, 0755) != 0 && errno != EEXIST) throw lab_error(std::string("mkdir ") + netns_dir + ": " + errno_text(errno));
  if (::mount("", netns_dir, "none", MS_SHARED | MS_REC, nullptr) == 0) return;
  if (errno != EINVAL) throw lab_error(std::string("make ") + netns_dir + " shared: " + errno_text(errno));
  if (::mount(netns_dir, netns_dir, "none", MS_BIND | MS_REC, nullptr) != 0)
    throw lab_error(std::string("bind ") + netns_dir + ": " + errno_text(errno));
  if (::mount("", netns_dir, "none", MS_SHARED | MS_REC, nullptr) != 0)
    throw lab_error(std::string("make ") + netns_dir + " shared: " + errno_text(errno));
}

ino_t inode_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

}  // namespace

std::string netns_path(const std::string& name) { return std::string(netns_dir) + "/" + name; }

bool netns_exists(const std::string& name) {
  struct stat st {};
  return ::stat(netns_path(name).c_str(), &st) == 0;
}

void create_netns(const std::string& name) {
  static const bool prepared = (prepare_netns_dir(), true);
  (void)prepared;
  const std::string path = netns_path(name);
  int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (fd < 0) throw lab_error("cannot create network namespace " + name + ": " + path + ": " + errno_text(errno));
  ::close(fd);
  // A scratch thread makes the namespace and pins it with the bind mount; only that thread
  // ever enters it, and it ends there.
  std::string err;
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      err = "unshare(CLONE_NEWNET): " + errno_text(errno);
      return;
    }
    if (::mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
      err = "bind mount on " + path + ": " + errno_text(errno);
      return;
    }
    int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
      err = "socket: " + errno_text(errno);
      return;
    }
    ifreq ifr{};
    std::strcpy(ifr.ifr_name, "lo");
    if (::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
      err = "loopback flags: " + errno_text(errno);
    } else {
      ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
      if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) err = "loopback up: " + errno_text(errno);
    }
    ::close(s);
  });
  t.join();
  if (!err.empty()) {
    delete_netns(name);
    throw lab_error("network namespace " + name + ": " + err);
  }
}

void delete_netns(const std::string& name) {
  const std::string path = netns_path(name);
  ::umount2(path.c_str(), MNT_DETACH);
  ::unlink(path.c_str());
}

std::vector<std::string> list_netns(const std::string& prefix) {
  std::vector<std::string> out;
  DIR* d = ::opendir(netns_dir);
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  }
  ::closedir(d);
  return out;
}

std::vector<pid_t> processes_in_netns(const std::string& name) {
  std::vector<pid_t> out;
  const ino_t want = inode_of(netns_path(name));
  struct stat self {};
  if (want == 0 || ::stat(netns_path(name).c_str(), &self) != 0) return out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end) continue;
    struct stat st {};
    if (::stat(("/proc/" + std::string(e->d_name) + "/ns/net").c_str(), &st) == 0 && st.st_ino == want && st.st_dev == self.st_dev)
      out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(d);
  return out;
}

std::uint64_t process_start_time(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  // Fields after "(comm)": state is field 3; starttime is field 22.
  for (int i = 3; i <= 22 && (rest >> field); ++i)
    if (i == 22) return std::stoull(field);
  return 0;
}

namespace {
char process_state(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() ? text[close + 2] : '?';
}
}  // namespace

bool alive(const process_ref& p) {
  if (p.pid <= 0) return false;
  if (::kill(p.pid, 0) != 0) return false;
  if (process_start_time(p.pid) != p.start_time) return false;  // another process now has that PID
  // Our own child that exited is a zombie until reaped: reap it, it is gone.
  if (process_state(p.pid) == 'Z') {
    ::waitpid(p.pid, nullptr, WNOHANG);
    return false;
  }
  return true;
}

namespace {

/// Everything the child needs is made before fork: between fork and exec it only makes
/// async-signal-safe calls (the lab has threads).
struct exec_args {
  std::vector<std::string> argv_s, env_s;
  std::vector<char*> argv, env;
  exec_args(const std::vector<std::string>& a, const std::vector<std::string>& e) : argv_s(a), env_s(e) {
    for (auto& s : argv_s) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (auto& s : env_s) env.push_back(s.data());
    env.push_back(nullptr);
  }
};

int open_netns_fd(const std::string& netns) {
  int fd = ::open(netns_path(netns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw lab_error("cannot open network namespace " + netns + ": " + errno_text(errno));
  return fd;
}

}  // namespace

process_ref spawn_in_netns(const std::string& netns, const std::vector<std::string>& argv, const std::vector<std::string>& env,
                           const std::string& log) {
  exec_args a(argv, env);
  int nsfd = open_netns_fd(netns);
  int logfd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  int nullfd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (logfd < 0 || nullfd < 0) {
    int e = errno;
    ::close(nsfd);
    if (logfd >= 0) ::close(logfd);
    if (nullfd >= 0) ::close(nullfd);
    throw lab_error("cannot open " + log + ": " + errno_text(e));
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setns(nsfd, CLONE_NEWNET) != 0) ::_exit(126);
    ::setsid();
    ::dup2(nullfd, 0);
    ::dup2(logfd, 1);
    ::dup2(logfd, 2);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(a.argv[0], a.argv.data(), a.env.data());
    ::_exit(127);
  }
  const int e = errno;
  ::close(nsfd);
  ::close(logfd);
  ::close(nullfd);
  if (pid < 0) throw lab_error("fork: " + errno_text(e));
  process_ref p{pid, process_start_time(pid)};
  return p;
}

bool stop_process(const process_ref& p, std::chrono::milliseconds grace) {
  if (!alive(p)) return true;
  ::kill(p.pid, SIGTERM);
  const auto until = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < until) {
    ::waitpid(p.pid, nullptr, WNOHANG);  // our own child (a rollback within `up`)
    if (!alive(p)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(p.pid, SIGKILL);
  for (int i = 0; i < 200; ++i) {
    ::waitpid(p.pid, nullptr, WNOHANG);
    if (!alive(p)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

run_result run_in_netns(const std::string& netns, const std::vector<std::string>& argv, const std::vector<std::string>& env,
                        const std::string& input, std::chrono::milliseconds timeout) {
  exec_args a(argv, env);
  int nsfd = open_netns_fd(netns);
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw lab_error("pipe: " + errno_text(errno));
  if (::pipe2(out, O_CLOEXEC) != 0) throw lab_error("pipe: " + errno_text(errno));
  if (::pipe2(err, O_CLOEXEC) != 0) throw lab_error("pipe: " + errno_text(errno));
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setns(nsfd, CLONE_NEWNET) != 0) ::_exit(126);
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::execve(a.argv[0], a.argv.data(), a.env.data());
    ::_exit(127);
  }
  const int fe = errno;
  ::close(nsfd);
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  if (pid < 0) {
    ::close(in[1]);
    ::close(out[0]);
    ::close(err[0]);
    throw lab_error("fork: " + errno_text(fe));
  }
  // The input is small (a CNI config); a child that does not read it gets EPIPE, not us.
  for (std::size_t off = 0; off < input.size();) {
    ssize_t n = ::write(in[1], input.data() + off, input.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  ::close(in[1]);
  run_result r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool killed = false;
  pollfd p[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open = 2;
  while (open > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      if (!killed) ::kill(pid, SIGKILL);
      killed = true;
      left = 1000;
    }
    int n = ::poll(p, 2, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[8192];
      ssize_t k = ::read(p[i].fd, buf, sizeof buf);
      if (k > 0) {
        (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(k));
      } else if (k == 0 || errno != EINTR) {
        ::close(p[i].fd);
        p[i].fd = -1;
        --open;
      }
    }
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  if (killed) r.err += "\n[killed after " + std::to_string(timeout.count()) + " ms]";
  return r;
}

}  // namespace cnf_app::lab
