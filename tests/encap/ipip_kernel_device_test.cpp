// The ipip part's kernel datapath against the real kernel (root): `tunl0` (type ipip) with the
// node's tunnel address and MTU, routes `via <node> dev tunl0 onlink` handed to the sink, and
// stop. A kernel without ipip (no module, as on this project's CI machine) cannot make the
// device: the program says so in one line and exits 77 (skipped).
#include "../integration/netns_harness.hpp"
#include "../support/process.hpp"

#include <cnf/plugins/ipip.hpp>

#include <cstdio>
#include <map>

namespace {
cnf::ip_prefix pfx(const char* s) { return cnf::ip_prefix::parse(s, true).value(); }
bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }
int failures = 0;
void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

struct recording_sink final : cnf::encap_sink {
  std::map<cnf::ip_prefix, cnf::route_entry> routes;
  void route_wanted(const cnf::route_entry& r) noexcept override { routes[r.dst] = r; }
  void route_unwanted(const cnf::ip_prefix& p) noexcept override { routes.erase(p); }
  void tunnel_changed(const cnf::tunnel_info&) noexcept override {}
};

int run() {
  cnf_test::test_netns ns, peer;
  cnf_test::veth_between(ns, "eth0", peer, "eth0");
  ns.exec_or_throw("ip addr add 192.168.93.1/24 dev eth0");
  cnf_test::enter_netns in(ns);
  cnf::node_info self;
  self.name = "node-a";
  self.addresses = {pfx("192.168.93.1/24")};
  self.ipip_tunnel_address = cnf::ip_address::parse("10.244.0.1").value();
  cnf::ipip::config cfg;
  cfg.path = cnf::ipip::datapath::kernel;
  cfg.mode = cnf::encap_mode::always;
  cnf::ipip::encapsulation e(cfg);
  recording_sink sink;
  cnf::remote_node b;
  b.name = "node-b";
  b.addresses = {pfx("192.168.94.2/24")};
  b.pod_cidrs = {pfx("10.244.2.0/26")};
  e.upsert_node(b);
  auto t = e.start(self, sink);
  if (!t && t.error().code == cnf::errc::unsupported) {
    std::printf("skipped: %s\n", t.error().message.c_str());
    return 77;
  }
  check(bool(t), t ? "start" : "start: " + t.error().message);
  if (!t) return 1;
  check(t->device == "tunl0" && t->mtu == 1480, "tunnel_info tunl0, MTU 1480");
  auto link = ns.exec_or_throw("ip -d link show tunl0");
  check(has(link, "ipip") && has(link, "mtu 1480") && has(link, ",UP"), "tunl0 is an ipip device, MTU 1480, up:\n" + link);
  check(has(ns.exec_or_throw("ip -4 addr show dev tunl0"), "10.244.0.1/32"), "tunl0 holds the tunnel address");
  auto r = e.apply();
  check(bool(r), "apply");
  check(sink.routes.size() == 1 && sink.routes.begin()->second.next_hops ==
                                       std::vector<cnf::route_next_hop>{{cnf::ip_address::parse("192.168.94.2").value(), "tunl0", true}},
        "route via 192.168.94.2 dev tunl0 onlink");
  check(bool(e.stop()), "stop");
  check(sink.routes.empty(), "routes withdrawn");
  check(!ns.ip("link show tunl0").ok() || !has(ns.exec_or_throw("ip -4 addr show dev tunl0"), "10.244.0.1"), "tunl0 or its address gone");
  return failures ? 1 : 0;
}
}  // namespace

int main() {
  if (::geteuid() != 0) {
    std::printf("skipped: needs root (network namespaces)\n");
    return 77;
  }
  try {
    return run();
  } catch (const std::exception& ex) {
    std::printf("FAILED: %s\n", ex.what());
    return 1;
  }
}
