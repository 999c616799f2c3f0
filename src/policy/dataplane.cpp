#include <cnf/netlink/sha1.hpp>
#include <cnf/policy/dataplane.hpp>

#include <algorithm>
#include <cctype>

CNF_BEGIN_NAMESPACE
namespace netpol {

std::string short_hash(std::string_view data, std::size_t n) {
  static constexpr char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  auto h = netlink::detail::sha1(data);
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (auto b : h) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6 && out.size() < n) {
      out += abc[(acc >> (bits - 6)) & 63];
      bits -= 6;
    }
  }
  return out;
}

std::string chain_name(std::string_view prefix, std::string_view name, std::size_t max) {
  const bool clean =
      std::all_of(name.begin(), name.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'; });
  if (prefix.size() + name.size() <= max && clean && !name.starts_with("_")) return std::string(prefix) + std::string(name);
  return std::string(prefix) + "_" + short_hash(name, max - prefix.size() - 1);
}

std::string policy_display_name(const network_policy& p) { return p.ns.empty() ? p.name : p.ns + "." + p.name; }

bool rule_in_family(const policy_rule& r, ip_family f) {
  if (r.family && *r.family != f) return false;
  if (r.protocol && *r.protocol == (f == ip_family::v4 ? 58 : 1)) return false;
  auto has = [&](const std::vector<ip_prefix>& nets) {
    return nets.empty() || std::any_of(nets.begin(), nets.end(), [&](const ip_prefix& n) { return n.family() == f; });
  };
  return has(r.source_nets) && has(r.destination_nets);
}

std::string protocol_name(std::uint8_t p) {
  switch (p) {
    case 1: return "icmp";
    case 6: return "tcp";
    case 17: return "udp";
    case 58: return "ipv6-icmp";
    case 132: return "sctp";
    case 136: return "udplite";
  }
  return std::to_string(p);
}

void tracked_set::add(std::span<const ip_prefix> m, bool ipv6) {
  for (auto& a : m) {
    if (a.family() == ip_family::v6 && !ipv6) continue;
    if (members.insert(a).second && !removed.erase(a)) added.insert(a);
  }
}

void tracked_set::remove(std::span<const ip_prefix> m) {
  for (auto& a : m)
    if (members.erase(a) && !added.erase(a)) removed.insert(a);
}

void tracked_set::applied() {
  fresh[0] = fresh[1] = false;
  added.clear();
  removed.clear();
}

std::string chain_difference(const std::vector<std::string>& have, const std::vector<std::string>& want) {
  std::set<std::string> h(have.begin(), have.end()), w(want.begin(), want.end());
  std::size_t kept = 0, others = 0;
  for (auto& x : w) kept += h.count(x);
  for (auto& x : have) others += w.count(x) ? 0 : 1;
  std::string d = "holds " + std::to_string(kept) + " of its " + std::to_string(want.size()) + " rules";
  if (others) d += ", and " + std::to_string(others) + " rule" + (others == 1 ? "" : "s") + " cnf did not write";
  if (kept == want.size() && !others) d += " out of order";
  return d;
}

std::string set_difference(const std::set<ip_prefix>& want, ip_family f, const std::set<std::string>& have) {
  std::size_t missing = 0, extra = have.size();
  for (auto& m : want) {
    if (m.family() != f) continue;
    if (have.count(m.canonical().to_string())) --extra;
    else ++missing;
  }
  if (!missing && !extra) return {};
  return std::to_string(missing) + " member" + (missing == 1 ? "" : "s") + " missing, " + std::to_string(extra) + " not cnf's";
}

}  // namespace netpol
CNF_END_NAMESPACE
