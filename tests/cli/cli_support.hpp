// tests/cli: running the built `cnf` as a command-line tool against a temp local datastore,
// and reading the same datastore in-process (the local datastore and calico-ipam linked
// into the test) to check what the tool printed against what is stored.
#pragma once
#include <cnf/plugins/calico_ipam.hpp>
#include <cnf/plugins/local.hpp>

#include <boost/json.hpp>

#include "../support/process.hpp"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cli_test {

namespace fs = std::filesystem;
namespace bj = boost::json;
namespace ci = cnf::calico_ipam;

inline const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";

using cnf_test::read_file;
using cnf_test::write_file;
using run_result = cnf_test::process_result;

/// Runs argv (argv[0] an absolute path) with exactly `env` (cnf_test::run_process: stdin
/// from `input`, stdout and stderr to files, killed by its PID after `timeout_s`).
inline run_result run(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& input = {},
                      int timeout_s = 60) {
  return cnf_test::run_process(argv, env, input, std::chrono::seconds(timeout_s), "/tmp/cnf-cli-test-");
}

/// A temp directory with a local datastore and a profile naming it (calico-ipam, no
/// default pools: the tests create pools with `cnf apply`).
struct store {
  cnf_test::temp_dir dir{"/tmp/cnf-cli-test-"};
  std::string profile = (dir.path / "profile.toml").string();
  std::string state = (dir.path / "state").string();

  explicit store(const std::string& node = "node-1") {
    write_file(profile, "[node]\nname = \"" + node + "\"\n\n[datastore]\nplugin = \"local\"\ndir = \"" + state +
                            "\"\nfsync = false\n\n[ipam]\nplugin = \"calico-ipam\"\nlock_dir = \"" + (dir.path / "locks").string() + "\"\n");
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
