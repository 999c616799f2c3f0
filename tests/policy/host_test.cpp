#include <cnf/policy/host.hpp>

#include <catch2/catch.hpp>

#include <deque>

using namespace cnf::netpol;

namespace {

struct queue_executor final : cnf::executor {
  std::deque<std::function<void()>> q;
  void post(std::function<void()> f) override { q.push_back(std::move(f)); }
  timer_id post_after(std::chrono::milliseconds, std::function<void()> f) override {
    q.push_back(std::move(f));
    return 1;
  }
  bool cancel(timer_id) override { return false; }
  void drain() {
    while (!q.empty()) {
      auto f = std::move(q.front());
      q.pop_front();
      f();
    }
  }
};

struct recording_policy {
  std::vector<std::string>* log;
  void upsert_endpoint(const cnf::workload_endpoint& e) { log->push_back("ep+ " + e.key()); }
  void remove_endpoint(std::string_view k) { log->push_back("ep- " + std::string(k)); }
  void upsert_policy(const cnf::network_policy& p) { log->push_back("pol+ " + p.key()); }
  void remove_policy(std::string_view k) { log->push_back("pol- " + std::string(k)); }
  void upsert_profile(const cnf::policy_profile& p) { log->push_back("prof+ " + p.name); }
  void remove_profile(std::string_view n) { log->push_back("prof- " + std::string(n)); }
  void add_ip_set_members(std::string_view id, std::span<const cnf::ip_prefix> m) { log->push_back("set+ " + std::string(id) + " " + std::to_string(m.size())); }
  void remove_ip_set_members(std::string_view id, std::span<const cnf::ip_prefix> m) { log->push_back("set- " + std::string(id) + " " + std::to_string(m.size())); }
  void remove_ip_set(std::string_view id) { log->push_back("setx " + std::string(id)); }
  void apply() { log->push_back("apply"); }
  cnf::policy_status status() { return {}; }
  void stop() {}
  cnf::policy_drift check_drift() {
    log->push_back("drift");
    return {};
  }
};
static_assert(cnf::check_policy<recording_policy>());

cnf::sync_update upd(std::string kind, std::string ns, std::string name, std::string spec, label_map labels = {},
                     cnf::sync_update::type t = cnf::sync_update::type::added) {
  cnf::sync_update u{t, {}};
  u.object.kind = std::move(kind);
  u.object.ns = std::move(ns);
  u.object.name = std::move(name);
  u.object.spec = std::move(spec);
  u.object.labels = std::move(labels);
  return u;
}

}  // namespace

TEST_CASE("the policy host programs nothing before the first sync, then one flush per batch", "[unit]") {
  queue_executor ex;
  std::vector<std::string> log;
  policy_host host(ex, cnf::any_policy(recording_policy{&log}), {.node = "n1"});
  REQUIRE(host.on_update(upd("Namespace", "", "x", "{}", {{"team", "a"}})));
  REQUIRE(host.on_update(upd("WorkloadEndpoint", "x", "n1-k8s-a-eth0",
                             R"j({"node": "n1", "containerID": "c1", "pod": "a", "endpoint": "eth0", "interfaceName": "calia",
                                  "ipNetworks": ["10.0.0.1/32"], "profiles": ["kns.x"], "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]})j",
                             {{"app", "web"}})));
  REQUIRE(host.on_update(upd("KubernetesNetworkPolicy", "x", "web",
                             R"j({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}]}]})j")));
  ex.drain();
  CHECK(log.empty());  // not in sync yet
  host.set_in_sync(true);
  ex.drain();
  CHECK(log == std::vector<std::string>{"prof+ kns.x", "pol+ NetworkPolicy/x/knp.default.web", "ep+ x/n1-k8s-a-eth0", "apply"});
  CHECK(host.flushes() == 1);

  // A bad policy is refused with its name and field; the good one stays.
  auto bad = host.on_update(upd("KubernetesNetworkPolicy", "x", "web", R"j({"podSelector": {"matchLabels": {"app": 1}}})j",
                                {}, cnf::sync_update::type::modified));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == "NetworkPolicy/x/web: spec.podSelector.matchLabels.app: expected a string");
  auto badport = host.on_update(upd("WorkloadEndpoint", "x", "n1-k8s-b-eth0",
                                    R"j({"node": "n1", "containerID": "c2", "ports": [{"name": "http", "port": 70000}]})j"));
  REQUIRE_FALSE(badport);
  CHECK(badport.error().message == "WorkloadEndpoint/x/n1-k8s-b-eth0: spec.ports[0].port: expected a port number 1..65535");
  log.clear();
  ex.drain();
  CHECK(log.empty());

  // Deletions in one batch: one flush.
  REQUIRE(host.on_update(upd("KubernetesNetworkPolicy", "x", "web", "{}", {}, cnf::sync_update::type::deleted)));
  REQUIRE(host.on_update(upd("WorkloadEndpoint", "x", "n1-k8s-a-eth0", "{}", {}, cnf::sync_update::type::deleted)));
  ex.drain();
  CHECK(log == std::vector<std::string>{"ep- x/n1-k8s-a-eth0", "pol- NetworkPolicy/x/knp.default.web", "apply"});
  CHECK(host.flushes() == 2);
}
