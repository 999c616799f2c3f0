// cnf/policy/dataplane.hpp — what the kernel-facing policy parts (iptables, nftables) share:
// Felix's rule hashes and chain names, which rules belong in which address family, the
// bookkeeping of IP set members between two applies, and how a drifted chain or set is
// described. Compiled once in cnf_policy_dataplane (src/policy), which links nothing but cnf.
//
//   auto name = cnf::netpol::chain_name("cali-pi-", "default.allow-web");  // "cali-pi-default.allow-web"
//   cnf::netpol::tracked_set s;
//   s.add(members, /*ipv6=*/true);   // program s.members when fresh, else s.added / s.removed
//   s.applied();
#pragma once
#include <cnf/policy.hpp>

#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netpol {

/// n characters ([A-Za-z0-9_-], 6 bits each) of the SHA-1 of data: Felix's rule hashes.
std::string short_hash(std::string_view data, std::size_t n);
/// prefix + name when that fits `max` characters and name is [A-Za-z0-9._-] not starting
/// with '_'; else prefix + "_" + a hash of name filling `max`.
std::string chain_name(std::string_view prefix, std::string_view name, std::size_t max = 28);
/// "<ns>.<name>", or the name of a policy without a namespace.
std::string policy_display_name(const network_policy& p);
/// Whether a rule can match packets of family f (Felix: ipVersion, the nets' families, and
/// ICMP being IPv4's and ICMPv6 IPv6's).
bool rule_in_family(const policy_rule& r, ip_family f);
/// "tcp", "udp", "icmp", "ipv6-icmp", "sctp", "udplite", else the number.
std::string protocol_name(std::uint8_t p);

/// One IP set's members and what changed since the last apply, per family whether it must be
/// (re)built whole (new, or found drifted).
struct tracked_set {
  std::set<ip_prefix> members, added, removed;
  bool fresh[2] = {true, true};  // [0] IPv4, [1] IPv6
  /// IPv6 members are skipped unless ipv6.
  void add(std::span<const ip_prefix> m, bool ipv6);
  void remove(std::span<const ip_prefix> m);
  /// The kernel holds members: nothing fresh, nothing pending.
  void applied();
};

/// How a chain's rule hashes read back differ from the wanted ones: "holds 7 of its 8 rules"
/// (+ ", and 1 rule cnf did not write", or " out of order").
std::string chain_difference(const std::vector<std::string>& have, const std::vector<std::string>& want);
/// How a kernel set (its members as printed, canonical) differs from the family-f members
/// of `want`: "1 member missing, 2 not cnf's"; empty when they are the same.
std::string set_difference(const std::set<ip_prefix>& want, ip_family f, const std::set<std::string>& have);

}  // namespace netpol
CNF_END_NAMESPACE
