// cnf/bgp/speaker.hpp — a whole BGP speaker without I/O: peers, their sessions, the RIB,
// import and export rules.
//
// The shell (plugins/routing-bgp) owns sockets and timers and turns them into events;
// the speaker answers with actions. Connections are named by ids the speaker hands out
// (action connect, or accepted()); timers by ids it hands out too. Nothing here reads a
// clock, so a test replays events and compares actions and RIB state.
//
// Rules: a peer with the speaker's AS is iBGP. Routes learned over iBGP are not sent to
// other iBGP peers (split horizon) unless the speaker is a route reflector (cluster_id
// set): then routes from a client go to every peer, routes from a non-client to clients
// only (RFC 4456), with ORIGINATOR_ID and CLUSTER_LIST added, next hop kept. Everything
// else leaves with this speaker's address as next hop (next-hop self). Equal best paths
// are reported as one route with several next hops.
//
//   cnf::bgp::speaker s({.asn = 64512, .router_id = ip.v4_host_order()});
//   s.add_peer({.name = "b", .address = b, .asn = 64512});
//   for (auto& a : s.take()) std::visit(shell, a);   // connect{conn 1, b}, start_timer{...}
//   s.connected(1, my_address);                       // -> send{1, OPEN}
#pragma once
#include <cnf/bgp/rib.hpp>
#include <cnf/bgp/session.hpp>
#include <cnf/route_filter.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <variant>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace bgp {

using conn_id = std::uint64_t;
using timer_id = std::uint64_t;

struct speaker_config {
  std::uint32_t asn = 0;
  std::uint32_t router_id = 0;  ///< host order
  std::uint16_t hold_time = 90;
  std::chrono::milliseconds connect_retry{5000};
  std::optional<std::uint32_t> cluster_id;  ///< a route reflector when set
  std::vector<ip_address> local_addresses;  ///< next-hop self, one per family
  std::vector<afi_safi> families{ipv4_unicast, ipv6_unicast};
  bool multipath = true;
  /// Graceful restart (RFC 4724): the restart time advertised; as a helper, a peer's routes
  /// are kept (stale) for the restart time it advertised when its connection drops without
  /// a NOTIFICATION, until its End-of-RIB. 0: the capability is not sent, routes go at once.
  std::uint16_t restart_time = 120;
  /// RFC 4724 restarting speaker: this speaker has just restarted after a graceful stop; its
  /// OPENs carry the Restart State (R) bit and "forwarding state preserved" for each family
  /// (the kernel routes of its last run are still there), for restart_time seconds after it
  /// is made (a timer it asks for at once), or until set_restarted(false).
  /// It also defers route selection (§4.1): no route reaches the host and no UPDATE leaves
  /// until every peer has sent End-of-RIB for each family agreed (peers that come up without
  /// the capability, or restarting themselves, are not waited for), or until that same timer;
  /// then the host gets the whole table, followed by out::initial_routes_complete, and each
  /// Established peer its UPDATEs and End-of-RIB.
  bool restarting = false;
};

struct neighbor {
  std::string name;
  ip_address address;
  std::uint32_t asn = 0;
  std::string type = "global";  ///< "node-to-node mesh", "global", "node specific"
  bool rr_client = false;       ///< this speaker reflects to it (needs speaker_config::cluster_id)
  bool passive = false;
  std::string password;         ///< TCP MD5 (the shell applies it)
  bool keep_next_hop = false;   ///< learned routes go to it with their own next hop (not next-hop self)
  /// Calico's BGPFilters of its BGPPeer, in order (cnf/route_filter.hpp): import rules on the
  /// routes learned from it, export rules on those sent to it. Changed live by add_peer: the
  /// paths it sent (Adj-RIB-In, rejected ones included) are evaluated again and its Adj-RIB-Out
  /// recomputed (UPDATEs / withdraws); the session is not reset.
  std::vector<route_filter> filters;
  /// Graceful restart on this peering (Calico's maxRestartTime), seconds; 0: the speaker's
  /// restart_time. Advertised to it in the capability (as BIRD's per-protocol `graceful restart
  /// time`), and as helper how long its routes are kept stale (instead of the time it advertised).
  /// A change applies from the next session (it is in the OPEN): the session is not reset for it.
  std::uint32_t max_restart_time = 0;
  friend bool operator==(const neighbor&, const neighbor&) = default;
};

namespace out {
struct connect { conn_id conn; std::string peer; ip_address address; };
struct send { conn_id conn; bytes data; };
struct close { conn_id conn; };
struct start_timer { timer_id timer; std::chrono::milliseconds after; };
struct stop_timer { timer_id timer; };
/// A Loc-RIB change for the host: `next_hops` empty means withdrawn.
struct route { ip_prefix prefix; std::vector<ip_address> next_hops; std::string peer; };
struct peer_state { std::string name; session_state state; std::string info; };
struct log { bool warning; std::string message; bool debug = false; };
/// A restarting speaker's route selection is done (RFC 4724 §4.1): the routes reported so far
/// are the whole initial table, so forwarding state kept from the last run may go.
struct initial_routes_complete { std::string reason; };
}  // namespace out
using speaker_action = std::variant<out::connect, out::send, out::close, out::start_timer, out::stop_timer, out::route, out::peer_state, out::log,
                                    out::initial_routes_complete>;

struct peer_info {
  neighbor config;
  session_state state = session_state::idle;
  std::string info;
  std::size_t prefixes_received = 0;  ///< paths in its Adj-RIB-In
  std::size_t prefixes_sent = 0;      ///< prefixes in its Adj-RIB-Out
  std::size_t stale = 0;              ///< paths kept through its graceful restart
  std::size_t filtered = 0;           ///< paths it sent that its import filters reject (kept, not used)
  bool awaited = false;               ///< a deferring (restarting) speaker still waits for its End-of-RIB
  std::size_t reflected_back = 0;     ///< paths refused as this speaker's own come back (ORIGINATOR_ID / CLUSTER_LIST, RFC 4456)
};

class speaker {
 public:
  explicit speaker(speaker_config c);
  ~speaker();
  speaker(const speaker&) = delete;
  speaker& operator=(const speaker&) = delete;

  // ---- configuration ----
  void add_peer(const neighbor& n);        ///< adds, or replaces a changed peer (its session restarts)
  void remove_peer(std::string_view name); ///< Cease / Peer De-configured, its routes withdrawn
  /// Originates a prefix, with communities (RFC 1997) and large communities (RFC 8092);
  /// again with other communities: the prefix is sent again with them (no session reset).
  void originate(const ip_prefix& p, std::vector<std::uint32_t> communities = {}, std::vector<large_community> large = {});
  void withdraw(const ip_prefix& p);
  void set_local_addresses(std::vector<ip_address> a);
  /// Cease / Administrative Shutdown to every peer; nothing restarts afterwards. graceful:
  /// no NOTIFICATION to the peers that agreed graceful restart (their connection is only
  /// closed, so as helpers they keep this speaker's routes for its restart time, RFC 4724);
  /// the others still get the Cease.
  void stop(std::string why = "cnf is stopping", bool graceful = false);
  /// Clears speaker_config::restarting for the sessions opened from now on.
  void set_restarted(bool restarting) { cfg_.restarting = restarting; }
  /// Route selection is deferred (a restarting speaker waiting for its peers' End-of-RIB).
  bool deferring() const noexcept { return deferring_; }

  // ---- events from the shell ----
  void connected(conn_id c, const ip_address& local);   ///< an outgoing connection is up
  void connect_failed(conn_id c);
  /// An incoming connection: returns its id (the speaker may answer with close at once).
  conn_id accepted(const ip_address& remote, const ip_address& local);
  void received(conn_id c, std::span<const std::uint8_t> data);
  void closed(conn_id c);
  void timer_fired(timer_id t);

  std::vector<speaker_action> take() { return std::exchange(out_, {}); }

  // ---- state ----
  const rib& table() const noexcept { return rib_; }
  std::vector<peer_info> peers() const;
  const speaker_config& config() const noexcept { return cfg_; }
  /// The prefixes sent to a peer, with the attributes sent (Adj-RIB-Out).
  std::map<ip_prefix, path_attributes> adj_rib_out(std::string_view peer) const;

 private:
  struct peer;
  struct slot;
  peer* find(std::string_view name);
  peer* by_address(const ip_address& a);
  void start_session(peer& p, int which, bool outgoing);
  void run(peer& p, int which);  // drains the session's actions
  void on_established(peer& p);
  void on_down(peer& p);
  void end_restart(peer& p);
  void check_deferral();
  void end_deferral(std::string why);
  void import(peer& p, update_message& u);
  void refilter(peer& p, const std::vector<route_filter>& before);
  void changed(const ip_prefix& prefix);
  void flush();
  std::shared_ptr<const path_attributes> export_to(const peer& p, const ip_prefix& prefix, ip_address& nh);
  void resolve_collision(peer& p);
  std::optional<ip_address> local_for(const peer& p, ip_family f) const;

  speaker_config cfg_;
  rib rib_;
  std::map<std::string, std::unique_ptr<peer>, std::less<>> peers_;
  std::map<conn_id, std::pair<peer*, int>> conns_;
  std::map<std::uint64_t, std::pair<peer*, int>> sessions_;  // session uid -> where
  std::map<std::uint64_t, peer*> restart_timers_;             // graceful-restart timer uid -> peer
  std::set<ip_prefix> dirty_;
  std::map<ip_prefix, std::vector<ip_address>> reported_;
  std::set<ip_prefix> originated_;
  std::vector<std::shared_ptr<const path_attributes>> origin_attrs_;  // one per distinct community set, shared
  conn_id next_conn_ = 1;
  std::uint64_t next_uid_ = 1;
  std::uint64_t restart_window_uid_ = 0;  // the timer that ends speaker_config::restarting
  peer_id next_peer_ = 1;
  bool stopped_ = false;
  bool flushing_ = false;
  bool deferring_ = false;                // RFC 4724 §4.1 selection deferral (restarting)
  std::optional<std::string> complete_;   // out::initial_routes_complete to report after the next flush
  std::vector<speaker_action> out_;
};

}  // namespace bgp
CNF_END_NAMESPACE
