// cnf lab ping: real ICMP echo between pods, sent from inside each source pod's namespace.
//
// One raw ICMP socket per source pod, opened by a thread that joined the pod's namespace
// (a socket stays in the namespace it was made in), all of them served by one epoll loop:
// every probe is sent at once, unanswered ones again every 250 ms, until each pair has
// answered or the deadline passed. Pairs are every ordered pair of pods, or --sample K of
// them picked at random; --same-node keeps the pairs on one node and adds each pod to its
// own node's address.
#include "lab/lab.hpp"

#include <cnf/netlink/netns.hpp>

#include <fmt/format.h>

#include <arpa/inet.h>
#include <linux/icmp.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <random>
#include <set>

namespace cnf_app::lab {
namespace nl = cnf::netlink;

namespace {

using clock = std::chrono::steady_clock;

struct probe {
  std::size_t src;      ///< index into the pods
  std::string dst_addr;
  std::string dst_name;
  in_addr dst{};
  in6_addr dst6{};
  bool answered = false;
  std::uint16_t seq = 0;
};

std::uint16_t checksum(const void* data, std::size_t len) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < len; i += 2) sum += static_cast<std::uint32_t>(p[i] << 8 | p[i + 1]);
  if (len & 1) sum += static_cast<std::uint32_t>(p[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<std::uint16_t>(~sum));
}

/// A raw ICMP (or ICMPv6) socket in the pod's namespace that sees only echo replies.
int open_icmp_in(const std::string& netns, bool v6) {
  auto ns = nl::open_netns(netns_path(netns));
  if (!ns) throw lab_error(ns.error().message);
  auto fd = nl::with_netns(*ns, [&]() -> cnf::result<int> {
    int s = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, v6 ? int{IPPROTO_ICMPV6} : int{IPPROTO_ICMP});
    if (s < 0) return cnf::error(cnf::errc::io, std::string(v6 ? "raw ICMPv6 socket: " : "raw ICMP socket: ") + std::strerror(errno));
    if (v6) {
      icmp6_filter f;
      ICMP6_FILTER_SETBLOCKALL(&f);
      ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f);
      ::setsockopt(s, IPPROTO_ICMPV6, ICMP6_FILTER, &f, sizeof f);
    } else {
      icmp_filter f{};
      f.data = ~(1u << ICMP_ECHOREPLY);
      ::setsockopt(s, SOL_RAW, ICMP_FILTER, &f, sizeof f);
    }
    return s;
  });
  if (!fd) throw lab_error("in " + netns + ": " + fd.error().message);
  return *fd;
}

void send_echo(int fd, const probe& p, std::uint16_t id, bool v6) {
  if (v6) {
    // The kernel fills in an ICMPv6 checksum (it covers the IPv6 pseudo-header).
    struct {
      icmp6_hdr h;
      char payload[16];
    } pkt{};
    pkt.h.icmp6_type = ICMP6_ECHO_REQUEST;
    pkt.h.icmp6_id = htons(id);
    pkt.h.icmp6_seq = htons(p.seq);
    std::memcpy(pkt.payload, "cnf lab ping....", sizeof pkt.payload);
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = p.dst6;
    ::sendto(fd, &pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa);  // a lost send is a lost probe
    return;
  }
  struct {
    icmphdr h;
    char payload[16];
  } pkt{};
  pkt.h.type = ICMP_ECHO;
  pkt.h.un.echo.id = htons(id);
  pkt.h.un.echo.sequence = htons(p.seq);
  std::memcpy(pkt.payload, "cnf lab ping....", sizeof pkt.payload);
  pkt.h.checksum = checksum(&pkt, sizeof pkt);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr = p.dst;
  ::sendto(fd, &pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa);  // a lost send is a lost probe
}

}  // namespace

int ping(const std::filesystem::path& dir, const ping_options& o) {
  auto loaded = load_state(dir);
  if (!loaded) throw lab_error("no lab in " + dir.string() + " (start one with `cnf lab up`)");
  const auto& s = *loaded;
  std::map<std::string, const node_state*> nodes;
  for (auto& n : s.nodes) nodes[n.name] = &n;

  const bool v6 = o.ipv6;
  auto address_of = [&](const pod_state& p) {
    if (!v6) return p.ip;
    for (auto& a : p.ips)
      if (a.find(':') != std::string::npos) return a;
    return std::string();
  };
  std::vector<const pod_state*> pods;
  for (auto& p : s.pods)
    if (!address_of(p).empty()) pods.push_back(&p);
  std::vector<probe> all;
  for (std::size_t i = 0; i < pods.size(); ++i) {
    for (std::size_t j = 0; j < pods.size(); ++j) {
      if (i == j || (o.same_node && pods[i]->node != pods[j]->node)) continue;
      all.push_back({i, address_of(*pods[j]), pods[j]->key() + " (" + pods[j]->node + ")"});
    }
    if (o.same_node)
      if (auto it = nodes.find(pods[i]->node); it != nodes.end() && !(v6 ? it->second->address6 : it->second->address).empty())
        all.push_back({i, v6 ? it->second->address6 : it->second->address, "node " + it->first});
  }
  if (all.empty()) {
    fmt::print(stderr, "cnf lab ping: nothing to probe: the lab has {} pod(s) with an {} address{}\n", pods.size(), v6 ? "IPv6" : "IPv4",
               o.same_node ? " (and --same-node pairs only pods of one node)" : "");
    return 1;
  }
  if (o.sample > 0 && o.sample < all.size()) {
    std::mt19937_64 rng(o.seed ? o.seed : std::random_device{}());
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(o.sample);
  }
  for (auto& p : all)
    if ((v6 ? ::inet_pton(AF_INET6, p.dst_addr.c_str(), &p.dst6) : ::inet_pton(AF_INET, p.dst_addr.c_str(), &p.dst)) != 1) throw lab_error("bad address in the lab state: " + p.dst_addr);

  // One socket per source pod; sequence numbers count that socket's probes.
  std::map<std::size_t, int> sock_of;
  std::map<int, std::vector<std::size_t>> probes_of;  // socket -> probe indexes by seq
  struct closer {
    std::map<std::size_t, int>& m;
    ~closer() {
      for (auto& [k, fd] : m) ::close(fd);
    }
  } close_all{sock_of};
  for (std::size_t i = 0; i < all.size(); ++i) {
    auto& p = all[i];
    auto it = sock_of.find(p.src);
    if (it == sock_of.end()) it = sock_of.emplace(p.src, open_icmp_in(pods[p.src]->netns, v6)).first;
    auto& v = probes_of[it->second];
    if (v.size() >= 65535) throw lab_error("too many probes from one pod (at most 65,535)");
    p.seq = static_cast<std::uint16_t>(v.size());
    v.push_back(i);
  }
  const auto id = static_cast<std::uint16_t>(::getpid());
  nl::unique_fd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (!ep) throw lab_error(std::string("epoll: ") + std::strerror(errno));
  for (auto& [src, fd] : sock_of) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev);
  }

  const auto t0 = clock::now(), deadline = t0 + o.timeout;
  std::size_t answered = 0;
  auto next_round = t0;
  while (answered < all.size() && clock::now() < deadline) {
    if (clock::now() >= next_round) {
      for (auto& p : all)
        if (!p.answered) send_echo(sock_of[p.src], p, id, v6);
      next_round = clock::now() + std::chrono::milliseconds(250);
    }
    const auto wait = std::min(next_round, deadline) - clock::now();
    epoll_event evs[64];
    int n = ::epoll_wait(ep.get(), evs, 64, std::max<int>(1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(wait).count())));
    for (int e = 0; e < n; ++e) {
      const int fd = evs[e].data.fd;
      for (;;) {
        unsigned char buf[512];
        sockaddr_in6 from{};  // large enough for either family
        socklen_t fl = sizeof from;
        ssize_t k = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl);
        if (k < 0) break;
        std::uint16_t rid = 0, seq = 0;
        if (v6) {  // a raw ICMPv6 socket hands over the ICMPv6 message alone
          icmp6_hdr h;
          if (static_cast<std::size_t>(k) < sizeof h) continue;
          std::memcpy(&h, buf, sizeof h);
          if (h.icmp6_type != ICMP6_ECHO_REPLY) continue;
          rid = ntohs(h.icmp6_id);
          seq = ntohs(h.icmp6_seq);
        } else {
          const auto* ip = reinterpret_cast<const iphdr*>(buf);
          const std::size_t hl = static_cast<std::size_t>(ip->ihl) * 4;
          if (static_cast<std::size_t>(k) < hl + sizeof(icmphdr)) continue;
          icmphdr h;
          std::memcpy(&h, buf + hl, sizeof h);
          if (h.type != ICMP_ECHOREPLY) continue;
          rid = ntohs(h.un.echo.id);
          seq = ntohs(h.un.echo.sequence);
        }
        if (rid != id) continue;
        auto& v = probes_of[fd];
        if (seq >= v.size()) continue;
        auto& p = all[v[seq]];
        sockaddr_in from4{};
        std::memcpy(&from4, &from, sizeof from4);
        const bool from_dst = v6 ? std::memcmp(&from.sin6_addr, &p.dst6, sizeof p.dst6) == 0 : from4.sin_addr.s_addr == p.dst.s_addr;
        if (p.answered || !from_dst) continue;
        p.answered = true;
        ++answered;
      }
    }
  }
  const double secs = std::chrono::duration<double>(clock::now() - t0).count();
  const std::size_t failed = all.size() - answered;
  fmt::print("ping: {} pair(s) probed{}, {} answered, {} failed ({:.2f} s, {} echo from inside each source pod)\n", all.size(),
             o.sample ? fmt::format(" (a random sample of {})", o.sample) : (o.same_node ? " (same node only)" : " (every ordered pod pair)"),
             answered, failed, secs, v6 ? "ICMPv6" : "ICMP");
  std::size_t shown = 0;
  for (auto& p : all) {
    if (p.answered) continue;
    if (++shown > 50) {
      fmt::print("  ... and {} more\n", failed - 50);
      break;
    }
    fmt::print("  FAILED {} ({}) -> {} {}: no answer within {} ms\n", pods[p.src]->key(), pods[p.src]->node, p.dst_name, p.dst_addr, o.timeout.count());
  }
  return failed ? 1 : 0;
}

}  // namespace cnf_app::lab
