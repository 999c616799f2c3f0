// Must NOT compile: the check names the missing operation (the batch step).
#include <cnf/encap.hpp>
struct encap_without_apply {
  cnf::tunnel_info start(const cnf::node_info&, cnf::encap_sink&) { return {}; }
  void set_node(const cnf::node_info&) {}
  void upsert_node(const cnf::remote_node&) {}
  void remove_node(std::string_view) {}
  cnf::encap_status status() { return {}; }
  void stop() {}
};
static_assert(cnf::check_encapsulation<encap_without_apply>());
int main() {}
