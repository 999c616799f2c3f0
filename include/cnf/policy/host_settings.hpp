// cnf/policy/host_settings.hpp — the keys of a profile's [policy] section that the host (the
// node agent) reads, next to the plugin's own keys:
//
//   [policy]
//   plugin = "iptables"
//   refresh_interval = 10     # seconds between drift checks (check_drift()); 0: none
//
// The default is 10 s (Felix's iptables refresh interval before it moved to 90 s): a rule
// deleted by hand is back within seconds. A check is one read of the table (iptables-save or
// nft list, and ipset save) on the agent's loop: milliseconds at the hundreds to thousands of
// rules of a usual node, but about 1 s (legacy) to 2 s (nft) for iptables-save of 100,000
// rules measured here, so a node that large wants a longer interval (30 to 90 s). A policy
// plugin's configure() calls
// read_host_settings(s) too, so that these keys are known there and a bad value is reported
// once with the profile's file:line and the key.
//
//   auto h = cnf::netpol::read_host_settings(s);   // s: cnf::settings of section "policy"
#pragma once
#include <cnf/settings.hpp>

#include <chrono>
#include <cmath>
#include <string>

CNF_BEGIN_NAMESPACE
namespace netpol {

inline constexpr std::chrono::milliseconds default_refresh_interval{10'000};

struct host_settings {
  /// Between two drift checks; zero: no drift checks.
  std::chrono::milliseconds refresh_interval = default_refresh_interval;
};

/// Reads and validates refresh_interval (a number of seconds: 0, or 0.1 to 3600).
inline host_settings read_host_settings(settings& s) {
  host_settings h;
  if (auto v = s.get_optional<double>("refresh_interval")) {
    if (!std::isfinite(*v) || (*v != 0 && (*v < 0.1 || *v > 3600))) {
      std::string got = std::isfinite(*v) ? std::to_string(*v) : std::string("not a number");
      while (got.find('.') != std::string::npos && (got.back() == '0' || got.back() == '.')) {
        const bool dot = got.back() == '.';
        got.pop_back();
        if (dot) break;
      }
      s.fail("refresh_interval", "must be 0 (no drift checks) or between 0.1 and 3600 seconds (got " + got + ")");
    } else {
      h.refresh_interval = std::chrono::milliseconds(static_cast<long long>(std::llround(*v * 1000)));
    }
  }
  return h;
}

}  // namespace netpol
CNF_END_NAMESPACE
