// tests/cli: running the built `cnf` as a command-line tool against a temp local datastore,
// and reading the same datastore in-process (the local datastore and calico-ipam linked
// into the test) to check what the tool printed against what is stored.
#pragma once
#include <cnf/plugins/calico_ipam.hpp>
#include <cnf/plugins/local.hpp>

#include <boost/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace cli_test {

namespace fs = std::filesystem;
namespace bj = boost::json;
namespace ci = cnf::calico_ipam;

inline const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string t = "/tmp/cnf-cli-test-XXXXXX";
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

inline void write_file(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct run_result {
  int status = -1;  ///< exit code; 128+N when killed by signal N
  std::string out, err;
  std::string describe() const { return "exit " + std::to_string(status) + "\nstdout:\n" + out + "stderr:\n" + err; }
};

/// Runs argv (argv[0] an absolute path) with exactly `env`, stdin from `input`, stdout and
/// stderr to files; killed (by its PID) after `timeout_s`.
inline run_result run(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& input = {},
                      int timeout_s = 60) {
  temp_dir io;
  write_file(io.path / "in", input);
  std::vector<char*> a, e;
  for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  for (auto& s : env) e.push_back(const_cast<char*>(s.c_str()));
  e.push_back(nullptr);
  const std::string in = (io.path / "in").string(), out = (io.path / "out").string(), err = (io.path / "err").string();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int i = ::open(in.c_str(), O_RDONLY), o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600),
        r = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (i < 0 || o < 0 || r < 0) ::_exit(126);
    ::dup2(i, 0);
    ::dup2(o, 1);
    ::dup2(r, 2);
    ::execve(a[0], a.data(), e.data());
    ::_exit(127);
  }
  int st = 0;
  bool killed = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    pid_t w = ::waitpid(pid, &st, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) throw std::runtime_error("waitpid failed");
    if (!killed && std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  run_result r;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = read_file(out);
  r.err = read_file(err);
  if (killed) r.err += "\n[killed after " + std::to_string(timeout_s) + " s]";
  return r;
}

/// A temp directory with a local datastore and a profile naming it (calico-ipam, no
/// default pools: the tests create pools with `cnf apply`).
struct store {
  temp_dir dir;
  std::string profile = (dir.path / "profile.toml").string();
  std::string state = (dir.path / "state").string();

  explicit store(const std::string& node = "node-1") {
    write_file(profile, "[node]\nname = \"" + node + "\"\n\n[datastore]\nplugin = \"local\"\ndir = \"" + state +
                            "\"\nfsync = false\n\n[ipam]\nplugin = \"calico-ipam\"\n");
  }
  std::string file(const std::string& name, const std::string& text) const {
    auto p = (dir.path / name).string();
    write_file(p, text);
    return p;
  }
  /// `cnf <args> --profile <profile>`.
  run_result cnf(std::vector<std::string> args, const std::string& input = {}) const {
    args.insert(args.begin(), cnf_bin);
    args.push_back("--profile");
    args.push_back(profile);
    return run(args, {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, input);
  }
  /// The same datastore, opened in this process.
  cnf::any_datastore open() const {
    cnf::local_datastore_options o;
    o.dir = state;
    o.fsync = false;
    auto ds = cnf::local_datastore::open(std::move(o));
    if (!ds) throw std::runtime_error("open local datastore: " + ds.error().message);
    return cnf::any_datastore(std::move(*ds));
  }
};

/// Every stored resource of the kinds `cnf apply` writes, as text (for "nothing changed").
inline std::string snapshot(const cnf::any_datastore& ds) {
  std::string s;
  for (auto k : {cnf::kinds::ip_pool, cnf::kinds::ipam_config, cnf::kinds::ip_reservation, cnf::kinds::ipam_block}) {
    auto l = ds.list_all({.kind = std::string(k)});
    if (!l) throw std::runtime_error("list: " + l.error().message);
    for (auto& r : l->items) s += r.key().to_string() + " " + r.revision + " " + r.spec + "\n";
  }
  return s;
}

/// Splits a calicoctl-style table row "| a | b |" into its trimmed cells.
inline std::vector<std::string> cells(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool in = false;
  for (char c : line) {
    if (c == '|') {
      if (in) {
        auto b = cur.find_first_not_of(' '), e = cur.find_last_not_of(' ');
        out.push_back(b == std::string::npos ? "" : cur.substr(b, e - b + 1));
      }
      in = true;
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

/// The table rows (cells) whose first cell is `first`.
inline std::vector<std::vector<std::string>> rows(const std::string& text, const std::string& first) {
  std::vector<std::vector<std::string>> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (auto c = cells(line); !c.empty() && c[0] == first) out.push_back(c);
  return out;
}

/// "Check complete; found N problems." -> N, or -1.
inline long problems_found(const std::string& out) {
  auto i = out.find("Check complete; found ");
  if (i == std::string::npos) return -1;
  return std::strtol(out.c_str() + i + 22, nullptr, 10);
}

}  // namespace cli_test
