// Must NOT compile: a policy part without drift checking is refused, and the check says so.
#include <cnf/policy.hpp>
struct policy_without_check_drift {
  void upsert_endpoint(const cnf::workload_endpoint&) {}
  void remove_endpoint(std::string_view) {}
  void upsert_policy(const cnf::network_policy&) {}
  void remove_policy(std::string_view) {}
  void upsert_profile(const cnf::policy_profile&) {}
  void remove_profile(std::string_view) {}
  void add_ip_set_members(std::string_view, std::span<const cnf::ip_prefix>) {}
  void remove_ip_set_members(std::string_view, std::span<const cnf::ip_prefix>) {}
  void remove_ip_set(std::string_view) {}
  void apply() {}
  cnf::policy_status status() { return {}; }
  void stop() {}
};
static_assert(cnf::check_policy<policy_without_check_drift>());
int main() {}
