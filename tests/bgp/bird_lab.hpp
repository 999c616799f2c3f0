// What the `cnf lab` tests with BIRD 2 in the lab's router namespace share (lab_bgpconf_test,
// lab_bgpfilter_test): the lab with `cnf` run inside node-1, the agents' logs, status and
// kernel routes, polling, and BIRD itself (started in the router namespace with a config the
// test writes, queried through birdc, stopped by the PID it wrote on every exit path).
// Include after <catch2/catch.hpp> (lab_env.hpp logs through Catch2).
#pragma once
#include "../support/lab_env.hpp"
#include "../support/process.hpp"

#include <boost/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace cnf_test::bird_lab {

inline const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";

/// Skips (exit 77) when the cnf binary or BIRD is missing.
inline void require_cnf_and_bird() {
  if (::access(cnf_bin.c_str(), X_OK) != 0) exit_77_skipped("cnf binary not built: " + cnf_bin);
  if (sh("command -v bird").empty()) exit_77_skipped("BIRD 2 is not installed (apt-get install bird2)");
}

struct env : cnf_test::lab_env {
  explicit env(const std::string& tag) : cnf_test::lab_env(tag) {}
  /// `cnf ARGS...` inside node-1 (apply, delete, get, node status).
  process_result cnf(std::vector<std::string> args) const {
    std::vector<std::string> a = {"exec", "node-1", "--", cnf_bin};
    a.insert(a.end(), args.begin(), args.end());
    return lab(a);
  }
  /// `cnf apply -f` of yaml written to the test's own file `name`.
  process_result apply(const std::string& name, const std::string& yaml) const {
    const auto f = (files.path / name).string();
    write_file(f, yaml);
    return cnf({"apply", "-f", f});
  }
  std::string agent_log(const std::string& node = "node-1") const { return read_file(dir / "nodes" / node / "agent.log"); }
  std::string kernel_routes(const std::string& node = "node-1") const { return run({"exec", node, "--", "ip", "route", "show", "proto", "81"}).out; }
  /// `cnf node status -o json` of a node ({} when it does not parse).
  boost::json::object status(const std::string& node = "node-1") const {
    auto r = run({"exec", node, "--", cnf_bin, "node", "status", "-o", "json"});
    boost::json::error_code ec;
    auto v = boost::json::parse(r.out, ec);
    return !ec && v.is_object() ? v.get_object() : boost::json::object{};
  }
  std::string router_ns() const { return "cnflab-" + id() + "-router"; }
};

inline bool wait_for(const std::function<bool()>& f, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < limit;) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return f();
}

inline std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

/// A state of a peer in `cnf node status -o json` ("(none)": no such peer; "": no routing part).
inline std::string peer_state(const boost::json::object& st, const std::string& name) {
  if (!st.contains("routing")) return "";
  for (auto& p : st.at("routing").at("peers").as_array())
    if (p.at("name").as_string() == name) return std::string(p.at("state").as_string());
  return "(none)";
}

/// BIRD 2 in the lab's router namespace (10.100.0.1 on the fabric), stopped by the PID it wrote.
struct bird {
  std::string ns;
  std::filesystem::path dir;
  explicit bird(const env& L) : ns(L.router_ns()), dir(L.files.path / "bird") { std::filesystem::create_directories(dir); }
  bird(const bird&) = delete;
  bird& operator=(const bird&) = delete;
  ~bird() {
    std::ifstream f(dir / "bird.pid");
    long p = 0;
    if (!(f >> p) || p <= 0) return;
    ::kill(static_cast<pid_t>(p), SIGTERM);
    for (int i = 0; i < 100 && ::kill(static_cast<pid_t>(p), 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (::kill(static_cast<pid_t>(p), 0) == 0) ::kill(static_cast<pid_t>(p), SIGKILL);
  }
  /// One `protocol bgp NAME` toward a node (AS 64513 here, 64512 there), importing everything and
  /// exporting BIRD's static routes; `extra` goes into the protocol (a password, ...).
  static std::string protocol(const std::string& name, const std::string& node_addr, const std::string& extra = "") {
    return "protocol bgp " + name + " { local 10.100.0.1 as 64513; neighbor " + node_addr + " as 64512; " + extra +
           "\n  ipv4 { import all; export where source = RTS_STATIC; }; connect retry time 1; connect delay time 0; error wait time 1, 2; }\n";
  }
  /// Writes bird.conf (router id, device, a static protocol with `statics`, then `protocols`) and
  /// starts BIRD; true when it started.
  bool start(const std::string& statics, const std::string& protocols) const {
    write_file(dir / "bird.conf", "router id 10.100.0.1;\nprotocol device { scan time 10; }\nprotocol static { ipv4; " + statics + " }\n" + protocols);
    return sh("ip netns exec " + ns + " bird -c " + (dir / "bird.conf").string() + " -s " + (dir / "bird.ctl").string() + " -P " +
              (dir / "bird.pid").string() + " 2>&1; echo rc=$?")
               .find("rc=0") != std::string::npos;
  }
  std::string c(const std::string& cmd) const { return sh("birdc -s " + (dir / "bird.ctl").string() + " " + cmd + " 2>&1"); }
  /// "n1 BGP --- up 12:00:01.123 Established" of `show protocols`, for a protocol.
  std::string line(const std::string& proto) const {
    auto out = c("show protocols " + proto);
    auto p = out.find("\n" + proto + " ");
    return p == std::string::npos ? std::string() : out.substr(p + 1, out.find('\n', p + 1) - p - 1);
  }
  bool established(const std::string& proto) const { return line(proto).find("Established") != std::string::npos; }
  bool has_block(const std::string& proto) const { return c("show route protocol " + proto).find("10.244.") != std::string::npos; }
  /// The protocol line once it stops changing (BIRD's `since` settles a moment after
  /// Established: its channel comes up after the protocol).
  std::string settled_line(const std::string& proto) const {
    std::string since = line(proto);
    for (int i = 0; i < 20; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      auto again = line(proto);
      if (again == since) break;
      since = again;
    }
    return since;
  }
};

}  // namespace cnf_test::bird_lab
