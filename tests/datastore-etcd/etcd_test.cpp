// The etcd datastore against a real etcd (Debian's etcd-server, started by each test on
// 127.0.0.1 with free ports and a temp data dir, stopped by PID).
#include "etcd_test_util.hpp"
#include "tcp_proxy.hpp"

#include <cnf/loader.hpp>
#include <cnf/settings.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>

using namespace std::chrono_literals;
using cnf::errc;
using type = cnf::watch_event::type;
using cnf_test::etcd_server;
using cnf_test::event_log;

static cnf_test::skip_without_etcd skip_check;

namespace {

cnf::resource pool(std::string name, std::string cidr = "10.0.0.0/16") {
  cnf::resource r;
  r.kind = "IPPool";
  r.name = std::move(name);
  r.spec = R"({"cidr":")" + cidr + R"("})";
  return r;
}


// A TCP listener that never accepts: connects succeed (kernel backlog), no reply ever comes.
struct silent_listener {
  int fd = -1;
  int port = 0;
  silent_listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~silent_listener() { ::close(fd); }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port); }
};

// A port with nothing listening (connection refused).
std::string dead_endpoint() { return "http://127.0.0.1:" + std::to_string(cnf_test::etcd_detail::free_ports(1)[0]); }

}  // namespace

// ---- settings and key layout (no server needed) ----------------------------------------------

TEST_CASE("etcd settings are read and validated, naming the key", "[etcd][settings]") {
  auto read = [](std::string toml) {
    auto s = cnf::settings::parse(toml, "profile.toml", "datastore");
    REQUIRE(s);
    auto c = cnf::configure_etcd(*s);
    auto f = s->finish();
    return std::pair{c, f};
  };
  SECTION("defaults") {
    auto [c, f] = read("[datastore]\nplugin = \"etcd\"\n");
    REQUIRE(f);
    CHECK(c.endpoints == std::vector<std::string>{"http://127.0.0.1:2379"});
    CHECK(c.timeout == 5000ms);
    CHECK(c.prefix == "/cnf");
  }
  SECTION("every key") {
    auto [c, f] = read(R"([datastore]
endpoints = ["http://10.0.0.1:2379", "http://[fd00::1]:2379"]
timeout_ms = 1500
prefix = "/other"
username = "cnf"
password = "secret"
)");
    REQUIRE(f);
    CHECK(c.endpoints.size() == 2);
    CHECK(c.timeout == 1500ms);
    CHECK(c.prefix == "/other");
    CHECK(c.username == "cnf");
  }
  SECTION("a bad URL names the key and the URL") {
    auto [c, f] = read("[datastore]\nendpoints = [\"ftp://x:1\"]\n");
    REQUIRE_FALSE(f);
    CHECK(f.error().code == errc::invalid);
    CHECK_THAT(f.error().message, Catch::Matchers::Contains(std::string("profile.toml:2")));
    CHECK_THAT(f.error().message, Catch::Matchers::Contains(std::string("datastore.endpoints")));
    CHECK_THAT(f.error().message, Catch::Matchers::Contains(std::string("ftp://x:1")));
  }
  SECTION("bad port") {
    auto [c, f] = read("[datastore]\nendpoints = \"http://127.0.0.1:99999\"\n");
    REQUIRE_FALSE(f);
    CHECK_THAT(f.error().message, Catch::Matchers::Contains(std::string("port '99999'")));
  }
  SECTION("cert without key, password without user, timeout out of range, bad prefix") {
    auto [c, f] = read(R"([datastore]
endpoints = ["https://127.0.0.1:2379"]
cert_file = "/etc/hostname"
password = "x"
timeout_ms = 0
prefix = "cnf/"
)");
    REQUIRE_FALSE(f);
    auto& m = f.error().message;
    CHECK_THAT(m, Catch::Matchers::Contains(std::string("datastore.key_file: is required with cert_file")));
    CHECK_THAT(m, Catch::Matchers::Contains(std::string("datastore.username: is required with password")));
    CHECK_THAT(m, Catch::Matchers::Contains(std::string("datastore.timeout_ms")));
    CHECK_THAT(m, Catch::Matchers::Contains(std::string("datastore.prefix")));
  }
  SECTION("a missing CA file") {
    auto [c, f] = read("[datastore]\nendpoints = [\"https://127.0.0.1:2379\"]\nca_file = \"/nonexistent/ca.pem\"\n");
    REQUIRE_FALSE(f);
    CHECK_THAT(f.error().message, Catch::Matchers::Contains(std::string("datastore.ca_file: cannot read '/nonexistent/ca.pem'")));
  }
  SECTION("TLS files with only http endpoints") {
    auto [c, f] = read("[datastore]\nca_file = \"/etc/hostname\"\n");
    REQUIRE_FALSE(f);
    CHECK_THAT(f.error().message, Catch::Matchers::Contains(std::string("no endpoint uses https")));
  }
  SECTION("a typo gets a suggestion") {
    auto [c, f] = read("[datastore]\nendpoint = [\"http://127.0.0.1:2379\"]\n");
    REQUIRE_FALSE(f);
    CHECK_THAT(f.error().message, Catch::Matchers::Contains(std::string("did you mean 'endpoints'")));
  }
  SECTION("configs built in code are checked too") {
    cnf::etcd_config c;
    c.endpoints = {"127.0.0.1:2379"};
    auto r = cnf::etcd_datastore::open(c);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::invalid);
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("endpoints")));
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("http://")));
  }
}

TEST_CASE("etcd key layout escapes names and round-trips", "[etcd][layout]") {
  CHECK(cnf::etcd_resource_key("/cnf", {"IPPool", "", "default-ipv4"}) == "/cnf/resources/v3/IPPool/_cluster/default-ipv4");
  CHECK(cnf::etcd_resource_key("/cnf", {"WorkloadEndpoint", "kube-system", "node1-k8s-pod--a-eth0"}) ==
        "/cnf/resources/v3/WorkloadEndpoint/kube-system/node1-k8s-pod--a-eth0");
  CHECK(cnf::etcd_resource_key("/cnf", {"IPAMBlock", "", "10.0.0.0/26"}) == "/cnf/resources/v3/IPAMBlock/_cluster/10.0.0.0%2F26");
  CHECK(cnf::etcd_resource_key("/cnf", {"X", "_cluster", "a"}) == "/cnf/resources/v3/X/%5Fcluster/a");
  for (cnf::resource_key k : {cnf::resource_key{"IPAMBlock", "", "10.0.0.0/26"}, cnf::resource_key{"X", "_cluster", "a b%c"},
                              cnf::resource_key{"X", "ns", "\xff\x01/"}, cnf::resource_key{"X", "", "_x"}}) {
    auto back = cnf::etcd_parse_resource_key("/cnf", cnf::etcd_resource_key("/cnf", k));
    REQUIRE(back);
    CHECK(*back == k);
  }
  auto bad = cnf::etcd_parse_resource_key("/cnf", "/cnf/resources/v3/IPPool/extra/segment/x");
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::Matchers::Contains(std::string("/cnf/resources/v3/IPPool/extra/segment/x")));
  CHECK_FALSE(cnf::etcd_parse_resource_key("/cnf", "/cnf/resources/v3/IPPool/_cluster/%zz"));
  CHECK_FALSE(cnf::etcd_parse_resource_key("/cnf", "/other/resources/v3/IPPool/_cluster/a"));
}

// ---- operations against a real etcd ------------------------------------------------------------

TEST_CASE("etcd: create, get, update, remove with compare-and-swap", "[etcd]") {
  etcd_server etcd;
  auto ds = cnf_test::open_store(cnf_test::config_for(etcd.endpoint()));

  auto p = pool("p1");
  p.labels = {{"zone", "a"}};
  auto c = ds.create(p);
  REQUIRE(c);
  CHECK(c->revision == std::to_string(etcd.revision()));

  auto again = ds.create(p);
  REQUIRE_FALSE(again);
  CHECK(again.error().code == errc::already_exists);
  CHECK_THAT(again.error().message, Catch::Matchers::Contains(std::string("IPPool/p1")));

  auto g = ds.get({"IPPool", "", "p1"});
  REQUIRE(g);
  CHECK(*g == *c);
  CHECK(g->labels.at("zone") == "a");

  auto u = *g;
  u.spec = R"({"cidr":"10.1.0.0/16"})";
  auto u1 = ds.update(u);
  REQUIRE(u1);
  CHECK(std::stoll(u1->revision) > std::stoll(g->revision));

  auto stale = ds.update(u);  // still carries g's revision
  REQUIRE_FALSE(stale);
  CHECK(stale.error().code == errc::conflict);
  CHECK_THAT(stale.error().message, Catch::Matchers::Contains(std::string("stale")));
  CHECK_THAT(stale.error().message, Catch::Matchers::Contains(std::string(u1->revision)));

  auto missing = pool("nope");
  missing.revision = "1";
  CHECK(ds.update(missing).error().code == errc::not_found);
  missing.revision.clear();
  CHECK(ds.update(missing).error().code == errc::not_found);

  auto unconditional = *u1;
  unconditional.revision.clear();
  unconditional.spec = R"({"cidr":"10.2.0.0/16"})";
  auto u2 = ds.update(unconditional);
  REQUIRE(u2);
  CHECK(ds.get({"IPPool", "", "p1"})->spec == R"({"cidr":"10.2.0.0/16"})");

  auto rm_stale = ds.remove({"IPPool", "", "p1"}, u1->revision);
  REQUIRE_FALSE(rm_stale);
  CHECK(rm_stale.error().code == errc::conflict);
  REQUIRE(ds.remove({"IPPool", "", "p1"}, u2->revision));
  CHECK(ds.get({"IPPool", "", "p1"}).error().code == errc::not_found);
  CHECK(ds.remove({"IPPool", "", "p1"}).error().code == errc::not_found);
  CHECK(ds.remove({"IPPool", "", "p1"}, "5").error().code == errc::not_found);

  SECTION("bad input is refused before anything is written") {
    auto before = etcd.revision();
    auto bad = pool("bad");
    bad.spec = "{not json";
    auto r = ds.create(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::invalid);
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("IPPool/bad")));
    bad.spec = "[1,2]";
    CHECK(ds.create(bad).error().code == errc::invalid);
    CHECK(ds.create(pool("")).error().code == errc::invalid);
    auto rev = pool("x");
    rev.revision = "abc";
    CHECK(ds.update(rev).error().code == errc::invalid);
    CHECK(etcd.revision() == before);
  }
  SECTION("namespaced resources stay apart") {
    cnf::resource a{"WorkloadEndpoint", "ns1", "wep", {}, "{}", ""};
    cnf::resource b{"WorkloadEndpoint", "ns2", "wep", {}, R"({"x":1})", ""};
    REQUIRE(ds.create(a));
    REQUIRE(ds.create(b));
    CHECK(ds.get({"WorkloadEndpoint", "ns2", "wep"})->spec == R"({"x":1})");
    CHECK(ds.get({"WorkloadEndpoint", "", "wep"}).error().code == errc::not_found);
  }
  SECTION("status reports the endpoint and the store revision") {
    auto s = ds.status();
    REQUIRE(s);
    CHECK(s->backend == "etcd");
    CHECK(s->endpoint == etcd.endpoint());
    CHECK(s->revision == std::to_string(etcd.revision()));
  }
}

TEST_CASE("etcd: list by prefix with pages at one revision", "[etcd]") {
  etcd_server etcd;
  auto ds = cnf_test::open_store(cnf_test::config_for(etcd.endpoint()));
  for (int i = 0; i < 25; ++i) REQUIRE(ds.create(pool("pool-" + std::string(i < 10 ? "0" : "") + std::to_string(i))));
  for (auto ns : {"a", "b"})
    for (auto n : {"web-1", "web-2", "db-1"}) REQUIRE(ds.create({"WorkloadEndpoint", ns, n, {}, "{}", ""}));
  REQUIRE(ds.create({"BGPPeer", "", "other-kind", {}, "{}", ""}));

  auto all = ds.list({.kind = "IPPool"});
  REQUIRE(all);
  CHECK(all->items.size() == 25);
  CHECK(all->continue_token.empty());
  CHECK(all->revision == std::to_string(etcd.revision()));

  cnf::list_options o{.kind = "IPPool", .limit = 10};
  std::vector<std::string> names;
  std::string rev;
  int pages = 0;
  for (;;) {
    auto page = ds.list(o);
    REQUIRE(page);
    ++pages;
    CHECK(page->items.size() <= 10);
    if (rev.empty()) rev = page->revision;
    CHECK(page->revision == rev);
    for (auto& r : page->items) names.push_back(r.name);
    if (pages == 1) REQUIRE(ds.create(pool("pool-99")));  // written between pages: not in this list
    if (page->continue_token.empty()) break;
    o.continue_token = page->continue_token;
  }
  CHECK(pages == 3);
  CHECK(names.size() == 25);
  CHECK(std::is_sorted(names.begin(), names.end()));
  CHECK(std::find(names.begin(), names.end(), "pool-99") == names.end());

  auto ns_a = ds.list({.kind = "WorkloadEndpoint", .ns = "a"});
  REQUIRE(ns_a);
  CHECK(ns_a->items.size() == 3);
  auto web = ds.list({.kind = "WorkloadEndpoint", .name_prefix = "web-"});
  REQUIRE(web);
  CHECK(web->items.size() == 4);
  auto web_paged = ds.list({.kind = "WorkloadEndpoint", .name_prefix = "web-", .limit = 3});
  REQUIRE(web_paged);
  CHECK(web_paged->items.size() == 3);
  CHECK_FALSE(web_paged->continue_token.empty());
  auto web_rest = ds.list({.kind = "WorkloadEndpoint", .name_prefix = "web-", .limit = 3, .continue_token = web_paged->continue_token});
  REQUIRE(web_rest);
  CHECK(web_rest->items.size() == 1);
  auto a_web = ds.list({.kind = "WorkloadEndpoint", .ns = "a", .name_prefix = "web"});
  REQUIRE(a_web);
  CHECK(a_web->items.size() == 2);

  auto bad = ds.list({.kind = "IPPool", .continue_token = "garbage"});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == errc::invalid);
  auto foreign = ds.list({.kind = "BGPPeer", .continue_token = o.continue_token});
  REQUIRE_FALSE(foreign);
  CHECK(foreign.error().code == errc::invalid);
}

TEST_CASE("etcd: a value that does not parse is an error naming the key", "[etcd][bad-input]") {
  etcd_server etcd;
  auto ds = cnf_test::open_store(cnf_test::config_for(etcd.endpoint()));
  REQUIRE(ds.create(pool("good")));
  auto from = std::to_string(etcd.revision());
  event_log log;
  auto w = ds.watch({.kind = "IPPool", .revision = from}, log.callback());
  REQUIRE(w);

  auto key = cnf::etcd_resource_key("/cnf", {"IPPool", "", "broken"});
  etcd.put(key, "this is not JSON");
  auto g = ds.get({"IPPool", "", "broken"});
  REQUIRE_FALSE(g);
  CHECK(g.error().code == errc::invalid);
  CHECK_THAT(g.error().message, Catch::Matchers::Contains(std::string(key)));
  CHECK_THAT(g.error().message, Catch::Matchers::Contains(std::string("IPPool/broken")));
  auto l = ds.list({.kind = "IPPool"});
  REQUIRE_FALSE(l);
  CHECK(l.error().code == errc::invalid);
  CHECK_THAT(l.error().message, Catch::Matchers::Contains(std::string(key)));

  etcd.put(cnf::etcd_resource_key("/cnf", {"IPPool", "", "wrong-shape"}), R"({"labels":{"a":1},"spec":{}})");
  auto shape = ds.get({"IPPool", "", "wrong-shape"});
  REQUIRE_FALSE(shape);
  CHECK_THAT(shape.error().message, Catch::Matchers::Contains(std::string("label 'a' is not a string")));

  // The watch reports the bad values and goes on with the next good change.
  REQUIRE(ds.create(pool("after")));
  REQUIRE(log.wait([](auto& es) {
    return std::any_of(es.begin(), es.end(), [](auto& e) { return e.kind == type::added && e.object.name == "after"; });
  }));
  auto es = log.events();
  CHECK(event_log::count(es, type::error) == 2);
  CHECK_THAT(es.at(0).err.message, Catch::Matchers::Contains(std::string(key)));
  CHECK(es.at(0).err.code == errc::invalid);
}

TEST_CASE("etcd: many writers on one resource, exactly one wins each round", "[etcd]") {
  etcd_server etcd;
  auto ds = cnf_test::open_store(cnf_test::config_for(etcd.endpoint()));
  auto r = pool("counter");
  r.spec = R"({"n":0})";
  REQUIRE(ds.create(r));
  constexpr int writers = 6, rounds = 15;
  std::atomic<int> wins{0}, conflicts{0}, other{0};
  std::vector<std::thread> ts;
  for (int w = 0; w < writers; ++w)
    ts.emplace_back([&] {
      for (int i = 0; i < rounds; ++i) {
        for (;;) {
          auto cur = ds.get({"IPPool", "", "counter"});
          if (!cur) { ++other; break; }
          auto n = std::stoi(cur->spec.substr(5));
          cur->spec = R"({"n":)" + std::to_string(n + 1) + "}";
          auto u = ds.update(*cur);
          if (u) { ++wins; break; }
          if (u.error().code == errc::conflict) { ++conflicts; continue; }
          ++other;
          break;
        }
      }
    });
  for (auto& t : ts) t.join();
  CHECK(other == 0);
  CHECK(wins == writers * rounds);
  CHECK(ds.get({"IPPool", "", "counter"})->spec == R"({"n":)" + std::to_string(writers * rounds) + "}");
}

// ---- endpoints, failover, timeouts ---------------------------------------------------------------

TEST_CASE("etcd: fails over from a dead first endpoint to a live second one", "[etcd][failover]") {
  etcd_server etcd;
  SECTION("connection refused") {
    cnf::etcd_config c = cnf_test::config_for(dead_endpoint());
    c.endpoints.push_back(etcd.endpoint());
    auto ds = cnf_test::open_store(c);
    REQUIRE(ds.create(pool("p")));
    REQUIRE(ds.get({"IPPool", "", "p"}));
    CHECK(ds.status()->endpoint == etcd.endpoint());
  }
  SECTION("a member that accepts connections but never answers") {
    silent_listener hung;
    cnf::etcd_config c = cnf_test::config_for(hung.endpoint(), 4000ms);
    c.endpoints.push_back(etcd.endpoint());
    auto ds = cnf_test::open_store(c);
    auto s = ds.status();  // a read: given up on the hung member after its share of the timeout
    REQUIRE(s);
    CHECK(s->endpoint == etcd.endpoint());
    REQUIRE(ds.create(pool("p")));  // the live member is now preferred
  }
  SECTION("every endpoint down: one error naming each") {
    auto d1 = dead_endpoint(), d2 = dead_endpoint();
    cnf::etcd_config c = cnf_test::config_for(d1);
    c.endpoints.push_back(d2);
    auto ds = cnf_test::open_store(c);
    auto g = ds.get({"IPPool", "", "p"});
    REQUIRE_FALSE(g);
    CHECK(g.error().code == errc::unavailable);
    CHECK_THAT(g.error().message, Catch::Matchers::Contains(std::string(d1)));
    CHECK_THAT(g.error().message, Catch::Matchers::Contains(std::string(d2)));
  }
}

TEST_CASE("etcd: with etcd down every call fails with unavailable within the timeout", "[etcd][fault]") {
  etcd_server etcd;
  const auto timeout = 1500ms;
  auto ds = cnf_test::open_store(cnf_test::config_for(etcd.endpoint(), timeout));
  auto created = ds.create(pool("p"));
  REQUIRE(created);  // the pool now holds a kept-alive connection that will go stale
  etcd.kill();

  auto check_down = [&](auto&& call, const char* what) {
    INFO(what);
    auto t0 = std::chrono::steady_clock::now();
    auto r = call();
    auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::unavailable);
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string(etcd.endpoint())));
    CHECK(took < timeout + 20s);  // a liveness bound (it returned), not a performance figure
  };
  check_down([&] { return ds.get({"IPPool", "", "p"}); }, "get");
  check_down([&] { return ds.create(pool("q")); }, "create");
  check_down([&] { return ds.update(*created); }, "update");
  check_down([&] { return ds.remove({"IPPool", "", "p"}); }, "remove");
  check_down([&] { return ds.list({.kind = "IPPool"}); }, "list");
  check_down([&] { return ds.status(); }, "status");

  SECTION("and a member that hangs: no reply in time") {
    silent_listener hung;
    auto hs = cnf_test::open_store(cnf_test::config_for(hung.endpoint(), timeout));
    auto r = hs.create(pool("q"));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::unavailable);
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string(hung.endpoint())));
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("timeout_ms = 1500")));
  }
  SECTION("back up: calls work again on fresh connections") {
    etcd.start();
    auto g = ds.get({"IPPool", "", "p"});
    REQUIRE(g);
    CHECK(g->revision == created->revision);
    REQUIRE(ds.create(pool("q")));
  }
}

// ---- watches ---------------------------------------------------------------------------------------

TEST_CASE("etcd watch: initial state, in_sync, then changes in order", "[etcd][watch]") {
  etcd_server etcd;
  auto ds = cnf_test::open_store(cnf_test::config_for(etcd.endpoint()));
  REQUIRE(ds.create(pool("a")));
  REQUIRE(ds.create(pool("b")));
  REQUIRE(ds.create({"BGPPeer", "", "not-watched", {}, "{}", ""}));
  event_log log;
  auto w = ds.watch({.kind = "IPPool"}, log.callback());
  REQUIRE(w);
  REQUIRE(log.wait_count(type::in_sync, 1));
  auto c = ds.create(pool("c"));
  REQUIRE(c);
  auto m = *c;
  m.spec = R"({"cidr":"10.9.0.0/16"})";
  auto u = ds.update(m);
  REQUIRE(u);
  REQUIRE(ds.remove({"IPPool", "", "a"}));
  REQUIRE(log.wait_count(type::deleted, 1));
  auto es = log.events();
  REQUIRE(es.size() == 6);
  CHECK(es[0].kind == type::added);
  CHECK(es[0].object.name == "a");
  CHECK(es[1].object.name == "b");
  CHECK(es[2].kind == type::in_sync);
  CHECK(es[3].kind == type::added);
  CHECK(es[3].object == *c);
  CHECK(es[4].kind == type::modified);
  CHECK(es[4].object == *u);
  CHECK(es[5].kind == type::deleted);
  CHECK(es[5].object.name == "a");
  CHECK(es[5].object.spec == pool("a").spec);  // the last known state
  CHECK(std::stoll(es[3].revision) < std::stoll(es[4].revision));
  CHECK(std::stoll(es[4].revision) < std::stoll(es[5].revision));

  SECTION("cancel stops delivery; a callback may cancel its own watch") {
    w->cancel();
    CHECK_FALSE(w->active());
    cnf::watch_handle self;
    std::atomic<bool> assigned{false}, done{false};
    std::atomic<int> calls{0};
    auto h = ds.watch({.kind = "IPPool"}, [&](const cnf::watch_event&) {
      ++calls;
      while (!assigned) std::this_thread::sleep_for(1ms);
      self.cancel();  // from inside its own callback: must neither deadlock nor deliver more
      done = true;
    });
    REQUIRE(h);
    self = std::move(*h);
    assigned = true;
    while (!done) std::this_thread::sleep_for(1ms);
    REQUIRE(ds.create(pool("after-cancel")));
    CHECK(calls == 1);  // b and c were pending as `added`, then in_sync: none delivered
  }
}

TEST_CASE("etcd watch: events go to the executor when the host gives one", "[etcd][watch]") {
  etcd_server etcd;
  cnf_test::thread_executor exec;
  auto ds = cnf_test::open_store(cnf_test::config_for(etcd.endpoint()), &exec);
  event_log log;
  auto w = ds.watch({.kind = "IPPool"}, log.callback());
  REQUIRE(w);
  REQUIRE(ds.create(pool("a")));
  REQUIRE(log.wait_count(type::added, 1));
  for (auto id : log.threads()) CHECK(id == exec.id());
}

TEST_CASE("etcd watch survives an etcd restart and resumes without gaps", "[etcd][watch][fault]") {
  etcd_server etcd;
  auto ds = cnf_test::open_store(cnf_test::config_for(etcd.endpoint(), 2000ms));
  event_log log;
  auto w = ds.watch({.kind = "IPPool"}, log.callback());
  REQUIRE(w);
  REQUIRE(log.wait_count(type::in_sync, 1));

  std::vector<std::string> written;  // revisions of every write, in order
  auto r = ds.create(pool("p"));
  REQUIRE(r);
  written.push_back(r->revision);
  auto write_some = [&](int n) {
    for (int i = 0; i < n; ++i) {
      auto u = ds.update(*r);
      REQUIRE(u);
      r = u;
      written.push_back(r->revision);
    }
  };
  write_some(10);
  etcd.kill();  // a crash: the stream breaks, the pooled connections go stale
  REQUIRE(log.wait_count(type::error, 1));
  etcd.start();
  write_some(10);
  REQUIRE(ds.remove({"IPPool", "", "p"}, r->revision));
  written.push_back(std::to_string(etcd.revision()));

  REQUIRE(log.wait([&](auto& es) {
    auto ch = event_log::changes_of(es);
    return !ch.empty() && ch.back().revision == written.back();
  }));
  std::vector<std::string> seen;
  for (auto& e : log.changes()) seen.push_back(e.revision);
  CHECK(seen == written);  // every change once, in order, nothing lost across the restart
  CHECK(log.changes().back().kind == type::deleted);
  auto es = log.events();
  CHECK_THAT(std::find_if(es.begin(), es.end(), [](auto& e) { return e.kind == type::error; })->err.message, Catch::Matchers::Contains(std::string(etcd.endpoint())));
}

TEST_CASE("etcd: writers run through an etcd crash and restart; the watcher ends equal to the store", "[etcd][watch][fault]") {
  etcd_server etcd;
  const auto timeout = 1000ms;
  auto ds = cnf_test::open_store(cnf_test::config_for(etcd.endpoint(), timeout));
  event_log log;
  auto w = ds.watch({.kind = "IPAMBlock"}, log.callback());
  REQUIRE(w);
  REQUIRE(log.wait_count(type::in_sync, 1));

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, unavailable{0}, other{0};
  std::vector<std::string> unexpected;
  std::mutex unexpected_mu;
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t)
    writers.emplace_back([&, t] {
      for (int i = 0; !stop; ++i) {
        cnf::resource r{"IPAMBlock", "", "w" + std::to_string(t) + "-" + std::to_string(i % 5), {}, R"({"i":)" + std::to_string(i) + "}", ""};
        cnf::result<void> res;
        auto cur = ds.get(r.key());
        if (!cur && cur.error().code == errc::not_found) {
          auto c = ds.create(r);
          if (!c) res = c.error();
        } else if (!cur) {
          res = cur.error();
        } else if (i % 4 == 3) {
          res = ds.remove(r.key(), cur->revision);
        } else {
          r.revision = cur->revision;
          auto u = ds.update(r);
          if (!u) res = u.error();
        }
        if (res) ++ok;
        else if (res.error().code == errc::unavailable) ++unavailable;
        else if (res.error().code == errc::conflict || res.error().code == errc::not_found || res.error().code == errc::already_exists)
          ++ok;  // an outcome-unknown write that did land, seen by the next step
        else {
          ++other;
          std::lock_guard lk(unexpected_mu);
          unexpected.push_back(res.error().message);
        }
      }
    });
  while (ok < 60) std::this_thread::sleep_for(10ms);
  etcd.kill();
  while (unavailable < 3) std::this_thread::sleep_for(10ms);  // writers see "try again later" while it is down
  etcd.start();
  auto resumed = ok.load();
  while (ok < resumed + 60) std::this_thread::sleep_for(10ms);
  stop = true;
  for (auto& t : writers) t.join();
  CHECK(other == 0);
  for (auto& m : unexpected) UNSCOPED_INFO(m);

  auto store = ds.list({.kind = "IPAMBlock"});
  REQUIRE(store);
  std::map<std::string, std::string> want;  // name -> revision
  for (auto& r : store->items) want[r.name] = r.revision;
  auto replay = [](const std::vector<cnf::watch_event>& es) {
    std::map<std::string, std::string> state;
    for (auto& e : es) {
      if (e.kind == type::added || e.kind == type::modified) state[e.object.name] = e.object.revision;
      else if (e.kind == type::deleted) state.erase(e.object.name);
    }
    return state;
  };
  REQUIRE(log.wait([&](auto& es) { return replay(es) == want; }));
  CHECK(want.size() > 0);
  CHECK(event_log::count(log.events(), type::error) >= 1);
}

TEST_CASE("etcd watch resumes after a dropped connection", "[etcd][watch][fault]") {
  etcd_server etcd;
  cnf_test::tcp_proxy proxy(etcd.client_port());
  auto writer = cnf_test::open_store(cnf_test::config_for(etcd.endpoint()));
  auto ds = cnf_test::open_store(cnf_test::config_for(proxy.endpoint()));
  event_log log;
  auto w = ds.watch({.kind = "IPPool"}, log.callback());
  REQUIRE(w);
  REQUIRE(log.wait_count(type::in_sync, 1));
  std::vector<std::string> written;
  auto write = [&](std::string name) {
    auto c = writer.create(pool(std::move(name)));
    REQUIRE(c);
    written.push_back(c->revision);
  };
  auto seen_all = [&](auto& es) {
    auto ch = event_log::changes_of(es);
    return !ch.empty() && ch.back().revision == written.back();
  };
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 5; ++i) write("r" + std::to_string(round) + "-" + std::to_string(i));
    REQUIRE(log.wait(seen_all));  // the stream is live
    proxy.drop_all();
    for (int i = 0; i < 3; ++i) write("gap" + std::to_string(round) + "-" + std::to_string(i));  // most likely while it reconnects
    REQUIRE(log.wait_count(type::error, static_cast<std::size_t>(round + 1)));
  }
  auto last = writer.create(pool("last"));
  REQUIRE(last);
  written.push_back(last->revision);
  REQUIRE(log.wait([&](auto& es) {
    auto ch = event_log::changes_of(es);
    return !ch.empty() && ch.back().revision == written.back();
  }));
  std::vector<std::string> seen;
  for (auto& e : log.changes()) seen.push_back(e.revision);
  CHECK(seen == written);
}

TEST_CASE("etcd watch: a compacted revision means resync_needed, and the watch ends", "[etcd][watch]") {
  etcd_server etcd;
  auto ds = cnf_test::open_store(cnf_test::config_for(etcd.endpoint()));
  auto first = ds.create(pool("p"));
  REQUIRE(first);
  for (int i = 0; i < 5; ++i) REQUIRE(ds.create(pool("q" + std::to_string(i))));
  auto now = etcd.revision();
  etcd.compact(now);

  SECTION("watch from an old revision") {
    event_log log;
    auto w = ds.watch({.kind = "IPPool", .revision = first->revision}, log.callback());
    REQUIRE(w);
    REQUIRE(log.wait_count(type::resync_needed, 1));
    auto es = log.events();
    CHECK(es.back().kind == type::resync_needed);
    CHECK(es.back().revision == std::to_string(now));
    CHECK(event_log::count(es, type::added) == 0);
  }
  SECTION("a watch that was disconnected while the store compacted past it") {
    cnf_test::tcp_proxy proxy(etcd.client_port());
    auto via = cnf_test::open_store(cnf_test::config_for(proxy.endpoint()));
    event_log log;
    auto w = via.watch({.kind = "IPPool"}, log.callback());
    REQUIRE(w);
    REQUIRE(log.wait_count(type::in_sync, 1));
    proxy.refuse(true);
    proxy.drop_all();
    REQUIRE(log.wait_count(type::error, 1));
    REQUIRE(ds.create(pool("missed")));
    REQUIRE(ds.create(pool("missed-too")));
    etcd.compact(etcd.revision());
    proxy.refuse(false);
    REQUIRE(log.wait_count(type::resync_needed, 1));
    CHECK(log.changes().size() == 6);  // the initial state only: nothing after the gap was guessed
  }
}

TEST_CASE("etcd watch: garbage on the stream is an error, then the watch reconnects", "[etcd][watch][bad-input]") {
  etcd_server etcd;
  cnf_test::tcp_proxy proxy(etcd.client_port());
  auto ds = cnf_test::open_store(cnf_test::config_for(proxy.endpoint()));
  REQUIRE(ds.create(pool("a")));
  auto from = ds.status()->revision;
  proxy.garbage_next_watch("{\"result\": this is not json\n");
  event_log log;
  auto w = ds.watch({.kind = "IPPool", .revision = from}, log.callback());
  REQUIRE(w);
  REQUIRE(log.wait_count(type::error, 1));
  auto b = ds.create(pool("b"));
  REQUIRE(b);
  REQUIRE(log.wait_count(type::added, 1));
  auto es = log.events();
  CHECK(proxy.garbage_sent() == 1);
  CHECK(es.front().kind == type::error);
  CHECK_THAT(es.front().err.message, Catch::Matchers::Contains(std::string(proxy.endpoint())));
  CHECK_THAT(es.front().err.message, Catch::Matchers::Contains(std::string("not JSON")));
  CHECK(log.changes().at(0).object == *b);
}

// ---- TLS and authentication --------------------------------------------------------------------------

TEST_CASE("etcd over TLS with client certificates", "[etcd][tls]") {
  auto dir = std::filesystem::temp_directory_path() / ("cnf-etcd-pki-" + std::to_string(::getpid()));
  struct rm {
    std::filesystem::path p;
    ~rm() { std::filesystem::remove_all(p); }
  } cleanup{dir};
  auto pki = cnf_test::make_test_pki(dir);
  etcd_server etcd({.tls = etcd_server::tls_files{pki.ca_cert, pki.server_cert, pki.server_key}});
  REQUIRE(etcd.endpoint().starts_with("https://"));

  cnf::etcd_config c = cnf_test::config_for(etcd.endpoint());
  c.ca_file = pki.ca_cert;
  c.cert_file = pki.client_cert;
  c.key_file = pki.client_key;

  SECTION("a client with the right CA and certificate works, watches included") {
    auto ds = cnf_test::open_store(c);
    REQUIRE(ds.create(pool("tls")));
    REQUIRE(ds.get({"IPPool", "", "tls"}));
    event_log log;
    auto w = ds.watch({.kind = "IPPool"}, log.callback());
    REQUIRE(w);
    REQUIRE(log.wait_count(type::in_sync, 1));
    REQUIRE(ds.create(pool("tls-2")));
    REQUIRE(log.wait_count(type::added, 2));
  }
  SECTION("by host name too (the certificate names localhost)") {
    c.endpoints = {"https://localhost:" + std::to_string(etcd.client_port())};
    auto ds = cnf_test::open_store(c);
    REQUIRE(ds.status());
  }
  SECTION("a wrong CA: certificate verify failed, naming the endpoint") {
    c.ca_file = pki.other_ca_cert;
    auto ds = cnf_test::open_store(c);
    auto r = ds.get({"IPPool", "", "x"});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::invalid);
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("certificate verify failed")));
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string(etcd.endpoint())));
  }
  SECTION("no client certificate: the server refuses, naming the endpoint") {
    c.cert_file.clear();
    c.key_file.clear();
    auto ds = cnf_test::open_store(c);
    auto r = ds.get({"IPPool", "", "x"});
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("client certificate")));
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string(etcd.endpoint())));
  }
  SECTION("plain http to a TLS port fails cleanly") {
    cnf::etcd_config plain = cnf_test::config_for("http://127.0.0.1:" + std::to_string(etcd.client_port()), 2000ms);
    auto ds = cnf_test::open_store(plain);
    auto r = ds.get({"IPPool", "", "x"});
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("https://")));
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("127.0.0.1")));
  }
  SECTION("a key that does not match the certificate is refused at open") {
    c.key_file = pki.server_key;
    auto r = cnf::etcd_datastore::open(c);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::invalid);
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("key_file")));
  }
}

TEST_CASE("etcd TLS: a certificate for another host name does not verify", "[etcd][tls]") {
  auto dir = std::filesystem::temp_directory_path() / ("cnf-etcd-pki2-" + std::to_string(::getpid()));
  struct rm {
    std::filesystem::path p;
    ~rm() { std::filesystem::remove_all(p); }
  } cleanup{dir};
  auto pki = cnf_test::make_test_pki(dir, "cnf-client", "DNS:etcd.example.invalid");
  etcd_server etcd({.tls = etcd_server::tls_files{pki.ca_cert, pki.server_cert, pki.server_key, false}});
  cnf::etcd_config c = cnf_test::config_for(etcd.endpoint());
  c.ca_file = pki.ca_cert;
  auto ds = cnf_test::open_store(c);
  auto r = ds.get({"IPPool", "", "x"});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::invalid);
  CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("certificate verify failed")));
  CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("does not name '127.0.0.1'")));
  CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string(etcd.endpoint())));
}

TEST_CASE("etcd with authentication", "[etcd][auth]") {
  // Tokens live one second here, so the client has to fetch new ones.
  etcd_server etcd({.extra_args = {"--auth-token-ttl=1"}});
  etcd.enable_auth("s3cret");
  cnf::etcd_config c = cnf_test::config_for(etcd.endpoint());
  c.username = "root";

  SECTION("the right password works, and keeps working after the token expired") {
    c.password = "s3cret";
    auto ds = cnf_test::open_store(c);
    REQUIRE(ds.create(pool("a")));
    event_log log;
    auto w = ds.watch({.kind = "IPPool"}, log.callback());
    REQUIRE(w);
    REQUIRE(log.wait_count(type::in_sync, 1));
    std::this_thread::sleep_for(2500ms);  // let the token expire (not a timing assertion)
    auto g = ds.get({"IPPool", "", "a"});
    REQUIRE(g);
    REQUIRE(ds.create(pool("b")));
    REQUIRE(log.wait_count(type::added, 2));
  }
  SECTION("a wrong password is a clear error naming the endpoint and the user") {
    c.password = "wrong";
    auto ds = cnf_test::open_store(c);
    auto r = ds.get({"IPPool", "", "a"});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::invalid);
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string(etcd.endpoint())));
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("authentication as user 'root' failed")));
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("invalid user ID or password")));
  }
  SECTION("no credentials at all") {
    auto ds = cnf_test::open_store(cnf_test::config_for(etcd.endpoint()));
    auto r = ds.get({"IPPool", "", "a"});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::invalid);
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string(etcd.endpoint())));
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(std::string("user name is empty")));
  }
}

// ---- the plugin, loaded as a host would ----------------------------------------------------------------

TEST_CASE("the etcd plugin loads from a profile and serves as any_datastore", "[etcd][plugin]") {
  etcd_server etcd;
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  std::string profile = "[datastore]\nplugin = \"etcd\"\nendpoints = [\"" + etcd.endpoint() + "\"]\ntimeout_ms = 3000\n";
  cnf::plugin_context ctx;
  auto ds = loader.make<cnf::part::datastore>("etcd", ctx, {profile, "test.toml", "datastore"});
  REQUIRE(ds);
  REQUIRE(ds->create(pool("via-plugin")));
  auto all = ds->list_all({.kind = "IPPool"});
  REQUIRE(all);
  CHECK(all->items.size() == 1);
  CHECK(ds->status()->backend == "etcd");

  std::string bad = "[datastore]\nplugin = \"etcd\"\nendpoints = [\"tcp://x\"]\n";
  auto e = loader.make<cnf::part::datastore>("etcd", ctx, {bad, "bad.toml", "datastore"});
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Catch::Matchers::Contains(std::string("bad.toml:3")));
  CHECK_THAT(e.error().message, Catch::Matchers::Contains(std::string("datastore.endpoints")));
}
