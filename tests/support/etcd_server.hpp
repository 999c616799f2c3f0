// tests/support/etcd_server.hpp — a real etcd (Debian's etcd-server) for tests and benchmarks.
//
//   if (auto why = cnf_test::etcd_server::unavailable_reason()) { std::puts(why->c_str()); return 77; }
//   cnf_test::etcd_server etcd;                  // 127.0.0.1, free ports, temp data dir, waits for /health
//   cfg.endpoints = {etcd.endpoint()};
//   etcd.kill();  etcd.start();                  // restart on the same data dir and ports
//   etcd.compact(etcd.revision());               // POST /v3/kv/compaction
//
// The server is a child process stopped by its PID (never by name) and its temp directory
// is removed on every way out of the object (destructor, exceptions, Catch2 assertion
// failures). If the test process itself dies, the kernel kills etcd (PR_SET_PDEATHSIG;
// start and restart etcd from a thread that lives as long as the server, e.g. the test's
// main thread), and the next etcd_server in any test removes the temp directories left by
// processes that no longer exist.
//
// Header-only, POSIX only (no Asio/Beast): the admin requests use a small HTTP/1.0 client
// against the plain-HTTP admin port (with TLS, etcd also listens on a plain port for this).
// make_test_pki() writes a CA, server and client certificates with the openssl CLI.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace cnf_test {

namespace etcd_detail {

inline std::string base64(std::string_view in) {
  static constexpr char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) | static_cast<unsigned char>(in[i + 2]);
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += tbl[(v >> 6) & 63];
    out += tbl[v & 63];
  }
  if (i + 1 == in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8);
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += tbl[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

/// Reserves `n` distinct free TCP ports on 127.0.0.1 (bound together, then released).
inline std::vector<int> free_ports(int n) {
  std::vector<int> fds, ports;
  for (int i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      throw std::runtime_error(std::string("bind: ") + std::strerror(errno));
    }
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    fds.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

struct http_reply {
  int status = 0;
  std::string body;
};

/// One HTTP/1.0 POST (or GET when body is null) to 127.0.0.1:port; throws on I/O failure.
inline http_reply http_call(int port, std::string_view method, std::string_view path, std::string_view body, std::string_view token = {},
                            std::chrono::seconds timeout = std::chrono::seconds(10)) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } c{fd};
  timeval tv{static_cast<time_t>(timeout.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    throw std::runtime_error("connect 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno));
  std::string req = std::string(method) + " " + std::string(path) + " HTTP/1.0\r\nHost: 127.0.0.1:" + std::to_string(port) + "\r\n";
  if (!token.empty()) req += "Authorization: " + std::string(token) + "\r\n";
  if (method != "GET") req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n";
  req += body;
  for (std::size_t off = 0; off < req.size();) {
    auto n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) throw std::runtime_error("send to 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno));
    off += static_cast<std::size_t>(n);
  }
  std::string resp;
  char buf[8192];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0) throw std::runtime_error("recv from 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno));
    resp.append(buf, static_cast<std::size_t>(n));
  }
  http_reply r;
  auto sp = resp.find(' ');
  auto hdr_end = resp.find("\r\n\r\n");
  if (sp == std::string::npos || hdr_end == std::string::npos) throw std::runtime_error("malformed HTTP reply: " + resp.substr(0, 200));
  r.status = std::atoi(resp.c_str() + sp + 1);
  r.body = resp.substr(hdr_end + 4);
  return r;
}

/// Runs a program (no shell) and returns its combined output; throws when it fails.
inline std::string run_program(const std::vector<std::string>& args, const std::filesystem::path& cwd) {
  auto out = cwd / ".run-output";
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    if (::chdir(cwd.c_str()) != 0) ::_exit(126);
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::ifstream f(out);
  std::stringstream ss;
  ss << f.rdbuf();
  std::filesystem::remove(out);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string cmd;
    for (auto& a : args) cmd += a + " ";
    throw std::runtime_error("command failed (" + cmd + "): " + ss.str());
  }
  return ss.str();
}

inline bool on_path(const std::string& prog) {
  const char* p = std::getenv("PATH");
  std::stringstream ss(p ? p : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':'))
    if (!dir.empty() && ::access((std::filesystem::path(dir) / prog).c_str(), X_OK) == 0) return true;
  return false;
}

/// Removes /tmp/cnf-etcd-<pid>-* directories whose process is gone.
inline void remove_stale_dirs() {
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path(), ec)) {
    auto name = e.path().filename().string();
    if (!name.starts_with("cnf-etcd-")) continue;
    auto rest = name.substr(9);
    auto dash = rest.find('-');
    if (dash == std::string::npos) continue;
    pid_t owner = static_cast<pid_t>(std::atoi(rest.substr(0, dash).c_str()));
    if (owner <= 0 || owner == ::getpid()) continue;
    if (::kill(owner, 0) != 0 && errno == ESRCH) std::filesystem::remove_all(e.path(), ec);
  }
}

}  // namespace etcd_detail

/// Files written by make_test_pki().
struct test_pki {
  std::string ca_cert, ca_key;          ///< the CA that signed server and client
  std::string server_cert, server_key;  ///< SAN IP:127.0.0.1, DNS:localhost
  std::string client_cert, client_key;  ///< CN=<client_cn>, clientAuth
  std::string other_ca_cert;            ///< an unrelated CA (for "wrong CA" tests)
};

/// Writes a small PKI with the openssl CLI into `dir` (EC P-256 keys, valid 2 days).
inline test_pki make_test_pki(const std::filesystem::path& dir, const std::string& client_cn = "cnf-client",
                              const std::string& server_san = "IP:127.0.0.1,DNS:localhost") {
  using etcd_detail::run_program;
  std::filesystem::create_directories(dir);
  auto p = [&](const char* f) { return (dir / f).string(); };
  auto key = [&](const char* f) { run_program({"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p(f)}, dir); };
  {
    std::ofstream(dir / "server.ext") << "subjectAltName=" << server_san << "\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n";
    std::ofstream(dir / "client.ext") << "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n";
  }
  key("ca.key");
  run_program({"openssl", "req", "-x509", "-new", "-key", p("ca.key"), "-sha256", "-days", "2", "-subj", "/CN=cnf test CA", "-out", p("ca.crt")}, dir);
  key("other-ca.key");
  run_program({"openssl", "req", "-x509", "-new", "-key", p("other-ca.key"), "-sha256", "-days", "2", "-subj", "/CN=unrelated CA", "-out",
               p("other-ca.crt")},
              dir);
  for (auto [name, cn, ext] : {std::tuple{"server", std::string("etcd"), "server.ext"}, std::tuple{"client", client_cn, "client.ext"}}) {
    std::string n = name;
    key((n + ".key").c_str());
    run_program({"openssl", "req", "-new", "-key", p((n + ".key").c_str()), "-subj", "/CN=" + cn, "-out", p((n + ".csr").c_str())}, dir);
    run_program({"openssl", "x509", "-req", "-in", p((n + ".csr").c_str()), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial", "-days",
                 "2", "-sha256", "-extfile", p(ext), "-out", p((n + ".crt").c_str())},
                dir);
  }
  return {p("ca.crt"), p("ca.key"), p("server.crt"), p("server.key"), p("client.crt"), p("client.key"), p("other-ca.crt")};
}

class etcd_server {
 public:
  struct tls_files {
    std::string ca_file, cert_file, key_file;
    bool client_cert_auth = true;
  };
  struct options {
    std::optional<tls_files> tls;         ///< serve https on endpoint() (plus plain http on admin_endpoint())
    std::vector<std::string> extra_args;  ///< e.g. "--auth-token-ttl=1"
    std::chrono::seconds ready_timeout{30};
  };

  /// Why no etcd can run here, or nullopt.
  static std::optional<std::string> unavailable_reason() {
    if (!etcd_detail::on_path("etcd")) return "etcd is not installed (apt-get install etcd-server)";
    return std::nullopt;
  }

  etcd_server() : etcd_server(options{}) {}
  explicit etcd_server(options o) : opt_(std::move(o)) {
    etcd_detail::remove_stale_dirs();
    std::string tmpl = (std::filesystem::temp_directory_path() / ("cnf-etcd-" + std::to_string(::getpid()) + "-XXXXXX")).string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
    dir_ = tmpl;
    try {
      for (int tries = 0;; ++tries) {
        auto ports = etcd_detail::free_ports(3);
        client_port_ = ports[0];
        peer_port_ = ports[1];
        admin_port_ = opt_.tls ? ports[2] : ports[0];
        try {
          start();
          break;
        } catch (const std::runtime_error&) {
          // Another process may have taken a port between our check and etcd's bind.
          if (tries >= 2 || log_tail().find("address already in use") == std::string::npos) throw;
          std::filesystem::remove_all(data_dir());
        }
      }
    } catch (...) {
      cleanup();
      throw;
    }
  }

  etcd_server(const etcd_server&) = delete;
  etcd_server& operator=(const etcd_server&) = delete;
  ~etcd_server() { cleanup(); }

  std::string endpoint() const { return std::string(opt_.tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(client_port_); }
  std::string admin_endpoint() const { return "http://127.0.0.1:" + std::to_string(admin_port_); }
  int client_port() const noexcept { return client_port_; }
  int admin_port() const noexcept { return admin_port_; }
  pid_t pid() const noexcept { return pid_; }
  bool running() const noexcept { return pid_ > 0; }
  std::filesystem::path dir() const { return dir_; }
  std::filesystem::path data_dir() const { return dir_ / "data"; }

  /// Starts etcd (again) on the same ports and data dir and waits for /health.
  void start() {
    if (pid_ > 0) return;
    std::vector<std::string> args = {
        "etcd",
        "--name", "cnf-test",
        "--data-dir", data_dir().string(),
        "--listen-peer-urls", "http://127.0.0.1:" + std::to_string(peer_port_),
        "--initial-advertise-peer-urls", "http://127.0.0.1:" + std::to_string(peer_port_),
        "--initial-cluster", "cnf-test=http://127.0.0.1:" + std::to_string(peer_port_),
        "--initial-cluster-state", "new",
        "--advertise-client-urls", endpoint(),
        "--log-level", "warn",
        "--logger", "zap",
    };
    std::string listen = endpoint();
    if (opt_.tls) {
      listen += "," + admin_endpoint();
      args.insert(args.end(), {"--cert-file", opt_.tls->cert_file, "--key-file", opt_.tls->key_file, "--trusted-ca-file", opt_.tls->ca_file});
      if (opt_.tls->client_cert_auth) args.push_back("--client-cert-auth");
    }
    args.insert(args.end(), {"--listen-client-urls", listen});
    args.insert(args.end(), opt_.extra_args.begin(), opt_.extra_args.end());

    auto log = dir_ / "etcd.log";
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      int null = ::open("/dev/null", O_RDONLY);
      if (null >= 0) ::dup2(null, 0);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execvp("etcd", argv.data());
      ::_exit(127);
    }
    pid_ = pid;
    auto deadline = std::chrono::steady_clock::now() + opt_.ready_timeout;
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("etcd exited during start-up (status " + std::to_string(status) + "): " + log_tail());
      }
      try {
        auto r = etcd_detail::http_call(admin_port_, "GET", "/health", {}, {}, std::chrono::seconds(2));
        if (r.status == 200 && r.body.find("true") != std::string::npos) return;
      } catch (const std::runtime_error&) {
      }
      if (std::chrono::steady_clock::now() > deadline) {
        kill();
        throw std::runtime_error("etcd did not become healthy within " + std::to_string(opt_.ready_timeout.count()) + " s: " + log_tail());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  /// SIGTERM, then SIGKILL after 10 s; keeps the data dir.
  void stop() { signal_and_wait(SIGTERM, std::chrono::seconds(10)); }
  /// SIGKILL now (a crash); keeps the data dir.
  void kill() { signal_and_wait(SIGKILL, std::chrono::seconds(10)); }

  /// POST to the admin port; returns the body, throws on a non-200 reply.
  std::string post(std::string_view path, std::string_view body, std::string_view token = {}) {
    auto r = etcd_detail::http_call(admin_port_, "POST", path, body, token);
    if (r.status != 200) throw std::runtime_error("etcd " + std::string(path) + ": HTTP " + std::to_string(r.status) + ": " + r.body);
    return r.body;
  }

  /// The store's current revision.
  std::int64_t revision(std::string_view token = {}) {
    auto body = post("/v3/kv/range", "{\"key\":\"" + etcd_detail::base64("\x01") + "\",\"count_only\":true}", token);
    auto p = body.find("\"revision\":\"");
    if (p == std::string::npos) throw std::runtime_error("no revision in " + body);
    return std::atoll(body.c_str() + p + 12);
  }

  /// Compacts the history up to `revision` (watches from older revisions are refused).
  void compact(std::int64_t revision, std::string_view token = {}) {
    post("/v3/kv/compaction", "{\"revision\":\"" + std::to_string(revision) + "\",\"physical\":true}", token);
  }

  /// Writes raw bytes at a key (e.g. to plant a value that does not parse).
  void put(std::string_view key, std::string_view value, std::string_view token = {}) {
    post("/v3/kv/put", "{\"key\":\"" + etcd_detail::base64(key) + "\",\"value\":\"" + etcd_detail::base64(value) + "\"}", token);
  }

  /// Turns on authentication with a user "root" (role root) and the given password.
  void enable_auth(const std::string& root_password) {
    post("/v3/auth/role/add", R"({"name":"root"})");
    post("/v3/auth/user/add", "{\"name\":\"root\",\"password\":\"" + root_password + "\"}");
    post("/v3/auth/user/grant", R"({"user":"root","role":"root"})");
    post("/v3/auth/enable", "{}");
  }

  /// A token for admin requests once authentication is on.
  std::string authenticate(const std::string& user, const std::string& password) {
    auto body = post("/v3/auth/authenticate", "{\"name\":\"" + user + "\",\"password\":\"" + password + "\"}");
    auto p = body.find("\"token\":\"");
    if (p == std::string::npos) throw std::runtime_error("no token in " + body);
    auto e = body.find('"', p + 9);
    return body.substr(p + 9, e - p - 9);
  }

  /// The end of etcd's log, for failure messages.
  std::string log_tail(std::size_t n = 3000) const {
    std::ifstream f(dir_ / "etcd.log");
    std::stringstream ss;
    ss << f.rdbuf();
    auto s = ss.str();
    return s.size() > n ? s.substr(s.size() - n) : s;
  }

 private:
  void signal_and_wait(int sig, std::chrono::seconds grace) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    auto deadline = std::chrono::steady_clock::now() + grace;
    for (;;) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || (r < 0 && errno == ECHILD)) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
  }

  void cleanup() noexcept {
    try {
      signal_and_wait(SIGTERM, std::chrono::seconds(10));
    } catch (...) {
    }
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  options opt_;
  std::filesystem::path dir_;
  int client_port_ = 0, peer_port_ = 0, admin_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace cnf_test
