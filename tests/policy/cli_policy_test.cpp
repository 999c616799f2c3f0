// `cnf apply`, `cnf get`, `cnf delete` for the policy kinds (projectcalico.org/v3 NetworkPolicy,
// GlobalNetworkPolicy, NetworkSet, GlobalNetworkSet; networking.k8s.io/v1 NetworkPolicy; v1
// Namespace and ServiceAccount), run as the built program against a temp local datastore that the test reads
// in-process. Needs no root.
#include <catch2/catch.hpp>

#include "../cli/cli_support.hpp"

using namespace cli_test;
using Catch::Matchers::Contains;

namespace {

const char* policies_yaml = R"(apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: shop
spec:
  order: 100
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role in {'frontend', 'lb'}
    destination:
      ports: [80, "8080:8090"]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: deny-blocked
spec:
  order: 10
  selector: all()
  ingress:
  - action: Deny
    source:
      selector: blocked == 'true'
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata:
  name: partners
  namespace: shop
  labels:
    role: lb
spec:
  nets: [192.0.2.0/24]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: internet
  labels:
    zone: outside
spec:
  nets: [0.0.0.0/0]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    team: shop
status:
  phase: Active
)";

}  // namespace

TEST_CASE("apply, get and delete the policy kinds; each is stored under its own kind and namespace", "[cli][policy]") {
  store s;
  auto f = s.file("policies.yaml", policies_yaml);
  auto a = s.cnf({"apply", "-f", f});
  INFO(a.describe());
  REQUIRE(a.status == 0);
  CHECK_THAT(a.out, Contains("NetworkPolicy/shop/allow-web created"));
  CHECK_THAT(a.out, Contains("GlobalNetworkPolicy/deny-blocked created"));
  CHECK_THAT(a.out, Contains("NetworkSet/shop/partners created"));
  CHECK_THAT(a.out, Contains("GlobalNetworkSet/internet created"));
  CHECK_THAT(a.out, Contains("NetworkPolicy.networking.k8s.io/default/default-deny created"));  // no namespace: 'default'
  CHECK_THAT(a.out, Contains("Namespace/shop created"));

  auto ds = s.open();
  auto get = [&](const char* kind, const char* ns, const char* name) {
    auto r = ds.get({kind, ns, name});
    INFO(kind << "/" << ns << "/" << name << ": " << (r ? std::string() : r.error().message));
    REQUIRE(r);
    return *r;
  };
  CHECK(bj::parse(get("NetworkPolicy", "shop", "allow-web").spec).as_object().at("selector") == "app == 'web'");
  CHECK(get("KubernetesNetworkPolicy", "default", "default-deny").spec.find("podSelector") != std::string::npos);
  CHECK(get("NetworkSet", "shop", "partners").labels.at("role") == "lb");
  CHECK(get("GlobalNetworkSet", "", "internet").labels.at("zone") == "outside");
  CHECK(get("GlobalNetworkPolicy", "", "deny-blocked").ns.empty());
  auto nsr = get("Namespace", "", "shop");
  CHECK(nsr.labels.at("team") == "shop");
  CHECK(nsr.spec == "{}");

  // Tables, and YAML that apply takes back unchanged.
  auto t = s.cnf({"get", "networkpolicies"});
  INFO(t.describe());
  CHECK(t.status == 0);
  CHECK_THAT(t.out, Contains("NAMESPACE") && Contains("allow-web") && Contains("app == 'web'"));
  auto k = s.cnf({"get", "knp"});
  CHECK_THAT(k.out, Contains("default-deny") && Contains("Ingress,Egress"));
  auto n = s.cnf({"get", "namespaces"});
  CHECK_THAT(n.out, Contains("team=shop"));
  CHECK(s.cnf({"get", "networkpolicy", "allow-web"}).status == 1);  // 'default' namespace unless -n
  auto y = s.cnf({"get", "networkpolicy", "allow-web", "-n", "shop", "-o", "yaml"});
  INFO(y.describe());
  REQUIRE(y.status == 0);
  CHECK_THAT(y.out, Contains("namespace: shop"));
  auto again = s.cnf({"apply", "-f", s.file("again.yaml", y.out)});
  INFO(again.describe());
  CHECK(again.status == 0);
  CHECK_THAT(again.out, Contains("NetworkPolicy/shop/allow-web unchanged"));
  auto ky = s.cnf({"get", "knp", "-o", "json"});
  CHECK_THAT(ky.out, Contains("networking.k8s.io/v1") && Contains("NetworkPolicyList"));

  // Delete by kind and name, and by file.
  auto d1 = s.cnf({"delete", "knp", "default-deny"});
  INFO(d1.describe());
  CHECK(d1.status == 0);
  CHECK_FALSE(ds.get({"KubernetesNetworkPolicy", "default", "default-deny"}));
  CHECK(s.cnf({"delete", "gnp", "deny-blocked", "-n", "shop"}).status == 1);  // cluster-wide: no namespace
  auto d2 = s.cnf({"delete", "-f", f});
  INFO(d2.describe());
  CHECK(d2.status == 1);  // default-deny is already gone; the rest is deleted
  CHECK_THAT(d2.err, Contains("default-deny") && Contains("not found"));
  CHECK_THAT(d2.out, Contains("NetworkPolicy/shop/allow-web deleted") && Contains("Namespace/shop deleted"));
  for (const char* kind : {"NetworkPolicy", "GlobalNetworkPolicy", "NetworkSet", "GlobalNetworkSet", "Namespace"}) {
    auto l = ds.list_all({.kind = kind});
    REQUIRE(l);
    CHECK(l->items.empty());
  }
}

TEST_CASE("apply refuses bad policy documents naming the file, document and field, and writes nothing", "[cli][policy]") {
  store s;
  struct bad_case {
    const char* doc;
    const char* says;
  };
  const std::vector<bad_case> cases = {
      {"apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  selector: \"app ==\"\n",
       "(NetworkPolicy/x/p): spec.selector: "},
      {"apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - action: Maybe\n",
       "spec.ingress[0].action"},
      {"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {}\n",
       "metadata.namespace: GlobalNetworkPolicy is cluster-wide"},
      {"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  ingres: []\n",
       "spec.ingres: unknown field"},
      {"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  ingress:\n"
       "  - from:\n    - ipBlock: {cidr: 10.0.0.1/8}\n",
       "spec.ingress[0].from[0].ipBlock.cidr"},
      {"apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: n}\nspec:\n  nets: [not-a-net]\n", "spec.nets[0]"},
      {"apiVersion: v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n", "apiVersion: a NetworkPolicy must be projectcalico.org/v3 or networking.k8s.io/v1"},
      {"apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad.Name}\n", "metadata.name: 'Bad.Name' is not a valid namespace name"},
      {"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "kind: 'Pod' is not supported"},
      {"apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: x}\nspec: {}\n", "spec: unknown field (a ServiceAccount has"},
      {"apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\nautomountServiceAccountToken: maybe\n",
       "automountServiceAccountToken: expected true or false"},
      {"apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, labels: {role: [a]}}\n", "metadata.labels.role: expected a string"},
      {"apiVersion: projectcalico.org/v3\nkind: ServiceAccount\nmetadata: {name: sa}\n", "apiVersion: a ServiceAccount must be v1"},
  };
  for (auto& c : cases) {
    // A good document first: a file with one bad document writes nothing.
    auto f = s.file("bad.yaml", std::string("apiVersion: v1\nkind: Namespace\nmetadata: {name: fine}\n---\n") + c.doc);
    auto r = s.cnf({"apply", "-f", f});
    INFO(c.doc << "\n" << r.describe());
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Contains("bad.yaml:") && Contains("document 2") && Contains(c.says));
    CHECK_THAT(r.err, Contains("nothing was written"));
    auto l = s.open().list_all({.kind = "Namespace"});
    REQUIRE(l);
    CHECK(l->items.empty());
  }
}

TEST_CASE("apply, get and delete v1 ServiceAccount objects: their labels are stored, the rest is not", "[cli][policy]") {
  store s;
  auto f = s.file("sa.yaml", R"(apiVersion: v1
kind: ServiceAccount
metadata:
  name: front
  namespace: shop
  labels:
    role: web
automountServiceAccountToken: false
secrets:
- name: front-token
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: builder
)");
  auto a = s.cnf({"apply", "-f", f});
  INFO(a.describe());
  REQUIRE(a.status == 0);
  CHECK_THAT(a.out, Contains("ServiceAccount/shop/front created") && Contains("ServiceAccount/default/builder created"));
  auto ds = s.open();
  auto g = ds.get({"ServiceAccount", "shop", "front"});
  REQUIRE(g);
  CHECK(g->labels == std::map<std::string, std::string>{{"role", "web"}});
  CHECK(g->spec == "{}");
  auto t = s.cnf({"get", "serviceaccounts", "-n", "shop"});
  INFO(t.describe());
  CHECK(t.status == 0);
  CHECK_THAT(t.out, Contains("NAMESPACE") && Contains("front") && Contains("role=web"));
  CHECK_THAT(t.out, !Contains("builder"));
  // Relabelled through YAML that `get -o yaml` printed (no spec: a ServiceAccount has none).
  auto y = s.cnf({"get", "sa", "front", "-n", "shop", "-o", "yaml"});
  INFO(y.describe());
  REQUIRE(y.status == 0);
  CHECK_THAT(y.out, Contains("kind: ServiceAccount") && !Contains("spec"));
  std::string relabelled = y.out;
  relabelled.replace(relabelled.find("role: web"), 9, "role: db");
  auto u = s.cnf({"apply", "-f", s.file("relabel.yaml", relabelled)});
  INFO(u.describe());
  CHECK(u.status == 0);
  CHECK(ds.get({"ServiceAccount", "shop", "front"})->labels.at("role") == "db");
  auto d = s.cnf({"delete", "sa", "front", "-n", "shop"});
  INFO(d.describe());
  CHECK(d.status == 0);
  CHECK_FALSE(ds.get({"ServiceAccount", "shop", "front"}));
  auto d2 = s.cnf({"delete", "-f", f});
  CHECK_THAT(d2.out, Contains("ServiceAccount/default/builder deleted"));
  auto l = ds.list_all({.kind = "ServiceAccount"});
  REQUIRE(l);
  CHECK(l->items.empty());
}
