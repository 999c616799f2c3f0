// cnf/policy/host.hpp — what a node agent needs to host a policy part: datastore changes in,
// the calculator in the middle, the plugin's typed updates out, coalesced on the executor.
//
// Kinds it reads (the syncer lists and watches them; kinds() names them):
//   WorkloadEndpoint (spec.ports gives named ports), NetworkPolicy and GlobalNetworkPolicy
//   (projectcalico.org/v3), KubernetesNetworkPolicy (networking.k8s.io/v1 NetworkPolicy; the
//   resource's spec is the object's spec), NetworkSet, GlobalNetworkSet, Namespace and
//   ServiceAccount (their labels).
// Felix's rule: nothing reaches the plugin before set_in_sync(true). After that every change
// schedules one flush on the executor (changes arriving meanwhile share it). A resource that
// does not parse is refused with an error naming it and its field, and its previous version
// stays programmed; so does everything else.
//
//   cnf::netpol::policy_host host(loop, plugin, {.node = "node-1"}, &log);
//   syncer.on_update([&](const cnf::sync_update& u) { (void)host.on_update(u); });
//   syncer.on_status([&](cnf::sync_status s) { host.set_in_sync(s == cnf::sync_status::in_sync); });
#pragma once
#include <cnf/executor.hpp>
#include <cnf/log.hpp>
#include <cnf/policy/calculator.hpp>
#include <cnf/syncer.hpp>

#include <memory>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netpol {

class policy_host {
 public:
  struct options {
    std::string node;
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
  const calculator& calc() const { return calc_; }

 private:
  void schedule();
  executor& ex_;
  any_policy plugin_;
  options opt_;
  logger* log_;
  calculator calc_;
  bool in_sync_ = false, scheduled_ = false;
  std::size_t flushes_ = 0, failures_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

/// The named ports of a WorkloadEndpoint resource (spec.ports: [{name, protocol, port}]).
result<std::vector<named_port>> workload_endpoint_ports(const resource& r);

}  // namespace netpol
CNF_END_NAMESPACE
