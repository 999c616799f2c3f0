// cnf/policy/host.hpp — what a node agent needs to host a policy part: datastore changes in,
// the calculator in the middle, the plugin's typed updates out, coalesced on the executor.
//
// Kinds it reads (the syncer lists and watches them; kinds() names them):
//   WorkloadEndpoint (spec.ports gives named ports), NetworkPolicy and GlobalNetworkPolicy
//   (projectcalico.org/v3), KubernetesNetworkPolicy (networking.k8s.io/v1 NetworkPolicy; the
//   resource's spec is the object's spec), NetworkSet, GlobalNetworkSet, Namespace and
//   ServiceAccount (their labels), and Pod (its labels and spec.serviceAccountName, which win
//   over the WorkloadEndpoint's copy; only the kubernetes datastore has Pod objects, elsewhere
//   the kind lists empty and the WorkloadEndpoint's labels count).
// Felix's rule: nothing reaches the plugin before set_in_sync(true). After that every change
// schedules one flush on the executor (changes arriving meanwhile share it). A resource that
// does not parse is refused with an error naming it and its field, and its previous version
// stays programmed; so does everything else.
//
//   cnf::netpol::policy_host host(loop, plugin, {.node = "node-1"}, &log);
//   syncer.on_update([&](const cnf::sync_update& u) { (void)host.on_update(u); });
//   syncer.on_status([&](cnf::sync_status s) { host.set_in_sync(s == cnf::sync_status::in_sync); });
//
// Drift: with options.refresh_interval above zero, once in sync, the host asks the plugin to
// check_drift() every interval (skipped while a flush is due: that one programs the kernel
// anyway), logs one line per object the plugin put back, and counts checks and repairs.
// With options.drift_off_loop (the node agent sets it) the timer's check runs on a worker
// thread (started from the executor's thread, so in its network namespace): at 100k rules one
// iptables-save takes 1 to 2 s, and the loop keeps serving CNI calls meanwhile. The host
// then calls the plugin from one thread at a time (a mutex): a flush scheduled during a
// check runs when the check has reported back (posted to the executor); flush() called
// directly (a CNI ADD) waits for the check to end; plugin_status() likewise. The executor
// must be thread-safe for post() (cnf::event_loop is).
#pragma once
#include <cnf/executor.hpp>
#include <cnf/log.hpp>
#include <cnf/policy/calculator.hpp>
#include <cnf/syncer.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netpol {

class policy_host {
 public:
  struct options {
    std::string node;
    /// Between two drift checks (cnf/policy/host_settings.hpp reads it from the profile); zero: none.
    std::chrono::milliseconds refresh_interval{0};
    /// Run the timer's drift checks on a worker thread (see above).
    bool drift_off_loop = false;
  };
  policy_host(executor& ex, any_policy plugin, options o, logger* log = nullptr);
  ~policy_host();
  policy_host(const policy_host&) = delete;
  policy_host& operator=(const policy_host&) = delete;

  static std::vector<std::string> kinds();
  /// Records one change; schedules a flush when in sync. Errors name the resource and field.
  result<void> on_update(const sync_update& u);
  void set_in_sync(bool in_sync);
  /// Delivers what changed to the plugin now (the scheduled flush calls this).
  result<void> flush();
  /// Flushes done and failed since start.
  std::size_t flushes() const { return flushes_; }
  std::size_t failures() const { return failures_; }
  /// Asks the plugin to repair drift now (the timer calls this); logs and counts what it did.
  result<policy_drift> check_drift();
  /// Drift checks done, objects repaired by them, checks that failed, since start.
  std::size_t drift_checks() const { return drift_checks_; }
  std::size_t drift_repairs() const { return drift_repairs_; }
  std::size_t drift_failures() const { return drift_failures_; }
  std::chrono::milliseconds refresh_interval() const { return opt_.refresh_interval; }
  /// A drift check is running on the worker thread now.
  bool drift_running() const { return drift_running_; }
  /// The plugin's status, taken when no drift check holds the plugin.
  result<policy_status> plugin_status();
  const calculator& calc() const { return calc_; }

 private:
  void schedule();
  void arm_refresh();
  void start_drift_check();                         // on the worker thread
  result<policy_drift> record_drift(result<policy_drift> r);  // logs and counts, on the executor
  executor& ex_;
  any_policy plugin_;
  options opt_;
  logger* log_;
  calculator calc_;
  bool in_sync_ = false, scheduled_ = false;
  std::size_t flushes_ = 0, failures_ = 0;
  std::size_t drift_checks_ = 0, drift_repairs_ = 0, drift_failures_ = 0;
  executor::timer_id refresh_timer_ = 0;
  std::mutex plugin_mutex_;  // held by whoever calls the plugin (the worker, or the executor's thread)
  std::thread worker_;
  bool drift_running_ = false, flush_after_drift_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

/// spec.serviceAccountName of a Pod resource ("" when it has none).
result<std::string> pod_service_account(const resource& r);
/// The named ports of a WorkloadEndpoint resource (spec.ports: [{name, protocol, port}]).
result<std::vector<named_port>> workload_endpoint_ports(const resource& r);

}  // namespace netpol
CNF_END_NAMESPACE
