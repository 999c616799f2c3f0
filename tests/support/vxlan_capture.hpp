// What a tcpdump -n capture in a lab's router namespace shows of VXLAN: which ICMP echo
// requests crossed inside UDP 4789 and which went plain. Shared by the lab tests that check
// which pod pairs a mode encapsulates (IPv4 and IPv6).
#pragma once

#include <set>
#include <sstream>
#include <string>
#include <utility>

namespace cnf_test {

struct vxlan_seen {
  std::set<std::pair<std::string, std::string>> vxlan_pairs;  ///< inner echo requests (src, dst pod address)
  std::set<std::pair<std::string, std::string>> plain_pairs;  ///< echo requests not encapsulated
  std::set<std::pair<std::string, std::string>> vxlan_outer;  ///< outer (src, dst) node addresses
};

/// tcpdump prints a VXLAN packet on two lines: "IP a.port > b.4789: VXLAN, ..." and then the
/// inner packet ("IP x > y: ICMP echo request, ..."). v6: the IPv6 forms ("IP6 ...", "ICMP6,
/// echo request") of both the outer and the inner packet.
inline vxlan_seen parse_vxlan_capture(const std::string& text, bool v6 = false) {
  const std::string tag = v6 ? "IP6 " : "IP ", echo = v6 ? "ICMP6, echo request" : "ICMP echo request";
  auto host_of = [](const std::string& addr_port) { return addr_port.substr(0, addr_port.rfind('.')); };
  vxlan_seen s;
  std::istringstream in(text);
  bool inner_next = false;
  for (std::string line; std::getline(in, line);) {
    auto ip = line.find(tag);
    if (ip == std::string::npos) {
      inner_next = false;
      continue;
    }
    std::istringstream ls(line.substr(ip + tag.size()));
    std::string src, gt, dst;
    ls >> src >> gt >> dst;
    if (!dst.empty() && dst.back() == ':') dst.pop_back();
    if (line.find(": VXLAN") != std::string::npos) {
      s.vxlan_outer.insert({host_of(src), host_of(dst)});
      inner_next = true;
      continue;
    }
    if (line.find(echo) != std::string::npos) (inner_next ? s.vxlan_pairs : s.plain_pairs).insert({src, dst});
    inner_next = false;
  }
  return s;
}

}  // namespace cnf_test
