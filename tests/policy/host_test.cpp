#include <cnf/policy/host.hpp>
#include <cnf/policy/host_settings.hpp>

#include <catch2/catch.hpp>

#include <deque>
#include <map>
#include <utility>

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

/// Timers kept apart from posted work: fire() runs the ones due, as a loop would after their delay.
struct timer_executor final : cnf::executor {
  std::deque<std::function<void()>> q;
  std::map<timer_id, std::pair<std::chrono::milliseconds, std::function<void()>>> timers;
  timer_id next = 1;
  void post(std::function<void()> f) override { q.push_back(std::move(f)); }
  timer_id post_after(std::chrono::milliseconds d, std::function<void()> f) override {
    timers[next] = {d, std::move(f)};
    return next++;
  }
  bool cancel(timer_id id) override { return timers.erase(id) > 0; }
  void drain() {
    while (!q.empty()) {
      auto f = std::move(q.front());
      q.pop_front();
      f();
    }
  }
  void fire() {
    auto due = std::move(timers);
    timers.clear();
    for (auto& [id, t] : due) t.second();
    drain();
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
  std::vector<cnf::policy_repair> drifted;  // what the next check_drift() reports
  cnf::policy_drift check_drift() {
    log->push_back("drift");
    cnf::policy_drift d;
    d.checked = 3;
    d.repaired = std::exchange(drifted, {});
    return d;
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

TEST_CASE("the policy host checks for drift every refresh_interval once in sync, logs and counts repairs", "[unit]") {
  timer_executor ex;
  std::vector<std::string> log;
  auto model = std::make_shared<cnf::detail::policy_model<recording_policy>>(recording_policy{&log, {}});
  struct lines final : cnf::logger {
    std::vector<std::string> out;
    void write(cnf::log_level, std::string_view m) noexcept override { out.emplace_back(m); }
  } logs;
  policy_host host(ex, cnf::any_policy(model), {.node = "n1", .refresh_interval = std::chrono::seconds(10)}, &logs);
  CHECK(host.refresh_interval() == std::chrono::seconds(10));
  ex.drain();
  CHECK(ex.timers.empty());  // not in sync: no checks
  host.set_in_sync(true);
  ex.drain();
  REQUIRE(ex.timers.size() == 1);
  CHECK(ex.timers.begin()->second.first == std::chrono::seconds(10));
  log.clear();
  ex.fire();
  CHECK(log == std::vector<std::string>{"drift"});
  CHECK(host.drift_checks() == 1);
  CHECK(host.drift_repairs() == 0);
  REQUIRE(ex.timers.size() == 1);  // armed again

  model->impl.drifted = {{"chain cali-tw-calia", "holds 7 of its 8 rules"}, {"set cali40s:abc", "1 member missing, 0 not cnf's"}};
  ex.fire();
  CHECK(host.drift_checks() == 2);
  CHECK(host.drift_repairs() == 2);
  std::vector<std::string> repairs;
  for (auto& l : logs.out)
    if (l.find("drift repaired") != std::string::npos) repairs.push_back(l);
  CHECK(repairs == std::vector<std::string>{"policy: drift repaired: chain cali-tw-calia (holds 7 of its 8 rules)",
                                            "policy: drift repaired: set cali40s:abc (1 member missing, 0 not cnf's)"});

  // While a flush is due the check waits for the next round: the flush programs the kernel anyway.
  REQUIRE(host.on_update(upd("Namespace", "", "x", "{}")));
  log.clear();
  auto due = std::move(ex.timers);
  ex.timers.clear();
  for (auto& [id, t] : due) t.second();
  CHECK(log.empty());
  ex.drain();
  CHECK(host.drift_checks() == 2);
}

TEST_CASE("the policy host without a refresh interval never checks", "[unit]") {
  timer_executor ex;
  std::vector<std::string> log;
  policy_host host(ex, cnf::any_policy(recording_policy{&log, {}}), {.node = "n1"});
  host.set_in_sync(true);
  ex.drain();
  CHECK(ex.timers.empty());
  CHECK(host.drift_checks() == 0);
}

TEST_CASE("[policy] refresh_interval: seconds, 0 for none, a bad value names the key", "[unit]") {
  auto read = [](std::string text) {
    auto s = cnf::settings::parse(text, "p.toml", "policy").value();
    auto h = cnf::netpol::read_host_settings(s);
    return std::pair{h, cnf::join_diagnostics(s.diagnostics())};
  };
  CHECK(read("[policy]\nplugin = \"iptables\"\n").first.refresh_interval == cnf::netpol::default_refresh_interval);
  CHECK(cnf::netpol::default_refresh_interval == std::chrono::seconds(10));
  CHECK(read("[policy]\nrefresh_interval = 2\n").first.refresh_interval == std::chrono::seconds(2));
  CHECK(read("[policy]\nrefresh_interval = 0.5\n").first.refresh_interval == std::chrono::milliseconds(500));
  CHECK(read("[policy]\nrefresh_interval = 0\n").first.refresh_interval == std::chrono::milliseconds(0));
  CHECK(read("[policy]\nrefresh_interval = -1\n").second ==
        "p.toml:2:20: policy.refresh_interval: must be 0 (no drift checks) or between 0.1 and 3600 seconds (got -1)");
  CHECK(read("[policy]\nrefresh_interval = 7200\n").second.find("policy.refresh_interval: must be 0") != std::string::npos);
  CHECK(read("[policy]\nrefresh_interval = \"10s\"\n").second == "p.toml:2:20: policy.refresh_interval: expected a number");
}
