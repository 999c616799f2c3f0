#include <cnf/policy/host.hpp>
#include <cnf/policy/host_settings.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
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

namespace {

/// Thread-safe post() (the drift worker reports back through it); timers fired by hand.
struct threadsafe_executor final : cnf::executor {
  std::mutex m;
  std::deque<std::function<void()>> q;
  std::map<timer_id, std::function<void()>> timers;
  timer_id next = 1;
  void post(std::function<void()> f) override {
    std::lock_guard<std::mutex> l(m);
    q.push_back(std::move(f));
  }
  timer_id post_after(std::chrono::milliseconds, std::function<void()> f) override {
    std::lock_guard<std::mutex> l(m);
    timers[next] = std::move(f);
    return next++;
  }
  bool cancel(timer_id id) override {
    std::lock_guard<std::mutex> l(m);
    return timers.erase(id) > 0;
  }
  bool run_one() {
    std::function<void()> f;
    {
      std::lock_guard<std::mutex> l(m);
      if (q.empty()) return false;
      f = std::move(q.front());
      q.pop_front();
    }
    f();
    return true;
  }
  void drain() {
    while (run_one()) {
    }
  }
  void fire() {
    std::map<timer_id, std::function<void()>> due;
    {
      std::lock_guard<std::mutex> l(m);
      due = std::move(timers);
      timers.clear();
    }
    for (auto& [id, f] : due) f();
  }
  /// Waits (up to 5 s) for something posted from another thread, and runs what is queued.
  bool wait_and_drain() {
    for (int i = 0; i < 500; ++i) {
      if (run_one()) {
        drain();
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
};

/// A plugin whose drift check blocks until released, recording where and how it was called.
struct slow_drift_policy {
  struct shared {
    std::mutex m;
    std::vector<std::string> log;
    std::thread::id drift_thread;
    std::atomic<int> inside{0}, most_inside{0};
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
  };
  std::shared_ptr<shared> s;
  void note(const std::string& what) {
    const int n = ++s->inside;
    for (int m = s->most_inside; n > m && !s->most_inside.compare_exchange_weak(m, n);) {
    }
    std::lock_guard<std::mutex> l(s->m);
    s->log.push_back(what);
  }
  void done() { --s->inside; }
  void upsert_endpoint(const cnf::workload_endpoint&) {}
  void remove_endpoint(std::string_view) {}
  void upsert_policy(const cnf::network_policy&) {}
  void remove_policy(std::string_view) {}
  void upsert_profile(const cnf::policy_profile&) { note("profile"), done(); }
  void remove_profile(std::string_view) {}
  void add_ip_set_members(std::string_view, std::span<const cnf::ip_prefix>) {}
  void remove_ip_set_members(std::string_view, std::span<const cnf::ip_prefix>) {}
  void remove_ip_set(std::string_view) {}
  void apply() { note("apply"), done(); }
  cnf::policy_status status() {
    note("status"), done();
    return {};
  }
  void stop() {}
  cnf::policy_drift check_drift() {
    note("drift");
    s->drift_thread = std::this_thread::get_id();
    s->released.wait();
    done();
    cnf::policy_drift d;
    d.repaired = {{"chain cali-tw-x", "missing"}};
    return d;
  }
};
static_assert(cnf::check_policy<slow_drift_policy>());

}  // namespace

TEST_CASE("drift_off_loop: the check runs on a worker, the loop keeps serving, a flush due meanwhile follows the check", "[unit]") {
  threadsafe_executor ex;
  auto sh = std::make_shared<slow_drift_policy::shared>();
  policy_host host(ex, cnf::any_policy(slow_drift_policy{sh}), {.node = "n1", .refresh_interval = std::chrono::seconds(10), .drift_off_loop = true});
  host.set_in_sync(true);
  ex.drain();
  REQUIRE(ex.timers.size() == 1);
  ex.fire();  // the check starts on the worker and blocks there
  CHECK(host.drift_running());
  CHECK(ex.timers.empty());  // armed again only when it reports back
  // The loop is free: a change arrives and is recorded; its flush waits for the check.
  REQUIRE(host.on_update(upd("Namespace", "", "x", "{}")));
  ex.drain();
  {
    std::lock_guard<std::mutex> l(sh->m);
    CHECK(std::count(sh->log.begin(), sh->log.end(), "apply") == 1);  // the first sync's flush only
  }
  CHECK(host.drift_checks() == 0);
  sh->release.set_value();
  REQUIRE(ex.wait_and_drain());  // the report, then the deferred flush
  CHECK_FALSE(host.drift_running());
  CHECK(host.drift_checks() == 1);
  CHECK(host.drift_repairs() == 1);
  CHECK(sh->drift_thread != std::this_thread::get_id());
  CHECK(sh->most_inside == 1);  // never two plugin calls at once
  {
    std::lock_guard<std::mutex> l(sh->m);
    REQUIRE(sh->log.size() >= 3);
    CHECK(sh->log.back() == "apply");  // the flush that waited
    CHECK(std::find(sh->log.begin(), sh->log.end(), "drift") < sh->log.end() - 1);
  }
  CHECK(host.flushes() == 2);
  CHECK(ex.timers.size() == 1);  // armed again
  CHECK(host.plugin_status());
}

TEST_CASE("the policy host takes a Pod object's labels: a label changed on the Pod changes what is allowed", "[unit]") {
  queue_executor ex;
  std::vector<std::string> log;
  policy_host host(ex, cnf::any_policy(recording_policy{&log}), {.node = "n1"});
  const auto kinds = policy_host::kinds();
  CHECK(std::count(kinds.begin(), kinds.end(), "Pod") == 1);
  REQUIRE(host.on_update(upd("Namespace", "", "x", "{}")));
  for (auto [pod, ip] : {std::pair{"a", "10.0.0.1/32"}, std::pair{"b", "10.0.0.2/32"}})
    REQUIRE(host.on_update(upd("WorkloadEndpoint", "x", std::string("n1-k8s-") + pod + "-eth0",
                               std::string(R"j({"node": "n1", "orchestrator": "k8s", "containerID": "c", "pod": ")j") + pod +
                                   R"j(", "endpoint": "eth0", "interfaceName": "cali)j" + pod + R"j(", "ipNetworks": [")j" + ip + R"j("]})j",
                               {{"app", pod}})));
  REQUIRE(host.on_update(upd("KubernetesNetworkPolicy", "x", "a-from-client",
                             R"j({"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]})j")));
  host.set_in_sync(true);
  ex.drain();
  auto source_members = [&] {
    std::size_t n = 0;
    for (auto& l : log)
      if (l.starts_with("set+ ")) n += std::stoul(l.substr(l.rfind(' ') + 1));
      else if (l.starts_with("set- ")) n -= std::stoul(l.substr(l.rfind(' ') + 1));
    return n;
  };
  CHECK(source_members() == 0);  // nobody is role=client
  // The Pod object of b gains role=client; its WorkloadEndpoint is untouched.
  log.clear();
  REQUIRE(host.on_update(upd("Pod", "x", "b", R"j({"serviceAccountName": "default", "nodeName": "n1"})j", {{"app", "b"}, {"role", "client"}})));
  ex.drain();
  CHECK(source_members() == 1);
  CHECK(host.calc().endpoint_labels("x/n1-k8s-b-eth0").at("role") == "client");
  CHECK(log.back() == "apply");
  // The label removed on the Pod: b leaves the set again.
  REQUIRE(host.on_update(upd("Pod", "x", "b", "{}", {{"app", "b"}}, cnf::sync_update::type::modified)));
  ex.drain();
  CHECK(source_members() == 0);
  // A Pod whose spec.serviceAccountName is not a string is refused, naming it and the field.
  auto bad = host.on_update(upd("Pod", "x", "c", R"j({"serviceAccountName": 7})j"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == "Pod/x/c: spec.serviceAccountName: expected a string");
}
