// The smallest types that model each cnf part concept. They prove the concepts ask for
// no more than they document, and serve the loader tests as plugin payloads.
#pragma once
#include <cnf/cnf.hpp>

namespace cnf_test {

struct datastore_archetype {
  cnf::result<cnf::resource> get(const cnf::resource_key& k) { return cnf::error(cnf::errc::not_found, k.to_string()); }
  cnf::result<cnf::resource_list> list(const cnf::list_options&) { return cnf::resource_list{}; }
  cnf::resource create(const cnf::resource& r) { auto c = r; c.revision = "1"; return c; }
  cnf::resource update(const cnf::resource& r) { auto c = r; c.revision = "2"; return c; }
  void remove(const cnf::resource_key&, std::string_view) {}
  cnf::watch_handle watch(const cnf::watch_options&, cnf::watch_callback) { return {}; }
  cnf::datastore_status status() { return {"archetype", "", "0"}; }
};

struct ipam_archetype {
  std::vector<cnf::assigned_address> assign(const cnf::assign_request&) {
    return {{cnf::ip_prefix::parse("10.0.0.1/32", true).value(), std::nullopt, "10.0.0.0/24"}};
  }
  void release_handle(std::string_view) {}
  void release_addresses(std::span<const cnf::ip_address>) {}
  cnf::ipam_usage usage() { return {}; }
  std::vector<cnf::allocation> allocations() { return {}; }
  cnf::gc_report gc(std::string_view, const std::set<std::string>&) { return {}; }
  std::vector<cnf::ip_address> addresses_of(std::string_view) { return {}; }
  cnf::assigned_address assign_tunnel_address(cnf::tunnel_kind, cnf::ip_family) {
    return {cnf::ip_prefix::parse("10.0.0.2/32", true).value(), std::nullopt, "10.0.0.0/24"};
  }
  void release_tunnel_address(cnf::tunnel_kind) {}
};

struct routing_archetype {
  void start(const cnf::node_info&, cnf::routing_sink&) {}
  void set_node(const cnf::node_info&) {}
  void upsert_node(const cnf::remote_node&) {}
  void remove_node(std::string_view) {}
  void upsert_peer(const cnf::peer_config&) {}
  void remove_peer(std::string_view) {}
  void advertise(const cnf::ip_prefix&) {}
  void withdraw(const cnf::ip_prefix&) {}
  cnf::routing_status status() { return {"archetype", {}, {}}; }
  void stop() {}
};

struct encapsulation_archetype {
  cnf::tunnel_info start(const cnf::node_info&, cnf::encap_sink&) { return {"tun0", std::nullopt, std::nullopt, 1450}; }
  void set_node(const cnf::node_info&) {}
  void upsert_node(const cnf::remote_node&) {}
  void remove_node(std::string_view) {}
  void apply() {}
  cnf::encap_status status() { return {}; }
  void stop() {}
};

struct policy_archetype {
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
  cnf::policy_drift check_drift() { return {}; }
};

}  // namespace cnf_test
