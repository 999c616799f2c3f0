// What the tests that drive `cnf lab` as a person would share: a lab in a state directory of
// the test's own (so its id, and every namespace name, is unique to this run) that is taken
// down on every exit path, leftover namespaces of that id included; a tcpdump capture in one
// of its namespaces; a guard that stops a process the test started, by its PID.
// Include after <catch2/catch.hpp> (UNSCOPED_INFO logs each `cnf lab` call).
#pragma once
#include "process.hpp"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace cnf_test {

inline const std::string& lab_cnf_binary() {
  static const std::string p = std::string(CNF_TEST_BIN_DIR) + "/cnf";
  return p;
}

inline const std::vector<std::string>& lab_process_env() {
  static const std::vector<std::string> e = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  return e;
}

/// A shell command's standard output (30 s at most).
inline std::string sh(const std::string& cmd) {
  return run_process({"/bin/sh", "-c", cmd}, lab_process_env(), {}, std::chrono::seconds(30)).out;
}

class lab_env {
 public:
  /// tag names the test in the paths: /tmp/cnf-<tag>-lab-<pid>-<random> (made by `up`) and a
  /// scratch directory for the test's own files.
  explicit lab_env(const std::string& tag) : files("/tmp/cnf-" + tag + "-lab-files-") {
    temp_dir parent("/tmp/cnf-" + tag + "-lab-");
    dir = "/tmp/cnf-" + tag + "-lab-" + std::to_string(::getpid()) + "-" + parent.path.filename().string();
  }
  lab_env(const lab_env&) = delete;
  lab_env& operator=(const lab_env&) = delete;
  ~lab_env() {
    (void)run({"down"});
    const std::string pre = "cnflab-" + id() + "-";
    if (DIR* d = ::opendir("/var/run/netns")) {
      std::vector<std::string> left;
      while (dirent* e = ::readdir(d))
        if (std::string(e->d_name).rfind(pre, 0) == 0) left.push_back(e->d_name);
      ::closedir(d);
      for (auto& n : left) sh("ip netns del " + n);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  /// `cnf lab <args>`, not logged (Catch2's logging is for the test's own thread).
  process_result run(std::vector<std::string> args, std::chrono::seconds timeout = std::chrono::seconds(60)) const {
    std::vector<std::string> argv = {lab_cnf_binary(), "lab", "--dir", dir.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_process(argv, lab_process_env(), {}, timeout);
  }
  /// `cnf lab <args>`, logged for a failing assertion.
  process_result lab(std::vector<std::string> args, std::chrono::seconds timeout = std::chrono::seconds(60)) const {
    auto r = run(args, timeout);
    std::string line;
    for (auto& a : args) line += " " + a;
    UNSCOPED_INFO("cnf lab" << line << ": " << r.describe());
    return r;
  }
  /// The lab's id, as `cnf lab` derives it from the directory: its namespaces are cnflab-<id>-*.
  std::string id() const { return sh("printf %s '" + dir.string() + "' | sha1sum").substr(0, 6); }

  std::filesystem::path dir;
  temp_dir files;
};

/// tcpdump in a namespace with a filter, its output in `out`; stopped by its PID.
class capture {
 public:
  capture(const std::string& netns, const std::string& filter, const std::filesystem::path& out) : out_(out) {
    const auto err = out.string() + ".err";
    pid_ = std::stoi(sh("ip netns exec " + netns + " tcpdump -l -n -i any '" + filter + "' > " + out.string() + " 2> " + err + " & echo $!"));
    for (int i = 0; i < 100 && read_file(err).find("listening on") == std::string::npos; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  capture(const capture&) = delete;
  capture& operator=(const capture&) = delete;
  /// Stops tcpdump and returns what it printed.
  std::string stop() {
    if (pid_ > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the last replies reach the bridge
      ::kill(pid_, SIGTERM);
      for (int i = 0; i < 100 && ::kill(pid_, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      pid_ = 0;
    }
    return read_file(out_);
  }
  ~capture() { (void)stop(); }

 private:
  std::filesystem::path out_;
  int pid_ = 0;
};

/// Stops a process this test started (an agent it restarted, ...), by PID, on every exit path.
struct pid_guard {
  pid_t pid = 0;
  pid_guard() = default;
  pid_guard(const pid_guard&) = delete;
  pid_guard& operator=(const pid_guard&) = delete;
  ~pid_guard() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 200 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
};

}  // namespace cnf_test
