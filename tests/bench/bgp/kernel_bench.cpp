// cnf against BIRD 2, side by side in one run (root): one GoBGP holds N IPv4 /24s
// (loaded from an MRT TABLE_DUMP_V2 file before any receiver connects) and feeds them over
// eBGP to two receivers, each in a namespace of its own:
//   - BIRD 2, its kernel protocol exporting into the namespace's main table;
//   - cnf: this program re-executed as a receiver inside its namespace, running what the
//     agent runs for BGP (the `bgp` routing part on its own thread, posting to an
//     event_loop, a sink that puts each learned route into cnf::route_table, which programs
//     the kernel with netlink batches). Not the whole `cnf agent` (no datastore, no
//     syncer): the agent's sink does the same route_table.set per route.
// The receivers run one after the other (BIRD first), so they do not share the 2 cores.
// For each: the time from the session's Established until N routes of its protocol are in
// its namespace's main table (a netlink dump count, polled), and the process's peak
// resident memory (VmHWM). Prints the ratios cnf/BIRD.
//
//   kernel_bench [--smoke] [N ...]        (default: 10000 100000; --smoke: N = 2000)
//
// Namespaces are cnf-t<pid>-<n>; every process is stopped by its PID and every namespace
// deleted on every exit path (SIGINT/SIGTERM included).
#include "../../integration/netns_harness.hpp"

#include <cnf/event_loop.hpp>
#include <cnf/plugins/bgp.hpp>
#include <cnf/route_table.hpp>

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>

#include <arpa/inet.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>

using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;
using cnf_test::test_netns;

namespace {

constexpr std::uint8_t rtprot_bird = 12;
constexpr std::uint8_t rtprot_cnf = 81;
constexpr int skip_code = 77;

std::atomic<bool> interrupted{false};
void on_signal(int) { interrupted = true; }
void check_interrupt() {
  if (interrupted) throw std::runtime_error("interrupted");
}

double secs(clk::duration d) { return std::chrono::duration<double>(d).count(); }
std::int64_t mono_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now().time_since_epoch()).count(); }

/// User + system CPU seconds a process has used (from /proc/PID/stat).
double cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), {});
  auto rp = all.rfind(')');
  if (rp == std::string::npos) return 0;
  std::istringstream in(all.substr(rp + 2));
  std::string x;
  unsigned long long ut = 0, st = 0;
  for (int field = 3; field <= 15 && in >> x; ++field) {
    if (field == 14) ut = std::stoull(x);
    if (field == 15) st = std::stoull(x);
  }
  return double(ut + st) / double(::sysconf(_SC_CLK_TCK));
}

long vm_hwm_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string k;
  long v = 0;
  while (f >> k) {
    if (k == "VmHWM:") { f >> v; return v; }
    std::getline(f, k);
  }
  return 0;
}

// ---- the feed: an MRT TABLE_DUMP_V2 file with N /24s from 20.0.0.0 up ----
void put16(std::string& s, std::uint16_t v) { s += char(v >> 8); s += char(v & 0xff); }
void put32(std::string& s, std::uint32_t v) { put16(s, std::uint16_t(v >> 16)); put16(s, std::uint16_t(v & 0xffff)); }
void mrt_record(std::ofstream& f, std::uint16_t subtype, const std::string& body) {
  std::string h;
  put32(h, 0);   // timestamp
  put16(h, 13);  // TABLE_DUMP_V2
  put16(h, subtype);
  put32(h, static_cast<std::uint32_t>(body.size()));
  f << h << body;
}
std::uint32_t prefix_net(std::size_t i) { return (20u << 24) + (static_cast<std::uint32_t>(i) << 8); }

void write_mrt(const std::filesystem::path& path, std::size_t n) {
  std::ofstream f(path, std::ios::binary);
  std::string peers;
  put32(peers, 0x0a610001);  // collector id
  put16(peers, 0);           // no view name
  put16(peers, 1);
  peers += char(0x02);       // IPv4 address, 4-octet AS
  put32(peers, 0x0a610001);
  put32(peers, 0x0a610001);
  put32(peers, 65100);
  mrt_record(f, 1, peers);  // PEER_INDEX_TABLE
  std::string attrs;
  attrs += std::string("\x40\x01\x01\x00", 4);                  // ORIGIN IGP
  attrs += std::string("\x40\x02\x06\x02\x01", 5);  // AS_PATH: one AS_SEQUENCE of one 4-octet AS
  put32(attrs, 65100);
  attrs += std::string("\x40\x03\x04", 3);        // NEXT_HOP 0.0.0.0: gobgp sends its own address
  put32(attrs, 0);
  // gobgp 3.10's client drops about the last 64 KiB of the file: pad with duplicates.
  const std::size_t pad = std::min<std::size_t>(n, 4000);
  for (std::size_t k = 0; k < n + pad; ++k) {
    std::size_t i = k < n ? k : k - n;
    std::string r;
    put32(r, static_cast<std::uint32_t>(k));
    r += char(24);
    std::uint32_t net = prefix_net(i);
    r += char(net >> 24); r += char((net >> 16) & 0xff); r += char((net >> 8) & 0xff);
    put16(r, 1);
    put16(r, 0);  // peer index
    put32(r, 0);  // originated time
    put16(r, static_cast<std::uint16_t>(attrs.size()));
    r += attrs;
    mrt_record(f, 2, r);  // RIB_IPV4_UNICAST
  }
}

// ---- counting routes in a namespace's main table: a netlink dump ----
class route_counter {
 public:
  explicit route_counter(const test_netns& ns) {
    std::string err;
    std::thread t([&] {  // join, open, return: the socket stays in the namespace
      int nsfd = ::open(ns.path().c_str(), O_RDONLY | O_CLOEXEC);
      if (nsfd < 0 || ::setns(nsfd, CLONE_NEWNET) != 0) { err = std::string("setns: ") + std::strerror(errno); return; }
      ::close(nsfd);
      fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
      if (fd_ < 0) err = std::string("netlink socket: ") + std::strerror(errno);
    });
    t.join();
    if (!err.empty()) throw std::runtime_error(err);
    int sz = 4 << 20;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  }
  ~route_counter() { if (fd_ >= 0) ::close(fd_); }
  route_counter(const route_counter&) = delete;
  route_counter& operator=(const route_counter&) = delete;

  /// IPv4 routes of `proto` in the main table.
  std::size_t count(std::uint8_t proto) {
    struct {
      nlmsghdr h;
      rtmsg r;
    } req{};
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = RTM_GETROUTE;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.h.nlmsg_seq = ++seq_;
    req.r.rtm_family = AF_INET;
    if (::send(fd_, &req, sizeof req, 0) < 0) throw std::runtime_error(std::string("netlink send: ") + std::strerror(errno));
    std::size_t n = 0;
    std::vector<char> buf(1 << 16);
    for (;;) {
      ssize_t len = ::recv(fd_, buf.data(), buf.size(), 0);
      if (len < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(std::string("netlink recv: ") + std::strerror(errno));
      }
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, static_cast<unsigned>(len)); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_seq != seq_) continue;
        if (h->nlmsg_type == NLMSG_DONE) return n;
        if (h->nlmsg_type == NLMSG_ERROR) throw std::runtime_error("netlink dump error");
        auto* r = static_cast<rtmsg*>(NLMSG_DATA(h));
        if (r->rtm_table == RT_TABLE_MAIN && r->rtm_protocol == proto) ++n;
      }
    }
  }

 private:
  int fd_ = -1;
  std::uint32_t seq_ = 0;
};

struct poll_result {
  bool done = false;
  clk::time_point at;
  std::size_t polls = 0;
  double max_dump = 0;
};

/// Polls until `n` routes of `proto` are there (or `limit` passes).
poll_result wait_routes(route_counter& rc, std::uint8_t proto, std::size_t n, std::chrono::seconds limit) {
  poll_result r;
  auto t0 = clk::now();
  while (clk::now() - t0 < limit) {
    check_interrupt();
    auto a = clk::now();
    std::size_t c = rc.count(proto);
    auto b = clk::now();
    ++r.polls;
    r.max_dump = std::max(r.max_dump, secs(b - a));
    if (c >= n) { r.done = true; r.at = b; return r; }
    std::this_thread::sleep_for(10ms);
  }
  return r;
}

bool wait_for(const std::function<bool()>& f, std::chrono::milliseconds limit, std::chrono::milliseconds every = 20ms) {
  for (auto t0 = clk::now(); clk::now() - t0 < limit;) {
    check_interrupt();
    if (f()) return true;
    std::this_thread::sleep_for(every);
  }
  return f();
}

void stop_pid(pid_t& pid, bool child) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 150; ++i) {
    if (child ? ::waitpid(pid, nullptr, WNOHANG) == pid : ::kill(pid, 0) != 0) { pid = 0; return; }
    std::this_thread::sleep_for(20ms);
  }
  ::kill(pid, SIGKILL);
  if (child) ::waitpid(pid, nullptr, 0);
  pid = 0;
}

// ---- GoBGP: the feed ----
struct gobgp {
  const test_netns& ns;
  std::filesystem::path dir;
  pid_t pid = 0;
  gobgp(const test_netns& n, std::filesystem::path d) : ns(n), dir(std::move(d)) {}
  ~gobgp() { stop_pid(pid, false); }
  std::string c(const std::string& cmd) const { return ns.exec("gobgp -u 127.0.0.1 -p 50051 " + cmd).output; }
  void start() {
    std::string conf = "[global.config]\n  as = 65001\n  router-id = \"10.97.0.1\"\n  port = 179\n"
                       "  local-address-list = [\"10.97.0.1\", \"10.98.0.1\"]\n";
    for (auto [peer, local] : {std::pair{"10.97.0.2", "10.97.0.1"}, std::pair{"10.98.0.2", "10.98.0.1"}})
      conf += std::string("[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"") + peer + "\"\n    peer-as = 64512\n"
              "  [neighbors.transport.config]\n    local-address = \"" + local + "\"\n    passive-mode = true\n"
              "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n";
    std::ofstream(dir / "gobgpd.toml") << conf;
    auto out = ns.exec_or_throw("gobgpd -f " + (dir / "gobgpd.toml").string() + " --api-hosts 127.0.0.1:50051 --pprof-disable -p > " +
                                (dir / "gobgpd.log").string() + " 2>&1 & echo $!");
    pid = static_cast<pid_t>(std::stol(out));
    if (!wait_for([&] { return c("global").find("AS") != std::string::npos; }, 10s)) throw std::runtime_error("gobgpd does not answer");
  }
  std::size_t destinations() const {
    auto s = c("global rib summary -a ipv4");
    auto at = s.find("Destination: ");
    return at == std::string::npos ? 0 : std::stoul(s.substr(at + 13));
  }
};

// ---- BIRD 2: receiver one ----
struct bird {
  const test_netns& ns;
  std::filesystem::path dir;
  pid_t pid = 0;
  bird(const test_netns& n, std::filesystem::path d) : ns(n), dir(std::move(d)) {}
  ~bird() { stop(); }
  std::string sock() const { return (dir / "bird.ctl").string(); }
  void start() {
    std::ofstream(dir / "bird.conf") << "router id 10.97.0.2;\n"
                                        "protocol device { scan time 10; }\n"
                                        "protocol kernel { ipv4 { import none; export all; }; learn off; merge paths on; }\n"
                                        "protocol bgp feed { local 10.97.0.2 as 64512; neighbor 10.97.0.1 as 65001;\n"
                                        "  ipv4 { import all; export none; }; connect retry time 1; connect delay time 0; }\n";
    std::filesystem::remove(dir / "bird.pid");
    ns.exec_or_throw("bird -c " + (dir / "bird.conf").string() + " -s " + sock() + " -P " + (dir / "bird.pid").string());
    if (!wait_for([&] { return read_pid() > 0; }, 5s, 2ms)) throw std::runtime_error("bird wrote no pid file");
    pid = read_pid();
  }
  pid_t read_pid() const {
    std::ifstream f(dir / "bird.pid");
    long p = 0;
    f >> p;
    return static_cast<pid_t>(p);
  }
  bool established() const { return cnf_test::run("birdc -s " + sock() + " show protocols feed").output.find("Established") != std::string::npos; }
  void stop() { stop_pid(pid, false); }
};

// ---- cnf: receiver two, this program in its namespace ----
struct cnf_receiver {
  pid_t pid = 0;
  int out = -1;
  std::string buf;
  ~cnf_receiver() {
    if (pid > 0 && std::getenv("BGP_BENCH_HEAPTRACK")) ::kill(-pid, SIGTERM);
    stop_pid(pid, true);
    if (out >= 0) ::close(out);
  }
  void start(const test_netns& ns, std::size_t n) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    std::string self = std::filesystem::read_symlink("/proc/self/exe");
    std::string nstr = std::to_string(n);
    pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork");
    if (pid == 0) {
      int nsfd = ::open(ns.path().c_str(), O_RDONLY);
      if (nsfd < 0 || ::setns(nsfd, CLONE_NEWNET) != 0) ::_exit(120);
      ::dup2(p[1], 1);
      ::setpgid(0, 0);  // its own group: a heaptrack wrapper and its child stop together
      if (const char* ht = std::getenv("BGP_BENCH_HEAPTRACK")) {  // where the receiver's memory goes
        const char* argv[] = {"heaptrack", "-o", ht, self.c_str(), "--receiver", nstr.c_str(), nullptr};
        ::execvp("heaptrack", const_cast<char* const*>(argv));
        ::_exit(122);
      }
      const char* argv[] = {self.c_str(), "--receiver", nstr.c_str(), nullptr};
      ::execv(self.c_str(), const_cast<char* const*>(argv));
      ::_exit(121);
    }
    ::close(p[1]);
    out = p[0];
  }
  /// The value of the line "KEY <ns>" the receiver printed, waiting up to `limit`.
  std::optional<std::int64_t> wait_line(const std::string& key, std::chrono::milliseconds limit) {
    auto t0 = clk::now();
    for (;;) {
      check_interrupt();
      if (auto at = buf.find(key + " "); at != std::string::npos) {
        auto eol = buf.find('\n', at);
        if (eol != std::string::npos) return std::stoll(buf.substr(at + key.size() + 1, eol));
      }
      auto left = limit - std::chrono::duration_cast<std::chrono::milliseconds>(clk::now() - t0);
      if (left <= 0ms) return std::nullopt;
      pollfd pf{out, POLLIN, 0};
      if (::poll(&pf, 1, static_cast<int>(std::min<long>(left.count(), 100))) > 0) {
        char tmp[512];
        ssize_t k = ::read(out, tmp, sizeof tmp);
        if (k <= 0) return std::nullopt;
        buf.append(tmp, static_cast<std::size_t>(k));
      }
    }
  }
};

// The receiver's process: the bgp part and a route table on an event loop, as in the agent.
struct counting_sink final : cnf::routing_sink {
  cnf::route_table& rt;
  std::size_t want;
  std::size_t learned = 0;
  bool up = false;
  counting_sink(cnf::route_table& t, std::size_t n) : rt(t), want(n) {}
  void route_learned(const cnf::learned_route& r) noexcept override {
    cnf::route_entry e;
    e.dst = r.prefix;
    for (auto& h : r.next_hops) e.next_hops.push_back({h, r.device, false});
    rt.set("routing", e);
    if (++learned == want) { std::printf("SINK_ALL %lld\n", static_cast<long long>(mono_ns())); std::fflush(stdout); }
  }
  void route_withdrawn(const cnf::ip_prefix& p) noexcept override { rt.remove("routing", p); }
  void peer_changed(const cnf::peer_status& p) noexcept override {
    if (p.state == "Established" && !up) {
      up = true;
      std::printf("ESTABLISHED %lld\n", static_cast<long long>(mono_ns()));
      std::fflush(stdout);
    }
  }
  void peer_removed(std::string_view) noexcept override {}
};

struct stderr_log final : cnf::logger {
  void write(cnf::log_level l, std::string_view m) noexcept override {
    if (l <= cnf::log_level::warn) std::fprintf(stderr, "cnf receiver: %.*s\n", static_cast<int>(m.size()), m.data());
  }
};

int receiver_main(std::size_t n) {
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  ::pthread_sigmask(SIG_BLOCK, &set, nullptr);  // threads started below inherit the mask
  stderr_log log;
  cnf::event_loop loop;
  cnf::route_table::options ro;
  ro.protocol = rtprot_cnf;
  ro.log = &log;
  if (std::getenv("BGP_BENCH_NO_WATCH")) ro.watch_kernel = false;  // to measure what the kernel watch costs
  std::unique_ptr<cnf::route_table> rt;
  std::unique_ptr<counting_sink> sink;
  std::unique_ptr<cnf::bgp::routing> part;
  loop.post([&] {
    rt = std::make_unique<cnf::route_table>(loop, ro);
    rt->set_ready(true);
    sink = std::make_unique<counting_sink>(*rt, n);
    cnf::bgp::routing_settings s;
    s.as_number = 64512;
    s.router_id = "10.98.0.2";
    s.connect_retry = 1000ms;
    s.node_to_node_mesh = false;
    part = std::make_unique<cnf::bgp::routing>(s, &loop, &log);
    cnf::node_info self;
    self.name = "bench";
    self.addresses = {cnf::ip_prefix::parse("10.98.0.2/24", true).value()};
    if (auto r = part->start(self, *sink); !r) {
      std::fprintf(stderr, "cnf receiver: start: %s\n", r.error().message.c_str());
      std::exit(1);
    }
    part->upsert_peer({"feed", cnf::ip_address::parse("10.98.0.1").value(), 65001, "global"});
  });
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&set, &sig);
    loop.post([&] {
      if (rt) {
        auto t = rt->totals();
        std::fprintf(stderr, "cnf receiver: route table totals: %zu added, %zu replaced, %zu deleted, %zu batches\n", t.added, t.replaced, t.deleted, t.batches);
      }
      if (part) part->stop();
      part.reset();
      sink.reset();
      rt.reset();
      loop.stop();
    });
  });
  loop.run();
  waiter.join();
  return 0;
}

// ---- one side-by-side run for N ----
struct figures {
  std::size_t n = 0;
  double bird_s = -1, cnf_s = -1, cnf_sink_s = -1;
  long bird_kib = 0, cnf_kib = 0;
  double bird_cpu = 0, cnf_cpu = 0;
  double poll_max_dump = 0;
};

figures run_once(std::size_t n) {
  figures fig;
  fig.n = n;
  test_netns ns_feed, ns_bird, ns_cnf;
  cnf_test::veth_between(ns_feed, "g0", ns_bird, "b0");
  cnf_test::veth_between(ns_feed, "g1", ns_cnf, "c0");
  ns_feed.exec_or_throw("ip addr add 10.97.0.1/24 dev g0 && ip addr add 10.98.0.1/24 dev g1");
  ns_bird.exec_or_throw("ip addr add 10.97.0.2/24 dev b0");
  ns_cnf.exec_or_throw("ip addr add 10.98.0.2/24 dev c0");
  char tmpl[] = "/tmp/cnf-bgp-kernel-bench-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
  struct rm_dir {
    std::filesystem::path p;
    ~rm_dir() { std::error_code ec; std::filesystem::remove_all(p, ec); }
  } dir{tmpl};

  gobgp feed(ns_feed, dir.p);
  feed.start();
  auto t_load = clk::now();
  write_mrt(dir.p / "feed.mrt", n);
  ns_feed.exec_or_throw("gobgp -u 127.0.0.1 -p 50051 mrt inject global " + (dir.p / "feed.mrt").string());
  if (!wait_for([&] { return feed.destinations() >= n; }, 120s, 200ms))
    throw std::runtime_error("gobgp holds " + std::to_string(feed.destinations()) + " of " + std::to_string(n) + " prefixes after the MRT injection");
  std::fprintf(stderr, "N=%zu: gobgp loaded in %.2f s\n", n, secs(clk::now() - t_load));

  {  // BIRD
    route_counter rc(ns_bird);
    bird b(ns_bird, dir.p);
    b.start();
    clk::time_point up;
    if (!wait_for([&] { up = clk::now(); return b.established(); }, 30s, 5ms)) throw std::runtime_error("BIRD's session did not come up");
    auto r = wait_routes(rc, rtprot_bird, n, 120s);
    if (!r.done) throw std::runtime_error("BIRD: not all routes reached the kernel");
    fig.bird_s = secs(r.at - up);
    fig.bird_kib = vm_hwm_kib(b.pid);
    fig.bird_cpu = cpu_seconds(b.pid);
    fig.poll_max_dump = std::max(fig.poll_max_dump, r.max_dump);
  }
  {  // cnf
    route_counter rc(ns_cnf);
    cnf_receiver c;
    c.start(ns_cnf, n);
    pid_t perf = 0;  // BGP_BENCH_PERF=FILE: perf record of the receiver (where its time goes)
    if (const char* out = std::getenv("BGP_BENCH_PERF")) {
      perf = ::fork();
      if (perf == 0) {
        std::string pid = std::to_string(c.pid);
        ::execlp("perf", "perf", "record", "-q", "-g", "-F", "999", "-o", out, "-p", pid.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
      }
    }
    struct perf_stop {
      pid_t& p;
      ~perf_stop() {
        if (p > 0) { ::kill(p, SIGINT); ::waitpid(p, nullptr, 0); }
      }
    } stop_perf{perf};
    auto up = c.wait_line("ESTABLISHED", 30s);
    if (!up) throw std::runtime_error("cnf's session did not come up");
    auto r = wait_routes(rc, rtprot_cnf, n, 120s);
    if (!r.done) throw std::runtime_error("cnf: not all routes reached the kernel");
    auto up_at = clk::time_point(std::chrono::nanoseconds(*up));
    fig.cnf_s = secs(r.at - up_at);
    fig.cnf_kib = vm_hwm_kib(c.pid);
    fig.cnf_cpu = cpu_seconds(c.pid);
    if (auto s = c.wait_line("SINK_ALL", 1s)) fig.cnf_sink_s = secs(clk::time_point(std::chrono::nanoseconds(*s)) - up_at);
    fig.poll_max_dump = std::max(fig.poll_max_dump, r.max_dump);
  }
  return fig;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "--receiver") return receiver_main(std::stoul(argv[2]));
  if (argc >= 4 && std::string(argv[1]) == "--write-mrt") { write_mrt(argv[2], std::stoul(argv[3])); return 0; }
  std::vector<std::size_t> ns;
  bool smoke = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--smoke") smoke = true;
    else if (a == "-h" || a == "--help") {
      std::puts("kernel_bench [--smoke] [N ...]   (root; BIRD 2 and GoBGP; default N: 10000 100000; --smoke: 2000)");
      return 0;
    } else ns.push_back(std::stoul(a));
  }
  if (ns.empty()) ns = smoke ? std::vector<std::size_t>{2000} : std::vector<std::size_t>{10000, 100000};
  if (::geteuid() != 0) { std::puts("skipped: needs root (network namespaces)"); return skip_code; }
  for (const char* tool : {"bird", "birdc", "gobgpd", "gobgp"})
    if (cnf_test::run(std::string("command -v ") + tool).status != 0) {
      std::printf("skipped: %s is not installed (apt-get install bird2 gobgpd)\n", tool);
      return skip_code;
    }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  std::ifstream la("/proc/loadavg");
  std::string load;
  std::getline(la, load);
  std::printf("load average at start: %s\n", load.c_str());
  try {
    for (auto n : ns) {
      auto f = run_once(n);
      std::printf("N=%zu  BIRD: %.3f s %.1f MiB (cpu %.2f s)  cnf: %.3f s (all at the sink %.3f s) %.1f MiB (cpu %.2f s)"
                  "  cnf/BIRD: time %.2fx memory %.2fx cpu %.2fx  (poll: dump <= %.3f s)\n",
                  f.n, f.bird_s, f.bird_kib / 1024.0, f.bird_cpu, f.cnf_s, f.cnf_sink_s, f.cnf_kib / 1024.0, f.cnf_cpu, f.cnf_s / f.bird_s,
                  double(f.cnf_kib) / double(f.bird_kib), f.cnf_cpu / f.bird_cpu, f.poll_max_dump);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernel_bench: %s\n", e.what());
    return 1;
  }
  std::ifstream la2("/proc/loadavg");
  std::getline(la2, load);
  std::printf("load average at end: %s\n", load.c_str());
  return 0;
}
