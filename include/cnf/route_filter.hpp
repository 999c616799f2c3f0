// cnf/route_filter.hpp — Calico's BGPFilter as a value a routing part applies to the routes it
// learns from a peer (import) and sends to it (export).
//
// Semantics, as Calico documents BGPFilter and as its confd renders one into BIRD functions:
// - a BGPPeer's `filters` are tried in the order listed, and inside each filter its rules in
//   order; the first rule that matches decides (Accept or Reject);
// - no rule matches: Accept (Calico's import is "accept"; its export falls through to the
//   normal export rules). Accept never widens what a speaker sends: split horizon and route
//   reflection still apply;
// - matchOperator over the rule's cidr: Equal (the same prefix), NotEqual, In (inside cidr:
//   as long or longer, BIRD's `net ~ cidr`), NotIn; prefixLength {min, max} narrows In/NotIn
//   to those lengths (BIRD's `net ~ [cidr{min,max}]`; min defaults to cidr's length, max to
//   32/128); a rule with neither cidr nor matchOperator matches every route;
// - source: RemotePeers matches routes learned from a BGP peer (not this node's own blocks);
// - a peer naming a filter that does not exist: confd skips it (as if it were not listed);
//   cnf does the same (`exists = false`) and says so in the peer's status.
//
//   cnf::route_filter f{.name = "no-ten", .import_v4 = {{.action = cnf::filter_action::reject,
//                       .match = cnf::filter_match::in, .cidr = ten_slash_8}}};
//   cnf::filter_accepts(std::span(&f, 1), cnf::filter_direction::import, prefix, true);  // false in 10/8
#pragma once
#include <cnf/net.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE

enum class filter_action : std::uint8_t { accept, reject };
enum class filter_match : std::uint8_t { any, equal, not_equal, in, not_in };
enum class filter_direction : std::uint8_t { import, export_ };

struct route_filter_rule {
  filter_action action = filter_action::accept;
  filter_match match = filter_match::any;
  ip_prefix cidr;                              ///< unused when match is any
  std::optional<std::uint8_t> min_length;      ///< prefixLength.min (In / NotIn only)
  std::optional<std::uint8_t> max_length;      ///< prefixLength.max
  bool remote_peers_only = false;              ///< source: RemotePeers
  friend bool operator==(const route_filter_rule&, const route_filter_rule&) = default;

  bool matches(const ip_prefix& p, bool from_peer) const noexcept {
    if (remote_peers_only && !from_peer) return false;
    auto inside = [&] {
      if (p.family() != cidr.family() || !cidr.contains(p)) return false;
      const unsigned lo = min_length.value_or(static_cast<std::uint8_t>(cidr.length()));
      const unsigned hi = max_length.value_or(static_cast<std::uint8_t>(p.address().bits()));
      return p.length() >= lo && p.length() <= hi;
    };
    switch (match) {
      case filter_match::any: return true;
      case filter_match::equal: return p.canonical() == cidr.canonical();
      case filter_match::not_equal: return p.canonical() != cidr.canonical();
      case filter_match::in: return inside();
      case filter_match::not_in: return !inside();
    }
    return false;
  }
};

struct route_filter {
  std::string name;
  bool exists = true;  ///< false: a BGPPeer names it but there is no such BGPFilter (no rules)
  std::vector<route_filter_rule> export_v4, import_v4, export_v6, import_v6;
  friend bool operator==(const route_filter&, const route_filter&) = default;

  const std::vector<route_filter_rule>& rules(filter_direction d, ip_family f) const noexcept {
    if (d == filter_direction::import) return f == ip_family::v4 ? import_v4 : import_v6;
    return f == ip_family::v4 ? export_v4 : export_v6;
  }
};

/// The first matching rule of `filters` (in order) decides; none matches: accepted.
inline bool filter_accepts(std::span<const route_filter> filters, filter_direction d, const ip_prefix& p, bool from_peer) noexcept {
  for (auto& f : filters)
    for (auto& r : f.rules(d, p.family()))
      if (r.matches(p, from_peer)) return r.action == filter_action::accept;
  return true;
}

/// Whether `a` and `b` decide the same in direction `d` (the rules of that direction equal).
inline bool same_rules(std::span<const route_filter> a, std::span<const route_filter> b, filter_direction d) noexcept {
  auto flat = [d](std::span<const route_filter> fs, ip_family fam) {
    std::vector<route_filter_rule> v;
    for (auto& f : fs) v.insert(v.end(), f.rules(d, fam).begin(), f.rules(d, fam).end());
    return v;
  };
  return flat(a, ip_family::v4) == flat(b, ip_family::v4) && flat(a, ip_family::v6) == flat(b, ip_family::v6);
}

CNF_END_NAMESPACE
