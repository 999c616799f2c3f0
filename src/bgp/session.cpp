#include <cnf/bgp/session.hpp>

#include <algorithm>

CNF_BEGIN_NAMESPACE
namespace bgp {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string_view to_string(session_state s) noexcept {
  switch (s) {
    case session_state::idle: return "Idle";
    case session_state::connect: return "Connect";
    case session_state::active: return "Active";
    case session_state::open_sent: return "OpenSent";
    case session_state::open_confirm: return "OpenConfirm";
    case session_state::established: return "Established";
  }
  return "?";
}

std::string_view to_string(timer_kind t) noexcept {
  switch (t) {
    case timer_kind::connect_retry: return "connect-retry";
    case timer_kind::hold: return "hold";
    case timer_kind::keepalive: return "keepalive";
  }
  return "?";
}

void session::to(session_state s, std::string reason) {
  if (s == state_) return;
  out_.push_back(action::state_changed{state_, s, std::move(reason)});
  state_ = s;
}

void session::send(const message& m) { out_.push_back(action::send{encode(m, {neg_.four_octet_as})}); }

void session::send_open() {
  open_message o;
  o.asn = cfg_.local_as;
  o.hold_time = cfg_.hold_time;
  o.router_id = cfg_.router_id;
  o.multiprotocol = cfg_.families;
  o.four_octet_as = true;
  o.route_refresh = true;
  o.restart = cfg_.restart;
  send(o);
}

void session::start() {
  stopped_ = false;
  if (state_ != session_state::idle) return;
  timer(timer_kind::connect_retry, cfg_.connect_retry);
  if (cfg_.passive) {
    to(session_state::active, "waiting for the peer to connect");
  } else {
    out_.push_back(action::connect{});
    to(session_state::connect, "connecting");
  }
}

void session::stop_silently(std::string why) {
  stopped_ = true;
  drop(why.empty() ? "stopped" : why, false);
}

void session::stop(std::uint8_t cease_subcode, std::string why) {
  stopped_ = true;
  if (connected_) {
    notification_message n{err::cease, cease_subcode, {}};
    if (!why.empty() && (cease_subcode == err::administrative_shutdown || cease_subcode == err::administrative_reset)) {
      std::string t = why.substr(0, 128);  // RFC 9003 shutdown communication
      n.data.push_back(static_cast<std::uint8_t>(t.size()));
      n.data.insert(n.data.end(), t.begin(), t.end());
    }
    send(n);
  }
  drop(why.empty() ? "stopped" : why, false);
}

void session::tcp_connected() {
  if (state_ == session_state::open_sent || state_ == session_state::open_confirm || state_ == session_state::established) return;
  connected_ = true;
  lost_ = false;
  buf_.clear();
  peer_open_.reset();
  neg_ = {};
  stop_timer(timer_kind::connect_retry);
  send_open();
  timer(timer_kind::hold, cfg_.open_hold);
  to(session_state::open_sent, "connection up, OPEN sent");
}

void session::tcp_failed() {
  if (state_ != session_state::connect) return;
  connected_ = false;
  timer(timer_kind::connect_retry, cfg_.connect_retry);
  to(session_state::active, "connection attempt failed");
}

void session::tcp_closed() {
  if (!connected_) return;
  connected_ = false;
  if (state_ == session_state::open_sent) {
    // RFC 4271: OpenSent + TcpConnectionFails -> Active, connect-retry running.
    stop_timer(timer_kind::hold);
    out_.push_back(action::close{});
    timer(timer_kind::connect_retry, cfg_.connect_retry);
    last_error_ = "connection closed by the peer before its OPEN";
    to(session_state::active, last_error_);
    return;
  }
  lost_ = true;
  drop("connection closed by the peer");
}

void session::drop(std::string why, bool restart) {
  if (connected_ || state_ == session_state::connect) out_.push_back(action::close{});
  connected_ = false;
  stop_timer(timer_kind::hold);
  stop_timer(timer_kind::keepalive);
  stop_timer(timer_kind::connect_retry);
  buf_.clear();
  if (restart && cfg_.auto_restart && !stopped_) timer(timer_kind::connect_retry, cfg_.connect_retry);
  if (why != "stopped") last_error_ = why;
  to(session_state::idle, std::move(why));
}

void session::fail(const decode_error& e) {
  if (connected_) send(e.notification());
  drop("sent NOTIFICATION: " + e.to_string());
}

void session::notify_and_close(notification_message n, std::string why) {
  if (connected_) send(n);
  drop(std::move(why), false);
}

void session::restart_hold() {
  if (neg_.hold_time) timer(timer_kind::hold, seconds(neg_.hold_time));
}

void session::timer_expired(timer_kind t) {
  switch (t) {
    case timer_kind::connect_retry:
      if (state_ == session_state::idle) {
        if (cfg_.auto_restart && !stopped_) start();
      } else if (state_ == session_state::connect) {
        out_.push_back(action::close{});
        out_.push_back(action::connect{});
        timer(timer_kind::connect_retry, cfg_.connect_retry);
      } else if (state_ == session_state::active) {
        timer(timer_kind::connect_retry, cfg_.connect_retry);
        if (!cfg_.passive) {
          out_.push_back(action::connect{});
          to(session_state::connect, "connecting");
        }
      }
      break;
    case timer_kind::hold:
      if (state_ == session_state::open_sent || state_ == session_state::open_confirm || state_ == session_state::established)
        fail(decode_error{err::hold_timer_expired, 0, {}, "hold_timer",
                          "no message from the peer for " + std::to_string(state_ == session_state::open_sent ? cfg_.open_hold.count() / 1000 : neg_.hold_time) + " s"});
      break;
    case timer_kind::keepalive:
      if (state_ == session_state::open_confirm || state_ == session_state::established) {
        send(keepalive_message{});
        timer(timer_kind::keepalive, neg_.keepalive);
      }
      break;
  }
}

void session::received(std::span<const std::uint8_t> data) {
  if (!connected_) return;
  buf_.insert(buf_.end(), data.begin(), data.end());
  std::size_t pos = 0;
  while (connected_) {
    auto f = frame(std::span(buf_).subspan(pos));
    if (auto* e = std::get_if<decode_error>(&f)) {
      buf_.clear();
      fail(*e);
      return;
    }
    const std::size_t len = std::get<std::size_t>(f);
    if (len == 0) break;
    auto m = decode(std::span(buf_).subspan(pos, len), {neg_.four_octet_as});
    pos += len;
    if (auto* e = std::get_if<decode_error>(&m)) {
      buf_.clear();
      fail(*e);
      return;
    }
    handle(std::get<message>(std::move(m)));
  }
  if (connected_) buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos));
}

void session::handle(message m) {
  if (auto* n = std::get_if<notification_message>(&m)) {
    drop("received NOTIFICATION: " + n->to_string());
    return;
  }
  auto fsm_error = [&](std::uint8_t sub, std::string_view what) {
    fail(decode_error{err::fsm, sub, {}, "fsm", std::string(what) + " in state " + std::string(to_string(state_))});
  };
  switch (state_) {
    case session_state::open_sent: {
      auto* o = std::get_if<open_message>(&m);
      if (!o) return fsm_error(1, "a message other than OPEN");
      if (cfg_.peer_as && o->asn != cfg_.peer_as) {
        bytes d{static_cast<std::uint8_t>(o->asn >> 8), static_cast<std::uint8_t>(o->asn)};
        return fail(decode_error{err::open, err::bad_peer_as, std::move(d), "OPEN.my_autonomous_system",
                                 "peer says AS " + std::to_string(o->asn) + ", configured AS " + std::to_string(cfg_.peer_as)});
      }
      if (o->router_id == cfg_.router_id && o->asn == cfg_.local_as)
        return fail(decode_error{err::open, err::bad_bgp_identifier, {}, "OPEN.bgp_identifier",
                                 "the peer's BGP identifier " + ip_address::v4(o->router_id).to_string() + " is this speaker's own"});
      peer_open_ = *o;
      neg_.hold_time = std::min(cfg_.hold_time, o->hold_time);
      neg_.keepalive = milliseconds(neg_.hold_time * 1000 / 3);
      neg_.four_octet_as = o->four_octet_as;
      neg_.route_refresh = o->route_refresh;
      neg_.peer_restart = o->restart;
      neg_.families.clear();
      // RFC 4760: a peer without multiprotocol capabilities speaks IPv4 unicast only.
      auto theirs = o->multiprotocol.empty() ? std::vector<afi_safi>{ipv4_unicast} : o->multiprotocol;
      for (auto& f : cfg_.families)
        if (std::find(theirs.begin(), theirs.end(), f) != theirs.end()) neg_.families.push_back(f);
      send(keepalive_message{});
      stop_timer(timer_kind::hold);
      restart_hold();
      if (neg_.hold_time) timer(timer_kind::keepalive, neg_.keepalive);
      to(session_state::open_confirm, "OPEN received");
      return;
    }
    case session_state::open_confirm:
      if (!std::holds_alternative<keepalive_message>(m)) return fsm_error(2, "a message other than KEEPALIVE");
      restart_hold();
      last_error_.clear();
      to(session_state::established, "KEEPALIVE received");
      return;
    case session_state::established:
      if (std::holds_alternative<open_message>(m)) return fsm_error(3, "OPEN");
      restart_hold();
      if (auto* u = std::get_if<update_message>(&m)) {
        ++updates_in_;
        out_.push_back(action::update{std::move(*u)});
      } else if (auto* r = std::get_if<route_refresh_message>(&m)) {
        out_.push_back(action::route_refresh{r->af});
      }
      return;
    default: return;
  }
}

void session::send_update(const update_message& u) {
  if (state_ != session_state::established) return;
  send(u);
}

void session::send_route_refresh(afi_safi af) {
  if (state_ == session_state::established && neg_.route_refresh) send(route_refresh_message{af});
}

}  // namespace bgp
CNF_END_NAMESPACE
