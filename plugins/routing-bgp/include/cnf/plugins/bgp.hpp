// cnf/plugins/bgp.hpp — the `bgp` routing part: cnf's own BGP speaker (cnf/bgp/speaker.hpp)
// with sockets and timers around it.
//
//   [routing]
//   plugin = "bgp"
//   as_number = 64512          # default: [node] as_number, else 64512 (Calico's default)
//   router_id = "10.0.0.1"     # default: the node's IPv4 address
//   listen_port = 179
//   hold_time = 90             # seconds (0, or 3..65535)
//   connect_retry = 5          # seconds
//   node_to_node_mesh = true   # an iBGP session with every other node, as Calico's mesh
//   route_reflector_cluster_id = "1.1.1.1"   # be a route reflector; configured peers are its clients
//   password = "..."           # TCP MD5 (RFC 2385) on every session
//   graceful_restart_time = 120  # seconds advertised (RFC 4724, helper side); 0: off
//   graceful_stop = false      # true: a clean stop sends no Cease to peers that agreed graceful
//                              # restart (they keep this node's routes), and the next start sets
//                              # the Restart State and forwarding-preserved bits (RFC 4724)
//   secrets_dir = "/etc/cnf/secrets"  # a BGPPeer's password.secretKeyRef {name, key}: the file <dir>/<name>/<key>
//
// The cluster's BGPConfiguration reaches the part through configure(): its asNumber is the
// default AS (this node's is [routing] as_number, else its Node's spec.bgp.asNumber, else the
// default), nodeToNodeMeshEnabled and listenPort override the keys above.
//
// The speaker runs on a thread of its own that owns every socket (non-blocking, one epoll)
// and every timer; the host's calls reach it through a queue, and what it learns reaches
// the host's sink through the host's executor (plugin_context::exec), so the sink is only
// called on the executor's thread, as cnf/routing.hpp requires. Why a thread and not the
// agent's event loop: a plugin sees only cnf::executor (post, post_after, cancel) across
// the shared-library boundary; event_loop::watch_readable and the io_context live in the
// agent's cnf_runtime, which a plugin must not link a second copy of.
//
// Learned routes go to the sink (the agent's route table programs them); nothing here
// writes a kernel route. stop() sends Cease / Administrative Shutdown to every peer.
#pragma once
#include <cnf/executor.hpp>
#include <cnf/log.hpp>
#include <cnf/routing.hpp>
#include <cnf/settings.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

CNF_BEGIN_NAMESPACE
namespace bgp {

struct routing_settings {
  std::uint32_t as_number = 0;  ///< 0: the node's, else 64512
  std::string router_id;        ///< empty: the node's IPv4 address
  std::uint16_t listen_port = 179;
  std::uint16_t hold_time = 90;
  std::chrono::milliseconds connect_retry{5000};
  bool node_to_node_mesh = true;
  std::string route_reflector_cluster_id;
  std::string password;
  std::uint16_t graceful_restart_time = 120;
  bool graceful_stop = false;
  std::string secrets_dir = "/etc/cnf/secrets";  ///< where the host reads a BGPPeer's secretKeyRef
};

/// Reads and checks the [routing] keys above (errors name the key and the problem).
routing_settings read_settings(settings& s);

class routing {
 public:
  routing(routing_settings s, executor* exec, logger* log);
  ~routing();
  routing(routing&&) noexcept;
  routing& operator=(routing&&) noexcept;

  result<void> start(const node_info& self, routing_sink& sink);
  void set_node(const node_info& self);
  void upsert_node(const remote_node& r);
  void remove_node(std::string_view name);
  void upsert_peer(const peer_config& p);
  void remove_peer(std::string_view name);
  void configure(const routing_config& c);
  void advertise(const ip_prefix& p);
  void withdraw(const ip_prefix& p);
  routing_status status() const;
  void stop();

  /// The port the speaker listens on (useful with listen_port = 0 in tests).
  std::uint16_t bound_port() const;

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

}  // namespace bgp
CNF_END_NAMESPACE
