// The speaker library alone, no sockets and no kernel: speaker A holds N IPv4 /24s and
// sends them to speaker B over an in-memory wire, in the chunks a TCP socket would deliver
// (64 KiB). Measures, from the session's OPEN exchange (three messages before
// Established), the time until B has reported every route to its host (decode, Adj-RIB-In, decision, Loc-RIB),
// and the peak resident memory of the process. It bounds from below what the routing-bgp
// plugin can do; the kernel's share (the route table's netlink batches) is not in it.
//
//   bgp_speaker_bench [N ...]            (default: 10000 100000)
#include <cnf/bgp/speaker.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <string>

namespace bgp = cnf::bgp;

namespace {

long peak_rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string k;
  long v = 0;
  while (f >> k) {
    if (k == "VmHWM:") { f >> v; return v; }
    std::getline(f, k);
  }
  return 0;
}

struct wire {
  bgp::speaker* a;
  bgp::speaker* b;
  bgp::conn_id ca = 0, cb = 0;
  std::size_t routes_b = 0;
  bool up_a = false, up_b = false;
  std::deque<std::pair<int, bgp::bytes>> q;  // (to 0:a / 1:b, bytes)
  bgp::bytes pending[2];

  bool drain(int who) {
    auto& s = who == 0 ? *a : *b;
    auto acts = s.take();
    for (auto& x : acts) {
      if (auto* c = std::get_if<bgp::out::connect>(&x)) {
        ca = c->conn;
        a->connected(ca, cnf::ip_address::parse("10.0.0.1").value());
        cb = b->accepted(cnf::ip_address::parse("10.0.0.1").value(), cnf::ip_address::parse("10.0.0.2").value());
      } else if (auto* s2 = std::get_if<bgp::out::send>(&x)) {
        auto& p = pending[who == 0 ? 1 : 0];
        p.insert(p.end(), s2->data.begin(), s2->data.end());
      } else if (auto* r = std::get_if<bgp::out::route>(&x)) {
        if (who == 1 && !r->next_hops.empty()) ++routes_b;
      } else if (auto* lg = std::get_if<bgp::out::log>(&x)) {
        if (std::getenv("BENCH_DEBUG")) std::fprintf(stderr, "%d: %s\n", who, lg->message.c_str());
      } else if (auto* ps = std::get_if<bgp::out::peer_state>(&x)) {
        (who == 0 ? up_a : up_b) = ps->state == bgp::session_state::established;
      }
    }
    return !acts.empty();
  }
  // Delivers what is pending in 64 KiB reads, as a socket would.
  bool deliver() {
    bool any = false;
    for (int to = 0; to < 2; ++to) {
      auto& p = pending[to];
      std::size_t off = 0;
      while (off < p.size()) {
        std::size_t n = std::min<std::size_t>(65536, p.size() - off);
        std::span<const std::uint8_t> chunk(p.data() + off, n);
        off += n;
        if (to == 0) a->received(ca, chunk); else b->received(cb, chunk);
        drain(0);
        drain(1);
      }
      if (!p.empty()) any = true;
      p.clear();
    }
    return any;
  }
};

void run(std::size_t n) {
  auto cfg = [](const char* addr) {
    bgp::speaker_config c;
    c.asn = 64512;
    c.router_id = cnf::ip_address::parse(addr).value().v4_host_order();
    c.local_addresses = {cnf::ip_address::parse(addr).value()};
    c.families = {bgp::ipv4_unicast};
    return c;
  };
  bgp::speaker a(cfg("10.0.0.1")), b(cfg("10.0.0.2"));
  wire w{&a, &b};
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t net = (20u << 24) + (static_cast<std::uint32_t>(i) << 8);
    a.originate(cnf::ip_prefix(cnf::ip_address::v4(net), 24));
  }
  // From here: the OPEN/KEEPALIVE exchange (three messages), then A's whole table.
  auto t0 = std::chrono::steady_clock::now();
  b.add_peer({.name = "a", .address = cnf::ip_address::parse("10.0.0.1").value(), .asn = 64512, .passive = true});
  a.add_peer({.name = "b", .address = cnf::ip_address::parse("10.0.0.2").value(), .asn = 64512});
  for (;;) {
    bool any = w.drain(1);
    any |= w.drain(0);
    if (w.routes_b >= n) break;
    any |= w.deliver();
    if (!any) break;
  }
  auto t1 = std::chrono::steady_clock::now();
  double s = std::chrono::duration<double>(t1 - t0).count();
  std::printf("N=%zu  routes at B: %zu  time: %.3f s  (%.0f routes/s)  peak RSS: %.1f MiB\n", n, w.routes_b, s, n / s, peak_rss_kib() / 1024.0);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::size_t> ns;
  for (int i = 1; i < argc; ++i) ns.push_back(std::strtoul(argv[i], nullptr, 10));
  if (ns.empty()) ns = {10000, 100000};
  for (auto n : ns) run(n);
}
