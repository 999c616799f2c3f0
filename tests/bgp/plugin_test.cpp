// The bgp routing part: its settings, the Routing concept, and two parts meshed over the
// loopback (127.0.0.1 and 127.0.0.2, no privileges) on one event loop each.
#include <cnf/event_loop.hpp>
#include <cnf/plugins/bgp.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <future>
#include <mutex>
#include <thread>

using namespace std::chrono_literals;

static_assert(cnf::check_routing<cnf::bgp::routing>());

namespace {

cnf::result<cnf::bgp::routing_settings> read(const std::string& toml) {
  auto s = cnf::settings::parse("[routing]\nplugin = \"bgp\"\n" + toml, "p.toml", "routing");
  if (!s) return s.error();
  auto r = cnf::bgp::read_settings(*s);
  if (auto f = s->finish(); !f) return f.error();
  return r;
}

struct sink final : cnf::routing_sink {
  std::mutex mu;
  std::map<cnf::ip_prefix, cnf::learned_route> routes;
  std::map<std::string, cnf::peer_status> peers;
  std::thread::id thread;
  bool wrong_thread = false;
  void check() {
    if (std::this_thread::get_id() != thread) wrong_thread = true;
  }
  void route_learned(const cnf::learned_route& r) noexcept override { check(); std::lock_guard l(mu); routes[r.prefix] = r; }
  void route_withdrawn(const cnf::ip_prefix& p) noexcept override { check(); std::lock_guard l(mu); routes.erase(p); }
  void peer_changed(const cnf::peer_status& p) noexcept override { check(); std::lock_guard l(mu); peers[p.name] = p; }
  void peer_removed(std::string_view n) noexcept override { check(); std::lock_guard l(mu); peers.erase(std::string(n)); }
  std::optional<cnf::learned_route> route(const char* p) {
    std::lock_guard l(mu);
    auto it = routes.find(cnf::ip_prefix::parse(p).value());
    if (it == routes.end()) return std::nullopt;
    return it->second;
  }
  cnf::peer_status peer(const std::string& n) { std::lock_guard l(mu); return peers[n]; }
};

bool wait_for(const std::function<bool()>& f, std::chrono::milliseconds limit = 10s) {
  for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < limit;) {
    if (f()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return f();
}

// One part on its own event loop, as in an agent.
struct host {
  cnf::event_loop loop;
  std::thread t;
  sink s;
  std::unique_ptr<cnf::bgp::routing> part;
  host() {
    t = std::thread([this] { loop.run(); });
    on_loop([this] { s.thread = std::this_thread::get_id(); });
  }
  ~host() {
    on_loop([this] { part.reset(); });
    loop.stop();
    t.join();
  }
  void on_loop(std::function<void()> f) {
    std::promise<void> done;
    loop.post([&] { f(); done.set_value(); });
    done.get_future().wait();
  }
};

cnf::node_info node(const char* name, const char* addr) {
  cnf::node_info n;
  n.name = name;
  n.addresses = {cnf::ip_prefix::parse(addr, true).value()};
  return n;
}
cnf::remote_node remote(const char* name, const char* addr) {
  cnf::remote_node r;
  r.name = name;
  r.addresses = {cnf::ip_prefix::parse(addr, true).value()};
  return r;
}
}  // namespace

TEST_CASE("bgp part: settings", "[unit][bgp]") {
  auto r = read("as_number = 65000\nrouter_id = \"10.0.0.1\"\nlisten_port = 1179\nhold_time = 30\nconnect_retry = 0.5\n"
                "route_reflector_cluster_id = \"1.1.1.1\"\nnode_to_node_mesh = false\npassword = \"s3cret\"\n");
  REQUIRE(r);
  CHECK(r->as_number == 65000);
  CHECK(r->router_id == "10.0.0.1");
  CHECK(r->listen_port == 1179);
  CHECK(r->hold_time == 30);
  CHECK(r->connect_retry == 500ms);
  CHECK(!r->node_to_node_mesh);
  CHECK(r->route_reflector_cluster_id == "1.1.1.1");
  auto d = read("");
  REQUIRE(d);
  CHECK(d->listen_port == 179);
  CHECK(d->node_to_node_mesh);

  auto bad = [](const char* t, const char* key, const char* what) {
    auto x = read(t);
    REQUIRE(!x);
    CHECK_THAT(x.error().message, Catch::Contains(key) && Catch::Contains(what));
  };
  bad("as_number = 0", "as_number", "between 1 and 4294967295");
  bad("router_id = \"fd00::1\"", "router_id", "not a non-zero IPv4 address");
  bad("listen_port = 70000", "listen_port", "between 0 and 65535");
  bad("hold_time = 2", "hold_time", "0 or between 3");
  bad("route_reflector_cluster_id = \"x\"", "route_reflector_cluster_id", "not an IPv4 address");
  bad("as_numbr = 1", "as_numbr", "as_number");  // did you mean
}

TEST_CASE("bgp part: start needs an executor and an address", "[unit][bgp]") {
  sink s;
  cnf::bgp::routing none({}, nullptr, nullptr);
  auto r = none.start(node("a", "127.0.0.1/8"), s);
  REQUIRE(!r);
  CHECK_THAT(r.error().message, Catch::Contains("executor"));
  cnf::event_loop loop;
  cnf::bgp::routing noaddr({}, &loop, nullptr);
  cnf::node_info n;
  n.name = "a";
  auto r2 = noaddr.start(n, s);
  REQUIRE(!r2);
  CHECK_THAT(r2.error().message, Catch::Contains("router_id"));
}

TEST_CASE("bgp part: two nodes meshed over the loopback exchange blocks; stop sends Cease", "[unit][bgp]") {
  // One port for both (each listens on its own address); picked from the PID to keep
  // parallel runs apart.
  cnf::bgp::routing_settings set;
  set.as_number = 64512;
  set.listen_port = static_cast<std::uint16_t>(20000 + ::getpid() % 20000);
  set.hold_time = 9;
  set.connect_retry = 200ms;
  host a, b;
  bool started_a = false, started_b = false;
  a.on_loop([&] {
    a.part = std::make_unique<cnf::bgp::routing>(set, &a.loop, nullptr);
    started_a = a.part->start(node("a", "127.0.0.1/8"), a.s).has_value();
    a.part->upsert_node(remote("b", "127.0.0.2/8"));
    a.part->advertise(cnf::ip_prefix::parse("10.244.1.0/26").value());
  });
  b.on_loop([&] {
    b.part = std::make_unique<cnf::bgp::routing>(set, &b.loop, nullptr);
    started_b = b.part->start(node("b", "127.0.0.2/8"), b.s).has_value();
    b.part->upsert_node(remote("a", "127.0.0.1/8"));
    b.part->advertise(cnf::ip_prefix::parse("10.244.2.0/26").value());
  });
  REQUIRE(started_a);
  REQUIRE(started_b);
  REQUIRE(wait_for([&] { return a.s.peer("b").state == "Established" && b.s.peer("a").state == "Established"; }));
  REQUIRE(wait_for([&] { return b.s.route("10.244.1.0/26") && a.s.route("10.244.2.0/26"); }));
  auto r = *b.s.route("10.244.1.0/26");
  CHECK(r.next_hops == std::vector{cnf::ip_address::parse("127.0.0.1").value()});
  CHECK(r.peer == "a");
  auto st = a.s.peer("b");
  CHECK(st.type == "node-to-node mesh");
  CHECK(st.asn == 64512);
  CHECK(st.info == "Established");
  CHECK(!st.since.empty());
  cnf::routing_status status;
  a.on_loop([&] { status = a.part->status(); });
  CHECK(status.plugin == "bgp");
  REQUIRE(status.peers.size() == 1);
  CHECK(status.peers[0].state == "Established");

  b.on_loop([&] { b.part->withdraw(cnf::ip_prefix::parse("10.244.2.0/26").value()); });
  CHECK(wait_for([&] { return !a.s.route("10.244.2.0/26"); }));

  a.on_loop([&] { a.part->stop(); });
  CHECK(wait_for([&] { return !b.s.route("10.244.1.0/26"); }, 3s));  // a Cease, not the 9 s hold timer
  CHECK_THAT(b.s.peer("a").info, Catch::Contains("Cease"));
  CHECK(!a.s.wrong_thread);
  CHECK(!b.s.wrong_thread);
}

namespace {
struct capture_logger final : cnf::logger {
  std::mutex mu;
  std::vector<std::pair<cnf::log_level, std::string>> lines;
  void write(cnf::log_level l, std::string_view m) noexcept override {
    std::lock_guard g(mu);
    lines.emplace_back(l, std::string(m));
  }
  std::size_t count(std::string_view s, std::optional<cnf::log_level> level = {}) {
    std::lock_guard g(mu);
    return static_cast<std::size_t>(std::count_if(lines.begin(), lines.end(), [&](auto& x) {
      return x.second.find(s) != std::string::npos && (!level || x.first == *level);
    }));
  }
};
}  // namespace

TEST_CASE("bgp part: logSeverityScreen screens the part's log; prefixAdvertisements give advertised prefixes their communities live", "[unit][bgp]") {
  cnf::bgp::routing_settings set;
  set.as_number = 64512;
  set.listen_port = static_cast<std::uint16_t>(20000 + (::getpid() + 7) % 20000);
  capture_logger log;  // the host's threshold: info
  host a;
  auto cfg = [](const char* level, std::vector<std::string> communities) {
    cnf::routing_config c;
    c.log_severity_screen = level;
    if (!communities.empty()) c.prefix_advertisements = {{cnf::ip_prefix::parse("10.244.0.0/16").value(), communities}};
    return c;
  };
  bool started = false;
  a.on_loop([&] {
    a.part = std::make_unique<cnf::bgp::routing>(set, &a.loop, &log);
    a.part->configure(cfg("Warning", {}));
    started = a.part->start(node("a", "127.0.0.1/8"), a.s).has_value();
  });
  REQUIRE(started);
  CHECK(log.count("bgp: log level warn (BGPConfiguration logSeverityScreen Warning)") == 1);
  CHECK(log.count("bgp: AS 64512") == 0);  // info, screened

  // Debug: the part's debug lines reach the host's logger although the host's threshold is info.
  a.on_loop([&] {
    a.part->configure(cfg("Debug", {"65000:100", "65000:300:1"}));
    a.part->advertise(cnf::ip_prefix::parse("10.244.1.0/26").value());
    a.part->advertise(cnf::ip_prefix::parse("10.99.0.0/26").value());
  });
  CHECK(log.count("bgp: originate 10.244.1.0/26 with communities 65000:100 65000:300:1", cnf::log_level::debug) == 1);
  CHECK(log.count("bgp: originate 10.99.0.0/26 (no communities)", cnf::log_level::debug) == 1);

  // New communities, live: the prefixes within the cidr get them (counted), the others keep theirs.
  a.on_loop([&] { a.part->configure(cfg("Info", {"65000:200"})); });
  CHECK(log.count("bgp: prefixAdvertisements changed: 1 advertised prefix(es) get new communities", cnf::log_level::info) == 1);
  CHECK(log.count("bgp: originate 10.244.1.0/26 with communities 65000:200") == 0);  // debug, screened at Info

  // Error (and Fatal, cnf having no fatal level): info lines screened; unset: the host's threshold again.
  a.on_loop([&] { a.part->configure(cfg("Fatal", {"65000:300"})); });
  CHECK(log.count("bgp: log level error (BGPConfiguration logSeverityScreen Fatal)") == 1);
  CHECK(log.count("prefixAdvertisements changed: 1 advertised") == 1);
  a.on_loop([&] { a.part->configure(cfg("", {})); });
  CHECK(log.count("bgp: log level info (the agent's)") == 1);
  CHECK(log.count("prefixAdvertisements changed: 1 advertised") == 2);
}
