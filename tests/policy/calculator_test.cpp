#include <cnf/policy/calculator.hpp>

#include <algorithm>
#include <catch2/catch.hpp>
#include <netinet/in.h>

using namespace cnf::netpol;

namespace {
cnf::workload_endpoint pod(std::string ns, std::string name, std::string ip, label_map labels, std::string node = "n1") {
  cnf::workload_endpoint w;
  w.ns = ns;
  w.name = node + "-k8s-" + name + "-eth0";
  w.pod = name;
  w.orchestrator = "k8s";
  w.node = node;
  w.endpoint = "eth0";
  w.interface_name = "cali" + name;
  w.ip_networks = {cnf::ip_prefix::parse(ip + "/32").value()};
  w.labels = std::move(labels);
  w.labels["projectcalico.org/namespace"] = ns;
  w.profiles = {"kns." + ns, "ksa." + ns + ".default"};
  w.service_account_name = "default";
  return w;
}
cnf::ip_prefix pfx(std::string s) { return cnf::ip_prefix::parse(s).value(); }
policy_def k8s(std::string ns, std::string name, std::string spec) {
  cnf::resource r;
  r.kind = "NetworkPolicy";
  r.ns = std::move(ns);
  r.name = std::move(name);
  r.spec = std::move(spec);
  return parse_k8s_network_policy(r).value();
}
template <class T>
std::vector<T> of(const std::vector<policy_update>& u) {
  std::vector<T> out;
  for (auto& x : u)
    if (auto* p = std::get_if<T>(&x)) out.push_back(*p);
  return out;
}
}  // namespace

TEST_CASE("the label index follows members and labels incrementally", "[unit]") {
  label_index idx;
  std::vector<std::string> changed;
  idx.on_change = [&](const std::string& t) { changed.push_back(t); };
  auto web = parse_selector("app == 'web'").value();
  idx.add_selector(web);
  idx.set_member("a", {{"app", "web"}}, {pfx("10.0.0.1/32")});
  idx.set_member("b", {{"app", "db"}}, {pfx("10.0.0.2/32")});
  CHECK(idx.members(web.to_string()) == std::set<std::string>{"a"});
  CHECK(idx.addresses(web.to_string()) == std::vector{pfx("10.0.0.1/32")});
  CHECK(changed == std::vector<std::string>{web.to_string()});
  changed.clear();
  idx.set_member("b", {{"app", "web"}}, {pfx("10.0.0.2/32")});  // relabelled: joins
  CHECK(idx.members(web.to_string()) == std::set<std::string>{"a", "b"});
  CHECK(changed.size() == 1);
  changed.clear();
  idx.set_member("b", {{"app", "web"}}, {pfx("10.0.0.2/32")});  // no change: no callback
  CHECK(changed.empty());
  idx.set_member("b", {{"app", "web"}}, {pfx("10.0.0.3/32")});  // address moved
  CHECK(idx.addresses(web.to_string()) == std::vector{pfx("10.0.0.1/32"), pfx("10.0.0.3/32")});
  idx.set_member("c", {{"app", "web"}}, {pfx("10.0.0.1/32")});  // same address twice: counted
  idx.remove_member("a");
  CHECK(idx.addresses(web.to_string()) == std::vector{pfx("10.0.0.1/32"), pfx("10.0.0.3/32")});
  idx.remove_member("c");
  CHECK(idx.addresses(web.to_string()) == std::vector{pfx("10.0.0.3/32")});
  // A selector added later sees existing members; the last release drops it.
  auto has = parse_selector("has(app)").value();
  idx.add_selector(has);
  idx.add_selector(has);
  CHECK(idx.members(has.to_string()) == std::set<std::string>{"b"});
  idx.release_selector(has.to_string());
  CHECK(idx.has_selector(has.to_string()));
  idx.release_selector(has.to_string());
  CHECK_FALSE(idx.has_selector(has.to_string()));
}

TEST_CASE("endpoint labels carry namespace and service account labels", "[unit]") {
  calculator c("n1");
  c.upsert_namespace("x", {{"team", "a"}});
  c.upsert_endpoint(pod("x", "a", "10.0.0.1", {{"pod", "a"}}));
  auto l = c.endpoint_labels("x/n1-k8s-a-eth0");
  CHECK(l.at("pod") == "a");
  CHECK(l.at("pcns.team") == "a");
  CHECK(l.at("pcns.projectcalico.org/name") == "x");
  CHECK(l.at("pcns.kubernetes.io/metadata.name") == "x");  // namespaceSelector by name works on every datastore
  CHECK(l.at("projectcalico.org/serviceaccount") == "default");
  c.upsert_namespace("x", {{"team", "b"}});
  CHECK(c.endpoint_labels("x/n1-k8s-a-eth0").at("pcns.team") == "b");
}

TEST_CASE("a K8s policy becomes a policy, its IP sets and incremental membership changes", "[unit]") {
  calculator c("n1");
  c.upsert_namespace("x", {{"ns", "x"}});
  c.upsert_namespace("y", {{"ns", "y"}});
  c.upsert_endpoint(pod("x", "a", "10.0.0.1", {{"pod", "a"}}));
  c.upsert_endpoint(pod("x", "b", "10.0.0.2", {{"pod", "b"}}, "n2"));  // another node
  c.upsert_endpoint(pod("y", "b", "10.0.1.2", {{"pod", "b"}}, "n2"));
  auto first = c.take_updates();
  CHECK(of<update::endpoint_upsert>(first).size() == 1);  // only this node's
  auto profiles = of<update::profile_upsert>(first);
  REQUIRE(profiles.size() == 3);  // kns.x, kns.y, ksa.x.default
  CHECK(profiles[0].profile.name == "kns.x");
  CHECK(profiles[0].profile.ingress.size() == 1);
  CHECK(profiles[2].profile.name == "ksa.x.default");
  CHECK(profiles[2].profile.ingress.empty());
  CHECK(c.take_updates().empty());  // nothing changed: nothing to do

  // x/a accepts TCP 80 from pods b in its own namespace.
  c.upsert_policy(k8s("x", "allow-b", R"j({"podSelector": {"matchLabels": {"pod": "a"}},
      "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}]})j"));
  auto u = c.take_updates();
  auto sets = of<update::ip_set_members>(u);
  auto pols = of<update::policy_upsert>(u);
  REQUIRE(sets.size() == 1);
  REQUIRE(pols.size() == 1);
  CHECK(std::holds_alternative<update::ip_set_members>(u.front()));  // members before the policy
  CHECK(sets[0].added == std::vector{pfx("10.0.0.2/32")});           // x/b, not y/b
  const auto& np = pols[0].policy;
  CHECK(np.key() == "NetworkPolicy/x/knp.default.allow-b");
  CHECK(np.endpoints == std::vector<std::string>{"x/n1-k8s-a-eth0"});
  REQUIRE(np.ingress.size() == 1);
  CHECK(np.ingress[0].protocol == IPPROTO_TCP);
  CHECK(np.ingress[0].source_ip_sets == std::vector{sets[0].id});
  CHECK(np.ingress[0].destination_ports == std::vector{cnf::port_range{80, 80}});
  CHECK(sets[0].id.size() == 24);

  // A new pod b in x joins the set: one membership change, the policy stays.
  c.upsert_endpoint(pod("x", "b2", "10.0.0.3", {{"pod", "b"}}, "n3"));
  u = c.take_updates();
  REQUIRE(u.size() == 1);
  CHECK(std::get<update::ip_set_members>(u[0]).added == std::vector{pfx("10.0.0.3/32")});
  // Relabelled: leaves the set.
  c.upsert_endpoint(pod("x", "b2", "10.0.0.3", {{"pod", "c"}}, "n3"));
  u = c.take_updates();
  REQUIRE(u.size() == 1);
  CHECK(std::get<update::ip_set_members>(u[0]).removed == std::vector{pfx("10.0.0.3/32")});
  // The selected local pod loses its label: the policy is no longer active here, its set goes.
  c.upsert_endpoint(pod("x", "a", "10.0.0.1", {{"pod", "z"}}));
  u = c.take_updates();
  CHECK(of<update::policy_removal>(u).size() == 1);
  CHECK(of<update::ip_set_removal>(u).size() == 1);
  CHECK(of<update::endpoint_upsert>(u).size() == 1);
  CHECK(std::holds_alternative<update::ip_set_removal>(u.back()));  // the set after the policy
}

TEST_CASE("namespaceSelector, network sets, named ports, GlobalNetworkPolicy", "[unit]") {
  calculator c("n1");
  c.upsert_namespace("x", {{"ns", "x"}});
  c.upsert_namespace("y", {{"ns", "y"}});
  c.upsert_endpoint(pod("x", "a", "10.0.0.1", {{"pod", "a"}}), {{"serve-80", IPPROTO_TCP, 80}, {"serve-81", IPPROTO_UDP, 81}});
  c.upsert_endpoint(pod("y", "b", "10.0.1.2", {{"pod", "b"}}, "n2"));
  c.take_updates();
  c.upsert_policy(k8s("x", "from-y", R"j({"podSelector": {},
      "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": "serve-80"}, {"port": "serve-81", "protocol": "UDP"}]}]})j"));
  auto u = c.take_updates();
  auto pols = of<update::policy_upsert>(u);
  REQUIRE(pols.size() == 1);
  REQUIRE(pols[0].policy.ingress.size() == 2);
  CHECK(pols[0].policy.ingress[0].destination_ports == std::vector{cnf::port_range{80, 80}});
  CHECK(pols[0].policy.ingress[1].destination_ports == std::vector{cnf::port_range{81, 81}});
  CHECK(of<update::ip_set_members>(u).at(0).added == std::vector{pfx("10.0.1.2/32")});
  // Namespace y relabelled: its pod leaves the set.
  c.upsert_namespace("y", {{"ns", "other"}});
  u = c.take_updates();
  auto m = of<update::ip_set_members>(u);
  REQUIRE(m.size() == 1);
  CHECK(m[0].removed == std::vector{pfx("10.0.1.2/32")});

  // A named port no pod has: the rule matches nothing and is left out.
  c.upsert_policy(k8s("x", "from-y", R"j({"podSelector": {}, "ingress": [{"ports": [{"port": "nope"}]}]})j"));
  pols = of<update::policy_upsert>(c.take_updates());
  REQUIRE(pols.size() == 1);
  CHECK(pols[0].policy.ingress.empty());

  // A GlobalNetworkPolicy denying egress to a GlobalNetworkSet by label.
  network_set ext;
  ext.name = "ext";
  ext.labels = {{"role", "ext"}};
  ext.nets = {pfx("1.2.3.0/24")};
  c.upsert_network_set(ext);
  cnf::resource g;
  g.kind = "GlobalNetworkPolicy";
  g.name = "deny-ext";
  g.spec = R"j({"order": 10, "selector": "all()", "types": ["Egress"], "egress": [{"action": "Deny", "destination": {"selector": "role == 'ext'"}}]})j";
  c.upsert_policy(parse_calico_policy(g).value());
  u = c.take_updates();
  pols = of<update::policy_upsert>(u);
  REQUIRE(pols.size() == 1);
  CHECK(pols[0].policy.order == 10.0);
  CHECK(pols[0].policy.egress[0].action == cnf::policy_rule::action_type::deny);
  CHECK(of<update::ip_set_members>(u).at(0).added == std::vector{pfx("1.2.3.0/24")});
  ext.nets.push_back(pfx("5.6.0.0/16"));
  c.upsert_network_set(ext);
  u = c.take_updates();
  REQUIRE(u.size() == 1);
  CHECK(std::get<update::ip_set_members>(u[0]).added == std::vector{pfx("5.6.0.0/16")});
  c.remove_policy("GlobalNetworkPolicy//deny-ext");
  u = c.take_updates();
  CHECK(of<update::policy_removal>(u).size() == 1);
  CHECK(of<update::ip_set_removal>(u).size() == 1);
  c.remove_endpoint("x/n1-k8s-a-eth0");
  u = c.take_updates();
  CHECK(of<update::endpoint_removal>(u).size() == 1);
  CHECK(of<update::policy_removal>(u).size() == 1);
}

TEST_CASE("IPv6: dual-stack endpoints' IPv6 addresses reach the IP sets, v6 ipBlocks stay v6", "[unit]") {
  calculator c("n1");
  c.upsert_namespace("x", {{"ns", "x"}});
  auto dual = [](std::string name, std::string v4, std::string v6, label_map l, std::string node = "n1") {
    auto w = pod("x", name, v4, std::move(l), node);
    w.ip_networks.push_back(pfx(v6 + "/128"));
    return w;
  };
  c.upsert_endpoint(dual("a", "10.0.0.1", "fd00::1", {{"pod", "a"}}));
  c.upsert_endpoint(dual("b", "10.0.0.2", "fd00::2", {{"pod", "b"}}, "n2"));
  auto first = c.take_updates();
  REQUIRE(of<update::endpoint_upsert>(first).size() == 1);
  CHECK(of<update::endpoint_upsert>(first)[0].endpoint.ip_networks == std::vector{pfx("10.0.0.1/32"), pfx("fd00::1/128")});
  c.upsert_policy(k8s("x", "dual", R"j({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
      {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]},
      {"from": [{"ipBlock": {"cidr": "fd00::/64", "except": ["fd00::2/128"]}}]}]})j"));
  auto u = c.take_updates();
  auto sets = of<update::ip_set_members>(u);
  REQUIRE(sets.size() == 1);
  CHECK(sets[0].added == std::vector{pfx("10.0.0.2/32"), pfx("fd00::2/128")});  // both families: the plugin splits them
  auto pols = of<update::policy_upsert>(u);
  REQUIRE(pols.size() == 1);
  REQUIRE(pols[0].policy.ingress.size() == 2);
  CHECK(pols[0].policy.ingress[1].source_nets == std::vector{pfx("fd00::/64")});
  CHECK(pols[0].policy.ingress[1].not_source_nets == std::vector{pfx("fd00::2/128")});
  // b loses its IPv6 address: one membership change, IPv6 only.
  c.upsert_endpoint(pod("x", "b", "10.0.0.2", {{"pod", "b"}}, "n2"));
  u = c.take_updates();
  REQUIRE(u.size() == 1);
  CHECK(std::get<update::ip_set_members>(u[0]).removed == std::vector{pfx("fd00::2/128")});
  CHECK(std::get<update::ip_set_members>(u[0]).added.empty());
}

TEST_CASE("ServiceAccount labels: serviceAccountSelector and serviceAccounts.selector follow them", "[unit]") {
  calculator c("n1");
  c.upsert_namespace("x", {});
  auto a = pod("x", "a", "10.0.0.1", {{"pod", "a"}});
  a.service_account_name = "front";
  auto b = pod("x", "b", "10.0.0.2", {{"pod", "b"}});
  b.service_account_name = "back";
  c.upsert_endpoint(a);
  c.upsert_endpoint(b);
  c.upsert_service_account("x", "front", {{"role", "web"}});
  c.take_updates();
  cnf::resource r;
  r.kind = "NetworkPolicy";
  r.ns = "x";
  r.name = "sa";
  r.spec = R"j({"selector": "all()", "serviceAccountSelector": "role == 'db'", "ingress": [
      {"action": "Allow", "source": {"serviceAccounts": {"selector": "role == 'web'"}}}]})j";
  c.upsert_policy(parse_calico_policy(r).value());
  auto u = c.take_updates();
  CHECK(of<update::policy_upsert>(u).empty());  // no service account has role=db yet
  // back gains role=db: the policy now applies to b, and its source set holds a (role=web).
  c.upsert_service_account("x", "back", {{"role", "db"}});
  u = c.take_updates();
  auto pols = of<update::policy_upsert>(u);
  REQUIRE(pols.size() == 1);
  CHECK(pols[0].policy.endpoints == std::vector<std::string>{"x/n1-k8s-b-eth0"});
  auto sets = of<update::ip_set_members>(u);
  REQUIRE(sets.size() == 1);
  CHECK(sets[0].added == std::vector{pfx("10.0.0.1/32")});
  // The ksa profile carries the labels as pcsa.* (Calico's).
  auto profiles = of<update::profile_upsert>(u);
  auto ksa = std::find_if(profiles.begin(), profiles.end(), [](auto& p) { return p.profile.name == "ksa.x.back"; });
  REQUIRE(ksa != profiles.end());
  CHECK(ksa->profile.labels_to_apply.at("pcsa.role") == "db");
  // front loses role=web: a leaves the set; the ServiceAccount deleted: b loses the policy.
  c.upsert_service_account("x", "front", {});
  u = c.take_updates();
  sets = of<update::ip_set_members>(u);
  REQUIRE(sets.size() == 1);
  CHECK(sets[0].removed == std::vector{pfx("10.0.0.1/32")});
  c.remove_service_account("x", "back");
  u = c.take_updates();
  CHECK(of<update::policy_removal>(u).size() == 1);
}

TEST_CASE("Pod objects: their labels win over the endpoint's copy and re-evaluate selectors live", "[unit]") {
  calculator c("n1");
  c.upsert_namespace("x", {});
  // The endpoints copied app=web / app=db at ADD.
  c.upsert_endpoint(pod("x", "a", "10.0.0.1", {{"app", "web"}}));
  c.upsert_endpoint(pod("x", "b", "10.0.0.2", {{"app", "db"}}, "n2"));
  c.upsert_policy(k8s("x", "web-from-client", R"j({"podSelector": {"matchLabels": {"app": "web"}},
      "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]})j"));
  auto u = c.take_updates();
  auto pols = of<update::policy_upsert>(u);
  REQUIRE(pols.size() == 1);
  REQUIRE(pols[0].policy.ingress.size() == 1);
  const auto set = pols[0].policy.ingress[0].source_ip_sets.at(0);
  CHECK(of<update::ip_set_members>(u).at(0).added.empty());  // nobody is role=client yet

  // The Pod object of b gains role=client (its endpoint is untouched): b joins the source set.
  c.upsert_pod("x", "b", {{"app", "db"}, {"role", "client"}});
  CHECK(c.endpoint_labels("x/n2-k8s-b-eth0").at("role") == "client");
  CHECK(c.endpoint_labels("x/n2-k8s-b-eth0").at("projectcalico.org/namespace") == "x");  // Calico's labels stay
  u = c.take_updates();
  REQUIRE(u.size() == 1);
  CHECK(std::get<update::ip_set_members>(u[0]).id == set);
  CHECK(std::get<update::ip_set_members>(u[0]).added == std::vector{pfx("10.0.0.2/32")});

  // The Pod of a drops app=web: the endpoint's stale copy no longer counts, the policy leaves a.
  c.upsert_pod("x", "a", {{"app", "other"}});
  CHECK(c.endpoint_labels("x/n1-k8s-a-eth0").at("app") == "other");
  u = c.take_updates();
  CHECK(of<update::policy_removal>(u).size() == 1);
  // A Pod with a label removed: gone from the endpoint too.
  c.upsert_pod("x", "a", {});
  CHECK_FALSE(c.endpoint_labels("x/n1-k8s-a-eth0").contains("app"));
  // The Pod deleted: the endpoint's own copy counts again (app=web), the policy is back.
  c.remove_pod("x", "a");
  u = c.take_updates();
  CHECK(of<update::policy_upsert>(u).size() == 1);
  // A Pod of another namespace with the same name changes nothing here.
  c.upsert_pod("y", "a", {{"app", "none"}});
  CHECK(c.endpoint_labels("x/n1-k8s-a-eth0").at("app") == "web");
  CHECK(c.take_updates().empty());
  // The Pod's service account counts where the endpoint names none.
  auto d = pod("x", "d", "10.0.0.4", {});
  d.service_account_name.clear();
  c.upsert_endpoint(d);
  c.upsert_service_account("x", "front", {{"tier", "1"}});
  c.upsert_pod("x", "d", {{"app", "d"}}, "front");
  CHECK(c.endpoint_labels("x/n1-k8s-d-eth0").at("projectcalico.org/serviceaccount") == "front");
  CHECK(c.endpoint_labels("x/n1-k8s-d-eth0").at("pcsa.tier") == "1");
}
