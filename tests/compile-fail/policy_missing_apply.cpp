// Must NOT compile: the check names the missing operation (the batch step).
#include <cnf/policy.hpp>
struct policy_without_apply {
  void upsert_endpoint(const cnf::workload_endpoint&) {}
  void remove_endpoint(std::string_view) {}
  void upsert_policy(const cnf::network_policy&) {}
  void remove_policy(std::string_view) {}
  void upsert_profile(const cnf::policy_profile&) {}
  void remove_profile(std::string_view) {}
  void add_ip_set_members(std::string_view, std::span<const cnf::ip_prefix>) {}
  void remove_ip_set_members(std::string_view, std::span<const cnf::ip_prefix>) {}
  void remove_ip_set(std::string_view) {}
  cnf::policy_status status() { return {}; }
  void stop() {}
  cnf::policy_drift check_drift() { return {}; }
};
static_assert(cnf::check_policy<policy_without_apply>());
int main() {}
