// Must NOT compile: the check names the missing operation.
#include <cnf/ipam.hpp>
struct ipam_without_gc {
  std::vector<cnf::assigned_address> assign(const cnf::assign_request&) { return {}; }
  void release_handle(std::string_view) {}
  void release_addresses(std::span<const cnf::ip_address>) {}
  cnf::ipam_usage usage() { return {}; }
  std::vector<cnf::allocation> allocations() { return {}; }
};
static_assert(cnf::check_ipam<ipam_without_gc>());
int main() {}
