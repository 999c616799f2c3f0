// Integration tests for cnf/netlink: namespaces, the rtnetlink layer and pod plumbing.
// Runs as root; every change happens inside namespaces made by netns_harness.hpp, and the
// calling thread is moved into the test's "node" namespace before any plumbing call.
#include "netns_harness.hpp"

#include <catch2/catch.hpp>

#include <cnf/netlink/address.hpp>
#include <cnf/netlink/link.hpp>
#include <cnf/netlink/netns.hpp>
#include <cnf/netlink/route.hpp>
#include <cnf/netlink/sha1.hpp>
#include <cnf/netlink/socket.hpp>
#include <cnf/netlink/sysctl.hpp>
#include <cnf/netlink/veth_plumbing.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>

namespace nl = cnf::netlink;
using cnf_test::test_netns;
using Catch::Matchers::Contains;

namespace {

bool skip_unless_root() {
  if (::geteuid() == 0) return false;
  static bool said = false;
  if (!said) std::puts("skipped: needs root");
  said = true;
  return true;
}

cnf::ip_prefix pfx(const char* s) { return cnf::ip_prefix::parse(s, true).value(); }

/// Moves the calling thread into `ns` for the scope; refuses to continue in the host.
struct in_netns {
  explicit in_netns(const test_netns& ns) : guard(nl::netns_guard::enter(ns.path()).value()) {
    REQUIRE_FALSE(cnf_test::thread_in_host_netns());
  }
  nl::netns_guard guard;
};

/// A node namespace with an uplink to an "upstream" namespace, as a real node has: the
/// node's default route (via the uplink) is what makes proxy ARP answer for 169.254.1.1.
struct node_env {
  test_netns node, upstream;
  node_env() {
    cnf_test::veth_between(node, "up0", upstream, "up1");
    node.exec_or_throw("ip addr add 192.168.50.1/24 dev up0 && ip -6 addr add fd00:50::1/64 dev up0 nodad && "
                       "ip route add default via 192.168.50.2 && ip -6 route add default via fd00:50::2");
    upstream.exec_or_throw("ip addr add 192.168.50.2/24 dev up1 && ip -6 addr add fd00:50::2/64 dev up1 nodad && "
                           "ip route add 10.244.0.0/16 via 192.168.50.1 && ip -6 route add fd00:1::/64 via fd00:50::1");
    cnf_test::set_ip_forward(node);
  }
};

nl::pod_plumbing_request make_request(const test_netns& pod, std::vector<cnf::ip_prefix> addrs,
                                      const char* pod_name = "web-0") {
  nl::pod_plumbing_request r;
  r.netns_path = pod.path();
  r.pod_ifname = "eth0";
  r.host_ifname = nl::host_veth_name("cali", "default", pod_name).value();
  r.addresses = std::move(addrs);
  r.mtu = 1450;
  return r;
}

cnf_test::json::value ip_json(const test_netns& ns, const std::string& args) {
  auto r = ns.ip("-j " + args);
  INFO("ip -n " << ns.name() << " -j " << args << ": " << r.output);
  REQUIRE(r.ok());
  return cnf_test::json::parse(r.output);
}

bool json_has_flag(const cnf_test::json::value& link, const std::string& flag) {
  for (const auto& f : link["flags"].arr())
    if (f.str() == flag) return true;
  return false;
}

/// Finds a route in `ip -j route` output.
bool json_has_route(const cnf_test::json::value& routes, const std::string& dst, const std::string& gw,
                    const std::string& dev) {
  for (const auto& r : routes.arr())
    if (r["dst"].str() == dst && r["gateway"].str() == gw && r["dev"].str() == dev) return true;
  return false;
}

bool has_route(const std::vector<nl::route_info>& rs, const cnf::ip_prefix& dst,
               std::optional<cnf::ip_address> gw, int oif) {
  for (const auto& r : rs)
    if (r.dst == dst && r.gateway == gw && r.oif == oif) return true;
  return false;
}

long us_since(std::chrono::steady_clock::time_point t0) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
}

struct stats {
  long median, p90, min, max;
};
stats summarize(std::vector<long> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[(v.size() * 9) / 10 < v.size() ? (v.size() * 9) / 10 : v.size() - 1], v.front(), v.back()};
}

}  // namespace

TEST_CASE("SHA-1 and host interface names", "[integration][netlink]") {
  CHECK(nl::detail::sha1_hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  CHECK(nl::detail::sha1_hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d");
  CHECK(nl::detail::sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  CHECK(nl::detail::sha1_hex(std::string(55, 'x')) == "cef734ba81a024479e09eb5a75b6ddae62e6abf1");
  CHECK(nl::detail::sha1_hex(std::string(56, 'x')) == "901305367c259952f4e7af8323f480d59f81335b");
  CHECK(nl::detail::sha1_hex(std::string(64, 'x')) == "bb2fa3ee7afb9f54c6dfb5d021f14b1ffe40c163");
  CHECK(nl::detail::sha1_hex(std::string(1000000, 'a')) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f");

  CHECK(nl::host_veth_name("cali", "default", "web-0").value() == "cali0d7763386da");
  CHECK(nl::host_veth_name("cali", "kube-system", "coredns-5d78c9869d-abcde").value() == "cali4d5f75c480c");
  auto too_long = nl::host_veth_name("calico", "default", "web-0");
  REQUIRE_FALSE(too_long);
  CHECK(too_long.error().code == cnf::errc::invalid);

  CHECK(nl::validate_ifname("eth0"));
  CHECK_FALSE(nl::validate_ifname("abcdefghijklmnop"));
  CHECK_FALSE(nl::validate_ifname("a/b"));
  CHECK_FALSE(nl::validate_ifname(""));
}

TEST_CASE("open_netns rejects what is not a network namespace", "[integration][netlink]") {
  auto missing = nl::open_netns("/var/run/netns/cnf-no-such-namespace");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == cnf::errc::not_found);
  CHECK(missing.error().message == "netns /var/run/netns/cnf-no-such-namespace does not exist");

  // A regular file (what a stale /var/run/netns entry is once its bind mount is gone).
  char tmpl[] = "/tmp/cnf-not-a-netns-XXXXXX";
  int fd = ::mkstemp(tmpl);
  REQUIRE(fd >= 0);
  ::close(fd);
  auto regular = nl::open_netns(tmpl);
  ::unlink(tmpl);
  REQUIRE_FALSE(regular);
  CHECK(regular.error().code == cnf::errc::invalid);
  CHECK_THAT(regular.error().message, Contains("is not a network namespace"));

  auto mnt = nl::open_netns("/proc/self/ns/mnt");
  REQUIRE_FALSE(mnt);
  CHECK_THAT(mnt.error().message, Contains("/proc/self/ns/mnt is not a network namespace (it is a mnt namespace)"));

  auto own = nl::open_netns("/proc/self/ns/net");
  CHECK(own);

  auto g = nl::netns_guard::enter("/var/run/netns/cnf-no-such-namespace");
  REQUIRE_FALSE(g);
  CHECK_THAT(g.error().message, Contains("does not exist"));

  nl::pod_plumbing_request req;
  req.netns_path = "/var/run/netns/cnf-no-such-namespace";
  req.host_ifname = "cali0d7763386da";
  req.addresses = {pfx("10.244.1.7/32")};
  auto r = nl::plumb_pod(req);  // fails before touching any namespace
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cnf::errc::not_found);
  CHECK_THAT(r.error().message, Contains("/var/run/netns/cnf-no-such-namespace"));
}

TEST_CASE("netns_guard moves only this thread; sockets and /proc/sys follow it", "[integration][netlink]") {
  if (skip_unless_root()) return;
  test_netns ns;
  ns.exec_or_throw("ip link add cnfg0 type veth peer name cnfg1");
  const ino_t host_ino = cnf_test::netns_inode("/proc/thread-self/ns/net");
  const ino_t ns_ino = cnf_test::netns_inode(ns.path().c_str());
  REQUIRE(host_ino != ns_ino);

  std::optional<nl::rtnl_socket> sock;
  ino_t seen_inside = 0, main_thread_during = 0;
  std::string sysctl_err = "not run", proc_net_self, proc_net_thread;
  std::thread t([&] {
    auto g = nl::netns_guard::enter(ns.path());
    if (!g) { sysctl_err = g.error().message; return; }
    seen_inside = cnf_test::netns_inode("/proc/thread-self/ns/net");
    auto w = nl::write_sysctl("net/ipv4/conf/cnfg0/proxy_arp", "1");
    sysctl_err = w ? "" : w.error().message;
    auto s = nl::rtnl_socket::open("netns " + ns.path());
    if (s) sock.emplace(std::move(s).value());
    // /proc/net is the thread-group leader's view; /proc/thread-self/net is ours.
    auto r1 = cnf_test::run("grep -c cnfg0 /proc/" + std::to_string(::getpid()) + "/net/dev");
    proc_net_self = r1.output;
    FILE* f = std::fopen("/proc/thread-self/net/dev", "r");
    if (f) {
      char buf[4096];
      std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
      buf[n] = 0;
      proc_net_thread = buf;
      std::fclose(f);
    }
    main_thread_during = cnf_test::netns_inode(("/proc/" + std::to_string(::getpid()) + "/ns/net").c_str());
  });
  t.join();
  CHECK(seen_inside == ns_ino);
  CHECK(main_thread_during == host_ino);           // the main thread never moved
  CHECK(sysctl_err.empty());
  INFO(sysctl_err);
  CHECK(ns.sysctl("net.ipv4.conf.cnfg0.proxy_arp") == "1");
  CHECK(proc_net_self.rfind("0", 0) == 0);         // leader's /proc/net does not see cnfg0
  CHECK_THAT(proc_net_thread, Contains("cnfg0"));  // the thread's does
  // Reading from this (host) thread resolves in the host namespace: no such interface.
  auto host_view = nl::read_sysctl("net/ipv4/conf/cnfg0/proxy_arp");
  CHECK_FALSE(host_view);

  // The socket opened inside still talks to that namespace from a host-side thread.
  REQUIRE(sock);
  auto l = nl::get_link(*sock, "cnfg0");
  REQUIRE(l);
  CHECK(l->kind == "veth");
  auto missing = nl::get_link(*sock, "cnfg9");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == cnf::errc::not_found);
  CHECK_THAT(missing.error().message, Contains("cnfg9") && Contains(ns.path()));

  // The guard restores on an exception too.
  try {
    auto g = nl::netns_guard::enter(ns.path()).value();
    CHECK(cnf_test::netns_inode("/proc/thread-self/ns/net") == ns_ino);
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  CHECK(cnf_test::netns_inode("/proc/thread-self/ns/net") == host_ino);
}

TEST_CASE("node_sysctls: keys land in the namespace of the thread that made it", "[integration][netlink]") {
  if (skip_unless_root()) return;
  test_netns a, b;
  a.exec_or_throw("ip link add cnfd0 type veth peer name cnfd1");
  b.exec_or_throw("ip link add cnfd0 type veth peer name cnfd1");
  std::string err = "not run";
  std::optional<std::string> back_in_a, core_in_b;
  std::thread t([&] {
    auto step = [&](cnf::result<void> r) { if (!r) err = r.error().message; return static_cast<bool>(r); };
    {
      auto g = nl::netns_guard::enter(a.path());
      if (!g) { err = g.error().message; return; }
      if (!step(nl::node_sysctls().write("net/ipv4/conf/cnfd0/proxy_arp", "1"))) return;
      if (!step(g->restore())) return;
    }
    {
      // Another namespace, after the process cached a's directories. (Which directories
      // the cache hands out is not visible here: on 6.18 the kernel resolves a key below
      // an open /proc/sys directory in the calling thread's namespace anyway. What this
      // pins is the outcome: every write lands where the thread is.)
      auto g = nl::netns_guard::enter(b.path());
      if (!g) { err = g.error().message; return; }
      if (!step(nl::node_sysctls().write("net/ipv4/conf/cnfd0/route_localnet", "1"))) return;
      if (!step(nl::node_sysctls().write("net/ipv6/conf/cnfd0/accept_ra", "0"))) return;
      if (auto v = nl::node_sysctls().read("net/core/somaxconn"); v) core_in_b = *v;  // not below ipv4/ipv6
      if (nl::node_sysctls().write("net/ipv4/../ipv4/ip_forward", "1")) { err = "a key with .. was accepted"; return; }
      auto missing = nl::node_sysctls().read("net/ipv4/conf/cnfd9/proxy_arp");
      if (missing || missing.error().code != cnf::errc::not_found) { err = "a missing interface was not reported"; return; }
      if (!step(g->restore())) return;
    }
    auto g = nl::netns_guard::enter(a.path());
    if (!g) { err = g.error().message; return; }
    if (auto v = nl::node_sysctls().read("net/ipv4/conf/cnfd0/proxy_arp"); v) back_in_a = *v;
    err = "";
    (void)g->restore();
  });
  t.join();
  INFO(err);
  CHECK(err.empty());
  CHECK(back_in_a == std::optional<std::string>("1"));
  CHECK(core_in_b == std::optional<std::string>(b.sysctl("net.core.somaxconn")));
  CHECK(a.sysctl("net.ipv4.conf.cnfd0.proxy_arp") == "1");
  CHECK(a.sysctl("net.ipv4.conf.cnfd0.route_localnet") == "0");
  CHECK(b.sysctl("net.ipv4.conf.cnfd0.proxy_arp") == "0");
  CHECK(b.sysctl("net.ipv4.conf.cnfd0.route_localnet") == "1");
  CHECK(b.sysctl("net.ipv6.conf.cnfd0.accept_ra") == "0");
}

TEST_CASE("get_forwarding reads a namespace's forwarding through its socket", "[integration][netlink]") {
  if (skip_unless_root()) return;
  test_netns ns;
  ns.exec_or_throw("ip link add cnff0 type veth peer name cnff1");
  std::optional<nl::rtnl_socket> sock;
  {
    auto g = nl::netns_guard::enter(ns.path()).value();
    sock.emplace(nl::rtnl_socket::open("netns " + ns.path()).value());
    (void)g.restore();
  }
  auto idx = nl::get_link(*sock, "cnff0").value().index;
  auto v4 = [&] { return nl::get_forwarding(*sock, AF_INET).value(); };
  CHECK_FALSE(v4());
  ns.exec_or_throw("sysctl -qw net.ipv4.ip_forward=1");
  CHECK(v4());
  CHECK(nl::get_forwarding(*sock, AF_INET, idx).value());  // "all" carries over to every interface
  ns.exec_or_throw("sysctl -qw net.ipv4.conf.cnff0.forwarding=0");
  CHECK_FALSE(nl::get_forwarding(*sock, AF_INET, idx).value());
  CHECK(v4());
  CHECK_FALSE(nl::get_forwarding(*sock, AF_INET6).value());
  ns.exec_or_throw("sysctl -qw net.ipv6.conf.all.forwarding=1");
  CHECK(nl::get_forwarding(*sock, AF_INET6).value());
  auto bad = nl::get_forwarding(*sock, AF_INET, 424242);
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Contains("#424242") && Contains(ns.path()));
  CHECK_FALSE(nl::get_forwarding(*sock, AF_PACKET));
}

TEST_CASE("plumb_pod sets the pod's ip_forward either way", "[integration][netlink]") {
  if (skip_unless_root()) return;
  node_env env;
  test_netns pod;
  in_netns here(env.node);
  auto s = nl::rtnl_socket::open().value();
  auto r = make_request(pod, {pfx("10.244.1.9/32")}, "fwd-on");
  r.pod_ip_forwarding = true;
  REQUIRE(nl::plumb_pod(s, r));
  CHECK(pod.sysctl("net.ipv4.ip_forward") == "1");
  CHECK(nl::unplumb_pod(s, r.host_ifname));
}

TEST_CASE("plumb_pod dual stack: kernel state, sysctls, pings", "[integration][netlink]") {
  if (skip_unless_root()) return;
  node_env env;
  test_netns pod;
  auto& node = env.node;
  in_netns here(node);

  auto req = make_request(pod, {pfx("10.244.1.7/26"), pfx("fd00:1::7/64")});
  auto s = nl::rtnl_socket::open().value();
  auto res = nl::plumb_pod(s, req);
  INFO((res ? std::string() : res.error().message));
  REQUIRE(res);
  WARN("plumb_pod dual stack: " << res->elapsed.count() << " us, " << res->round_trips << " netlink round trips");
  // Node: create, then up + routes; pod: the ip_forward query (netconf.hpp), then up +
  // addresses + routes + read back.
  CHECK(res->round_trips == 4);
  CHECK(res->host_ifname == "cali0d7763386da");
  CHECK(res->host_mac == nl::host_side_mac());
  CHECK(res->pod_mac != nl::host_side_mac());
  REQUIRE(res->addresses.size() == 2);
  CHECK(res->addresses[0] == pfx("10.244.1.7/32"));
  CHECK(res->addresses[1] == pfx("fd00:1::7/128"));

  // --- read back through the library ---
  auto host = nl::get_link(s, req.host_ifname).value();
  CHECK(host.index == res->host_ifindex);
  CHECK(host.kind == "veth");
  CHECK(host.up());
  CHECK(host.mtu == 1450);
  CHECK(host.mac == nl::host_side_mac());
  CHECK(host.link_index == res->pod_ifindex);
  CHECK(host.link_netnsid.has_value());

  nl::route_filter ours;
  ours.protocol = nl::cnf_route_protocol;
  auto host_routes = nl::list_routes(s, ours).value();
  CHECK(has_route(host_routes, pfx("10.244.1.7/32"), std::nullopt, host.index));
  CHECK(has_route(host_routes, pfx("fd00:1::7/128"), std::nullopt, host.index));
  CHECK(host_routes.size() == 2);
  for (const auto& r : host_routes)
    if (r.family() == cnf::ip_family::v4) CHECK(r.scope == RT_SCOPE_LINK);

  std::optional<nl::rtnl_socket> ps;
  {
    in_netns p(pod);
    ps.emplace(nl::rtnl_socket::open("pod").value());
  }
  auto eth0 = nl::get_link(*ps, "eth0").value();
  CHECK(eth0.index == res->pod_ifindex);
  CHECK(eth0.mac == res->pod_mac);
  CHECK(eth0.mtu == 1450);
  CHECK(eth0.up());
  CHECK(eth0.kind == "veth");
  CHECK(eth0.link_index == host.index);
  auto addrs = nl::list_addresses(*ps, eth0.index).value();
  bool v4 = false, v6 = false;
  for (const auto& a : addrs) {
    if (a.prefix == pfx("10.244.1.7/32")) v4 = true;
    if (a.prefix == pfx("fd00:1::7/128")) {
      v6 = true;
      CHECK((a.flags & IFA_F_NODAD) != 0);
      CHECK_FALSE(a.tentative());
    }
  }
  CHECK(v4);
  CHECK(v6);
  nl::route_filter on_eth0;
  on_eth0.oif = eth0.index;
  auto pod_routes = nl::list_routes(*ps, on_eth0).value();
  CHECK(has_route(pod_routes, pfx("169.254.1.1/32"), std::nullopt, eth0.index));
  CHECK(has_route(pod_routes, pfx("0.0.0.0/0"), nl::pod_gateway_v4(), eth0.index));
  CHECK(has_route(pod_routes, pfx("::/0"), nl::pod_gateway_v6(), eth0.index));

  // --- the same facts from ip(8) ---
  auto jl = ip_json(node, "-d link show dev " + req.host_ifname);
  REQUIRE(jl.arr().size() == 1);
  CHECK(jl.arr()[0]["address"].str() == "ee:ee:ee:ee:ee:ee");
  CHECK(jl.arr()[0]["mtu"].num() == 1450);
  CHECK(json_has_flag(jl.arr()[0], "UP"));
  CHECK(jl.arr()[0]["linkinfo"]["info_kind"].str() == "veth");

  auto jp = ip_json(pod, "-d link show dev eth0");
  REQUIRE(jp.arr().size() == 1);
  CHECK(jp.arr()[0]["address"].str() == res->pod_mac.to_string());
  CHECK(jp.arr()[0]["mtu"].num() == 1450);
  CHECK(jp.arr()[0]["ifindex"].num() == res->pod_ifindex);
  CHECK(json_has_flag(jp.arr()[0], "LOWER_UP"));

  auto ja = ip_json(pod, "addr show dev eth0");
  REQUIRE(ja.arr().size() == 1);
  std::vector<std::string> locals;
  for (const auto& ai : ja.arr()[0]["addr_info"].arr())
    locals.push_back(ai["local"].str() + "/" + std::to_string(static_cast<int>(ai["prefixlen"].num())));
  CHECK(std::count(locals.begin(), locals.end(), "10.244.1.7/32") == 1);
  CHECK(std::count(locals.begin(), locals.end(), "fd00:1::7/128") == 1);

  auto jr4 = ip_json(pod, "route show");
  CHECK(json_has_route(jr4, "default", "169.254.1.1", "eth0"));
  CHECK(json_has_route(jr4, "169.254.1.1", "", "eth0"));
  auto jr6 = ip_json(pod, "-6 route show");
  CHECK(json_has_route(jr6, "default", "fe80::ecee:eeff:feee:eeee", "eth0"));
  auto jh4 = ip_json(node, "route show proto 80");
  REQUIRE(jh4.arr().size() == 1);
  CHECK(jh4.arr()[0]["dst"].str() == "10.244.1.7");
  CHECK(jh4.arr()[0]["dev"].str() == req.host_ifname);
  CHECK(jh4.arr()[0]["scope"].str() == "link");
  auto jh6 = ip_json(node, "-6 route show proto 80");
  REQUIRE(jh6.arr().size() == 1);
  CHECK(jh6.arr()[0]["dst"].str() == "fd00:1::7");

  // --- sysctls (node side through ip netns exec, i.e. not through our reader) ---
  const std::string H = req.host_ifname;
  CHECK(node.sysctl("net.ipv4.conf." + H + ".proxy_arp") == "1");
  CHECK(node.sysctl("net.ipv4.conf." + H + ".forwarding") == "1");
  CHECK(node.sysctl("net.ipv4.conf." + H + ".route_localnet") == "1");
  CHECK(node.sysctl("net.ipv4.neigh." + H + ".proxy_delay") == "0");
  CHECK(node.sysctl("net.ipv6.conf." + H + ".accept_dad") == "0");
  CHECK(node.sysctl("net.ipv6.conf." + H + ".proxy_ndp") == "1");
  CHECK(node.sysctl("net.ipv6.conf." + H + ".forwarding") == "1");
  CHECK(node.sysctl("net.ipv6.conf." + H + ".accept_ra") == "0");
  CHECK(pod.sysctl("net.ipv6.conf.eth0.accept_dad") == "0");
  CHECK(pod.sysctl("net.ipv4.ip_forward") == "0");

  // The host side's link-local (the pods' IPv6 gateway) is there and usable (not tentative).
  bool ll_ready = false;
  for (int i = 0; i < 100 && !ll_ready; ++i) {
    // (not `for (a : list_addresses(...).value())`: the result temporary would dangle)
    auto v6addrs = nl::list_addresses(s, host.index, cnf::ip_family::v6).value();
    for (const auto& a : v6addrs)
      if (a.prefix.address() == nl::pod_gateway_v6() && !a.tentative()) ll_ready = true;
    if (!ll_ready) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(ll_ready);

  CHECK(nl::check_pod(s, req).empty());

  // --- traffic: pod -> node (local addresses), and pod -> upstream (routed by the node) ---
  CHECK(cnf_test::ping_ok(pod, "192.168.50.1"));
  CHECK(cnf_test::ping_ok(pod, "fd00:50::1"));
  CHECK(cnf_test::ping_ok(pod, "192.168.50.2"));
  CHECK(cnf_test::ping_ok(pod, "fd00:50::2"));
  CHECK(cnf_test::ping_ok(env.upstream, "10.244.1.7"));
  // The pod learnt the gateway MAC through proxy ARP: the host side's MAC.
  auto neigh = pod.exec("ip neigh show 169.254.1.1 dev eth0");
  CHECK_THAT(neigh.output, Contains("ee:ee:ee:ee:ee:ee"));
}

TEST_CASE("plumb_pod single stack IPv4 and IPv6", "[integration][netlink]") {
  if (skip_unless_root()) return;
  node_env env;
  test_netns pod4, pod6;
  in_netns here(env.node);
  auto s = nl::rtnl_socket::open().value();

  auto r4 = make_request(pod4, {pfx("10.244.1.8/32")}, "v4-only");
  r4.queues = 1;
  pod4.exec_or_throw("sysctl -qw net.ipv4.ip_forward=1");  // the plumbing turns it off (pod_ip_forwarding false)
  auto a = nl::plumb_pod(s, r4);
  INFO((a ? std::string() : a.error().message));
  REQUIRE(a);
  auto r6 = make_request(pod6, {pfx("fd00:1::8/128")}, "v6-only");
  r6.pod_mac = cnf::mac_address::parse("02:00:00:00:00:08").value();
  auto b = nl::plumb_pod(s, r6);
  INFO((b ? std::string() : b.error().message));
  REQUIRE(b);
  CHECK(b->pod_mac.to_string() == "02:00:00:00:00:08");

  CHECK(nl::check_pod(s, r4).empty());
  CHECK(nl::check_pod(s, r6).empty());
  CHECK(pod4.sysctl("net.ipv4.ip_forward") == "0");
  auto q = ip_json(pod4, "-d link show dev eth0");
  REQUIRE(q.arr().size() == 1);
  CHECK(q.arr()[0]["num_tx_queues"].num() == 1);
  CHECK(q.arr()[0]["num_rx_queues"].num() == 1);
  auto qh = ip_json(env.node, "-d link show dev " + r4.host_ifname);
  REQUIRE(qh.arr().size() == 1);
  CHECK(qh.arr()[0]["num_tx_queues"].num() == 1);
  // Family-specific setup only where asked for.
  CHECK(pod4.exec("ip -6 route show default").output.empty());
  CHECK(pod6.exec("ip -4 route show").output.empty());
  CHECK(env.node.sysctl("net.ipv4.conf." + r6.host_ifname + ".proxy_arp") == "0");
  CHECK(cnf_test::ping_ok(pod4, "192.168.50.1"));
  CHECK(cnf_test::ping_ok(pod6, "fd00:50::1"));
  CHECK(cnf_test::ping_ok(pod6, "fd00:50::2"));
}

TEST_CASE("plumb_pod rolls back: pod interface name taken", "[integration][netlink]") {
  if (skip_unless_root()) return;
  test_netns node, pod;
  pod.exec_or_throw("ip link add eth0 mtu 1400 type veth peer name keep1 && ip addr add 10.9.9.9/24 dev eth0");
  const auto before = pod.exec_or_throw("ip -d addr show dev eth0");
  in_netns here(node);
  auto s = nl::rtnl_socket::open().value();

  auto req = make_request(pod, {pfx("10.244.1.7/32")});
  auto r = nl::plumb_pod(s, req);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cnf::errc::already_exists);
  CHECK_THAT(r.error().message, Contains("eth0") && Contains(pod.path()));

  auto h = nl::get_link(s, req.host_ifname);
  REQUIRE_FALSE(h);
  CHECK(h.error().code == cnf::errc::not_found);
  CHECK_FALSE(node.ip("link show dev " + req.host_ifname).ok());
  CHECK(nl::list_links(s, "cali").value().empty());
  nl::route_filter ours;
  ours.protocol = nl::cnf_route_protocol;
  CHECK(nl::list_routes(s, ours).value().empty());  // no route of ours left in the node
  CHECK(pod.exec_or_throw("ip -d addr show dev eth0") == before);  // untouched, same index
}

TEST_CASE("plumb_pod rolls back after the veth exists: conflicting host route", "[integration][netlink]") {
  if (skip_unless_root()) return;
  test_netns node, pod;
  node.exec_or_throw("ip route add 10.244.1.9/32 dev lo");
  in_netns here(node);
  auto s = nl::rtnl_socket::open().value();

  auto req = make_request(pod, {pfx("10.244.1.9/32")});
  auto r = nl::plumb_pod(s, req);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cnf::errc::already_exists);
  CHECK_THAT(r.error().message, Contains("10.244.1.9/32") && Contains("through lo"));
  CHECK_FALSE(nl::get_link(s, req.host_ifname));
  CHECK_FALSE(pod.ip("link show dev eth0").ok());
  CHECK(node.exec_or_throw("ip route show 10.244.1.9/32").find("dev lo") != std::string::npos);
  CHECK_FALSE(node.exec_or_throw("ip link show").find("cali") != std::string::npos);
}

TEST_CASE("plumb_pod replaces a stale host veth, refuses to replace a non-veth", "[integration][netlink]") {
  if (skip_unless_root()) return;
  test_netns node, pod, pod2;
  in_netns here(node);
  auto s = nl::rtnl_socket::open().value();
  auto req = make_request(pod, {pfx("10.244.1.10/32")});
  node.exec_or_throw("ip link add " + req.host_ifname + " type veth peer name stale1");

  auto r = nl::plumb_pod(s, req);
  INFO((r ? std::string() : r.error().message));
  REQUIRE(r);
  CHECK_FALSE(node.ip("link show dev stale1").ok());  // the old pair is gone
  CHECK(nl::check_pod(s, req).empty());

  auto req2 = make_request(pod2, {pfx("10.244.1.11/32")}, "bridge-victim");
  node.exec_or_throw("ip link add " + req2.host_ifname + " type bridge");
  auto r2 = nl::plumb_pod(s, req2);
  REQUIRE_FALSE(r2);
  CHECK(r2.error().code == cnf::errc::already_exists);
  CHECK_THAT(r2.error().message, Contains("bridge") && Contains("refusing"));
  CHECK(nl::get_link(s, req2.host_ifname).value().kind == "bridge");
  CHECK_FALSE(pod2.ip("link show dev eth0").ok());
}

TEST_CASE("unplumb_pod removes everything and is idempotent", "[integration][netlink]") {
  if (skip_unless_root()) return;
  test_netns node, pod;
  in_netns here(node);
  auto s = nl::rtnl_socket::open().value();
  auto req = make_request(pod, {pfx("10.244.1.7/32"), pfx("fd00:1::7/128")});
  REQUIRE(nl::plumb_pod(s, req));

  auto t0 = std::chrono::steady_clock::now();
  auto u = nl::unplumb_pod(s, req.host_ifname);
  long first = us_since(t0);
  INFO((u ? std::string() : u.error().message));
  REQUIRE(u);
  t0 = std::chrono::steady_clock::now();
  CHECK(nl::unplumb_pod(s, req.host_ifname));
  long second = us_since(t0);
  WARN("unplumb_pod: " << first << " us; again (already gone): " << second << " us");

  CHECK_FALSE(nl::get_link(s, req.host_ifname));
  CHECK_FALSE(pod.ip("link show dev eth0").ok());
  nl::route_filter ours;
  ours.protocol = nl::cnf_route_protocol;
  CHECK(nl::list_routes(s, ours).value().empty());
  CHECK(node.exec_or_throw("ip route show proto 80; ip -6 route show proto 80").empty());
}

TEST_CASE("check_pod reports each mismatch", "[integration][netlink]") {
  if (skip_unless_root()) return;
  test_netns node, pod;
  in_netns here(node);
  auto s = nl::rtnl_socket::open().value();
  auto req = make_request(pod, {pfx("10.244.1.7/32"), pfx("fd00:1::7/128")});
  REQUIRE(nl::plumb_pod(s, req));
  REQUIRE(nl::check_pod(s, req).empty());

  pod.exec_or_throw("ip route del default");
  node.exec_or_throw("ip -6 route del fd00:1::7/128");
  pod.exec_or_throw("ip -6 addr del fd00:1::7/128 dev eth0");
  node.exec_or_throw("sysctl -q -w net.ipv4.conf." + req.host_ifname + ".proxy_arp=0");

  auto errs = nl::check_pod(s, req);
  std::string all;
  for (const auto& e : errs) all += e.message + "\n";
  INFO(all);
  REQUIRE(errs.size() == 4);
  CHECK_THAT(all, Contains("route 0.0.0.0/0 via 169.254.1.1 dev eth0 missing in netns " + pod.path()));
  CHECK_THAT(all, Contains("host route fd00:1::7/128 dev " + req.host_ifname + " missing"));
  CHECK_THAT(all, Contains("address fd00:1::7/128 missing on eth0 in netns " + pod.path()));
  CHECK_THAT(all, Contains("proxy_arp is 0, want 1"));
  for (const auto& e : errs) CHECK(e.code != cnf::errc::ok);

  pod.exec_or_throw("ip link set eth0 down");
  errs = nl::check_pod(s, req);
  all.clear();
  for (const auto& e : errs) all += e.message + "\n";
  CHECK_THAT(all, Contains("interface eth0 in netns " + pod.path() + " is down"));

  REQUIRE(nl::unplumb_pod(s, req.host_ifname));
  errs = nl::check_pod(s, req);
  all.clear();
  for (const auto& e : errs) all += e.message + "\n";
  INFO(all);
  REQUIRE(errs.size() == 2);
  CHECK_THAT(all, Contains("host interface " + req.host_ifname + " missing"));
  CHECK_THAT(all, Contains("interface eth0 missing in netns " + pod.path()));
}

TEST_CASE("plumb_pod refuses bad requests without side effects", "[integration][netlink]") {
  if (skip_unless_root()) return;
  test_netns node, pod;
  in_netns here(node);
  auto s = nl::rtnl_socket::open().value();

  auto self = make_request(node, {pfx("10.244.1.7/32")});  // "pod" netns = node netns
  auto r = nl::plumb_pod(s, self);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cnf::errc::invalid);
  CHECK_THAT(r.error().message, Contains("node's own namespace"));

  auto empty = make_request(pod, {});
  CHECK(nl::plumb_pod(s, empty).error().code == cnf::errc::invalid);
  auto longname = make_request(pod, {pfx("10.244.1.7/32")});
  longname.pod_ifname = "a-very-long-interface";
  CHECK_THAT(nl::plumb_pod(s, longname).error().message, Contains("longer than 15"));
  auto badroute = make_request(pod, {pfx("10.244.1.7/32")});
  badroute.routes = {pfx("fd00::/8")};
  CHECK_THAT(nl::plumb_pod(s, badroute).error().message, Contains("no pod address of its family"));
  auto mtu = make_request(pod, {pfx("10.244.1.7/32")});
  mtu.mtu = 10;
  CHECK(nl::plumb_pod(s, mtu).error().code == cnf::errc::invalid);
  auto gone = make_request(pod, {pfx("10.244.1.7/32")});
  gone.netns_path = "/var/run/netns/cnf-no-such-namespace";
  auto g = nl::plumb_pod(s, gone);
  REQUIRE_FALSE(g);
  CHECK(g.error().message == "netns /var/run/netns/cnf-no-such-namespace does not exist");
  auto checked = nl::check_pod(s, gone);
  REQUIRE_FALSE(checked.empty());
  CHECK_THAT(checked.back().message, Contains("does not exist"));

  CHECK(nl::list_links(s).value().size() == 1);  // only lo: nothing was created
  CHECK(pod.exec_or_throw("ip -o link show").find("eth0") == std::string::npos);
}

TEST_CASE("list_links finds host-side leftovers by prefix", "[integration][netlink]") {
  if (skip_unless_root()) return;
  test_netns node, p1, p2, p3;
  node.exec_or_throw("ip link add other0 type veth peer name other1 && ip link add calibr0 type bridge");
  in_netns here(node);
  auto s = nl::rtnl_socket::open().value();
  std::vector<std::string> names;
  int i = 0;
  for (auto* p : {&p1, &p2, &p3}) {
    ++i;
    auto req = make_request(*p, {pfx(("10.244.2." + std::to_string(i) + "/32").c_str())},
                            ("gc-" + std::to_string(i)).c_str());
    REQUIRE(nl::plumb_pod(s, req));
    names.push_back(req.host_ifname);
  }
  auto veths = nl::list_links(s, "cali", "veth").value();
  std::vector<std::string> got;
  for (const auto& l : veths) got.push_back(l.name);
  std::sort(got.begin(), got.end());
  std::sort(names.begin(), names.end());
  CHECK(got == names);                                  // not other0, not the bridge
  CHECK(nl::list_links(s, "cali").value().size() == 4);  // any kind: the bridge too
}

TEST_CASE("plumb_pod/unplumb_pod timing", "[integration][netlink]") {
  if (skip_unless_root()) return;
  constexpr int n = 20;
  test_netns node;
  std::vector<std::unique_ptr<test_netns>> pods;
  for (int i = 0; i < n; ++i) pods.push_back(std::make_unique<test_netns>());
  in_netns here(node);
  auto s = nl::rtnl_socket::open().value();

  for (bool dual : {false, true}) {
    std::vector<long> add, del, cpu;
    for (int i = 0; i < n; ++i) {
      std::vector<cnf::ip_prefix> addrs = {pfx(("10.244.3." + std::to_string(i + 1) + "/32").c_str())};
      if (dual) addrs.push_back(pfx(("fd00:3::" + std::to_string(i + 1) + "/128").c_str()));
      auto req = make_request(*pods[i], addrs, ("t-" + std::to_string(i)).c_str());
      timespec c0{}, c1{};
      ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
      auto r = nl::plumb_pod(s, req);
      ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
      INFO((r ? std::string() : r.error().message));
      REQUIRE(r);
      add.push_back(r->elapsed.count());
      cpu.push_back((c1.tv_sec - c0.tv_sec) * 1000000L + (c1.tv_nsec - c0.tv_nsec) / 1000);
    }
    for (int i = 0; i < n; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      REQUIRE(nl::unplumb_pod(s, nl::host_veth_name("cali", "default", "t-" + std::to_string(i)).value()));
      del.push_back(us_since(t0));
    }
    auto a = summarize(add), c = summarize(cpu), d = summarize(del);
    WARN((dual ? "dual stack" : "IPv4") << " plumb_pod x" << n << ": median " << a.median << " us, p90 " << a.p90
                                        << " us, min " << a.min << " us, max " << a.max << " us (thread CPU median "
                                        << c.median << " us); unplumb_pod: median " << d.median << " us, p90 "
                                        << d.p90 << " us");
    // A loose bound that still catches a pathological regression (a sleep, a DAD wait).
    CHECK(a.median < 50000);
  }
}
