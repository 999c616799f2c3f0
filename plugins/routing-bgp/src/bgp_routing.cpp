#include <cnf/bgp/speaker.hpp>
#include <cnf/plugins/bgp.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

CNF_BEGIN_NAMESPACE
namespace bgp {

routing_settings read_settings(settings& s) {
  routing_settings r;
  if (auto as = s.get_optional<std::int64_t>("as_number")) {
    if (*as < 1 || *as > 4294967295LL) s.fail("as_number", "must be between 1 and 4294967295 (got " + std::to_string(*as) + ")");
    else r.as_number = static_cast<std::uint32_t>(*as);
  }
  r.router_id = s.get<std::string>("router_id", "");
  if (!r.router_id.empty()) {
    auto a = ip_address::parse(r.router_id);
    if (!a || !a->is_v4() || a->v4_host_order() == 0) s.fail("router_id", "'" + r.router_id + "' is not a non-zero IPv4 address (a BGP identifier)");
  }
  auto port = s.get<std::int64_t>("listen_port", 179);
  if (port < 0 || port > 65535) s.fail("listen_port", "must be between 0 and 65535 (got " + std::to_string(port) + ")");
  else r.listen_port = static_cast<std::uint16_t>(port);
  auto hold = s.get<std::int64_t>("hold_time", 90);
  if (hold < 0 || hold > 65535 || hold == 1 || hold == 2) s.fail("hold_time", "must be 0 or between 3 and 65535 seconds (got " + std::to_string(hold) + ")");
  else r.hold_time = static_cast<std::uint16_t>(hold);
  auto retry = s.get<double>("connect_retry", 5.0);
  if (retry < 0.1 || retry > 3600) s.fail("connect_retry", "must be between 0.1 and 3600 seconds");
  else r.connect_retry = std::chrono::milliseconds(static_cast<std::int64_t>(retry * 1000));
  r.node_to_node_mesh = s.get<bool>("node_to_node_mesh", true);
  r.route_reflector_cluster_id = s.get<std::string>("route_reflector_cluster_id", "");
  if (!r.route_reflector_cluster_id.empty()) {
    auto a = ip_address::parse(r.route_reflector_cluster_id);
    if (!a || !a->is_v4()) s.fail("route_reflector_cluster_id", "'" + r.route_reflector_cluster_id + "' is not an IPv4 address (Calico's form, e.g. \"1.1.1.1\")");
  }
  auto gr = s.get<std::int64_t>("graceful_restart_time", 120);
  if (gr < 0 || gr > 4095) s.fail("graceful_restart_time", "must be between 0 and 4095 seconds (got " + std::to_string(gr) + ")");
  else r.graceful_restart_time = static_cast<std::uint16_t>(gr);
  r.graceful_stop = s.get<bool>("graceful_stop", false);
  if (r.graceful_stop && r.graceful_restart_time == 0) s.fail("graceful_stop", "needs graceful_restart_time above 0 (the time peers keep the routes)");
  r.password = s.get<std::string>("password", "");
  r.secrets_dir = s.get<std::string>("secrets_dir", r.secrets_dir);
  if (r.password.size() > TCP_MD5SIG_MAXKEYLEN) s.fail("password", "longer than " + std::to_string(TCP_MD5SIG_MAXKEYLEN) + " octets (the TCP MD5 key limit)");
  return r;
}

namespace {

constexpr std::uint64_t tag_event = 1ull << 62;
constexpr std::uint64_t tag_listen = 1ull << 61;

std::string errno_text(int e) { return std::strerror(e); }

socklen_t to_sockaddr(const ip_address& a, std::uint16_t port, sockaddr_storage& ss) {
  std::memset(&ss, 0, sizeof ss);
  if (a.is_v4()) {
    auto* s = reinterpret_cast<sockaddr_in*>(&ss);
    s->sin_family = AF_INET;
    s->sin_port = htons(port);
    std::memcpy(&s->sin_addr, a.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
  s->sin6_family = AF_INET6;
  s->sin6_port = htons(port);
  std::memcpy(&s->sin6_addr, a.data(), 16);
  return sizeof(sockaddr_in6);
}

std::optional<ip_address> from_sockaddr(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return ip_address::from_bytes(ip_family::v4, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr);
  if (ss.ss_family == AF_INET6) {
    auto* s6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) return ip_address::from_bytes(ip_family::v4, reinterpret_cast<const std::uint8_t*>(&s6->sin6_addr) + 12);
    return ip_address::from_bytes(ip_family::v6, &s6->sin6_addr);
  }
  return std::nullopt;
}

bool set_md5(int fd, const ip_address& peer, const std::string& key) {
  tcp_md5sig m{};
  to_sockaddr(peer, 0, m.tcpm_addr);
  m.tcpm_keylen = static_cast<std::uint16_t>(key.size());
  std::memcpy(m.tcpm_key, key.data(), key.size());
  return ::setsockopt(fd, IPPROTO_TCP, TCP_MD5SIG, &m, sizeof m) == 0;
}

std::string now_hms() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[16];
  std::strftime(b, sizeof b, "%H:%M:%S", &tm);
  return b;
}

// The part's log threshold: the BGPConfiguration's logSeverityScreen when one sets it (Calico
// gives BIRD its debug level from it, per node over the default), else the host's. Messages
// it lets through go to the host's logger whatever the host's own threshold.
class screened_logger final : public logger {
 public:
  logger* host = &default_logger();
  std::atomic<int> screen{-1};  // a log_level; -1: the host's threshold
  void write(log_level l, std::string_view m) noexcept override { host->write(l, m); }
  log_level threshold() const noexcept override {
    const int s = screen.load(std::memory_order_relaxed);
    return s < 0 ? host->threshold() : static_cast<log_level>(s);
  }
};

// Calico's logSeverityScreen as cnf's levels (cnf has no fatal: Fatal screens as Error); -1: unset.
int screen_of(std::string_view severity) {
  if (severity == "Debug") return static_cast<int>(log_level::debug);
  if (severity == "Info") return static_cast<int>(log_level::info);
  if (severity == "Warning") return static_cast<int>(log_level::warn);
  if (severity == "Error" || severity == "Fatal") return static_cast<int>(log_level::error);
  return -1;
}

// The communities an originated prefix is sent with.
struct origin_communities {
  std::vector<std::uint32_t> standard;
  std::vector<large_community> large;
  friend bool operator==(const origin_communities&, const origin_communities&) = default;
};

// Calico's apply_communities(): every prefixAdvertisements entry whose cidr holds the prefix
// adds its communities ("aa:nn" standard, "aa:nn:mm" large; each value once).
origin_communities communities_for(const std::vector<prefix_advertisement>& pas, const ip_prefix& p) {
  origin_communities c;
  for (auto& pa : pas) {
    if (!pa.cidr.contains(p)) continue;
    for (auto& v : pa.communities) {
      std::vector<std::uint32_t> n;
      bool ok = true;
      for (std::string_view s = v; ok;) {
        auto t = s.substr(0, s.find(':'));
        std::uint32_t x = 0;
        auto r = std::from_chars(t.data(), t.data() + t.size(), x);
        ok = !t.empty() && r.ec == std::errc() && r.ptr == t.data() + t.size();
        n.push_back(x);
        if (t.size() == s.size()) break;
        s.remove_prefix(t.size() + 1);
      }
      if (ok && n.size() == 2 && n[0] <= 0xffff && n[1] <= 0xffff) {
        const std::uint32_t x = n[0] << 16 | n[1];
        if (std::find(c.standard.begin(), c.standard.end(), x) == c.standard.end()) c.standard.push_back(x);
      } else if (ok && n.size() == 3) {
        const large_community x{n[0], n[1], n[2]};
        if (std::find(c.large.begin(), c.large.end(), x) == c.large.end()) c.large.push_back(x);
      }  // else: refused by the model's validation before it gets here
    }
  }
  return c;
}

}  // namespace

struct routing::impl {
  routing_settings set;
  executor* exec = nullptr;
  screened_logger screened;
  logger* log = &screened;

  // ---- the host's thread (the executor's) ----
  routing_sink* sink = nullptr;
  std::shared_ptr<std::atomic<bool>> alive = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<std::map<std::string, peer_status>> status = std::make_shared<std::map<std::string, peer_status>>();
  node_info self;
  std::map<std::string, remote_node, std::less<>> nodes;
  std::map<std::string, peer_config, std::less<>> peers;
  std::vector<std::string> notes;
  std::uint32_t asn = 0;  // this speaker's, fixed while it runs
  routing_config cfg;     // the cluster's (BGPConfiguration), over the profile's settings
  std::set<ip_prefix> advertised;  // what the host asked to advertise (kept across a restart of the speaker)
  bool started = false;
  bool deferring = false;  // restarting: the host holds the last run's routes until initial_routes_complete

  // The effective settings: the cluster's configuration where it says, else the profile's.
  std::uint32_t local_asn() const { return set.as_number ? set.as_number : self.asn ? self.asn : cfg.as_number ? *cfg.as_number : 64512; }
  std::uint32_t default_asn() const { return cfg.as_number ? *cfg.as_number : local_asn(); }
  bool mesh_on() const { return cfg.node_to_node_mesh.value_or(set.node_to_node_mesh); }
  std::uint16_t listen_port() const { return cfg.listen_port.value_or(set.listen_port); }
  const std::string& mesh_password() const { return cfg.mesh_password ? *cfg.mesh_password : set.password; }
  std::string cluster_id() const { return cfg.route_reflector_cluster_id.value_or(set.route_reflector_cluster_id); }
  std::uint16_t port = 0;

  // ---- shared: commands to the speaker's thread ----
  std::mutex mu;
  std::vector<std::function<void()>> commands;
  int evfd = -1;

  // ---- the speaker's thread ----
  std::thread th;
  int epfd = -1;
  std::vector<int> listen_fds;
  std::unique_ptr<speaker> sp;
  struct conn {
    int fd = -1;
    bool connecting = false;
    bytes out;
    std::size_t out_pos = 0;
    std::string peer;
  };
  std::map<conn_id, conn> conns;
  std::map<timer_id, std::chrono::steady_clock::time_point> timers;
  std::map<std::string, neighbor> neighbors;        // by name
  struct transport {
    std::uint16_t port = 0;  // the peer's; 0: the listen port
    bool bind_source = true;
  };
  std::map<std::string, transport> transports;      // by peer name
  std::map<std::string, std::string> socket_error;  // by peer name: the last connect error
  bool quit = false;
  bool reconfiguring = false;  // a stop + start of configure(): never graceful (the sessions must change)

  ~impl() { shutdown(); }

  void shutdown() {
    if (th.joinable()) {
      post_io([this, graceful = set.graceful_stop && !reconfiguring] {
        sp->stop("cnf is stopping", graceful);
        pump();
        quit = true;
      });
      th.join();
    }
    for (auto& [_, c] : conns) ::close(c.fd);
    conns.clear();
    for (int fd : listen_fds) ::close(fd);
    listen_fds.clear();
    if (epfd >= 0) ::close(epfd);
    if (evfd >= 0) ::close(evfd);
    epfd = evfd = -1;
  }

  void post_io(std::function<void()> f) {
    {
      std::lock_guard lk(mu);
      commands.push_back(std::move(f));
    }
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(evfd, &one, sizeof one);
  }

  // Runs on the host's executor, only while the part is started.
  void to_host(std::function<void(impl&)> f) {
    exec->post([this, a = alive, f = std::move(f)] {
      if (a->load()) f(*this);
    });
  }

  // ---- sockets (speaker's thread) ----

  result<void> open_listeners() {
    for (auto& pfx : self.addresses) {
      const ip_address a = pfx.address();
      int fd = ::socket(a.af(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) return error(errc::io, "socket: " + errno_text(errno));
      int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (a.is_v6()) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
      sockaddr_storage ss;
      auto len = to_sockaddr(a, port ? port : listen_port(), ss);
      if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 64) != 0) {
        int e = errno;
        ::close(fd);
        return error(errc::io, "listen_port: cannot listen on " + a.to_string() + " port " + std::to_string(port ? port : listen_port()) + ": " + errno_text(e));
      }
      if (!port) {
        sockaddr_storage got{};
        socklen_t gl = sizeof got;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&got), &gl);
        port = ntohs(got.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&got)->sin_port : reinterpret_cast<sockaddr_in6*>(&got)->sin6_port);
      }
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = tag_listen | listen_fds.size();
      ::epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
      listen_fds.push_back(fd);
    }
    if (listen_fds.empty()) return error(errc::invalid, "the node has no address to listen on ([node] ipv4_address, ipv6_address)");
    return {};
  }

  void watch(conn_id id, const conn& c) {
    epoll_event ev{};
    ev.events = EPOLLIN | (c.connecting || c.out_pos < c.out.size() ? EPOLLOUT : 0u);
    ev.data.u64 = id;
    if (::epoll_ctl(epfd, EPOLL_CTL_MOD, c.fd, &ev) != 0) ::epoll_ctl(epfd, EPOLL_CTL_ADD, c.fd, &ev);
  }

  void drop_conn(conn_id id) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    ::epoll_ctl(epfd, EPOLL_CTL_DEL, it->second.fd, nullptr);
    ::close(it->second.fd);
    conns.erase(it);
  }

  // Writes what it can; false when the connection broke.
  bool flush_out(conn& c) {
    while (c.out_pos < c.out.size()) {
      auto n = ::send(c.fd, c.out.data() + c.out_pos, c.out.size() - c.out_pos, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        return false;
      }
      c.out_pos += static_cast<std::size_t>(n);
    }
    if (c.out_pos == c.out.size()) {
      c.out.clear();
      c.out_pos = 0;
    }
    return true;
  }

  void start_connect(const out::connect& x) {
    auto fail = [&](int e) {
      socket_error[x.peer] = "connect to " + x.address.to_string() + ": " + errno_text(e);
      sp->connect_failed(x.conn);
    };
    int fd = ::socket(x.address.af(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(errno);
    const auto nb = neighbors.find(x.peer);
    const std::string key = nb != neighbors.end() ? nb->second.password : std::string();
    const auto tr = transports.count(x.peer) ? transports[x.peer] : transport{};
    if (!key.empty() && !set_md5(fd, x.address, key)) {
      int e = errno;
      ::close(fd);
      return fail(e);
    }
    for (auto& pfx : self.addresses)
      if (tr.bind_source && pfx.family() == x.address.family()) {
        sockaddr_storage ls;
        auto ll = to_sockaddr(pfx.address(), 0, ls);
        ::bind(fd, reinterpret_cast<sockaddr*>(&ls), ll);
        break;
      }
    sockaddr_storage ss;
    auto len = to_sockaddr(x.address, tr.port ? tr.port : port ? port : listen_port(), ss);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
      int e = errno;
      ::close(fd);
      return fail(e);
    }
    conn c;
    c.fd = fd;
    c.connecting = true;
    c.peer = x.peer;
    auto& ref = conns[x.conn] = std::move(c);
    watch(x.conn, ref);
  }

  void pump() {
    for (;;) {
      auto acts = sp->take();
      if (acts.empty()) return;
      for (auto& a : acts) std::visit([&](auto& x) { act(x); }, a);
    }
  }

  void act(out::connect& x) { start_connect(x); }
  void act(out::send& x) {
    auto it = conns.find(x.conn);
    if (it == conns.end()) return;
    auto& c = it->second;
    c.out.insert(c.out.end(), x.data.begin(), x.data.end());
    if (!c.connecting && !flush_out(c)) {
      drop_conn(x.conn);
      sp->closed(x.conn);
      return;
    }
    watch(x.conn, c);
  }
  void act(out::close& x) {
    auto it = conns.find(x.conn);
    if (it == conns.end()) return;
    if (!it->second.connecting) flush_out(it->second);  // a NOTIFICATION before the close
    drop_conn(x.conn);
  }
  void act(out::start_timer& x) { timers[x.timer] = std::chrono::steady_clock::now() + x.after; }
  void act(out::stop_timer& x) { timers.erase(x.timer); }
  void act(out::route& x) {
    if (x.next_hops.empty()) {
      to_host([p = x.prefix](impl& m) { m.sink->route_withdrawn(p); });
    } else {
      learned_route r{x.prefix, x.next_hops, "", x.peer};
      to_host([r = std::move(r)](impl& m) { m.sink->route_learned(r); });
    }
  }
  void act(out::peer_state& x) {
    auto n = neighbors.find(x.name);
    if (n == neighbors.end()) return;
    peer_status st;
    st.name = x.name;
    st.address = n->second.address;
    st.asn = n->second.asn;
    st.type = n->second.type;
    st.state = std::string(to_string(x.state));
    st.since = now_hms();
    st.info = x.state == session_state::established ? "Established" : x.info;
    if ((x.state == session_state::active || x.state == session_state::idle) && socket_error.count(x.name))
      st.info += (st.info.empty() ? "" : "; ") + socket_error[x.name];
    if (x.state == session_state::established) socket_error.erase(x.name);
    to_host([st = std::move(st)](impl& m) {
      auto it = m.status->find(st.name);
      if (it == m.status->end()) return;  // removed since (its last Idle comes after)
      auto& cur = it->second;
      bool same_state = cur.state == st.state;
      auto since = cur.since;
      cur = st;
      if (same_state && !since.empty()) cur.since = since;
      m.sink->peer_changed(cur);
    });
  }
  void act(out::initial_routes_complete& x) {
    log->info("bgp: graceful restart: initial routes complete (" + x.reason + ")");
    to_host([](impl& m) {
      m.deferring = false;
      m.sink->initial_routes_complete();
    });
  }
  void act(out::log& x) {
    if (x.debug) log->debug("bgp: " + x.message);
    else if (x.warning) log->warn("bgp: " + x.message);
    else log->info("bgp: " + x.message);
  }

  // Originates (or re-originates with its current communities) an advertised prefix.
  void originate(const ip_prefix& p) {
    auto c = communities_for(cfg.prefix_advertisements, p);
    if (log->enabled(log_level::debug)) {
      std::string list;
      for (auto x : c.standard) list += (list.empty() ? "" : " ") + std::to_string(x >> 16) + ":" + std::to_string(x & 0xffff);
      for (auto& x : c.large) list += (list.empty() ? "" : " ") + x.to_string();
      log->debug("bgp: originate " + p.to_string() + (list.empty() ? std::string(" (no communities)") : " with communities " + list));
    }
    post_io([this, p, c = std::move(c)]() mutable {
      sp->originate(p, std::move(c.standard), std::move(c.large));
      pump();
    });
  }

  void on_event(std::uint64_t tag, std::uint32_t events) {
    if (tag == tag_event) {
      std::uint64_t v;
      [[maybe_unused]] auto n = ::read(evfd, &v, sizeof v);
      std::vector<std::function<void()>> cmds;
      {
        std::lock_guard lk(mu);
        cmds.swap(commands);
      }
      for (auto& c : cmds) c();
      return;
    }
    if (tag & tag_listen) {
      int lfd = listen_fds[tag & ~tag_listen];
      for (;;) {
        sockaddr_storage rs{};
        socklen_t rl = sizeof rs;
        int fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&rs), &rl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        sockaddr_storage ls{};
        socklen_t ll = sizeof ls;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&ls), &ll);
        auto remote = from_sockaddr(rs);
        auto local = from_sockaddr(ls);
        if (!remote || !local) { ::close(fd); continue; }
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn c;
        c.fd = fd;
        // The speaker names the connection; it may close it at once (not a peer).
        const conn_id id = sp->accepted(*remote, *local);
        auto& ref = conns[id] = std::move(c);
        watch(id, ref);
        pump();
      }
    }
    const conn_id id = tag;
    auto it = conns.find(id);
    if (it == conns.end()) return;
    auto& c = it->second;
    if (c.connecting) {
      if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
      int err = 0;
      socklen_t el = sizeof err;
      ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &el);
      if (err) {
        socket_error[c.peer] = "connect: " + errno_text(err);
        drop_conn(id);
        sp->connect_failed(id);
        return;
      }
      c.connecting = false;
      int one = 1;
      ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      sockaddr_storage ls{};
      socklen_t ll = sizeof ls;
      ::getsockname(c.fd, reinterpret_cast<sockaddr*>(&ls), &ll);
      auto local = from_sockaddr(ls);
      watch(id, c);
      sp->connected(id, local.value_or(ip_address{}));
      return;
    }
    if (events & EPOLLOUT) {
      if (!flush_out(c)) {
        drop_conn(id);
        sp->closed(id);
        return;
      }
      watch(id, c);
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
      std::uint8_t buf[65536];
      for (int rounds = 0; rounds < 16; ++rounds) {
        auto n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n > 0) {
          sp->received(id, std::span<const std::uint8_t>(buf, static_cast<std::size_t>(n)));
          if (!conns.count(id)) return;  // the speaker closed it
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0 && errno == EINTR) continue;
        drop_conn(id);
        sp->closed(id);
        return;
      }
    }
  }

  void loop() {
    epoll_event evs[64];
    while (!quit) {
      int timeout = -1;
      auto now = std::chrono::steady_clock::now();
      for (auto& [_, t] : timers) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - now).count();
        ms = std::max<std::int64_t>(ms, 0);
        if (timeout < 0 || ms < timeout) timeout = static_cast<int>(std::min<std::int64_t>(ms, 1 << 30));
      }
      int n = ::epoll_wait(epfd, evs, 64, timeout);
      for (int i = 0; i < n && !quit; ++i) {
        on_event(evs[i].data.u64, evs[i].events);
        pump();
      }
      now = std::chrono::steady_clock::now();
      std::vector<timer_id> due;
      for (auto& [id, t] : timers)
        if (t <= now) due.push_back(id);
      for (auto id : due) {
        if (!timers.erase(id)) continue;
        sp->timer_fired(id);
        pump();
      }
    }
  }

  neighbor to_neighbor(const remote_node& r) const {
    neighbor n;
    n.name = r.name;
    if (auto a = r.address(ip_family::v4)) n.address = *a;
    else if (auto a6 = r.address(ip_family::v6)) n.address = *a6;
    n.asn = r.asn ? r.asn : default_asn();
    n.type = "node-to-node mesh";
    n.password = mesh_password();
    n.max_restart_time = cfg.mesh_max_restart_time.value_or(0);
    return n;
  }

  void add_neighbor(const neighbor& n) { add_neighbor(n, transport{}); }
  void add_neighbor(const neighbor& n, transport t) {
    status->try_emplace(n.name, peer_status{n.name, n.address, n.asn, n.type, "Idle", now_hms(), ""});
    post_io([this, n, t] {
      auto old = neighbors.find(n.name);
      // The listening sockets' key for this address: set, changed, or taken away (an empty key).
      if (old == neighbors.end() ? !n.password.empty() : old->second.password != n.password || old->second.address != n.address) {
        if (old != neighbors.end() && old->second.address != n.address)
          for (int fd : listen_fds) set_md5(fd, old->second.address, "");
        for (int fd : listen_fds) set_md5(fd, n.address, n.password);
      }
      neighbors[n.name] = n;
      transports[n.name] = t;
      sp->add_peer(n);
      pump();
    });
  }

  void remove_neighbor(std::string_view name) {
    status->erase(std::string(name));
    if (sink) sink->peer_removed(name);
    post_io([this, name = std::string(name)] {
      sp->remove_peer(name);
      pump();
      if (auto it = neighbors.find(name); it != neighbors.end() && !it->second.password.empty())
        for (int fd : listen_fds) set_md5(fd, it->second.address, "");
      neighbors.erase(name);
      transports.erase(name);
    });
  }
};

routing::routing(routing_settings s, executor* exec, logger* log) : p_(std::make_unique<impl>()) {
  p_->set = std::move(s);
  p_->exec = exec;
  p_->screened.host = log ? log : &default_logger();
}
routing::~routing() {
  if (p_) stop();
}
routing::routing(routing&&) noexcept = default;
routing& routing::operator=(routing&&) noexcept = default;

result<void> routing::start(const node_info& self, routing_sink& sink) {
  auto& m = *p_;
  if (m.started) return error(errc::invalid, "bgp: already started");
  if (!m.exec) return error(errc::unsupported, "bgp: needs the host's executor (runs in the node agent only)");
  m.self = self;
  m.asn = m.local_asn();
  std::string rid = !m.set.router_id.empty() ? m.set.router_id : self.router_id;
  if (rid.empty())
    for (auto& a : self.addresses)
      if (a.family() == ip_family::v4) { rid = a.address().to_string(); break; }
  auto id = ip_address::parse(rid);
  if (rid.empty() || !id || !id->is_v4())
    return error(errc::invalid, "bgp: router_id: the node has no IPv4 address to take it from; set [routing] router_id = \"A.B.C.D\"");
  speaker_config c;
  c.asn = m.asn;
  c.router_id = id->v4_host_order();
  c.hold_time = m.set.hold_time;
  c.connect_retry = m.set.connect_retry;
  if (auto cid = m.cluster_id(); !cid.empty()) {
    auto a = ip_address::parse(cid);
    if (!a || !a->is_v4()) return error(errc::invalid, "bgp: route reflector cluster id '" + cid + "' is not an IPv4 address");
    c.cluster_id = a->v4_host_order();
  }
  for (auto& a : self.addresses) c.local_addresses.push_back(a.address());
  c.families = {ipv4_unicast, ipv6_unicast};
  c.restart_time = m.set.graceful_restart_time;
  // The peers may hold our routes from the last run. A reconfiguration while the host still
  // waits for the initial routes restarts the wait (the new speaker relearns from nothing).
  c.restarting = m.set.graceful_stop && (!m.reconfiguring || m.deferring);
  m.deferring = c.restarting && c.restart_time;
  m.sp = std::make_unique<speaker>(std::move(c));
  // A restart (configure) starts from nothing: no timer or neighbor of the last run survives.
  m.quit = false;
  m.timers.clear();
  m.neighbors.clear();
  m.transports.clear();
  m.socket_error.clear();
  m.commands.clear();

  m.epfd = ::epoll_create1(EPOLL_CLOEXEC);
  m.evfd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (m.epfd < 0 || m.evfd < 0) return error(errc::io, "bgp: epoll/eventfd: " + errno_text(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag_event;
  ::epoll_ctl(m.epfd, EPOLL_CTL_ADD, m.evfd, &ev);
  if (auto r = m.open_listeners(); !r) {
    m.shutdown();
    return error(r.error().code, "bgp: " + r.error().message);
  }
  m.sink = &sink;
  m.alive = std::make_shared<std::atomic<bool>>(true);  // callbacks of an earlier run stay dead
  m.started = true;
  m.th = std::thread([&m] { m.loop(); });
  m.log->info("bgp: AS " + std::to_string(m.asn) + ", router id " + rid + ", listening on port " + std::to_string(m.port ? m.port : m.listen_port()) +
              (m.sp->config().cluster_id ? ", route reflector cluster " + m.cluster_id() : std::string()) +
              (m.mesh_on() ? std::string() : ", node-to-node mesh off"));
  if (m.mesh_on())
    for (auto& [_, r] : m.nodes)
      if (!r.addresses.empty()) m.add_neighbor(m.to_neighbor(r));
  for (auto& [_, p] : m.peers) upsert_peer(p);
  for (auto& p : m.advertised) m.originate(p);
  return {};
}

void routing::set_node(const node_info& self) {
  auto& m = *p_;
  if (self == m.self) return;
  m.self = self;
  if (!m.started) return;
  std::vector<ip_address> a;
  for (auto& x : self.addresses) a.push_back(x.address());
  m.post_io([&m, a] { m.sp->set_local_addresses(a); });
}

void routing::upsert_node(const remote_node& r) {
  auto& m = *p_;
  auto it = m.nodes.find(r.name);
  if (it != m.nodes.end() && it->second == r) return;
  m.nodes[r.name] = r;
  if (!m.started || !m.mesh_on()) return;
  if (r.addresses.empty()) {
    m.log->warn("bgp: node " + r.name + " has no address (spec.bgp.ipv4Address, ipv6Address): no session");
    return;
  }
  m.add_neighbor(m.to_neighbor(r));
}

void routing::remove_node(std::string_view name) {
  auto& m = *p_;
  auto it = m.nodes.find(name);
  if (it == m.nodes.end()) return;
  m.nodes.erase(it);
  if (m.started) m.remove_neighbor(name);
}

void routing::upsert_peer(const peer_config& p) {
  auto& m = *p_;
  m.peers[p.name] = p;
  if (!m.started) return;
  neighbor n;
  n.name = p.name;
  n.address = p.address;
  n.asn = p.asn ? p.asn : m.asn;
  n.type = p.type;
  n.rr_client = !m.cluster_id().empty() && n.asn == m.asn && !p.route_reflector;
  n.password = p.password ? *p.password : m.set.password;
  n.keep_next_hop = p.keep_original_next_hop;
  n.filters = p.filters;                 // a change of filters only: applied live by the speaker
  n.max_restart_time = p.max_restart_time;
  m.add_neighbor(n, {p.port, p.bind_source});
}

// Only what a change concerns: the mesh sessions when the mesh goes or comes, the sessions
// whose AS or password changed (the speaker restarts a neighbor only when it differs), and
// every session when this speaker's own AS, port or cluster id changes (all are in each
// OPEN or connection).
void routing::configure(const routing_config& c) {
  auto& m = *p_;
  if (c == m.cfg) return;
  if (c.log_severity_screen != m.cfg.log_severity_screen) {
    m.screened.screen = screen_of(c.log_severity_screen);
    m.screened.host->info("bgp: log level " + std::string(to_string(m.screened.threshold())) +
                          (c.log_severity_screen.empty() ? " (the agent's)" : " (BGPConfiguration logSeverityScreen " + c.log_severity_screen + ")"));
  }
  const bool new_communities = c.prefix_advertisements != m.cfg.prefix_advertisements;
  if (!m.started) {
    m.cfg = c;
    return;
  }
  if (new_communities) {
    // Live: the prefixes whose communities changed are sent again (the speaker re-sends only
    // what differs); no session is touched.
    std::size_t n = 0;
    for (auto& p : m.advertised)
      if (communities_for(c.prefix_advertisements, p) != communities_for(m.cfg.prefix_advertisements, p)) ++n;
    m.cfg.prefix_advertisements = c.prefix_advertisements;
    for (auto& p : m.advertised) m.originate(p);
    m.log->info("bgp: prefixAdvertisements changed: " + std::to_string(n) + " advertised prefix(es) get new communities");
  }
  if (c == m.cfg) return;
  const auto old_asn = m.local_asn();
  const auto old_port = m.listen_port();
  const auto old_cluster = m.cluster_id();
  const bool old_mesh = m.mesh_on();
  m.cfg = c;
  if (m.local_asn() != old_asn || m.listen_port() != old_port || m.cluster_id() != old_cluster) {
    m.log->info("bgp: " + std::string(m.local_asn() != old_asn ? "AS " + std::to_string(old_asn) + " -> " + std::to_string(m.local_asn())
                                      : m.listen_port() != old_port ? "listen port " + std::to_string(old_port) + " -> " + std::to_string(m.listen_port())
                                                                    : "route reflector cluster id '" + old_cluster + "' -> '" + m.cluster_id() + "'") +
                ": restarting every session");
    auto* sink = m.sink;
    for (auto& [name, _] : *m.status) sink->peer_removed(name);
    m.reconfiguring = true;
    stop();
    m.port = 0;
    if (auto r = start(m.self, *sink); !r) m.log->error("bgp: restart: " + r.error().message);
    m.reconfiguring = false;
    return;
  }
  if (old_mesh && !m.mesh_on()) {
    m.log->info("bgp: node-to-node mesh disabled: closing " + std::to_string(m.nodes.size()) + " mesh session(s)");
    for (auto& [name, _] : m.nodes) m.remove_neighbor(name);
    return;
  }
  if (!old_mesh && !m.mesh_on()) return;
  if (!old_mesh) m.log->info("bgp: node-to-node mesh enabled");
  for (auto& [_, r] : m.nodes)
    if (!r.addresses.empty()) m.add_neighbor(m.to_neighbor(r));  // unchanged neighbors stay as they are
}

void routing::remove_peer(std::string_view name) {
  auto& m = *p_;
  auto it = m.peers.find(name);
  if (it == m.peers.end()) return;
  m.peers.erase(it);
  if (m.started) m.remove_neighbor(name);
}

void routing::advertise(const ip_prefix& p) {
  auto& m = *p_;
  m.advertised.insert(p.canonical());
  if (m.started) m.originate(p.canonical());
}

void routing::withdraw(const ip_prefix& p) {
  auto& m = *p_;
  m.advertised.erase(p.canonical());
  if (!m.started) return;
  m.post_io([&m, p] { m.sp->withdraw(p); m.pump(); });
}

routing_status routing::status() const {
  routing_status s;
  s.plugin = "bgp";
  for (auto& [_, p] : *p_->status) s.peers.push_back(p);
  s.notes = p_->notes;
  for (auto& [name, p] : p_->peers)
    for (auto& f : p.filters)
      if (!f.exists) s.notes.push_back("BGPPeer " + name + ": BGPFilter " + f.name + " does not exist: not applied (as Calico)");
  if (!p_->started) s.notes.push_back("the BGP speaker is not running");
  if (p_->started && p_->deferring)
    s.notes.push_back("graceful restart: route selection deferred until every peer's End-of-RIB (at most " +
                      std::to_string(p_->set.graceful_restart_time) + " s); the routes of the last run stay in the kernel");
  return s;
}

std::uint16_t routing::bound_port() const { return p_->port ? p_->port : p_->set.listen_port; }

void routing::stop() {
  auto& m = *p_;
  if (!m.started) return;
  m.alive->store(false);  // no sink call after this returns
  m.shutdown();
  m.started = false;
  m.sink = nullptr;
  m.sp.reset();
  m.status->clear();
}

}  // namespace bgp
CNF_END_NAMESPACE
