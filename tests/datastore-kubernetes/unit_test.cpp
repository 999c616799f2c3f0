// Unit tests of the kubernetes datastore that need no server: name encoding, CRD plurals
// against the manifests in examples/crds, settings validation and kubeconfig errors.
#include "standin.hpp"

#include <cnf/plugins/kubernetes.hpp>

#include <catch2/catch.hpp>

#include <random>
#include <regex>
#include <set>

namespace k8s = cnf::kubernetes;
using k8s_test::spit;
using k8s_test::temp_dir;

TEST_CASE("names that are DNS-1123 subdomains stay as they are", "[kubernetes][names]") {
  for (std::string n : {"default-ipv4", "node-1", "a", "10-244-0-0-26", "a.b.c", "x1.y2"}) {
    INFO(n);
    CHECK(k8s::is_dns1123_subdomain(n));
    CHECK(k8s::encode_name(n).value() == n);
    CHECK(k8s::decode_name(n).value() == n);
  }
}

TEST_CASE("other names are encoded reversibly into valid object names", "[kubernetes][names]") {
  CHECK(k8s::encode_name("10.244.0.0/26").value() == "enc--10.244.0.0-2f26");
  CHECK(k8s::encode_name("fd00::/120").value() == "enc--fd00-3a-3a-2f120");
  CHECK(k8s::encode_name("Upper").value() == "enc---55pper");
  CHECK(k8s::encode_name("enc--x").value() == "enc--enc-2d-2dx");  // the marker itself is escaped
  CHECK(k8s::encode_name(".a.").value() == "enc---2ea-2e");
  for (const std::string& n : std::vector<std::string>{"10.244.0.0/26", "fd00:1::/122", "host:node-1", "UPPER_case", "enc--x", "a..b", "-lead", "trail-",
                        "sp ace", std::string("nul\0byte", 8), "ünïcode", "x.", ".x", "1.2.3.4"}) {
    INFO(n);
    auto e = k8s::encode_name(n);
    REQUIRE(e);
    CHECK(k8s::is_dns1123_subdomain(*e));
    CHECK(k8s::decode_name(*e).value() == n);
  }
  // Random bytes round-trip, and distinct names never share an object name.
  std::mt19937 rng(42);
  std::set<std::string> objects;
  std::set<std::string> names;
  for (int i = 0; i < 3000; ++i) {
    std::string n(1 + rng() % 20, '\0');
    const std::string alphabet = "abz09.-/:_AZ ";
    for (auto& c : n) c = (rng() % 4 == 0) ? static_cast<char>(rng() % 256) : alphabet[rng() % alphabet.size()];
    auto e = k8s::encode_name(n);
    REQUIRE(e);
    INFO(n << " -> " << *e);
    REQUIRE(k8s::is_dns1123_subdomain(*e));
    REQUIRE(k8s::decode_name(*e).value() == n);
    if (names.insert(n).second) CHECK(objects.insert(*e).second);
  }
}

TEST_CASE("bad names are refused", "[kubernetes][names]") {
  auto empty = k8s::encode_name("");
  REQUIRE(!empty);
  CHECK(empty.error().code == cnf::errc::invalid);
  auto longer = k8s::encode_name(std::string(200, '/'));
  REQUIRE(!longer);
  CHECK(longer.error().code == cnf::errc::invalid);
  CHECK(longer.error().message.find("too long") != std::string::npos);
  // Malformed or non-canonical encodings do not decode.
  for (std::string bad : {"enc--a-zz", "enc--a-2", "enc---61", "enc--a-2F"}) {
    INFO(bad);
    auto d = k8s::decode_name(bad);
    REQUIRE(!d);
    CHECK(d.error().code == cnf::errc::invalid);
  }
}

TEST_CASE("every cnf kind has a CRD manifest with the plural and scope the plugin uses", "[kubernetes][crds]") {
  namespace cnfk = cnf::kinds;
  for (auto kind : {cnfk::ip_pool, cnfk::ipam_block, cnfk::block_affinity, cnfk::ipam_handle, cnfk::ipam_config,
                    cnfk::ip_reservation, cnfk::node, cnfk::bgp_peer, cnfk::bgp_configuration, cnfk::workload_endpoint,
                    cnfk::network_policy, cnfk::global_network_policy, cnfk::host_endpoint, cnfk::network_set,
                    std::string_view("GlobalNetworkSet")}) {
    std::string plural = k8s::plural_of(kind);
    INFO(kind << " -> " << plural);
    auto path = std::filesystem::path(CNF_TEST_SOURCE_DIR) / "examples/crds" / ("crd.cnf.dev_" + plural + ".yaml");
    REQUIRE(std::filesystem::exists(path));
    auto text = k8s_test::slurp(path);
    CHECK(text.find("\n  name: " + plural + ".crd.cnf.dev\n") != std::string::npos);
    CHECK(text.find("\n  group: crd.cnf.dev\n") != std::string::npos);
    CHECK(text.find("\n    kind: " + std::string(kind) + "\n") != std::string::npos);
    CHECK(text.find("\n    plural: " + plural + "\n") != std::string::npos);
    CHECK(text.find("\n  - name: v1\n") != std::string::npos);
    CHECK(text.find("x-kubernetes-preserve-unknown-fields: true") != std::string::npos);
    auto namespaced = k8s::kind_is_namespaced(kind);
    REQUIRE(namespaced);
    CHECK(text.find(*namespaced ? "\n  scope: Namespaced\n" : "\n  scope: Cluster\n") != std::string::npos);
  }
  CHECK(k8s::plural_of("BlockAffinity") == "blockaffinities");
  CHECK(k8s::plural_of("NetworkPolicy") == "networkpolicies");
  CHECK(!k8s::kind_is_namespaced("SomethingElse"));
  // Kubernetes' own types, with no CRD of cnf's: the native NetworkPolicy API and core Namespaces.
  CHECK(k8s::kind_is_namespaced("KubernetesNetworkPolicy") == true);
  CHECK(k8s::kind_is_namespaced("Namespace") == false);
  auto knp = k8s::api_resource_of("KubernetesNetworkPolicy");
  CHECK(knp.prefix == "/apis/networking.k8s.io/v1");
  CHECK(knp.plural == "networkpolicies");
  CHECK(knp.api_version == "networking.k8s.io/v1");
  CHECK(knp.kind == "NetworkPolicy");
  CHECK_FALSE(knp.custom);
  auto ns = k8s::api_resource_of("Namespace");
  CHECK(ns.prefix == "/api/v1");
  CHECK(ns.api_version == "v1");
  CHECK(ns.kind == "Namespace");
  // ServiceAccount: the core v1 type, namespaced (its labels drive serviceAccountSelector).
  CHECK(k8s::kind_is_namespaced("ServiceAccount") == true);
  auto sa = k8s::api_resource_of("ServiceAccount");
  CHECK(sa.prefix == "/api/v1");
  CHECK(sa.plural == "serviceaccounts");
  CHECK(sa.kind == "ServiceAccount");
  CHECK_FALSE(sa.custom);
  auto cnp = k8s::api_resource_of("NetworkPolicy", "example.org", "v2");
  CHECK(cnp.prefix == "/apis/example.org/v2");
  CHECK(cnp.api_version == "example.org/v2");
  CHECK(cnp.kind == "NetworkPolicy");
  CHECK(cnp.custom);
}

namespace {
cnf::result<k8s::options> configure(const std::string& toml, std::vector<std::string>* errors = nullptr) {
  auto s = cnf::settings::parse(toml, "profile.toml", "datastore");
  if (!s) return s.error();
  auto o = k8s::configure(*s);
  auto f = s->finish();
  if (!f) {
    if (errors)
      for (auto& d : s->diagnostics()) errors->push_back(d.to_string());
    return f.error();
  }
  return o;
}
}  // namespace

TEST_CASE("settings are validated and errors name the key", "[kubernetes][settings]") {
  auto ok = configure("[datastore]\nplugin = \"kubernetes\"\nkubeconfig = \"/etc/cnf/kubeconfig\"\ntimeout_ms = 1500\n");
  REQUIRE(ok);
  CHECK(ok->kubeconfig == "/etc/cnf/kubeconfig");
  CHECK(ok->timeout == std::chrono::milliseconds(1500));
  CHECK(ok->group == "crd.cnf.dev");
  CHECK(!ok->insecure_http);

  auto ic = configure("[datastore]\nin_cluster = true\nserviceaccount_dir = \"/tmp/sa\"\n");
  REQUIRE(ic);
  CHECK(ic->in_cluster);
  CHECK(ic->serviceaccount_dir == "/tmp/sa");

  struct bad_case {
    std::string toml;
    std::string key;
    std::string words;
  };
  for (auto& b : std::vector<bad_case>{
           {"[datastore]\n", "datastore.kubeconfig", "in_cluster = true"},
           {"[datastore]\nkubeconfig = \"k\"\nin_cluster = true\n", "datastore.in_cluster", "conflicts"},
           {"[datastore]\nkubeconfig = \"k\"\ntimeout_ms = 0\n", "datastore.timeout_ms", "between"},
           {"[datastore]\nkubeconfig = \"k\"\nserver = \"http://10.0.0.1:8080\"\n", "datastore.server", "insecure_http"},
           {"[datastore]\nkubeconfig = \"k\"\nserver = \"ftp://x\"\n", "datastore.server", "https://"},
           {"[datastore]\nkubeconfig = \"k\"\ngroup = \"Bad_Group\"\n", "datastore.group", "DNS"},
           {"[datastore]\nkubeconfig = \"k\"\ntimout_ms = 5\n", "datastore.timout_ms", "did you mean 'timeout_ms'"},
           {"[datastore]\nkubeconfig = \"k\"\nserviceaccount_dir = \"/x\"\n", "datastore.serviceaccount_dir", "in_cluster"},
           {"[datastore]\nkubeconfig = 5\n", "datastore.kubeconfig", "string"},
       }) {
    INFO(b.toml);
    auto r = configure(b.toml);
    REQUIRE(!r);
    CHECK(r.error().code == cnf::errc::invalid);
    CHECK_THAT(r.error().message, Catch::Contains(b.key) && Catch::Contains(b.words) && Catch::Contains("profile.toml:"));
  }
  // Plain http with insecure_http = true is accepted.
  CHECK(configure("[datastore]\nkubeconfig = \"k\"\nserver = \"http://127.0.0.1:8080\"\ninsecure_http = true\n"));
}

TEST_CASE("kubeconfig problems are reported naming the file and the key", "[kubernetes][kubeconfig]") {
  temp_dir d;
  auto open_with = [&](const std::string& yaml) {
    auto p = d.path() / "kubeconfig";
    spit(p, yaml);
    k8s::options o;
    o.kubeconfig = p.string();
    return k8s::datastore::open(o);
  };
  const std::string head = "apiVersion: v1\nkind: Config\ncurrent-context: c\n";
  const std::string ctx = "contexts:\n- name: c\n  context:\n    cluster: k\n    user: u\n";
  const std::string cluster = "clusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n";
  const std::string users = "users:\n- name: u\n  user:\n    token: t\n";
  struct bad_case {
    std::string yaml;
    std::string words;
  };
  for (auto& b : std::vector<bad_case>{
           {"{ not: yaml: at all", "not valid YAML"},
           {"apiVersion: v1\nkind: Config\n" + ctx + cluster, "current-context"},
           {head + cluster, "no context named 'c'"},
           {head + ctx, "no cluster named 'k'"},
           {head + ctx + "clusters:\n- name: k\n  cluster:\n    certificate-authority-data: eA==\n", "clusters[k].cluster.server: is required"},
           {head + ctx + "clusters:\n- name: k\n  cluster:\n    server: http://127.0.0.1:8080\n" + users, "insecure_http"},
           {head + ctx + cluster + "    certificate-authority-data: '***'\n", "certificate-authority-data: not valid base64"},
           {head + ctx + cluster + "    certificate-authority: missing-ca.crt\n", "missing-ca.crt"},
           {head + ctx + cluster + "    certificate-authority-data: " + k8s_test::base64("not a certificate") + "\n" + users,
            "not a usable PEM certificate"},
           {head + ctx + cluster + "    insecure-skip-tls-verify: true\n", "insecure-skip-tls-verify"},
           {head + ctx + cluster, "no user named 'u'"},
           {head + ctx + cluster + "users:\n- name: u\n  user:\n    exec:\n      command: aws\n", "users[u].user.exec: is not supported"},
           {head + ctx + cluster + "users:\n- name: u\n  user:\n    client-certificate-data: " + k8s_test::base64("x") + "\n",
            "client-certificate and client-key must be given together"},
           {head + ctx + cluster + "users:\n- name: u\n  user:\n    tokenFile: /nonexistent/token\n", "/nonexistent/token"},
       }) {
    INFO(b.yaml);
    auto r = open_with(b.yaml);
    REQUIRE(!r);
    CHECK(r.error().code == cnf::errc::invalid);
    CHECK_THAT(r.error().message, Catch::Contains(b.words));
    CHECK_THAT(r.error().message, Catch::Contains((d.path() / "kubeconfig").string()) || Catch::Contains("certificate-authority"));
  }
  // A missing file.
  k8s::options o;
  o.kubeconfig = (d.path() / "nope").string();
  auto r = k8s::datastore::open(o);
  REQUIRE(!r);
  CHECK_THAT(r.error().message, Catch::Contains("nope") && Catch::Contains("cannot read"));
  // A good one with relative paths and a token file: opens (no connection is made yet).
  spit(d.path() / "tok", "abc\n");
  spit(d.path() / "ca.crt", k8s_test::slurp(k8s_test::pki::get().ca));
  auto good = open_with(head + ctx + cluster + "    certificate-authority: ca.crt\nusers:\n- name: u\n  user:\n    tokenFile: tok\n");
  REQUIRE(good);
  CHECK(good->server() == "https://127.0.0.1:6443");
  // Inline base64 data of every padding length (0, 1 and 2 '=') decodes.
  for (std::string tail : {"", "\n", "\n\n"}) {
    auto pem = k8s_test::slurp(k8s_test::pki::get().ca) + tail;
    INFO("PEM of " << pem.size() << " bytes");
    auto inline_ca = open_with(head + ctx + cluster + "    certificate-authority-data: " + k8s_test::base64(pem) + "\n" + users);
    CHECK(inline_ca);
  }
}

TEST_CASE("in-cluster configuration needs the service account files and environment", "[kubernetes][in-cluster]") {
  temp_dir d;
  k8s::options o;
  o.in_cluster = true;
  o.serviceaccount_dir = d.path().string();
  ::unsetenv("KUBERNETES_SERVICE_HOST");
  ::unsetenv("KUBERNETES_SERVICE_PORT");
  auto noenv = k8s::datastore::open(o);
  REQUIRE(!noenv);
  CHECK_THAT(noenv.error().message, Catch::Contains("KUBERNETES_SERVICE_HOST"));
  ::setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
  ::setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  auto notoken = k8s::datastore::open(o);
  REQUIRE(!notoken);
  CHECK_THAT(notoken.error().message, Catch::Contains(d.path().string() + "/token"));
  spit(d.path() / "token", "t0k3n\n");
  auto noca = k8s::datastore::open(o);
  REQUIRE(!noca);
  CHECK_THAT(noca.error().message, Catch::Contains(d.path().string() + "/ca.crt"));
  spit(d.path() / "ca.crt", k8s_test::slurp(k8s_test::pki::get().ca));
  auto ok = k8s::datastore::open(o);
  REQUIRE(ok);
  CHECK(ok->server() == "https://[fd00::1]:443");
  ::unsetenv("KUBERNETES_SERVICE_HOST");
  ::unsetenv("KUBERNETES_SERVICE_PORT");
}
