// tests/support/process.hpp — temp directories, whole-file I/O and running a program as a
// child process, for tests that drive built binaries (tests/cli, tests/integration,
// tests/datastore-etcd).
//
//   cnf_test::temp_dir d("/tmp/cnf-x-test-");   // /tmp/cnf-x-test-XXXXXX, removed on every exit path
//   cnf_test::write_file(d.path / "f", "text");
//   auto r = cnf_test::run_process({"/usr/bin/env"}, {"PATH=/usr/bin"}, "stdin text", std::chrono::seconds(5));
//   r.status, r.out, r.err, r.elapsed()
//
// run_process forks and execs argv[0] (an absolute path; no PATH search) with exactly the
// given environment; stdin is read from a file holding `input`, stdout and stderr go to
// files, all in a fresh temp directory that is removed on return (and on exceptions). The
// child is killed by its PID (never by name) when the timeout passes.
//
// exit_77_unless_root() is what the root-only test programs call from their Catch2
// listener's testRunStarting: one line "skipped: needs root (...)" and exit status 77.
// Header-only, POSIX only, no Catch2 dependency.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace cnf_test {

/// A directory made by mkdtemp(prefix + "XXXXXX") (prefix: a path, e.g. "/tmp/cnf-cli-test-"),
/// removed with everything in it when the object goes away, on every exit path.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(std::string prefix) {
    prefix += "XXXXXX";
    if (!::mkdtemp(prefix.data())) throw std::runtime_error("mkdtemp " + prefix + " failed");
    path = prefix;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

/// Replaces the file's contents with `text`; throws when it cannot.
inline void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

/// The file's contents; "" when it cannot be read.
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct process_result {
  int status = -1;  ///< exit code; 128+N when killed by signal N
  std::string out, err;
  std::chrono::steady_clock::time_point start, end;  ///< just before fork, just after the child was reaped
  bool killed = false;                               ///< killed by run_process at the timeout

  std::chrono::milliseconds elapsed() const { return std::chrono::duration_cast<std::chrono::milliseconds>(end - start); }
  std::string describe() const { return "exit " + std::to_string(status) + "\nstdout:\n" + out + "stderr:\n" + err; }
};

/// Runs argv (argv[0] an absolute path) with exactly `env` as its environment, stdin from a
/// file holding `input`, stdout and stderr to files; SIGKILLed (by its PID) once `timeout`
/// has passed, which appends "[killed after N ms]" to err. The files live in a directory
/// made from `io_prefix` (see temp_dir), removed before returning.
inline process_result run_process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                  const std::string& input = {},
                                  std::chrono::milliseconds timeout = std::chrono::milliseconds(60000),
                                  const std::string& io_prefix = "/tmp/cnf-test-run-") {
  if (argv.empty()) throw std::invalid_argument("run_process: empty argv");
  temp_dir io(io_prefix);
  write_file(io.path / "in", input);
  // Everything the child needs is prepared before fork: between fork and exec it only
  // makes async-signal-safe calls (the test programs have threads).
  std::vector<char*> a, e;
  for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  for (auto& s : env) e.push_back(const_cast<char*>(s.c_str()));
  e.push_back(nullptr);
  const std::string in = (io.path / "in").string(), out = (io.path / "out").string(), err = (io.path / "err").string();
  process_result r;
  r.start = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int i = ::open(in.c_str(), O_RDONLY), o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600),
        x = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (i < 0 || o < 0 || x < 0) ::_exit(126);
    ::dup2(i, 0);
    ::dup2(o, 1);
    ::dup2(x, 2);
    ::execve(a[0], a.data(), e.data());
    ::_exit(127);
  }
  int st = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &st, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      ::kill(pid, SIGKILL);
      throw std::runtime_error("waitpid failed");
    }
    if (!r.killed && std::chrono::steady_clock::now() - r.start > timeout) {
      ::kill(pid, SIGKILL);
      r.killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  r.end = std::chrono::steady_clock::now();
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = read_file(out);
  r.err = read_file(err);
  if (r.killed) r.err += "\n[killed after " + std::to_string(timeout.count()) + " ms]";
  return r;
}

/// Prints "skipped: <why>" on stdout and exits with 77 (ctest's SKIP_RETURN_CODE).
[[noreturn]] inline void exit_77_skipped(const std::string& why) {
  std::printf("skipped: %s\n", why.c_str());
  std::fflush(stdout);
  std::exit(77);
}

/// For a Catch2 listener's testRunStarting: unless the process runs as root, prints
/// "skipped: needs root (<what>)" and exits 77 before any test runs.
inline void exit_77_unless_root(const std::string& what = "network namespaces") {
  if (::geteuid() != 0) exit_77_skipped("needs root (" + what + ")");
}

}  // namespace cnf_test
