// cnf/encap_decision.hpp — the decisions every encapsulation part makes the same way, as
// Calico does for vxlanMode and ipipMode: the spelling of a mode, which pool a block takes its
// mode from, and CrossSubnet's question (is the remote node on none of this node's subnets?).
//
//   auto m = cnf::parse_encap_mode("CrossSubnet", "IPPool/default: spec.ipipMode");
//   auto mode = cnf::encap_mode_of(block, pools, std::nullopt);   // longest pool wins
//   bool tunnel = cnf::encap_needed(mode, cnf::crosses_subnet(self, remote));
#pragma once
#include <cnf/encap.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE

/// "Always", "CrossSubnet" or "Never" (Calico's spelling); anything else is an error naming `field`.
inline result<encap_mode> parse_encap_mode(std::string_view text, std::string_view field) {
  if (text == "Always") return encap_mode::always;
  if (text == "CrossSubnet") return encap_mode::cross_subnet;
  if (text == "Never") return encap_mode::never;
  return error(errc::invalid, std::string(field) + ": '" + std::string(text) + "' is not a mode; expected Always, CrossSubnet or Never");
}

/// CrossSubnet's question: is `r`'s address of family `f` on none of `self`'s subnets of that
/// family? (A node with no address of the family counts as elsewhere.) Calico asks it per
/// family: IPv4 blocks from the IPv4 addresses, IPv6 blocks from the IPv6 ones.
inline bool crosses_subnet(const node_info& self, const remote_node& r, ip_family f = ip_family::v4) {
  auto a = r.address(f);
  if (!a) return true;
  for (auto& s : self.addresses)
    if (s.family() == f && s.canonical().contains(*a)) return false;
  return true;
}

/// The mode of a block: `override_mode` if set, else the longest pool containing it, else never.
inline encap_mode encap_mode_of(const ip_prefix& block, const std::vector<encap_pool>& pools, std::optional<encap_mode> override_mode) {
  if (override_mode) return *override_mode;
  const encap_pool* best = nullptr;
  for (auto& p : pools)
    if (p.cidr.canonical().contains(block) && (!best || p.cidr.length() > best->cidr.length())) best = &p;
  return best ? best->mode : encap_mode::never;
}

/// Whether a block of that mode goes through the tunnel to a node (`elsewhere`: crosses_subnet).
inline constexpr bool encap_needed(encap_mode m, bool elsewhere) noexcept {
  return m == encap_mode::always || (m == encap_mode::cross_subnet && elsewhere);
}

CNF_END_NAMESPACE
