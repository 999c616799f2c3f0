// Tests of the kubernetes datastore plugin against a STAND-IN API server.
//
// THE SERVER IN THESE TESTS IS A STAND-IN, NOT KUBERNETES. No kube-apiserver can run on
// this machine, so tests/datastore-kubernetes/standin_apiserver.py implements just the API
// behaviour the plugin relies on (custom resource CRUD with a global resourceVersion and
// 409 conflicts, list with limit/continue, chunked watch streams with bookmarks, 410 for
// too-old resourceVersions, bearer-token and client-certificate authentication, TLS, and
// read-only core nodes/namespaces/pods from fixtures). Passing here shows that the plugin
// speaks that behaviour correctly; it is not a test against a real cluster.
#include "standin.hpp"

#include <cnf/loader.hpp>
#include <cnf/plugins/kubernetes.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <set>

using namespace std::chrono_literals;
namespace k8s = cnf::kubernetes;
using k8s_test::eventually;
using k8s_test::recorder;
using k8s_test::standin;
using k8s_test::standin_options;
using T = cnf::watch_event::type;

namespace {

k8s::datastore open_ds(const standin& s, std::string token = {}) {
  auto d = k8s::datastore::open(s.options(std::move(token)));
  REQUIRE(d);
  return std::move(*d);
}

cnf::resource make(std::string kind, std::string name, std::string spec = "{}", std::string ns = {},
                   std::map<std::string, std::string> labels = {}) {
  cnf::resource r;
  r.kind = std::move(kind);
  r.name = std::move(name);
  r.spec = std::move(spec);
  r.ns = std::move(ns);
  r.labels = std::move(labels);
  return r;
}

bool same_json(const std::string& a, const std::string& b) { return boost::json::parse(a) == boost::json::parse(b); }

long rev(const std::string& r) { return std::stol(r); }  // the stand-in's revisions are decimal

cnf::watch_options wopt(std::string kind, std::string revision = {}) {
  cnf::watch_options o;
  o.kind = std::move(kind);
  o.revision = std::move(revision);
  return o;
}

std::size_t errors_in(recorder& r) { return r.count(T::error); }

}  // namespace

TEST_CASE("create, get, update with compare-and-swap, remove with a revision", "[kubernetes]") {
  standin s;
  auto ds = open_ds(s);
  auto c = ds.create(make("IPPool", "default-ipv4", R"({"cidr":"10.244.0.0/16","blockSize":26})", "", {{"tier", "gold"}}));
  REQUIRE(c);
  CHECK(c->kind == "IPPool");
  CHECK(c->name == "default-ipv4");
  CHECK(c->labels.at("tier") == "gold");
  CHECK(!c->revision.empty());

  auto dup = ds.create(make("IPPool", "default-ipv4"));
  REQUIRE(!dup);
  CHECK(dup.error().code == cnf::errc::already_exists);
  CHECK_THAT(dup.error().message, Catch::Contains("IPPool/default-ipv4"));

  auto g = ds.get({"IPPool", "", "default-ipv4"});
  REQUIRE(g);
  CHECK(g->revision == c->revision);
  CHECK(same_json(g->spec, R"({"cidr":"10.244.0.0/16","blockSize":26})"));

  auto next = *g;
  next.spec = R"({"cidr":"10.244.0.0/16","blockSize":24})";
  auto u = ds.update(next);
  REQUIRE(u);
  CHECK(rev(u->revision) > rev(c->revision));

  auto stale = ds.update(next);  // still carries the old revision
  REQUIRE(!stale);
  CHECK(stale.error().code == cnf::errc::conflict);
  CHECK_THAT(stale.error().message, Catch::Contains("IPPool/default-ipv4"));

  next.revision.clear();  // no revision: overwrite whatever is there (still via CAS inside)
  next.spec = R"({"cidr":"10.244.0.0/16","blockSize":27})";
  auto forced = ds.update(next);
  REQUIRE(forced);
  CHECK(same_json(ds.get({"IPPool", "", "default-ipv4"})->spec, next.spec));

  auto bad_rm = ds.remove({"IPPool", "", "default-ipv4"}, u->revision);
  REQUIRE(!bad_rm);
  CHECK(bad_rm.error().code == cnf::errc::conflict);
  CHECK(ds.get({"IPPool", "", "default-ipv4"}));
  REQUIRE(ds.remove({"IPPool", "", "default-ipv4"}, forced->revision));
  auto gone = ds.get({"IPPool", "", "default-ipv4"});
  REQUIRE(!gone);
  CHECK(gone.error().code == cnf::errc::not_found);
  CHECK_THAT(gone.error().message, Catch::Contains("IPPool/default-ipv4"));
  CHECK(ds.remove({"IPPool", "", "default-ipv4"}, {}).error().code == cnf::errc::not_found);
  CHECK(ds.update(*forced).error().code == cnf::errc::not_found);

  // An update that changes nothing is still a write (the stand-in, like the API server,
  // would otherwise keep the revision and send no event).
  auto again = ds.create(make("IPPool", "same", R"({"cidr":"10.1.0.0/16"})")).value();
  auto same1 = ds.update(again).value();
  CHECK(rev(same1.revision) > rev(again.revision));
  auto same2 = ds.update(same1).value();
  CHECK(rev(same2.revision) > rev(same1.revision));
  CHECK(same_json(same2.spec, again.spec));

  auto st = ds.status();
  REQUIRE(st);
  CHECK(st->backend == "kubernetes");
  CHECK(st->endpoint == s.url());
  CHECK(rev(st->revision) >= rev(same2.revision));
}

TEST_CASE("names that are not DNS-1123 go through the API server encoded", "[kubernetes][names]") {
  standin s;  // the stand-in refuses object names that are not DNS-1123 subdomains, like the API server
  auto ds = open_ds(s);
  const std::vector<std::string> names = {"10.244.0.0/26", "fd00:1::/122", "Upper_Case", "enc--looks-encoded", "plain"};
  for (auto& n : names) {
    INFO(n);
    auto c = ds.create(make("IPAMBlock", n, R"({"cidr":"x"})"));
    REQUIRE(c);
    CHECK(c->name == n);
    auto g = ds.get({"IPAMBlock", "", n});
    REQUIRE(g);
    CHECK(g->name == n);
  }
  auto l = ds.list({.kind = "IPAMBlock"});
  REQUIRE(l);
  std::set<std::string> listed;
  for (auto& r : l->items) listed.insert(r.name);
  CHECK(listed == std::set<std::string>(names.begin(), names.end()));
  cnf::list_options prefixed{.kind = "IPAMBlock", .name_prefix = "fd00:"};
  auto p = ds.list(prefixed);
  REQUIRE(p);
  REQUIRE(p->items.size() == 1);
  CHECK(p->items[0].name == "fd00:1::/122");
}

TEST_CASE("namespaced kinds, namespace filters and scope checks", "[kubernetes]") {
  standin s;
  auto ds = open_ds(s);
  REQUIRE(ds.create(make("NetworkPolicy", "allow-dns", R"({"order":100})", "default", {{"app", "dns"}})));
  REQUIRE(ds.create(make("NetworkPolicy", "deny-all", "{}", "dev")));
  REQUIRE(ds.create(make("NetworkPolicy", "allow-dns", "{}", "dev")));
  auto in_default = ds.list({.kind = "NetworkPolicy", .ns = "default"});
  REQUIRE(in_default);
  REQUIRE(in_default->items.size() == 1);
  CHECK(in_default->items[0].ns == "default");
  CHECK(in_default->items[0].labels.at("app") == "dns");
  auto all = ds.list({.kind = "NetworkPolicy"});
  REQUIRE(all);
  CHECK(all->items.size() == 3);
  CHECK(ds.get({"NetworkPolicy", "dev", "allow-dns"}));
  CHECK(ds.get({"NetworkPolicy", "other", "allow-dns"}).error().code == cnf::errc::not_found);

  // Kubernetes fixes each kind's scope.
  auto wrong = ds.create(make("IPPool", "p", "{}", "default"));
  REQUIRE(!wrong);
  CHECK(wrong.error().code == cnf::errc::invalid);
  CHECK_THAT(wrong.error().message, Catch::Contains("IPPool/default/p") && Catch::Contains("cluster-scoped"));
  auto unscoped = ds.create(make("WorkloadEndpoint", "w"));
  REQUIRE(!unscoped);
  CHECK_THAT(unscoped.error().message, Catch::Contains("namespaced"));
  auto none = ds.list({.kind = "IPPool", .ns = "default"});
  REQUIRE(none);
  CHECK(none->items.empty());
  CHECK(!none->revision.empty());
  auto bad_ns = ds.get({"NetworkPolicy", "Not_A_Namespace", "x"});
  REQUIRE(!bad_ns);
  CHECK(bad_ns.error().code == cnf::errc::invalid);

  // Labels the API server refuses: errc::invalid with its reason, nothing written.
  auto bad_label = ds.create(make("NetworkPolicy", "x", "{}", "dev", {{"not a key", "v"}}));
  REQUIRE(!bad_label);
  CHECK(bad_label.error().code == cnf::errc::invalid);
  CHECK_THAT(bad_label.error().message, Catch::Contains("NetworkPolicy/dev/x") && Catch::Contains("labels"));
  CHECK(ds.get({"NetworkPolicy", "dev", "x"}).error().code == cnf::errc::not_found);

  // A spec that is not a JSON object never reaches the server.
  auto bad_spec = ds.create(make("IPPool", "p", "{not json"));
  REQUIRE(!bad_spec);
  CHECK(bad_spec.error().code == cnf::errc::invalid);
  CHECK_THAT(bad_spec.error().message, Catch::Contains("IPPool/p") && Catch::Contains("spec"));
  CHECK(ds.create(make("IPPool", "p", "[1,2]")).error().code == cnf::errc::invalid);
  CHECK(ds.get({"IPPool", "", "p"}).error().code == cnf::errc::not_found);
}

TEST_CASE("lists page with continue tokens over one consistent snapshot", "[kubernetes][list]") {
  standin s;
  auto ds = open_ds(s);
  for (int i = 0; i < 25; ++i) {
    char n[16];
    std::snprintf(n, sizeof n, "peer-%02d", i);
    REQUIRE(ds.create(make("BGPPeer", n, "{\"asNumber\":" + std::to_string(64500 + i) + "}")));
  }
  auto first = ds.list({.kind = "BGPPeer", .limit = 10});
  REQUIRE(first);
  REQUIRE(first->items.size() == 10);
  REQUIRE(!first->continue_token.empty());
  CHECK(first->items.front().name == "peer-00");

  // Changes after the first page do not show in later pages.
  REQUIRE(ds.remove({"BGPPeer", "", "peer-20"}, {}));
  REQUIRE(ds.create(make("BGPPeer", "peer-99")));
  std::vector<std::string> rest;
  std::string token = first->continue_token;
  int pages = 1;
  while (!token.empty()) {
    auto page = ds.list({.kind = "BGPPeer", .limit = 10, .continue_token = token});
    REQUIRE(page);
    CHECK(page->revision == first->revision);
    for (auto& r : page->items) rest.push_back(r.name);
    token = page->continue_token;
    REQUIRE(++pages < 10);
  }
  CHECK(pages == 3);
  REQUIRE(rest.size() == 15);
  CHECK(rest.front() == "peer-10");
  CHECK(std::find(rest.begin(), rest.end(), "peer-20") != rest.end());
  CHECK(std::find(rest.begin(), rest.end(), "peer-99") == rest.end());

  // Through the type-erased wrapper: list_all glues pages; a prefix filter.
  cnf::any_datastore any(ds);
  auto whole = any.list_all({.kind = "BGPPeer", .limit = 7});
  REQUIRE(whole);
  CHECK(whole->items.size() == 25);
  auto teens = any.list_all({.kind = "BGPPeer", .name_prefix = "peer-1", .limit = 4});
  REQUIRE(teens);
  CHECK(teens->items.size() == 10);

  // A continue token older than the server's history: expired (410), list again.
  auto again = ds.list({.kind = "BGPPeer", .limit = 5});
  REQUIRE(again);
  REQUIRE(ds.create(make("BGPPeer", "peer-after-list")));
  s.command("compact");  // forgets every revision up to now, including the token's
  auto expired = ds.list({.kind = "BGPPeer", .limit = 5, .continue_token = again->continue_token});
  REQUIRE(!expired);
  CHECK(expired.error().code == cnf::errc::conflict);
  CHECK_THAT(expired.error().message, Catch::Contains("410"));
}

TEST_CASE("watch: initial state, in_sync, then changes in order", "[kubernetes][watch]") {
  standin s;
  auto ds = open_ds(s);
  auto a = ds.create(make("IPPool", "a")).value();
  auto b = ds.create(make("IPPool", "b")).value();
  REQUIRE(ds.create(make("BGPPeer", "not-a-pool")));
  recorder r;
  auto h = ds.watch(wopt("IPPool"), r.callback());
  REQUIRE(h);
  REQUIRE(r.wait_count(T::in_sync, 1));
  auto ev = r.events();
  REQUIRE(ev.size() == 3);
  CHECK(ev[0].kind == T::added);
  CHECK(ev[1].kind == T::added);
  std::set<std::string> initial = {ev[0].object.name, ev[1].object.name};
  CHECK(initial == std::set<std::string>{"a", "b"});
  CHECK(ev[2].kind == T::in_sync);

  auto m = a;
  m.spec = R"({"cidr":"10.1.0.0/16"})";
  auto u = ds.update(m).value();
  REQUIRE(ds.remove({"IPPool", "", "b"}, b.revision));
  auto c = ds.create(make("IPPool", "10.9.0.0/16")).value();  // an encoded name
  REQUIRE(r.wait_for(T::added, "10.9.0.0/16"));
  ev = r.events();
  REQUIRE(ev.size() == 6);
  CHECK(ev[3].kind == T::modified);
  CHECK(ev[3].object.name == "a");
  CHECK(ev[3].revision == u.revision);
  CHECK(same_json(ev[3].object.spec, m.spec));
  CHECK(ev[4].kind == T::deleted);
  CHECK(ev[4].object.name == "b");
  CHECK(ev[5].revision == c.revision);
  CHECK(rev(ev[3].revision) < rev(ev[4].revision));
  CHECK(rev(ev[4].revision) < rev(ev[5].revision));
  CHECK(errors_in(r) == 0);
  h->cancel();
  CHECK(eventually([&] { return s.active_watches() == 0; }));
}

TEST_CASE("a dropped watch stream resumes without losing or repeating events", "[kubernetes][watch]") {
  standin s;
  auto ds = open_ds(s);
  recorder r;
  auto h = ds.watch(wopt("HostEndpoint"), r.callback());
  REQUIRE(h);
  REQUIRE(r.wait_count(T::in_sync, 1));
  REQUIRE(eventually([&] { return s.active_watches() == 1; }));
  for (int round = 0; round < 3; ++round) {
    s.command("drop-watches");
    // Written while the client reconnects: it must resume from its last revision.
    for (int i = 0; i < 4; ++i) REQUIRE(ds.create(make("HostEndpoint", "h" + std::to_string(round) + "-" + std::to_string(i))));
  }
  REQUIRE(r.wait_count(T::added, 12));
  std::this_thread::sleep_for(300ms);  // nothing more may arrive
  auto ev = r.events();
  std::vector<std::string> names;
  for (auto& e : ev)
    if (e.kind == T::added) names.push_back(e.object.name);
  CHECK(names.size() == 12);
  CHECK(std::set<std::string>(names.begin(), names.end()).size() == 12);
  for (std::size_t i = 1; i < ev.size(); ++i)
    if (ev[i].kind == T::added && ev[i - 1].kind == T::added) CHECK(rev(ev[i - 1].revision) < rev(ev[i].revision));
  CHECK(errors_in(r) == 0);
  CHECK(r.count(T::resync_needed) == 0);
}

TEST_CASE("bookmarks move the resume revision past changes the watch does not see", "[kubernetes][watch]") {
  // A short history: 20 writes of another kind push the watch's own revision out of it.
  bool with_bookmark = GENERATE(true, false);
  INFO("bookmark sent: " << with_bookmark);
  standin s({.history = 5});
  auto ds = open_ds(s);
  REQUIRE(ds.create(make("IPPool", "p0")));
  recorder r;
  auto h = ds.watch(wopt("IPPool"), r.callback());
  REQUIRE(h);
  REQUIRE(r.wait_count(T::in_sync, 1));
  REQUIRE(eventually([&] { return s.active_watches() == 1; }));
  for (int i = 0; i < 20; ++i) REQUIRE(ds.create(make("BGPPeer", "x" + std::to_string(i))));
  if (with_bookmark) s.command("bookmark");
  s.command("drop-watches");  // the stand-in sends what it owes (the bookmark) before dropping
  if (with_bookmark) {
    REQUIRE(eventually([&] { return s.active_watches() == 1; }));
    auto p1 = ds.create(make("IPPool", "p1")).value();
    REQUIRE(r.wait_for(T::added, "p1"));
    CHECK(r.events().back().revision == p1.revision);
    CHECK(r.count(T::resync_needed) == 0);
    CHECK(errors_in(r) == 0);
  } else {
    // Without the bookmark the resume revision is too old: 410 -> resync_needed.
    REQUIRE(r.wait_count(T::resync_needed, 1));
    CHECK(r.events().back().kind == T::resync_needed);
  }
}

TEST_CASE("410 Gone on a watch becomes resync_needed and ends the watch", "[kubernetes][watch]") {
  std::string mode = GENERATE(std::string("event"), std::string("http"));
  INFO("410 as " << mode);
  standin s;
  auto ds = open_ds(s);
  auto first = ds.create(make("Node", "n1")).value();
  REQUIRE(ds.create(make("Node", "n2")));
  s.command("gone-mode " + mode);
  s.command("compact");
  recorder r;
  auto h = ds.watch(wopt("Node", first.revision), r.callback());
  REQUIRE(h);
  REQUIRE(r.wait_count(T::resync_needed, 1));
  auto ev = r.events();
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].revision == first.revision);
  // The watch has ended: nothing more arrives, and the server holds no stream for it.
  REQUIRE(ds.create(make("Node", "n3")));
  CHECK(eventually([&] { return s.active_watches() == 0; }));
  CHECK(r.events().size() == 1);
  // The consumer lists again and watches from the list's revision.
  auto l = ds.list({.kind = "Node"}).value();
  CHECK(l.items.size() == 3);
  recorder r2;
  auto h2 = ds.watch(wopt("Node", l.revision), r2.callback());
  REQUIRE(h2);
  REQUIRE(ds.create(make("Node", "n4")));
  REQUIRE(r2.wait_for(T::added, "n4"));
  CHECK(r2.count(T::resync_needed) == 0);
}

TEST_CASE("a watch that delivers garbage reports an error and recovers", "[kubernetes][watch][bad-input]") {
  standin s;
  auto ds = open_ds(s);
  recorder r;
  auto h = ds.watch(wopt("NetworkSet"), r.callback());
  REQUIRE(h);
  REQUIRE(r.wait_count(T::in_sync, 1));
  REQUIRE(eventually([&] { return s.active_watches() == 1; }));
  s.command("garbage");
  REQUIRE(r.wait_count(T::error, 1));
  auto err = r.events().back();
  CHECK(err.err.code == cnf::errc::invalid);
  CHECK_THAT(err.err.message, Catch::Contains("not JSON") && Catch::Contains(s.url()) && Catch::Contains("networksets"));
  // The watch reconnects from its last revision and keeps delivering.
  REQUIRE(ds.create(make("NetworkSet", "after", "{}", "default")));
  REQUIRE(r.wait_for(T::added, "after"));
  CHECK(r.count(T::error) == 1);
}

TEST_CASE("a custom resource whose spec does not parse is errc::invalid naming it", "[kubernetes][bad-input]") {
  standin s;
  auto ds = open_ds(s);
  REQUIRE(ds.create(make("IPPool", "good", R"({"cidr":"10.0.0.0/8"})")));
  auto start = ds.status().value().revision;
  recorder r;
  auto h = ds.watch(wopt("IPPool", start), r.callback());
  REQUIRE(h);
  REQUIRE(eventually([&] { return s.active_watches() == 1; }));
  // Written behind the plugin's back, as another client could (the real API server would
  // accept it too: the CRD keeps unknown fields, and a schema-less CRD keeps anything).
  s.command(R"(put-raw {"plural":"ippools","object":{"apiVersion":"crd.cnf.dev/v1","kind":"IPPool","metadata":{"name":"broken"},"spec":"not an object"}})");
  auto g = ds.get({"IPPool", "", "broken"});
  REQUIRE(!g);
  CHECK(g.error().code == cnf::errc::invalid);
  CHECK_THAT(g.error().message, Catch::Contains("IPPool/broken") && Catch::Contains("spec is a string"));
  auto l = ds.list({.kind = "IPPool"});
  REQUIRE(!l);
  CHECK(l.error().code == cnf::errc::invalid);
  CHECK_THAT(l.error().message, Catch::Contains("IPPool/broken"));
  REQUIRE(r.wait_count(T::error, 1));
  CHECK_THAT(r.events().back().err.message, Catch::Contains("IPPool/broken"));
  // The watch goes on past it.
  REQUIRE(ds.create(make("IPPool", "later")));
  REQUIRE(r.wait_for(T::added, "later"));
  // A malformed encoded name is refused the same way.
  s.command(R"(put-raw {"plural":"ippools","object":{"apiVersion":"crd.cnf.dev/v1","kind":"IPPool","metadata":{"name":"enc--a-zz"},"spec":{}}})");
  auto g2 = ds.get({"IPPool", "", "enc--a-zz"});  // looked up as the name "enc--a-zz", encoded differently
  CHECK(g2.error().code == cnf::errc::not_found);
  CHECK(!ds.list({.kind = "IPPool"}));
  // Once the broken spec is removed, the list names the object that remains bad.
  REQUIRE(ds.remove({"IPPool", "", "broken"}, {}));
  auto l3 = ds.list({.kind = "IPPool"});
  REQUIRE(!l3);
  CHECK_THAT(l3.error().message, Catch::Contains("enc--a-zz") && !Catch::Contains("IPPool/broken"));
  CHECK(ds.get({"IPPool", "", "good"}));
}

TEST_CASE("a wrong token is refused with a clear error", "[kubernetes][auth][bad-input]") {
  standin s;
  auto ds = open_ds(s, "wrong-token");
  auto g = ds.get({"IPPool", "", "x"});
  REQUIRE(!g);
  CHECK(g.error().code == cnf::errc::invalid);
  CHECK_THAT(g.error().message, Catch::Contains("401 Unauthorized") && Catch::Contains(s.url()) &&
                                    Catch::Contains("kubeconfig-wrong-token") && Catch::Contains("token"));
  auto w = ds.watch(wopt("IPPool"), [](const cnf::watch_event&) {});
  REQUIRE(!w);
  CHECK_THAT(w.error().message, Catch::Contains("401"));
  // No credentials at all.
  auto anon = k8s::datastore::open({.kubeconfig = s.kubeconfig("anon", "    {}\n").string()}).value();
  CHECK_THAT(anon.get({"IPPool", "", "x"}).error().message, Catch::Contains("401"));
}

TEST_CASE("TLS: a certificate from another CA fails verification naming the server", "[kubernetes][tls][bad-input]") {
  standin s;
  auto& pki = k8s_test::pki::get();
  auto cfg = s.kubeconfig("other-ca", "    token: " + s.token() + "\n", "    certificate-authority: " + pki.other_ca.string() + "\n");
  auto ds = k8s::datastore::open({.kubeconfig = cfg.string()}).value();
  auto g = ds.get({"IPPool", "", "x"});
  REQUIRE(!g);
  CHECK(g.error().code == cnf::errc::invalid);
  CHECK_THAT(g.error().message, Catch::Contains("certificate verify failed") && Catch::Contains(s.url()));
  // The right CA, given inline as certificate-authority-data, works.
  auto inline_ca = s.kubeconfig("inline-ca", "    token: " + s.token() + "\n",
                                "    certificate-authority-data: " + k8s_test::base64(k8s_test::slurp(pki.ca)) + "\n");
  auto ok = k8s::datastore::open({.kubeconfig = inline_ca.string()}).value();
  CHECK(ok.get({"IPPool", "", "x"}).error().code == cnf::errc::not_found);
  // The right CA but another name for the server: the certificate is only for 127.0.0.1.
  auto other = k8s::datastore::open({.kubeconfig = inline_ca.string(), .server = "https://localhost:" + std::to_string(s.port())});
  REQUIRE(other);
  auto mismatch = other->get({"IPPool", "", "x"});
  REQUIRE(!mismatch);
  CHECK_THAT(mismatch.error().message, Catch::Contains("certificate verify failed") && Catch::Contains("mismatch") &&
                                           Catch::Contains("https://localhost:"));
}

TEST_CASE("TLS client certificates authenticate", "[kubernetes][tls][auth]") {
  standin s({.client_certs = true});
  auto& pki = k8s_test::pki::get();
  auto cfg = s.kubeconfig("client-cert",
                          "    client-certificate-data: " + k8s_test::base64(k8s_test::slurp(pki.client_cert)) + "\n" +
                              "    client-key-data: " + k8s_test::base64(k8s_test::slurp(pki.client_key)) + "\n");
  auto ds = k8s::datastore::open({.kubeconfig = cfg.string()}).value();
  REQUIRE(ds.create(make("IPPool", "by-cert")));
  CHECK(ds.get({"IPPool", "", "by-cert"}));
  // Files instead of inline data.
  auto files = s.kubeconfig("client-cert-files", "    client-certificate: " + pki.client_cert.string() + "\n" +
                                                     "    client-key: " + pki.client_key.string() + "\n");
  CHECK(k8s::datastore::open({.kubeconfig = files.string()}).value().get({"IPPool", "", "by-cert"}));
  // A key that does not belong to the certificate is refused before connecting.
  auto mixed = s.kubeconfig("mixed", "    client-certificate: " + pki.client_cert.string() + "\n" +
                                         "    client-key: " + pki.server_key.string() + "\n");
  auto bad = k8s::datastore::open({.kubeconfig = mixed.string()});
  REQUIRE(!bad);
  CHECK_THAT(bad.error().message, Catch::Contains("does not belong"));
}

TEST_CASE("an unreachable or silent API server is errc::unavailable naming the endpoint", "[kubernetes][bad-input]") {
  SECTION("nothing listens") {
    int port = k8s_test::closed_port();
    standin s;
    auto ds = k8s::datastore::open({.kubeconfig = s.kubeconfig_with_token().string(),
                                    .server = "https://127.0.0.1:" + std::to_string(port)})
                  .value();
    auto g = ds.get({"IPPool", "", "x"});
    REQUIRE(!g);
    CHECK(g.error().code == cnf::errc::unavailable);
    CHECK_THAT(g.error().message, Catch::Contains("https://127.0.0.1:" + std::to_string(port)) && Catch::Contains("connect"));
    auto w = ds.watch(wopt("IPPool"), [](const cnf::watch_event&) {});
    REQUIRE(!w);
    CHECK(w.error().code == cnf::errc::unavailable);
  }
  SECTION("a server that accepts and never answers: bounded by timeout_ms") {
    k8s_test::silent_listener quiet;
    standin s;
    auto ds = k8s::datastore::open({.kubeconfig = s.kubeconfig_with_token().string(),
                                    .server = "https://127.0.0.1:" + std::to_string(quiet.port()),
                                    .timeout = 300ms})
                  .value();
    auto t0 = std::chrono::steady_clock::now();
    auto g = ds.get({"IPPool", "", "x"});
    auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE(!g);
    CHECK(g.error().code == cnf::errc::unavailable);
    CHECK_THAT(g.error().message, Catch::Contains("no reply within 300 ms") &&
                                      Catch::Contains("https://127.0.0.1:" + std::to_string(quiet.port())));
    CHECK(took < 30s);  // does not hang (a generous bound, not a timing test)
  }
  SECTION("the server goes away under a running watch") {
    standin s;
    auto ds = open_ds(s);
    recorder r;
    auto h = ds.watch(wopt("IPPool"), r.callback());
    REQUIRE(h);
    REQUIRE(r.wait_count(T::in_sync, 1));
    std::string url = s.url();
    s.stop();
    auto g = ds.get({"IPPool", "", "x"});
    REQUIRE(!g);
    CHECK(g.error().code == cnf::errc::unavailable);
    CHECK_THAT(g.error().message, Catch::Contains(url));
    REQUIRE(r.wait_count(T::error, 1));  // the watch reports that it cannot reconnect, and keeps trying
    CHECK(r.events().back().err.code == cnf::errc::unavailable);
    h->cancel();  // returns promptly even while reconnecting
  }
}

TEST_CASE("plain http only with insecure_http = true", "[kubernetes][settings]") {
  standin s({.tls = false});
  auto o = s.options();
  o.insecure_http = false;
  auto refused = k8s::datastore::open(o);
  REQUIRE(!refused);
  CHECK(refused.error().code == cnf::errc::invalid);
  CHECK_THAT(refused.error().message, Catch::Contains("insecure_http") && Catch::Contains(s.url()));
  o.insecure_http = true;
  auto ds = k8s::datastore::open(o).value();
  REQUIRE(ds.create(make("IPPool", "over-http")));
  CHECK(ds.get({"IPPool", "", "over-http"}));
}

TEST_CASE("in-cluster configuration reaches the server with the service account", "[kubernetes][in-cluster]") {
  standin s;
  auto sa = s.dir() / "serviceaccount";
  std::filesystem::create_directories(sa);
  k8s_test::spit(sa / "token", s.token() + "\n");
  k8s_test::spit(sa / "ca.crt", k8s_test::slurp(k8s_test::pki::get().ca));
  ::setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
  ::setenv("KUBERNETES_SERVICE_PORT", std::to_string(s.port()).c_str(), 1);
  auto ds = k8s::datastore::open({.in_cluster = true, .serviceaccount_dir = sa.string()});
  ::unsetenv("KUBERNETES_SERVICE_HOST");
  ::unsetenv("KUBERNETES_SERVICE_PORT");
  REQUIRE(ds);
  CHECK(ds->server() == s.url());
  REQUIRE(ds->create(make("IPPool", "in-cluster")));
  CHECK(ds->get({"IPPool", "", "in-cluster"}));
}

TEST_CASE("core Nodes, Namespaces and Pods are read with their labels and addresses", "[kubernetes][core]") {
  namespace json = boost::json;
  json::array nodes, namespaces, pods;
  nodes.push_back(json::parse(R"({"metadata":{"name":"node-1","resourceVersion":"11","labels":{"kubernetes.io/hostname":"node-1"}},
     "spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24","fd00:1::/64"]},
     "status":{"addresses":[{"type":"InternalIP","address":"192.168.0.11"},{"type":"Hostname","address":"node-1"}]}})"));
  nodes.push_back(json::parse(R"({"metadata":{"name":"node-2","resourceVersion":"12"},"spec":{"podCIDR":"10.244.2.0/24"},
     "status":{"addresses":[{"type":"InternalIP","address":"192.168.0.12"}]}})"));
  for (auto n : {"default", "kube-system", "team-a"})
    namespaces.push_back(json::object{{"metadata", json::object{{"name", n}, {"labels", json::object{{"kubernetes.io/metadata.name", n}}}}}});
  for (int i = 0; i < 520; ++i) {
    std::string ns = i % 2 ? "team-a" : "default";
    json::object pod{{"metadata", json::object{{"name", "pod-" + std::to_string(i)}, {"namespace", ns},
                                               {"labels", json::object{{"app", "web"}, {"index", std::to_string(i)}}}}},
                     {"spec", json::object{{"nodeName", i % 3 ? "node-1" : "node-2"}, {"serviceAccountName", "default"}}},
                     {"status", json::object{{"phase", "Running"}, {"hostIP", "192.168.0.11"}}}};
    if (i == 0) pod["status"].as_object()["podIP"] = "10.244.2.7";
    else pod["status"].as_object()["podIPs"] = json::array{json::object{{"ip", "10.244.1." + std::to_string(i % 250)}},
                                                           json::object{{"ip", "fd00:1::" + std::to_string(i)}}};
    if (i == 1) pod["spec"].as_object()["hostNetwork"] = true;
    pods.push_back(std::move(pod));
  }
  standin s({.fixtures = json::serialize(json::object{{"nodes", nodes}, {"namespaces", namespaces}, {"pods", pods}})});
  auto ds = open_ds(s);

  auto ns = ds.list_nodes();
  REQUIRE(ns);
  REQUIRE(ns->size() == 2);
  auto& n1 = (*ns)[0];
  CHECK(n1.name == "node-1");
  CHECK(n1.labels.at("kubernetes.io/hostname") == "node-1");
  CHECK(n1.pod_cidrs == std::vector<std::string>{"10.244.1.0/24", "fd00:1::/64"});
  CHECK(n1.addresses == std::vector<k8s::node_address>{{"InternalIP", "192.168.0.11"}, {"Hostname", "node-1"}});
  CHECK(n1.resource_version == "11");
  CHECK((*ns)[1].pod_cidrs == std::vector<std::string>{"10.244.2.0/24"});
  auto one = ds.get_node("node-2");
  REQUIRE(one);
  CHECK(one->addresses.at(0).address == "192.168.0.12");
  CHECK(ds.get_node("node-9").error().code == cnf::errc::not_found);

  auto nss = ds.list_namespaces();
  REQUIRE(nss);
  REQUIRE(nss->size() == 3);
  CHECK((*nss)[2].name == "team-a");
  CHECK((*nss)[2].labels.at("kubernetes.io/metadata.name") == "team-a");

  auto all = ds.list_pods();  // 520 pods: more than one page of 500
  REQUIRE(all);
  CHECK(all->size() == 520);
  auto& p0 = (*all)[0];
  CHECK(p0.name == "pod-0");
  CHECK(p0.ns == "default");
  CHECK(p0.pod_ips == std::vector<std::string>{"10.244.2.7"});
  CHECK(p0.node_name == "node-2");
  auto p1_at = std::find_if(all->begin(), all->end(), [](auto& p) { return p.name == "pod-1"; });
  REQUIRE(p1_at != all->end());
  auto& p1 = *p1_at;
  CHECK(p1.host_network);
  CHECK(p1.pod_ips == std::vector<std::string>{"10.244.1.1", "fd00:1::1"});
  CHECK(p1.labels.at("index") == "1");
  CHECK(p1.phase == "Running");
  auto team = ds.list_pods("team-a");
  REQUIRE(team);
  CHECK(team->size() == 260);
  for (auto& p : *team) CHECK(p.ns == "team-a");
  CHECK(ds.list_pods("Bad Namespace").error().code == cnf::errc::invalid);
}

TEST_CASE("watch events run on the host's executor when it gives one", "[kubernetes][watch]") {
  // A minimal host loop: one thread running posted functions in order.
  struct loop final : cnf::executor {
    std::mutex m;
    std::condition_variable cv;
    std::deque<std::function<void()>> q;
    bool stop = false;
    std::thread t{[this] {
      std::unique_lock lk(m);
      for (;;) {
        cv.wait(lk, [&] { return stop || !q.empty(); });
        if (q.empty()) return;
        auto f = std::move(q.front());
        q.pop_front();
        lk.unlock();
        f();
        lk.lock();
      }
    }};
    void post(std::function<void()> f) override {
      std::lock_guard lk(m);
      q.push_back(std::move(f));
      cv.notify_all();
    }
    timer_id post_after(std::chrono::milliseconds, std::function<void()> f) override {
      post(std::move(f));
      return 0;  // posted at once: nothing left to cancel
    }
    bool cancel(timer_id) override { return false; }
    ~loop() override {
      {
        std::lock_guard lk(m);
        stop = true;
        cv.notify_all();
      }
      t.join();
    }
  } host;
  standin s;
  auto ds = k8s::datastore::open(s.options(), nullptr, &host).value();
  std::atomic<int> on_loop{0}, elsewhere{0};
  recorder r;
  auto cb = r.callback();
  auto h = ds.watch(wopt("IPReservation"), [&](const cnf::watch_event& e) {
    (std::this_thread::get_id() == host.t.get_id() ? on_loop : elsewhere)++;
    cb(e);
  });
  REQUIRE(h);
  REQUIRE(ds.create(make("IPReservation", "r1")));
  REQUIRE(r.wait_for(T::added, "r1"));
  CHECK(on_loop == 2);  // in_sync, added
  CHECK(elsewhere == 0);
  h->cancel();
}

TEST_CASE("concurrent compare-and-swap writers on one resource never lose an update", "[kubernetes][cas]") {
  standin s;
  auto ds = open_ds(s);
  REQUIRE(ds.create(make("IPAMConfig", "counter", R"({"value":0})")));
  constexpr int writers = 4, increments = 10;
  std::atomic<int> conflicts{0}, failures{0};
  std::vector<std::thread> ts;
  auto opts = s.options();
  for (int t = 0; t < writers; ++t) {
    ts.emplace_back([&] {
      auto mine = k8s::datastore::open(opts);  // its own connections
      if (!mine) { failures++; return; }
      for (int done = 0; done < increments;) {
        auto cur = mine->get({"IPAMConfig", "", "counter"});
        if (!cur) { failures++; return; }
        auto v = boost::json::parse(cur->spec).as_object().at("value").as_int64();
        cur->spec = "{\"value\":" + std::to_string(v + 1) + "}";
        auto u = mine->update(*cur);
        if (u) ++done;
        else if (u.error().code == cnf::errc::conflict) conflicts++;
        else { failures++; return; }
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(failures == 0);
  auto final_value = boost::json::parse(ds.get({"IPAMConfig", "", "counter"})->spec).as_object().at("value").as_int64();
  CHECK(final_value == writers * increments);
  INFO("conflicts seen: " << conflicts.load());
}

TEST_CASE("the plugin loads through cnf's loader; settings errors name the key", "[kubernetes][plugin]") {
  standin s;
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  std::string profile = "[datastore]\nplugin = \"kubernetes\"\nkubeconfig = \"" + s.kubeconfig_with_token().string() +
                        "\"\ntimeout_ms = 3000\n";
  auto ds = loader.make<cnf::part::datastore>("kubernetes", cnf::plugin_context{}, {profile, "test.toml", "datastore"});
  REQUIRE(ds);
  auto st = ds->status();
  REQUIRE(st);
  CHECK(st->backend == "kubernetes");
  CHECK(st->endpoint == s.url());
  auto c = ds->create(make("BGPConfiguration", "default", R"({"asNumber":64512})"));
  REQUIRE(c);
  CHECK(ds->get({"BGPConfiguration", "", "default"}));

  std::string bad = "[datastore]\nplugin = \"kubernetes\"\nkubeconfig = \"x\"\ntimeout_ms = -1\nwatch_timout_s = 3\n";
  auto refused = loader.make<cnf::part::datastore>("kubernetes", cnf::plugin_context{}, {bad, "test.toml", "datastore"});
  REQUIRE(!refused);
  CHECK_THAT(refused.error().message, Catch::Contains("test.toml:4") && Catch::Contains("datastore.timeout_ms") &&
                                          Catch::Contains("did you mean 'watch_timeout_s'"));
}

// The kinds the policy part reads (cnf/policy/host.hpp), as on the local and etcd datastores:
// Calico's NetworkPolicy, GlobalNetworkPolicy, NetworkSet and GlobalNetworkSet as cnf's CRDs;
// KubernetesNetworkPolicy as the native networking.k8s.io/v1 NetworkPolicy and Namespace as the
// core v1 Namespace (the stand-in serves both as Kubernetes does: at their own paths, with their
// own apiVersion and kind, and refuses anything else there).
TEST_CASE("policy kinds: Calico's as CRDs, K8s NetworkPolicy and Namespace as Kubernetes' own types", "[kubernetes][policy]") {
  CHECK(k8s::api_resource_of("KubernetesNetworkPolicy").prefix == "/apis/networking.k8s.io/v1");
  CHECK(k8s::api_resource_of("KubernetesNetworkPolicy").kind == "NetworkPolicy");
  CHECK(k8s::api_resource_of("Namespace").prefix == "/api/v1");
  CHECK(k8s::api_resource_of("NetworkPolicy").prefix == "/apis/crd.cnf.dev/v1");
  CHECK(k8s::api_resource_of("GlobalNetworkSet").plural == "globalnetworksets");

  standin s;
  auto ds = open_ds(s);
  const std::string calico_np = R"({"selector":"app == 'web'","types":["Ingress"],"ingress":[{"action":"Allow"}]})";
  const std::string k8s_np = R"({"podSelector":{"matchLabels":{"app":"web"}},"policyTypes":["Ingress"]})";
  // Same name and namespace in both NetworkPolicy APIs: two different objects.
  auto cnp = ds.create(make("NetworkPolicy", "web", calico_np, "team-a"));
  REQUIRE(cnp);
  auto knp = ds.create(make("KubernetesNetworkPolicy", "web", k8s_np, "team-a"));
  REQUIRE(knp);
  CHECK(knp->kind == "KubernetesNetworkPolicy");
  REQUIRE(ds.create(make("GlobalNetworkPolicy", "deny-all", R"j({"selector":"all()","order":2000})j")));
  REQUIRE(ds.create(make("NetworkSet", "partners", R"({"nets":["192.0.2.0/24"]})", "team-a", {{"role", "partner"}})));
  REQUIRE(ds.create(make("GlobalNetworkSet", "internet", R"({"nets":["0.0.0.0/0"]})", "", {{"role", "internet"}})));
  auto ns = ds.create(make("Namespace", "team-b", "{}", "", {{"team", "b"}}));
  REQUIRE(ns);

  auto g = ds.get({"KubernetesNetworkPolicy", "team-a", "web"});
  REQUIRE(g);
  CHECK(same_json(g->spec, k8s_np));
  auto gc = ds.get({"NetworkPolicy", "team-a", "web"});
  REQUIRE(gc);
  CHECK(same_json(gc->spec, calico_np));
  auto gs = ds.get({"GlobalNetworkSet", "", "internet"});
  REQUIRE(gs);
  CHECK(gs->labels.at("role") == "internet");
  auto l = ds.list({.kind = "NetworkSet"});
  REQUIRE(l);
  REQUIRE(l->items.size() == 1);
  CHECK(l->items[0].ns == "team-a");

  // The Namespace is a core v1 Namespace: the core read shows it with its labels.
  auto core = ds.list_namespaces();
  REQUIRE(core);
  bool seen = false;
  for (auto& n : *core)
    if (n.name == "team-b") seen = n.labels == std::map<std::string, std::string>{{"team", "b"}};
  CHECK(seen);

  // Scopes are Kubernetes': a K8s NetworkPolicy needs a namespace, a GlobalNetworkSet has none.
  auto no_ns = ds.create(make("KubernetesNetworkPolicy", "x", k8s_np));
  REQUIRE_FALSE(no_ns);
  CHECK(no_ns.error().code == cnf::errc::invalid);
  CHECK_THAT(no_ns.error().message, Catch::Contains("namespaced"));
  auto with_ns = ds.create(make("GlobalNetworkSet", "y", "{}", "team-a"));
  REQUIRE_FALSE(with_ns);
  CHECK_THAT(with_ns.error().message, Catch::Contains("cluster-scoped"));

  // Watches of the native types deliver their changes; update and remove work by revision.
  recorder knps, nss;
  auto hk = ds.watch(wopt("KubernetesNetworkPolicy"), knps.callback());
  auto hn = ds.watch(wopt("Namespace"), nss.callback());
  REQUIRE(hk);
  REQUIRE(hn);
  REQUIRE(knps.wait_count(T::in_sync, 1));
  REQUIRE(nss.wait_count(T::in_sync, 1));
  auto changed = *knp;
  changed.spec = R"({"podSelector":{},"policyTypes":["Ingress","Egress"]})";
  auto u = ds.update(changed);
  REQUIRE(u);
  auto relabelled = *ns;
  relabelled.labels = {{"team", "c"}};
  REQUIRE(ds.update(relabelled));
  REQUIRE(knps.wait_for(T::modified, "web"));
  REQUIRE(nss.wait_for(T::modified, "team-b"));
  REQUIRE(ds.remove({"KubernetesNetworkPolicy", "team-a", "web"}, u->revision));
  REQUIRE(knps.wait_for(T::deleted, "web"));
  CHECK(ds.get({"NetworkPolicy", "team-a", "web"}));  // the Calico one stays
  for (auto& e : knps.events())
    if (e.kind == T::modified) CHECK(same_json(e.object.spec, changed.spec));
  for (auto& e : nss.events())
    if (e.kind == T::modified) CHECK(e.object.labels.at("team") == "c");
  CHECK(errors_in(knps) == 0);
  CHECK(errors_in(nss) == 0);
  hk->cancel();
  hn->cancel();
}

// ServiceAccount (the policy part reads its labels) is the core v1 ServiceAccount, namespaced,
// at /api/v1/namespaces/<ns>/serviceaccounts: created, read, listed, watched, relabelled, removed.
TEST_CASE("ServiceAccount is the core v1 ServiceAccount", "[kubernetes][policy]") {
  standin s;
  auto ds = open_ds(s);
  recorder sas;
  auto h = ds.watch(wopt("ServiceAccount"), sas.callback());
  REQUIRE(h);
  REQUIRE(sas.wait_count(T::in_sync, 1));
  auto sa = ds.create(make("ServiceAccount", "front", "{}", "team-a", {{"role", "web"}}));
  REQUIRE(sa);
  auto g = ds.get({"ServiceAccount", "team-a", "front"});
  REQUIRE(g);
  CHECK(g->labels == std::map<std::string, std::string>{{"role", "web"}});
  auto l = ds.list({.kind = "ServiceAccount"});
  REQUIRE(l);
  REQUIRE(l->items.size() == 1);
  CHECK(l->items[0].ns == "team-a");
  auto no_ns = ds.create(make("ServiceAccount", "x", "{}"));
  REQUIRE_FALSE(no_ns);
  CHECK_THAT(no_ns.error().message, Catch::Contains("namespaced"));
  auto relabelled = *sa;
  relabelled.labels = {{"role", "db"}};
  auto u = ds.update(relabelled);
  REQUIRE(u);
  REQUIRE(sas.wait_for(T::modified, "front"));
  REQUIRE(ds.remove({"ServiceAccount", "team-a", "front"}, u->revision));
  REQUIRE(sas.wait_for(T::deleted, "front"));
  for (auto& e : sas.events())
    if (e.kind == T::modified) CHECK(e.object.labels.at("role") == "db");
  CHECK(errors_in(sas) == 0);
}

// Pod (the policy part reads its labels; cnf/policy/host.hpp) is the core v1 Pod, namespaced,
// read, listed and watched like the other kinds: a label changed on the Pod (kubectl label)
// reaches a watcher as a modification with the new labels and the pod's spec.
TEST_CASE("Pod is the core v1 Pod: read, listed and watched as a kind", "[kubernetes][policy]") {
  namespace json = boost::json;
  CHECK(k8s::api_resource_of("Pod").prefix == "/api/v1");
  CHECK(k8s::api_resource_of("Pod").plural == "pods");
  CHECK(k8s::api_resource_of("Pod").custom == false);
  CHECK(k8s::kind_is_namespaced("Pod") == true);
  json::array pods;
  pods.push_back(json::parse(R"({"metadata":{"name":"a","namespace":"x","labels":{"app":"web"}},
     "spec":{"nodeName":"node-1","serviceAccountName":"front","containers":[{"name":"c","image":"busybox"}]},
     "status":{"podIPs":[{"ip":"10.244.1.2"}]}})"));
  standin s({.fixtures = json::serialize(json::object{{"pods", pods}})});
  auto ds = open_ds(s);
  auto g = ds.get({"Pod", "x", "a"});
  REQUIRE(g);
  CHECK(g->labels == std::map<std::string, std::string>{{"app", "web"}});
  // The spec is a summary: what the policy part reads, status.podIPs as podIPs; no containers.
  CHECK(json::parse(g->spec) == json::parse(R"({"nodeName":"node-1","serviceAccountName":"front","podIPs":["10.244.1.2"]})"));
  CHECK(ds.get({"Pod", "x", "nope"}).error().code == cnf::errc::not_found);
  auto l = ds.list({.kind = "Pod"});
  REQUIRE(l);
  REQUIRE(l->items.size() == 1);
  CHECK(l->items[0].ns == "x");

  recorder pw;
  auto h = ds.watch(wopt("Pod"), pw.callback());
  REQUIRE(h);
  REQUIRE(pw.wait_count(T::in_sync, 1));
  // The pod relabelled (as `kubectl label pod a role=client` would) and a second pod created.
  auto relabelled = *g;
  relabelled.labels["role"] = "client";
  auto u = ds.update(relabelled);
  INFO((u ? std::string() : u.error().message));
  REQUIRE(u);
  REQUIRE(pw.wait_for(T::modified, "a"));
  REQUIRE(ds.create(make("Pod", "b", R"({"nodeName":"node-1"})", "x", {{"app", "db"}})));
  REQUIRE(pw.wait_for(T::added, "b"));
  bool seen = false;
  for (auto& e : pw.events())
    if (e.kind == T::modified && e.object.name == "a") {
      seen = true;
      CHECK(e.object.labels.at("role") == "client");
      CHECK(json::parse(e.object.spec).at("nodeName") == "node-1");
    }
  CHECK(seen);
  REQUIRE(ds.remove({"Pod", "x", "b"}, ""));
  REQUIRE(pw.wait_for(T::deleted, "b"));
  CHECK(errors_in(pw) == 0);
  h->cancel();
}

// A ServiceAccount has no spec: cnf writes none (a real API server drops the unknown field,
// the stand-in refuses it as a strict one would), and refuses a spec with content.
TEST_CASE("ServiceAccount objects are written without a spec", "[kubernetes][policy]") {
  CHECK_FALSE(k8s::api_resource_of("ServiceAccount").has_spec);
  CHECK(k8s::api_resource_of("Namespace").has_spec);
  standin s;
  auto ds = open_ds(s);
  auto sa = ds.create(make("ServiceAccount", "back", "{}", "team-a", {{"role", "db"}}));
  REQUIRE(sa);
  auto relabelled = *sa;
  relabelled.labels = {{"role", "web"}};
  REQUIRE(ds.update(relabelled));
  auto g = ds.get({"ServiceAccount", "team-a", "back"});
  REQUIRE(g);
  CHECK(g->labels.at("role") == "web");
  CHECK(g->spec == "{}");
  auto bad = ds.create(make("ServiceAccount", "odd", R"({"automountServiceAccountToken":false})", "team-a"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == cnf::errc::invalid);
  CHECK_THAT(bad.error().message, Catch::Contains("ServiceAccount/team-a/odd") && Catch::Contains("has no spec"));
}
