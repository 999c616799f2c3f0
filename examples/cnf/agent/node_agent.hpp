// The node side of `cnf agent` (Calico's felix + confd for routes): this node registered as
// a Calico v3 Node, the datastore mirrored by a syncer, the routing part fed with the other
// nodes and their blocks, blackholes for this node's own blocks, and every route handed to
// the route table. Everything runs on one event loop.
//
// Felix's rule: nothing reaches the kernel before the first complete sync. After it, each
// datastore change marks the calculation dirty; one recalculation (posted, so a burst of
// changes costs one) diffs the remote nodes against what the routing part was last told and
// tells it only what changed; the route table applies the result in one netlink batch.
//
// With a [policy] part, the same syncer also mirrors the kinds the policy calculation reads
// (cnf::netpol::policy_host::kinds()) and hands every change of those to the policy host,
// which programs nothing before the first complete sync and then one coalesced flush per
// burst of changes. A policy resource that does not parse is logged with its field and
// listed in the status; the rest stays programmed. Every [policy] refresh_interval (default
// 10 s) the policy part checks the kernel for drift and puts back what was changed by hand;
// each repair is logged and counted (status "driftRepairs", cnf_policy_drift_repairs_total).
#pragma once
#include <cnf/encap.hpp>
#include <cnf/event_loop.hpp>
#include <cnf/ipam.hpp>
#include <cnf/model/bgp.hpp>
#include <cnf/model/node.hpp>
#include <cnf/policy/host.hpp>
#include <cnf/policy/host_settings.hpp>
#include <cnf/profile.hpp>
#include <cnf/route_table.hpp>
#include <cnf/routing.hpp>
#include <cnf/syncer.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

namespace cnf_app {

/// This node's addresses from the profile's [node] section, autodetected where it says so:
/// the IPv4 address of the interface holding the default route, else the first global one.
cnf::result<std::vector<cnf::ip_prefix>> node_addresses(const cnf::profile& prof);

class node_agent final : private cnf::routing_sink, private cnf::encap_sink {
 public:
  node_agent(cnf::event_loop& loop, cnf::logger& log, const cnf::profile& prof, cnf::any_datastore ds, cnf::any_routing routing);
  ~node_agent();

  /// The encapsulation part, and the IPAM that assigns this node's tunnel address (call
  /// before start()). It starts after the first sync, once this node has a tunnel address.
  void set_encapsulation(cnf::any_encapsulation encap, cnf::any_ipam ipam);
  /// The policy part, named `plugin` in the profile (call before start()).
  void set_policy(cnf::any_policy policy, std::string plugin);
  /// This node's endpoint `wep` (just written by a CNI ADD the agent served) handed to the
  /// policy host and programmed now, before the ADD answers: no packet reaches the pod
  /// before its policy does (the syncer delivers the same endpoint later; nothing changes
  /// then). Nothing happens without a policy part or before the first complete sync.
  cnf::result<void> policy_endpoint_now(const cnf::resource_key& wep);
  bool hosts_policy() const { return policy_ != nullptr; }

  /// Sysctls, the route table, registration (retried while the datastore is down), the syncer.
  cnf::result<void> start();
  /// Stops the syncer and the routing part; the kernel stays as it is (a restarted agent
  /// takes its routes over unchanged).
  void stop();

  bool ready() const;
  std::string status_json() const;
  std::string metrics() const;
  void count_cni_call() { ++cni_calls_; }
  /// The MTU for a new pod's veth when neither its network config nor the profile sets one
  /// (Calico's auto MTU): the tunnel device's while the encapsulation part is in use (before
  /// its device exists: the uplink's less the encapsulation's overhead), else the uplink's
  /// (the interface holding this node's IPv4 address); 0 when no uplink is found.
  unsigned pod_mtu() const;

 private:
  // routing_sink: the routing part's reports, on the loop.
  void route_learned(const cnf::learned_route& r) noexcept override;
  void route_withdrawn(const cnf::ip_prefix& p) noexcept override;
  void peer_changed(const cnf::peer_status& p) noexcept override;
  void peer_removed(std::string_view name) noexcept override;
  void initial_routes_complete() noexcept override;
  void release_stale(const std::string& why);

  // encap_sink: the encapsulation part's reports, on the loop.
  void route_wanted(const cnf::route_entry& r) noexcept override;
  void route_unwanted(const cnf::ip_prefix& dst) noexcept override;
  void tunnel_changed(const cnf::tunnel_info& t) noexcept override;
  void recalculate_encap(const std::map<std::string, cnf::remote_node>& now);
  std::vector<cnf::encap_pool> read_pools();
  bool ensure_tunnel_address(const std::vector<cnf::encap_pool>& pools, cnf::ip_family family);
  void write_tunnel_fields();
  void write_ipip_tunnel_field();
  void drop_tunnel_address(cnf::ip_family family);
  void encap_failed(const std::string& what);

  unsigned uplink_mtu() const;  // cached for 10 s

  void register_node();
  void on_update(const cnf::sync_update& u);
  void on_status(cnf::sync_status s);
  void policy_update(const cnf::sync_update& u);
  void schedule();
  void recalculate();
  // BGP configuration (BGPPeer, BGPConfiguration, BGPFilter): what the routing part should have, diffed
  // against what it was last told.
  void bgp_update(const cnf::sync_update& u);
  void recalculate_bgp(const std::map<std::string, cnf::remote_node>& now);
  cnf::routing_config bgp_config(std::map<std::string, std::string>& errors) const;

  cnf::event_loop& loop_;
  cnf::logger& log_;
  const cnf::profile& prof_;
  cnf::any_datastore ds_;
  cnf::any_routing routing_;
  std::string name_;
  cnf::node_info self_;
  std::unique_ptr<cnf::route_table> rt_;
  std::unique_ptr<cnf::syncer> sync_;

  bool synced_once_ = false;
  bool routing_started_ = false;
  bool pending_ = false;
  bool registered_ = false;
  cnf::executor::timer_id register_timer_ = 0;
  // Graceful restart ([routing] graceful_stop): the last run's routes are held until the
  // routing part's initial_routes_complete, or graceful_wait_ after the first sync at most.
  bool holding_stale_ = false;
  std::chrono::seconds graceful_wait_{0};
  cnf::executor::timer_id stale_timer_ = 0;
  std::map<std::string, cnf::model::node> nodes_;           // valid Nodes (the last good one of a Node gone bad)
  std::map<std::string, std::string> invalid_;              // Node name -> why it is ignored
  std::map<std::string, cnf::remote_node> told_;            // what the routing part was last told
  std::map<std::string, cnf::model::bgp_peer> bgp_peers_;   // valid BGPPeers (the last good one of one gone bad)
  std::map<std::string, cnf::model::bgp_configuration> bgp_configs_;
  std::map<std::string, cnf::route_filter> bgp_filters_;    // valid BGPFilters (the last good one of one gone bad)
  std::map<std::string, cnf::peer_config> peers_told_;      // configured peers the routing part was last told
  std::optional<cnf::routing_config> config_told_;
  std::map<std::string, std::string> bgp_errors_;           // a peer or configuration not acted on -> why (status)
  std::string secrets_dir_ = "/etc/cnf/secrets";          // [routing] secrets_dir
  bool mesh_default_ = true;                                // [routing] node_to_node_mesh
  std::set<cnf::ip_prefix> own_blocks_;                     // blackholed
  std::map<std::string, std::pair<cnf::peer_status, std::chrono::system_clock::time_point>> peers_;
  cnf::any_encapsulation encap_;
  cnf::any_ipam ipam_;
  bool encap_started_ = false;
  bool tunnel_dropped_ = false;  ///< every pool Never: this node's tunnel address released and off its Node
  bool tunnel_v6_dropped_ = false;  ///< the same for the IPv6 pools (vxlan: vxlan-v6.calico)
  std::map<std::string, cnf::remote_node> encap_told_;     // what the encapsulation part was last told
  std::vector<cnf::encap_pool> pools_;                      // the last valid pools (IPPool spec.vxlanMode)
  cnf::tunnel_info tunnel_;
  cnf::tunnel_info tunnel_v6_;                              // vxlan: vxlan-v6.calico
  std::string encap_error_;
  cnf::executor::timer_id encap_retry_ = 0;
  cnf::any_policy policy_plugin_;
  std::string policy_name_;
  std::unique_ptr<cnf::netpol::policy_host> policy_;
  std::set<std::string> policy_kinds_;
  std::map<std::string, std::string> policy_invalid_;       // resource key -> why it is not programmed
  std::uint64_t policy_early_ = 0;                          // endpoints programmed before their ADD answered
  std::uint64_t policy_updates_ = 0;                        // changes of the policy kinds received
  std::size_t policy_flushes_at_update_ = 0;                // policy_->flushes() when the last one came
  std::uint64_t cni_calls_ = 0, recalculations_ = 0, invalid_seen_ = 0;
  mutable unsigned uplink_mtu_ = 0;
  mutable std::chrono::steady_clock::time_point uplink_mtu_read_{};
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

/// A tiny HTTP/1.0 responder on the loop, on 127.0.0.1:port: GET path -> (status, content type, body).
class health_server {
 public:
  struct reply {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
  };
  using handler = std::function<reply(std::string_view path)>;
  health_server(cnf::event_loop& loop, cnf::logger& log, handler h) : loop_(loop), log_(log), h_(std::move(h)) {}
  ~health_server();
  cnf::result<void> listen(unsigned port);

 private:
  void accept_one();
  cnf::event_loop& loop_;
  cnf::logger& log_;
  handler h_;
  int fd_ = -1;
  cnf::event_loop::watch_id watch_ = 0;
};

}  // namespace cnf_app
