// Must NOT compile: the check names the missing operation.
#include <cnf/routing.hpp>
struct routing_without_status {
  void start(const cnf::node_info&, cnf::routing_sink&) {}
  void set_node(const cnf::node_info&) {}
  void upsert_node(const cnf::remote_node&) {}
  void remove_node(std::string_view) {}
  void upsert_peer(const cnf::peer_config&) {}
  void remove_peer(std::string_view) {}
  void advertise(const cnf::ip_prefix&) {}
  void withdraw(const cnf::ip_prefix&) {}
  void stop() {}
};
static_assert(cnf::check_routing<routing_without_status>());
int main() {}
