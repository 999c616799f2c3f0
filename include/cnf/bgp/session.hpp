// cnf/bgp/session.hpp — the BGP-4 finite state machine of one connection (RFC 4271 §8).
//
// Sans-I/O: the owner feeds events (start, the TCP connection's fate, bytes received, a
// timer that fired) and drains actions (open a connection, send bytes, close, start or
// stop a timer, an UPDATE to hand to the RIB, a state change). The session never reads
// a clock: a timer is an action the owner turns into a real timer and later an event.
// Collision handling needs two connections to the same peer, so it lives one level up
// (cnf/bgp/speaker.hpp); resolve_collision() holds the rule.
//
//   cnf::bgp::session s(cfg);
//   s.start();                                  // -> connect, start_timer(connect_retry)
//   s.tcp_connected();                          // -> send(OPEN), start_timer(hold)
//   s.received(bytes);                          // -> send(KEEPALIVE), state_changed(OpenConfirm)
//   for (auto& a : s.take()) std::visit(shell, a);
#pragma once
#include <cnf/bgp/message.hpp>

#include <chrono>
#include <string>
#include <variant>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace bgp {

enum class session_state { idle, connect, active, open_sent, open_confirm, established };
std::string_view to_string(session_state s) noexcept;  ///< calicoctl / BIRD spelling: "Idle", "OpenSent", ...

enum class timer_kind { connect_retry, hold, keepalive };
std::string_view to_string(timer_kind t) noexcept;

struct session_config {
  std::uint32_t local_as = 0;
  std::uint32_t peer_as = 0;
  std::uint32_t router_id = 0;   ///< host order
  std::uint16_t hold_time = 90;  ///< seconds; 0 or >= 3
  std::chrono::milliseconds connect_retry{5000};
  std::chrono::milliseconds open_hold{240000};  ///< the hold timer before OPEN arrives (RFC 4271: 4 minutes)
  std::vector<afi_safi> families{ipv4_unicast};
  std::optional<graceful_restart> restart;  ///< advertised when set
  bool passive = false;        ///< never connect; wait for the peer
  bool auto_restart = true;    ///< after an error, start again when connect_retry fires
};

namespace action {
struct connect {};
struct send { bytes data; };
struct close {};
struct start_timer { timer_kind timer; std::chrono::milliseconds after; };
struct stop_timer { timer_kind timer; };
struct state_changed { session_state from, to; std::string reason; };
struct update { update_message msg; };
struct route_refresh { afi_safi af; };
}  // namespace action
using session_action = std::variant<action::connect, action::send, action::close, action::start_timer, action::stop_timer,
                                    action::state_changed, action::update, action::route_refresh>;

/// What both OPENs agreed on.
struct negotiated {
  std::uint16_t hold_time = 0;
  std::chrono::milliseconds keepalive{0};
  bool four_octet_as = false;
  bool route_refresh = false;
  std::vector<afi_safi> families;
  std::optional<graceful_restart> peer_restart;
};

/// RFC 4271 §6.8: true when the connection this side opened survives a collision.
inline bool outgoing_wins_collision(std::uint32_t local_id, std::uint32_t remote_id) noexcept { return local_id > remote_id; }

class session {
 public:
  explicit session(session_config c, bool outgoing = true) : cfg_(std::move(c)), outgoing_(outgoing) {}

  void start();                 ///< ManualStart: Idle -> Connect (or Active when passive)
  void stop(std::uint8_t cease_subcode = err::administrative_shutdown, std::string why = {});  ///< ManualStop: Cease, Idle, no restart
  /// ManualStop without the NOTIFICATION (RFC 4724 restarting speaker): the connection is just
  /// closed, so a graceful-restart helper keeps this side's routes for the restart time.
  void stop_silently(std::string why);
  /// The connection is up: one this session asked for (action::connect), or an accepted one
  /// this session adopts (any state but OpenSent and later).
  void tcp_connected();
  void tcp_failed();            ///< the connection attempt failed
  void tcp_closed();            ///< the peer closed the connection, or it broke
  void received(std::span<const std::uint8_t> data);
  void timer_expired(timer_kind t);
  /// Sends an UPDATE (Established only; ignored otherwise).
  void send_update(const update_message& u);
  void send_route_refresh(afi_safi af);
  /// Closes with a NOTIFICATION (e.g. Cease / Connection Collision Resolution).
  void notify_and_close(notification_message n, std::string why);

  std::vector<session_action> take() { return std::exchange(out_, {}); }

  session_state state() const noexcept { return state_; }
  bool outgoing() const noexcept { return outgoing_; }
  const session_config& config() const noexcept { return cfg_; }
  session_config& config() noexcept { return cfg_; }
  const std::optional<open_message>& peer_open() const noexcept { return peer_open_; }
  const negotiated& agreed() const noexcept { return neg_; }
  const std::string& last_error() const noexcept { return last_error_; }
  std::size_t updates_received() const noexcept { return updates_in_; }
  /// The last session ended because the TCP connection went away, with no NOTIFICATION
  /// either way: the case in which a graceful-restart helper keeps the peer's routes.
  bool connection_lost() const noexcept { return lost_; }

 private:
  void to(session_state s, std::string reason = {});
  void send(const message& m);
  void send_open();
  void timer(timer_kind t, std::chrono::milliseconds d) { out_.push_back(action::start_timer{t, d}); }
  void stop_timer(timer_kind t) { out_.push_back(action::stop_timer{t}); }
  void fail(const decode_error& e);                      // send NOTIFICATION, close, Idle
  void drop(std::string why, bool restart = true);       // close, Idle
  void handle(message m);
  void restart_hold();

  session_config cfg_;
  bool outgoing_;
  session_state state_ = session_state::idle;
  bool connected_ = false;
  bool stopped_ = false;
  bool lost_ = false;
  bytes buf_;
  std::optional<open_message> peer_open_;
  negotiated neg_;
  std::string last_error_;
  std::size_t updates_in_ = 0;
  std::vector<session_action> out_;
};

}  // namespace bgp
CNF_END_NAMESPACE
