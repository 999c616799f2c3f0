// Test harness for the kubernetes datastore: starts the STAND-IN API server
// (standin_apiserver.py — not a real kube-apiserver, which cannot run here), makes test
// certificates with the openssl CLI, writes kubeconfig files, and stops the server by its
// PID on every exit path (destructor; PR_SET_PDEATHSIG and stdin EOF if the test dies).
#pragma once
#include <cnf/plugins/kubernetes.hpp>

#include <boost/beast/core/detail/base64.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace k8s_test {

namespace fs = std::filesystem;

inline std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void spit(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

inline std::string base64(const std::string& s) {
  namespace b64 = boost::beast::detail::base64;
  std::string out(b64::encoded_size(s.size()), '\0');
  out.resize(b64::encode(out.data(), s.data(), s.size()));
  return out;
}

/// A temporary directory, removed with everything in it.
class temp_dir {
 public:
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "cnf-k8s-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline void run_or_throw(const std::string& cmd) {
  if (std::system((cmd + " >/dev/null 2>&1").c_str()) != 0) throw std::runtime_error("command failed: " + cmd);
}

/// Test PKI made once per process with the openssl CLI: a CA, a server certificate for
/// 127.0.0.1 signed by it, a client certificate signed by it, and an unrelated CA.
class pki {
 public:
  static const pki& get() {
    static pki p;
    return p;
  }
  fs::path ca, server_cert, server_key, client_cert, client_key, other_ca;

 private:
  pki() {
    auto d = dir_.path().string();
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
    run_or_throw("openssl req -x509" + ec + "-keyout " + d + "/ca.key -out " + d + "/ca.crt -days 2 -subj /CN=cnf-test-ca");
    run_or_throw("openssl req -x509" + ec + "-keyout " + d + "/other.key -out " + d + "/other.crt -days 2 -subj /CN=cnf-other-ca");
    spit(dir_.path() / "server.ext", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    spit(dir_.path() / "client.ext", "extendedKeyUsage=clientAuth\n");
    run_or_throw("openssl req" + ec + "-keyout " + d + "/server.key -out " + d + "/server.csr -subj /CN=cnf-standin");
    run_or_throw("openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.crt -CAkey " + d + "/ca.key -CAcreateserial -days 2 -out " +
                 d + "/server.crt -extfile " + d + "/server.ext");
    run_or_throw("openssl req" + ec + "-keyout " + d + "/client.key -out " + d + "/client.csr -subj /CN=cnf-node");
    run_or_throw("openssl x509 -req -in " + d + "/client.csr -CA " + d + "/ca.crt -CAkey " + d + "/ca.key -CAcreateserial -days 2 -out " +
                 d + "/client.crt -extfile " + d + "/client.ext");
    ca = dir_.path() / "ca.crt";
    other_ca = dir_.path() / "other.crt";
    server_cert = dir_.path() / "server.crt";
    server_key = dir_.path() / "server.key";
    client_cert = dir_.path() / "client.crt";
    client_key = dir_.path() / "client.key";
  }
  temp_dir dir_;
};

struct standin_options {
  bool tls = true;
  std::string token = "cnf-test-token-0123456789";
  bool client_certs = false;  ///< also accept client certificates signed by the test CA
  int history = 1000;         ///< events kept for watch resume
  std::string fixtures;       ///< JSON for /api/v1 nodes, namespaces, pods
};

/// The stand-in API server as a child process.
class standin {
 public:
  explicit standin(standin_options o = {}) : o_(std::move(o)) {
    std::vector<std::string> args = {"python3", CNF_TEST_SOURCE_DIR "/tests/datastore-kubernetes/standin_apiserver.py",
                                     "--crds", CNF_TEST_SOURCE_DIR "/examples/crds", "--token", o_.token,
                                     "--history", std::to_string(o_.history)};
    if (o_.tls) {
      auto& p = pki::get();
      args.insert(args.end(), {"--cert", p.server_cert.string(), "--key", p.server_key.string()});
      if (o_.client_certs) args.insert(args.end(), {"--client-ca", p.ca.string()});
    }
    if (!o_.fixtures.empty()) {
      spit(dir_.path() / "fixtures.json", o_.fixtures);
      args.insert(args.end(), {"--fixtures", (dir_.path() / "fixtures.json").string()});
    }
    if (std::getenv("CNF_STANDIN_VERBOSE")) args.push_back("--verbose");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string log = (dir_.path() / "standin.log").string();

    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
      if (::getppid() != parent) ::_exit(1);
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (err >= 0) ::dup2(err, 2);
      ::execvp("python3", argv.data());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to_ = in[1];
    from_ = out[0];
    auto first = read_line(std::chrono::seconds(20));
    if (first.rfind("port ", 0) != 0) {
      stop();
      throw std::runtime_error("the stand-in API server did not start: '" + first + "'; log: " + slurp(log));
    }
    port_ = std::stoi(first.substr(5));
  }

  ~standin() { stop(); }
  standin(const standin&) = delete;
  standin& operator=(const standin&) = delete;

  /// Stops the server by PID (stdin EOF, then SIGTERM, then SIGKILL); idempotent.
  void stop() noexcept {
    if (to_ >= 0) ::close(to_), to_ = -1;
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int st = 0;
      for (int i = 0; i < 100; ++i) {
        if (::waitpid(pid_, &st, WNOHANG) == pid_) { pid_ = -1; break; }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
        pid_ = -1;
      }
    }
    if (from_ >= 0) ::close(from_), from_ = -1;
  }

  int port() const { return port_; }
  std::string url() const { return std::string(o_.tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_); }
  const std::string& token() const { return o_.token; }
  const fs::path& dir() const { return dir_.path(); }
  std::string log() const { return slurp(dir_.path() / "standin.log"); }

  /// Sends one control command; returns the reply line ("ok ...").
  std::string command(const std::string& cmd) {
    std::lock_guard lk(m_);
    std::string line = cmd + "\n";
    if (::write(to_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      throw std::runtime_error("cannot write to the stand-in");
    auto r = read_line(std::chrono::seconds(20));
    if (r.rfind("ok", 0) != 0) throw std::runtime_error("stand-in command '" + cmd + "' failed: " + r);
    return r;
  }

  int active_watches() { return std::stoi(command("watches").substr(3)); }

  /// A kubeconfig for this server; `user` is the YAML body of the user entry.
  fs::path kubeconfig(const std::string& name, const std::string& user, const std::string& cluster_extra = {}) const {
    std::string ca_line = o_.tls ? "    certificate-authority: " + pki::get().ca.string() + "\n" : "";
    if (!cluster_extra.empty()) ca_line = cluster_extra;
    std::string y = "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
                    "clusters:\n- name: standin\n  cluster:\n    server: " + url() + "\n" + ca_line +
                    "users:\n- name: tester\n  user:\n" + user +
                    "contexts:\n- name: test\n  context:\n    cluster: standin\n    user: tester\n";
    auto p = dir_.path() / name;
    spit(p, y);
    return p;
  }
  fs::path kubeconfig_with_token(const std::string& name = "kubeconfig", std::string token = {}) const {
    return kubeconfig(name, "    token: " + (token.empty() ? o_.token : token) + "\n");
  }

  /// Options for the plugin with a token kubeconfig (insecure_http set for a plain server).
  cnf::kubernetes::options options(std::string token = {}) const {
    cnf::kubernetes::options o;
    o.kubeconfig = kubeconfig_with_token(token.empty() ? "kubeconfig" : "kubeconfig-" + token, token).string();
    o.insecure_http = !o_.tls;
    o.timeout = std::chrono::milliseconds(5000);
    return o;
  }

 private:
  std::string read_line(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "(timeout)";
      pollfd p{from_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char tmp[4096];
      auto n = ::read(from_, tmp, sizeof tmp);
      if (n <= 0) return "(eof)";
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
  }

  standin_options o_;
  temp_dir dir_;
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  int port_ = 0;
  std::string buf_;
  std::mutex m_;
};

/// A TCP listener on 127.0.0.1 that never accepts: connections complete in the kernel's
/// backlog, then nothing is ever said (a hung API server).
class silent_listener {
 public:
  silent_listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("cannot listen on 127.0.0.1");
    port_ = ntohs(a.sin_port);
  }
  ~silent_listener() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

/// A port on 127.0.0.1 with nothing listening (bound, then closed).
inline int closed_port() {
  silent_listener l;
  return l.port();
}

/// Collects watch events from any thread.
class recorder {
 public:
  cnf::watch_callback callback() {
    return [this](const cnf::watch_event& e) {
      std::lock_guard lk(m_);
      events_.push_back(e);
      cv_.notify_all();
    };
  }
  /// Waits (bounded) until pred(events) holds; returns whether it did.
  bool wait(const std::function<bool(const std::vector<cnf::watch_event>&)>& pred,
            std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    std::unique_lock lk(m_);
    return cv_.wait_for(lk, limit, [&] { return pred(events_); });
  }
  std::vector<cnf::watch_event> events() {
    std::lock_guard lk(m_);
    return events_;
  }
  std::size_t count(cnf::watch_event::type t) {
    std::lock_guard lk(m_);
    std::size_t n = 0;
    for (auto& e : events_) n += e.kind == t;
    return n;
  }
  bool wait_count(cnf::watch_event::type t, std::size_t n, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    return wait([&](auto& ev) {
      std::size_t c = 0;
      for (auto& e : ev) c += e.kind == t;
      return c >= n;
    }, limit);
  }
  /// Waits for an event of type t about `name`.
  bool wait_for(cnf::watch_event::type t, const std::string& name, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    return wait([&](auto& ev) {
      for (auto& e : ev)
        if (e.kind == t && e.object.name == name) return true;
      return false;
    }, limit);
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<cnf::watch_event> events_;
};

/// Polls `pred` until it holds or `limit` passes (for state kept by the stand-in).
inline bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

}  // namespace k8s_test
