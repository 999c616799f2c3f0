// What the interop tests of cnf's BGP part against real daemons share (root, network
// namespaces): BIRD 2 and GoBGP stopped by PID on every exit path, cnf's part on an event
// loop with its learned routes put into a route_table that programs the kernel of the
// calling thread's namespace (as the agent does), a logger that keeps every line.
//
//   cnf_test::bgp::bird a(ns_a, dir / "a");
//   a.start(conf);                        // bird -c conf, in ns_a; stopped by its pid file
//   cnf_test::bgp::cnf_side cnf;          // in the calling thread's namespace (enter_netns first)
//   cnf.settings.route_reflector_cluster_id = "1.1.1.1";
//   cnf.start({"10.97.0.3/24"}, {peer});
//   REQUIRE(cnf_test::bgp::wait_for([&] { return cnf.sink->peer("a").state == "Established"; }));
#pragma once
#include "../integration/netns_harness.hpp"
#include "../support/process.hpp"

#include <cnf/event_loop.hpp>
#include <cnf/plugins/bgp.hpp>
#include <cnf/route_table.hpp>

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>

namespace cnf_test::bgp {
using namespace std::chrono_literals;

inline bool wait_for(const std::function<bool()>& f, std::chrono::milliseconds limit = 20s) {
  for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < limit;) {
    if (f()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return f();
}

struct capture_log final : cnf::logger {
  std::mutex mu;
  std::vector<std::string> lines;
  void write(cnf::log_level, std::string_view m) noexcept override {
    std::lock_guard lk(mu);
    lines.emplace_back(m);
  }
  bool has(std::string_view s) {
    std::lock_guard lk(mu);
    for (auto& l : lines)
      if (l.find(s) != std::string::npos) return true;
    return false;
  }
  std::string all() {
    std::lock_guard lk(mu);
    std::string s;
    for (auto& l : lines) s += l + "\n";
    return s;
  }
};

// The agent's part of the job, in small: learned routes into the route table.
struct table_sink final : cnf::routing_sink {
  cnf::route_table& rt;
  std::mutex mu;
  std::map<std::string, cnf::peer_status> peers;
  std::map<cnf::ip_prefix, cnf::learned_route> routes;
  explicit table_sink(cnf::route_table& t) : rt(t) {}
  void route_learned(const cnf::learned_route& r) noexcept override {
    cnf::route_entry e;
    e.dst = r.prefix;
    for (auto& h : r.next_hops) e.next_hops.push_back({h, r.device, false});
    rt.set("routing", e);
    std::lock_guard lk(mu);
    routes[r.prefix] = r;
  }
  void route_withdrawn(const cnf::ip_prefix& p) noexcept override {
    rt.remove("routing", p);
    std::lock_guard lk(mu);
    routes.erase(p);
  }
  void peer_changed(const cnf::peer_status& p) noexcept override {
    std::lock_guard lk(mu);
    peers[p.name] = p;
  }
  void peer_removed(std::string_view n) noexcept override {
    std::lock_guard lk(mu);
    peers.erase(std::string(n));
  }
  cnf::peer_status peer(const std::string& n) {
    std::lock_guard lk(mu);
    return peers[n];
  }
};

// BIRD in a namespace, its files in `dir`, stopped by the PID it wrote on every exit path.
struct bird {
  const test_netns& ns;
  std::filesystem::path dir;
  bird(const test_netns& n, std::filesystem::path d) : ns(n), dir(std::move(d)) { std::filesystem::create_directories(dir); }
  ~bird() { stop(); }
  bird(const bird&) = delete;
  bird& operator=(const bird&) = delete;
  void start(const std::string& conf) {
    write_file(dir / "bird.conf", conf);
    ns.exec_or_throw("bird -c " + (dir / "bird.conf").string() + " -s " + sock() + " -P " + (dir / "bird.pid").string());
    if (!wait_for([&] { return pid() > 0; }, 5s)) throw std::runtime_error("bird did not write its pid file");
  }
  std::string sock() const { return (dir / "bird.ctl").string(); }
  pid_t pid() const {
    std::ifstream f(dir / "bird.pid");
    long p = 0;
    f >> p;
    return static_cast<pid_t>(p);
  }
  void stop(int sig = SIGTERM) {
    pid_t p = pid();
    if (p <= 0) return;
    ::kill(p, sig);
    for (int i = 0; i < 100 && ::kill(p, 0) == 0; ++i) std::this_thread::sleep_for(20ms);
    if (::kill(p, 0) == 0) ::kill(p, SIGKILL);
    std::filesystem::remove(dir / "bird.pid");
  }
  std::string c(const std::string& cmd) const { return run("birdc -s " + sock() + " " + cmd).output; }
};

// GoBGP in a namespace (its API on 127.0.0.1:50051 there), stopped by its PID on every exit path.
struct gobgp {
  const test_netns& ns;
  std::filesystem::path dir;
  pid_t pid = 0;
  gobgp(const test_netns& n, std::filesystem::path d) : ns(n), dir(std::move(d)) { std::filesystem::create_directories(dir); }
  ~gobgp() { stop(); }
  gobgp(const gobgp&) = delete;
  gobgp& operator=(const gobgp&) = delete;
  void start(const std::string& conf) {
    write_file(dir / "gobgpd.toml", conf);
    auto out = ns.exec_or_throw("gobgpd -f " + (dir / "gobgpd.toml").string() + " --api-hosts 127.0.0.1:50051 --pprof-disable -p > " +
                                (dir / "gobgpd.log").string() + " 2>&1 & echo $!");
    pid = static_cast<pid_t>(std::stol(out));
    if (!wait_for([&] { return c("global").find("AS") != std::string::npos; }, 10s)) throw std::runtime_error("gobgpd does not answer: " + log());
  }
  std::string log() const {
    std::ifstream f(dir / "gobgpd.log");
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  void stop() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(20ms);
    if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, WNOHANG);
    pid = 0;
  }
  std::string c(const std::string& cmd) const { return ns.exec("gobgp -u 127.0.0.1 -p 50051 " + cmd).output; }
};

// cnf's side: the part and a route table on an event loop in the calling thread's namespace.
// `settings` (AS 64512, hold time 9 s, connect retry 1 s) may be changed before start().
struct cnf_side {
  capture_log log;
  cnf::event_loop loop;
  std::thread t;
  std::unique_ptr<cnf::route_table> rt;
  std::unique_ptr<table_sink> sink;
  std::unique_ptr<cnf::bgp::routing> part;
  std::string start_error = "not started";
  cnf::bgp::routing_settings settings = [] {
    cnf::bgp::routing_settings s;
    s.as_number = 64512;
    s.hold_time = 9;
    s.connect_retry = 1000ms;
    return s;
  }();
  cnf_side() { t = std::thread([this] { loop.run(); }); }
  ~cnf_side() {
    on_loop([&] { if (part) part->stop(); part.reset(); sink.reset(); rt.reset(); });
    loop.stop();
    t.join();
  }
  cnf_side(const cnf_side&) = delete;
  cnf_side& operator=(const cnf_side&) = delete;
  void on_loop(std::function<void()> f) {
    std::promise<void> done;
    loop.post([&] { f(); done.set_value(); });
    done.get_future().wait();
  }
  void start(std::vector<const char*> addrs, std::vector<cnf::peer_config> peers, std::string password = {}) {
    on_loop([&] {
      cnf::route_table::options ro;
      ro.protocol = 81;
      rt = std::make_unique<cnf::route_table>(loop, ro);
      rt->set_ready(true);
      sink = std::make_unique<table_sink>(*rt);
      auto s = settings;
      if (!password.empty()) s.password = password;
      part = std::make_unique<cnf::bgp::routing>(s, &loop, &log);
      cnf::node_info self;
      self.name = "cnf-node";
      for (auto* a : addrs) self.addresses.push_back(cnf::ip_prefix::parse(a, true).value());
      start_error = "";
      if (auto r = part->start(self, *sink); !r) start_error = r.error().message;
      for (auto& p : peers) part->upsert_peer(p);
    });
  }
  void advertise(const char* prefix) { on_loop([&] { part->advertise(cnf::ip_prefix::parse(prefix).value()); }); }
  void withdraw(const char* prefix) { on_loop([&] { part->withdraw(cnf::ip_prefix::parse(prefix).value()); }); }
  bool established(const std::string& peer) { return sink->peer(peer).state == "Established"; }
};

inline cnf::peer_config peer(const char* name, const char* address, std::uint32_t asn) {
  return {name, cnf::ip_address::parse(address).value(), asn, "global"};
}

}  // namespace cnf_test::bgp
