// cnf lab up | down | pod add | pod del | exec | status.
#include "lab/lab.hpp"

#include "app.hpp"

#include <cnf/loader.hpp>
#include <cnf/model/node.hpp>
#include <cnf/model/workload_endpoint.hpp>
#include <cnf/netlink/address.hpp>
#include <cnf/netlink/link.hpp>
#include <cnf/netlink/netns.hpp>
#include <cnf/netlink/route.hpp>
#include <cnf/netlink/sysctl.hpp>
#include <cnf/profile.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <arpa/inet.h>
#include <linux/neighbour.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

namespace cnf_app::lab {
namespace fs = std::filesystem;
namespace bj = boost::json;
namespace nl = cnf::netlink;

namespace {

using clock = std::chrono::steady_clock;

// ---- small helpers ---------------------------------------------------------------------

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
  if (!f) throw lab_error("cannot write " + p.string());
}

/// The last `lines` lines of a log file, indented, for error messages.
std::string tail_of(const fs::path& p, std::size_t lines = 8) {
  auto t = read_text(p);
  std::vector<std::string> v;
  std::istringstream in(t);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  std::string out;
  for (std::size_t i = v.size() > lines ? v.size() - lines : 0; i < v.size(); ++i) out += "\n    " + v[i];
  return out.empty() ? " (empty)" : out;
}

template <class T>
T ok_or_throw(cnf::result<T> r, const std::string& what) {
  if (!r) throw lab_error(what + ": " + r.error().message);
  if constexpr (!std::is_void_v<T>) return std::move(*r);
}

std::string self_exe() { return (exe_dir() / "cnf").string(); }

std::vector<std::string> base_env() { return {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}; }

/// A Kubernetes name (RFC 1123 label): lower-case letters, digits and '-', 1..63 long.
void check_k8s_name(const std::string& what, const std::string& v) {
  static const std::regex re("[a-z0-9]([-a-z0-9]*[a-z0-9])?");
  if (v.empty() || v.size() > 63 || !std::regex_match(v, re))
    throw lab_error(what + " '" + v + "' is not a valid name: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters");
}

std::pair<std::string, std::string> split_key(const std::string& key) {
  auto slash = key.find('/');
  if (slash == std::string::npos) throw lab_error("pod '" + key + "': expected NAMESPACE/NAME, e.g. default/web-0");
  std::string ns = key.substr(0, slash), name = key.substr(slash + 1);
  check_k8s_name("namespace", ns);
  check_k8s_name("pod name", name);
  return {ns, name};
}

std::map<std::string, std::string> parse_labels(const std::string& text) {
  std::map<std::string, std::string> out;
  if (text.empty()) return out;
  std::istringstream in(text);
  for (std::string kv; std::getline(in, kv, ',');) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      throw lab_error("--labels: '" + kv + "' is not k=v (expected k=v,k2=v2)");
    out[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return out;
}

/// "name=PROTO:port,..." -> the WorkloadEndpoint's spec.ports (Calico's, from the pod's
/// named container ports), as JSON.
std::string parse_ports(const std::string& text) {
  if (text.empty()) return {};
  bj::array out;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    static const std::regex re(R"(([a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?)=(TCP|UDP|SCTP):([0-9]{1,5}))");
    std::smatch m;
    if (!std::regex_match(item, m, re) || std::stoi(m[4]) < 1 || std::stoi(m[4]) > 65535)
      throw lab_error("--ports: '" + item + "' is not name=PROTOCOL:port (a port name of 1..15 lower-case letters, digits and '-', TCP, UDP or SCTP, 1..65535)");
    out.push_back(bj::object{{"name", m[1].str()}, {"protocol", m[3].str()}, {"port", std::stoi(m[4])}});
  }
  return bj::serialize(out);
}

// ---- addresses of the fabric -----------------------------------------------------------
// Subnet k is 10.(100+k).0.0/16; the router is .0.1 on it, its nodes .0.10 onwards.

constexpr int max_subnets = 100;
constexpr int max_nodes_per_subnet = 60000;

std::string subnet_ip(int k, std::uint32_t host) {
  return fmt::format("10.{}.{}.{}", 100 + k, (host >> 8) & 0xff, host & 0xff);
}

// With --ipv6, subnet k is also fd00:cf:<100+k in hex>::/64, the same host numbers.
std::string subnet_ip6(int k, std::uint32_t host) { return fmt::format("fd00:cf:{:x}::{:x}", 100 + k, host); }

// ---- topology plan ---------------------------------------------------------------------

struct plan_node {
  std::string name;
  int subnet;
};

std::vector<plan_node> plan_topology(const up_options& o, int& subnets) {
  std::vector<plan_node> out;
  if (!o.nodes) {
    // The classic Calico lab: k8s-m, k8s-w1, k8s-w2 on one subnet, k8s-w0 behind the router.
    subnets = o.subnets.value_or(2);
    if (subnets < 1 || subnets > 4) throw lab_error("--subnets " + std::to_string(subnets) + ": the classic topology has 4 nodes; use 1..4 subnets (or --nodes N)");
    const char* names[] = {"k8s-m", "k8s-w1", "k8s-w2", "k8s-w0"};
    for (int i = 0; i < 4; ++i) {
      int k = subnets == 2 ? (i == 3 ? 1 : 0) : i % subnets;
      out.push_back({names[i], k});
    }
    return out;
  }
  const int n = *o.nodes;
  subnets = o.subnets.value_or(1);
  if (n < 1) throw lab_error("--nodes " + std::to_string(n) + ": at least 1 node");
  if (subnets < 1 || subnets > max_subnets) throw lab_error("--subnets " + std::to_string(subnets) + ": 1.." + std::to_string(max_subnets));
  if (subnets > n) throw lab_error("--subnets " + std::to_string(subnets) + " is more than the " + std::to_string(n) + " node(s)");
  if (n / subnets >= max_nodes_per_subnet) throw lab_error("--nodes " + std::to_string(n) + ": too many nodes per subnet");
  for (int i = 0; i < n; ++i) out.push_back({"node-" + std::to_string(i + 1), i % subnets});
  return out;
}

// ---- profiles --------------------------------------------------------------------------

struct template_profile {
  std::string file;  ///< the --profile path, or a description of the built-in one
  std::string text;
  toml::table doc;
  cnf::profile prof;
};

toml::table& ensure_table(toml::table& t, std::string_view key) {
  if (!t.contains(key) || !t[key].is_table()) t.insert_or_assign(key, toml::table{});
  return *t[key].as_table();
}

std::string chosen_plugin(const toml::table& t, std::string_view section) {
  if (auto* s = t[section].as_table())
    if (auto v = (*s)["plugin"].value<std::string>()) return *v;
  return {};
}

/// up --ipv6: the node's IPv6 address, IPv6 for its pods, and an IPv6 pool unless the
/// template has one (its vxlan_mode the first IPv4 pool's: Calico has no IPIP for IPv6).
void add_ipv6(toml::table& t, const node_state& n) {
  ensure_table(t, "node").insert_or_assign("ipv6_address", n.address6 + "/64");
  ensure_table(t, "cni").insert_or_assign("assign_ipv6", true);
  auto& ipam = ensure_table(t, "ipam");
  if (!ipam.contains("pools") || !ipam["pools"].is_array()) ipam.insert_or_assign("pools", toml::array{});
  auto& pools = *ipam["pools"].as_array();
  std::string vxlan_mode;
  for (auto& e : pools) {
    auto* pt = e.as_table();
    if (!pt) continue;
    const auto cidr = (*pt)["cidr"].value_or(std::string());
    if (cidr.find(':') != std::string::npos) return;  // the template's own IPv6 pool
    if (vxlan_mode.empty()) vxlan_mode = (*pt)["vxlan_mode"].value_or(std::string());
  }
  toml::table pool{{"cidr", default_ipv6_pool}, {"block_size", 122}};
  if (!vxlan_mode.empty()) pool.insert_or_assign("vxlan_mode", vxlan_mode);
  pools.push_back(std::move(pool));
}

/// The node's profile: the template with the node's name, the lab's datastore, the
/// node's agent socket and log file (unless the template names one).
std::string node_profile_text(const template_profile& tp, const lab_state& s, const node_state& n) {
  toml::table t = tp.doc;
  if (auto* pp = t["plugin_path"].as_array()) {
    const auto base = tp.file.empty() || tp.file.front() != '/' ? fs::current_path() : fs::path(tp.file).parent_path();
    for (auto& e : *pp)
      if (auto* v = e.as_string(); v && !v->get().empty() && v->get().front() != '/') *v = (base / v->get()).lexically_normal().string();
  }
  ensure_table(t, "node").insert_or_assign("name", n.name);
  auto& cni = ensure_table(t, "cni");
  cni.insert_or_assign("agent_socket", n.agent_socket);
  if (s.ipv6) add_ipv6(t, n);
  if (!cni.contains("log_file")) cni.insert_or_assign("log_file", (fs::path(s.dir) / "nodes" / n.name / "cni.log").string());
  if (chosen_plugin(t, "datastore") != s.datastore) t.insert_or_assign("datastore", toml::table{{"plugin", s.datastore}});
  auto& ds = ensure_table(t, "datastore");
  if (s.datastore == "local") {
    ds.insert_or_assign("dir", (fs::path(s.dir) / "datastore").string());
  } else {
    ds.insert_or_assign("endpoints", toml::array{"http://" + s.subnets[static_cast<std::size_t>(n.subnet)].gateway + ":2379"});
    for (auto k : {"ca_file", "cert_file", "key_file"}) ds.erase(k);
  }
  std::ostringstream os;
  os << "# cnf lab: node " << n.name << " of the lab in " << s.dir << ", made from " << tp.file << "\n" << t << "\n";
  return os.str();
}

template_profile load_template(const up_options& o) {
  template_profile tp;
  if (o.profile.empty()) {
    tp.file = "the built-in lab profile (examples/profiles/lab.toml)";
    tp.text = default_profile_text();
  } else {
    std::error_code ec;
    auto abs = fs::absolute(o.profile, ec);
    tp.file = ec ? o.profile : abs.string();
    if (!fs::is_regular_file(tp.file, ec)) throw lab_error("--profile " + o.profile + ": no such file");
    tp.text = read_text(tp.file);
  }
  auto p = cnf::parse_profile(tp.text, tp.file);
  if (!p) throw lab_error("--profile: " + p.error().message);
  tp.prof = std::move(*p);
  try {
    tp.doc = toml::parse(tp.text, tp.file);
  } catch (const toml::parse_error& e) {
    throw lab_error("--profile: " + tp.file + ": " + std::string(e.description()));
  }
  if (!tp.prof.ipam) throw lab_error("--profile: " + tp.file + ": no [ipam] section; the lab's nodes need an IPAM (calico-ipam)");
  if (tp.prof.ipam->plugin != "calico-ipam")
    throw lab_error("--profile: " + tp.file + ": [ipam] plugin = \"" + tp.prof.ipam->plugin +
                    "\": the lab's nodes share one datastore and need calico-ipam (blocks with node affinity); host-local would give every node the same range");
  return tp;
}

/// Finds every plugin the template names. Datastore and IPAM must be there; a missing
/// routing, encapsulation or policy plugin is a warning (the agent may not use it yet).
void check_plugins(const template_profile& tp, const std::string& datastore) {
  cnf::plugin_loader loader(plugin_search_path(&tp.prof));
  if (auto r = loader.find(cnf::part::datastore, datastore); !r)
    throw lab_error("datastore plugin '" + datastore + "': " + r.error().message);
  for (auto prt : cnf::all_parts) {
    const auto& c = tp.prof.choice(prt);
    if (!c || prt == cnf::part::datastore) continue;
    auto lp = loader.find(prt, c->plugin);
    if (!lp) {
      if (prt == cnf::part::ipam) throw lab_error("--profile: " + tp.file + ": [ipam] plugin: " + lp.error().message);
      fmt::print(stderr, "cnf lab up: warning: [{}] plugin \"{}\" not found: {}\n", cnf::to_string(prt), c->plugin, lp.error().message);
      continue;
    }
    if (auto v = cnf::plugin_loader::validate(*lp, tp.prof.config_for(prt)); !v) throw lab_error("--profile: " + v.error().message);
  }
}

// ---- the fabric (netlink, inside the lab's namespaces) -----------------------------------

// Fixed MACs for the fabric (locally administered): the router's bridge of subnet k, and
// node i's eth0. The lab pins them as permanent neighbours (pin_fabric).
cnf::mac_address fabric_mac(std::uint8_t kind, std::uint32_t i) {
  return *cnf::mac_address::parse(fmt::format("02:cf:{:02x}:{:02x}:{:02x}:{:02x}", kind, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff));
}

nl::message neigh_msg(int ifindex, const std::string& addr, const cnf::mac_address& mac) {
  nl::message m(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE);
  auto& nd = m.header<ndmsg>();
  nd.ndm_family = addr.find(':') != std::string::npos ? AF_INET6 : AF_INET;
  nd.ndm_ifindex = ifindex;
  nd.ndm_state = NUD_PERMANENT;
  m.put_addr(NDA_DST, *cnf::ip_address::parse(addr));
  m.put(NDA_LLADDR, mac.bytes.data(), 6);
  return m;
}

nl::message new_bridge_msg(const std::string& name, const cnf::mac_address& mac) {
  nl::message m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  m.header<ifinfomsg>().ifi_family = AF_UNSPEC;
  m.put_str(IFLA_IFNAME, name);
  m.put(IFLA_ADDRESS, mac.bytes.data(), 6);
  auto* li = m.begin_nest(IFLA_LINKINFO);
  m.put_str(IFLA_INFO_KIND, "bridge");
  m.end_nest(li);
  return m;
}

/// In the router namespace: a bridge per subnet with the router's address on it, and
/// forwarding on.
void build_router(const lab_state& s) {
  auto ns = ok_or_throw(nl::open_netns(netns_path(s.router_netns)), "router namespace");
  ok_or_throw(nl::with_netns(ns, [&]() -> cnf::result<void> {
                auto sock = nl::rtnl_socket::open("netns " + s.router_netns);
                if (!sock) return std::move(sock).error();
                nl::request_batch b;
                for (std::size_t k = 0; k < s.subnets.size(); ++k) {
                  const auto& sn = s.subnets[k];
                  b.add(new_bridge_msg(sn.bridge, fabric_mac(0x1a, static_cast<std::uint32_t>(k))), "create bridge " + sn.bridge);
                  b.add(nl::set_link_up_msg(std::string_view(sn.bridge)), "set " + sn.bridge + " up");
                }
                if (auto r = sock->execute(b); !r) return r;
                for (auto& sn : s.subnets) {
                  auto l = nl::get_link(*sock, sn.bridge);
                  if (!l) return std::move(l).error();
                  auto gw = cnf::ip_prefix::parse(sn.gateway + "/16", /*allow_host_bits=*/true);
                  if (!gw) return std::move(gw).error();
                  if (auto r = nl::add_address(*sock, l->index, *gw); !r) return r;
                  if (sn.gateway6.empty()) continue;
                  auto gw6 = cnf::ip_prefix::parse(sn.gateway6 + "/64", /*allow_host_bits=*/true);
                  if (!gw6) return std::move(gw6).error();
                  // No duplicate address detection: the lab numbers its fabric itself.
                  if (auto r = nl::add_address(*sock, l->index, *gw6, IFA_F_NODAD); !r) return r;
                }
                if (s.ipv6)
                  if (auto r = nl::write_sysctl("net/ipv6/conf/all/forwarding", "1"); !r) return r;
                return nl::write_sysctl("net/ipv4/ip_forward", "1");
              }),
              "router " + s.router_netns);
}

/// One veth per node: "eth0" in the node, "n<i>" on the router's bridge of its subnet;
/// in the node, its address and the default route via the router; forwarding on.
void build_node_links(const lab_state& s, std::size_t first) {
  auto rns = ok_or_throw(nl::open_netns(netns_path(s.router_netns)), "router namespace");
  std::vector<nl::netns_fd> node_fds;
  for (std::size_t i = first; i < s.nodes.size(); ++i)
    node_fds.push_back(ok_or_throw(nl::open_netns(netns_path(s.nodes[i].netns)), "node " + s.nodes[i].name));
  ok_or_throw(nl::with_netns(rns, [&]() -> cnf::result<void> {
                auto sock = nl::rtnl_socket::open("netns " + s.router_netns);
                if (!sock) return std::move(sock).error();
                std::map<std::string, int> bridge_index;
                for (auto& sn : s.subnets) {
                  auto l = nl::get_link(*sock, sn.bridge);
                  if (!l) return std::move(l).error();
                  bridge_index[sn.bridge] = l->index;
                }
                nl::request_batch b;
                for (std::size_t i = first; i < s.nodes.size(); ++i) {
                  const auto& n = s.nodes[i];
                  nl::veth_spec v;
                  v.name = n.router_link;
                  v.peer_name = "eth0";
                  v.peer_netns_fd = node_fds[i - first].get();
                  v.peer_mac = fabric_mac(0x1b, static_cast<std::uint32_t>(i));
                  auto m = nl::new_veth_msg(v);
                  m.put_u32(IFLA_MASTER, static_cast<std::uint32_t>(bridge_index[s.subnets[static_cast<std::size_t>(n.subnet)].bridge]));
                  b.add(m, "veth " + n.router_link + " <-> " + n.name + "/eth0");
                  b.add(nl::set_link_up_msg(std::string_view(n.router_link)), "set " + n.router_link + " up");
                }
                return sock->execute(b);
              }),
              "router " + s.router_netns);
  for (std::size_t i = first; i < s.nodes.size(); ++i) {
    const auto& n = s.nodes[i];
    const auto& sn = s.subnets[static_cast<std::size_t>(n.subnet)];
    ok_or_throw(nl::with_netns(node_fds[i - first], [&]() -> cnf::result<void> {
                  auto sock = nl::rtnl_socket::open("netns " + n.netns);
                  if (!sock) return std::move(sock).error();
                  auto l = nl::get_link(*sock, "eth0");
                  if (!l) return std::move(l).error();
                  auto a = cnf::ip_prefix::parse(n.address + "/16", /*allow_host_bits=*/true);
                  if (!a) return std::move(a).error();
                  if (auto r = nl::add_address(*sock, l->index, *a); !r) return r;
                  if (auto r = nl::set_link_up(*sock, l->index); !r) return r;
                  nl::route_spec def;
                  def.dst = *cnf::ip_prefix::parse("0.0.0.0/0");
                  def.gateway = *cnf::ip_address::parse(sn.gateway);
                  def.protocol = RTPROT_BOOT;  // the node's own route, not cnf's (protocol 80)
                  if (auto r = nl::add_route(*sock, def); !r) return r;
                  if (!n.address6.empty()) {
                    auto a6 = cnf::ip_prefix::parse(n.address6 + "/64", /*allow_host_bits=*/true);
                    if (!a6) return std::move(a6).error();
                    if (auto r = nl::add_address(*sock, l->index, *a6, IFA_F_NODAD); !r) return r;
                    nl::route_spec def6;
                    def6.dst = *cnf::ip_prefix::parse("::/0");
                    def6.gateway = *cnf::ip_address::parse(sn.gateway6);
                    def6.protocol = RTPROT_BOOT;
                    if (auto r = nl::add_route(*sock, def6); !r) return r;
                    if (auto r = nl::write_sysctl("net/ipv6/conf/all/forwarding", "1"); !r) return r;
                  }
                  return nl::write_sysctl("net/ipv4/ip_forward", "1");
                }),
                "node " + n.name);
  }
}

/// The fabric's neighbours, permanent: every node's for the router and the other nodes of
/// its subnet, the router's for every node. Why: one kernel holds the ARP entries of every
/// namespace under one limit (net.ipv4.neigh.default.gc_thresh3, 1024 by default, a host
/// setting the lab leaves alone); 100 nodes that ARP for each other overflow it, and the
/// kernel then drops packets. Permanent entries are exempt from that limit.
void pin_fabric(const lab_state& s) {
  auto rns = ok_or_throw(nl::open_netns(netns_path(s.router_netns)), "router namespace");
  ok_or_throw(nl::with_netns(rns, [&]() -> cnf::result<void> {
                auto sock = nl::rtnl_socket::open("netns " + s.router_netns);
                if (!sock) return std::move(sock).error();
                nl::request_batch b;
                std::map<int, int> bridge;
                for (std::size_t k = 0; k < s.subnets.size(); ++k) {
                  auto l = nl::get_link(*sock, s.subnets[k].bridge);
                  if (!l) return std::move(l).error();
                  bridge[static_cast<int>(k)] = l->index;
                }
                for (std::size_t i = 0; i < s.nodes.size(); ++i)
                  for (auto& a : {s.nodes[i].address, s.nodes[i].address6})
                    if (!a.empty()) b.add(neigh_msg(bridge[s.nodes[i].subnet], a, fabric_mac(0x1b, static_cast<std::uint32_t>(i))), "neighbour " + a);
                return sock->execute(b);
              }),
              "router " + s.router_netns);
  for (std::size_t i = 0; i < s.nodes.size(); ++i) {
    const auto& n = s.nodes[i];
    auto ns = ok_or_throw(nl::open_netns(netns_path(n.netns)), "node " + n.name);
    ok_or_throw(nl::with_netns(ns, [&]() -> cnf::result<void> {
                  auto sock = nl::rtnl_socket::open("netns " + n.netns);
                  if (!sock) return std::move(sock).error();
                  auto l = nl::get_link(*sock, "eth0");
                  if (!l) return std::move(l).error();
                  nl::request_batch b;
                  const auto& sn = s.subnets[static_cast<std::size_t>(n.subnet)];
                  for (auto& gw : {sn.gateway, sn.gateway6})
                    if (!gw.empty()) b.add(neigh_msg(l->index, gw, fabric_mac(0x1a, static_cast<std::uint32_t>(n.subnet))), "neighbour " + gw);
                  for (std::size_t j = 0; j < s.nodes.size(); ++j)
                    if (j != i && s.nodes[j].subnet == n.subnet)
                      for (auto& a : {s.nodes[j].address, s.nodes[j].address6})
                        if (!a.empty()) b.add(neigh_msg(l->index, a, fabric_mac(0x1b, static_cast<std::uint32_t>(j))), "neighbour " + a);
                  return sock->execute(b);
                }),
                "node " + n.name);
  }
}

/// --static-neighbours: the pod's gateway in the pod, the pod's address in the node, both
/// permanent (see pin_fabric for why); from the ADD result's interfaces, and the gateway of
/// its IPv4 address or else of its IPv4 default route (Calico's 169.254.1.1 is only there).
/// A result that lacks what pinning needs is an error: an unpinned pod would overflow the
/// shared neighbour table later, far from the cause.
void pin_pod(const pod_state& p, const node_state& n, const bj::object& result) {
  const auto* ifs = result.if_contains("interfaces");
  const auto* ips = result.if_contains("ips");
  const auto* routes = result.if_contains("routes");
  auto fail = [&](const std::string& why) { throw lab_error("pod " + p.key() + ": --static-neighbours: the ADD result " + why); };
  if (!ifs || !ifs->is_array() || ifs->as_array().size() < 2) fail("does not name the host and pod interfaces");
  auto str = [](const bj::value& v, const char* k) {
    auto* o = v.if_object();
    auto* x = o ? o->if_contains(k) : nullptr;
    return x && x->is_string() ? std::string(x->as_string()) : std::string();
  };
  const std::string host_if = str(ifs->as_array()[0], "name");
  auto host_mac = cnf::mac_address::parse(str(ifs->as_array()[0], "mac"));
  auto pod_mac = cnf::mac_address::parse(str(ifs->as_array()[1], "mac"));
  if (host_if.empty() || !host_mac || !pod_mac) fail("lacks an interface name or MAC");
  if (p.ip.empty()) return;  // IPv6 only: neighbour discovery entries are not what overflows
  std::string gw;
  if (ips && ips->is_array())
    for (auto& ip : ips->as_array())
      if (auto g = str(ip, "gateway"); !g.empty() && g.find(':') == std::string::npos) gw = g;
  if (gw.empty() && routes && routes->is_array())
    for (auto& r : routes->as_array())
      if (str(r, "dst") == "0.0.0.0/0") gw = str(r, "gw");
  if (gw.empty()) fail("has no IPv4 gateway (neither ips[].gateway nor a 0.0.0.0/0 route's gw)");
  auto in = [&](const std::string& netns, const std::string& dev, const std::string& addr, const cnf::mac_address& mac) {
    auto ns = ok_or_throw(nl::open_netns(netns_path(netns)), netns);
    ok_or_throw(nl::with_netns(ns, [&]() -> cnf::result<void> {
                  auto sock = nl::rtnl_socket::open("netns " + netns);
                  if (!sock) return std::move(sock).error();
                  auto l = nl::get_link(*sock, dev);
                  if (!l) return std::move(l).error();
                  nl::request_batch b;
                  b.add(neigh_msg(l->index, addr, mac), "neighbour " + addr);
                  return sock->execute(b);
                }),
                "pod " + p.key() + ": static neighbour");
  };
  in(n.netns, host_if, p.ip, *pod_mac);
  in(p.netns, "eth0", gw, *host_mac);
}

// ---- etcd ------------------------------------------------------------------------------

/// GET /health on 127.0.0.1:2379 from inside the router namespace.
bool etcd_healthy(const std::string& router_netns) {
  auto ns = nl::open_netns(netns_path(router_netns));
  if (!ns) return false;
  auto r = nl::with_netns(*ns, [&]() -> cnf::result<bool> {
    nl::unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return false;
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(2379);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return false;
    const char req[] = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd.get(), req, sizeof req - 1, MSG_NOSIGNAL) < 0) return false;
    std::string resp;
    char buf[1024];
    for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) resp.append(buf, static_cast<std::size_t>(n));
    return resp.find("\"health\":\"true\"") != std::string::npos;
  });
  return r && *r;
}

void start_etcd(lab_state& s) {
  const std::string bin = "/usr/bin/etcd";
  if (::access(bin.c_str(), X_OK) != 0) throw lab_error("--datastore etcd: " + bin + " not found (apt-get install etcd-server)");
  const fs::path data = fs::path(s.dir) / "etcd";
  fs::create_directories(data);
  std::string clients = "http://127.0.0.1:2379";
  for (auto& sn : s.subnets) clients += ",http://" + sn.gateway + ":2379";
  s.etcd_endpoint = "http://" + s.subnets[0].gateway + ":2379";
  std::vector<std::string> argv = {bin,
                                   "--name", "cnf-lab",
                                   "--data-dir", (data / "data").string(),
                                   "--listen-client-urls", clients,
                                   "--advertise-client-urls", s.etcd_endpoint,
                                   "--listen-peer-urls", "http://127.0.0.1:2380",
                                   "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                                   "--initial-cluster", "cnf-lab=http://127.0.0.1:2380",
                                   "--initial-cluster-state", "new",
                                   "--log-level", "warn"};
  s.etcd = spawn_in_netns(s.router_netns, argv, base_env(), (data / "etcd.log").string());
  save_state(s);
  const auto until = clock::now() + std::chrono::seconds(20);
  while (!etcd_healthy(s.router_netns)) {
    if (!alive(s.etcd)) throw lab_error("etcd exited; its log " + (data / "etcd.log").string() + ":" + tail_of(data / "etcd.log"));
    if (clock::now() > until) throw lab_error("etcd not healthy after 20 s; its log:" + tail_of(data / "etcd.log"));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// ---- agents ----------------------------------------------------------------------------

/// The agent listens on its socket: /proc/<pid>/net/unix (the agent's namespace's) lists
/// the path with the listening flag (__SO_ACCEPTCON). Connecting instead would hand the
/// agent an empty request to complain about.
bool agent_listens(const node_state& n) {
  std::istringstream in(read_text("/proc/" + std::to_string(n.agent.pid) + "/net/unix"));
  for (std::string line; std::getline(in, line);) {
    if (line.size() < n.agent_socket.size() || line.compare(line.size() - n.agent_socket.size(), std::string::npos, n.agent_socket) != 0) continue;
    std::istringstream f(line);
    std::string num, refs, proto, flags;
    f >> num >> refs >> proto >> flags;
    if (flags == "00010000") return true;
  }
  return false;
}

fs::path node_dir(const lab_state& s, const node_state& n) { return fs::path(s.dir) / "nodes" / n.name; }

void start_agents(lab_state& s) {
  for (auto& n : s.nodes) {
    const auto log = (node_dir(s, n) / "agent.log").string();
    auto env = base_env();
    env.push_back("NODENAME=" + n.name);
    n.agent = spawn_in_netns(n.netns, {self_exe(), "agent", "--profile", n.profile}, env, log);
  }
  save_state(s);
  const auto until = clock::now() + std::chrono::seconds(30);
  std::vector<bool> ready(s.nodes.size(), false);
  for (std::size_t left = s.nodes.size(); left > 0;) {
    for (std::size_t i = 0; i < s.nodes.size(); ++i) {
      if (ready[i]) continue;
      auto& n = s.nodes[i];
      if (agent_listens(n)) {
        ready[i] = true;
        --left;
      } else if (!alive(n.agent)) {
        throw lab_error("the agent of node " + n.name + " exited; its log " + (node_dir(s, n) / "agent.log").string() + ":" +
                        tail_of(node_dir(s, n) / "agent.log"));
      }
    }
    if (left == 0) break;
    if (clock::now() > until) throw lab_error(std::to_string(left) + " agent(s) not serving after 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// ---- pods ------------------------------------------------------------------------------

std::vector<std::string> cni_env(const std::string& command, const pod_state& p) {
  auto env = base_env();
  env.push_back("CNI_COMMAND=" + command);
  env.push_back("CNI_CONTAINERID=" + p.container_id);
  env.push_back("CNI_NETNS=" + netns_path(p.netns));
  env.push_back("CNI_IFNAME=eth0");
  env.push_back("CNI_PATH=" + exe_dir().string());
  env.push_back("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=" + p.ns + ";K8S_POD_NAME=" + p.name +
                ";K8S_POD_INFRA_CONTAINER_ID=" + p.container_id);
  return env;
}

std::string cni_config(const node_state& n) {
  return bj::serialize(bj::object{{"cniVersion", "1.1.0"}, {"name", "k8s-pod-network"}, {"type", "cnf"}, {"profile", n.profile}});
}

std::string cni_failure(const run_result& r) {
  boost::system::error_code ec;
  auto v = bj::parse(r.out, ec);
  if (!ec && v.is_object()) {
    auto& o = v.as_object();
    std::string m = "CNI error";
    if (auto* c = o.if_contains("code")) m += " " + bj::serialize(*c);
    if (auto* x = o.if_contains("msg"); x && x->is_string()) m += ": " + std::string(x->as_string());
    if (auto* x = o.if_contains("details"); x && x->is_string() && !x->as_string().empty()) m += " (" + std::string(x->as_string()) + ")";
    return m;
  }
  return "exit " + std::to_string(r.status) + (r.out.empty() ? "" : ": " + r.out) + (r.err.empty() ? "" : " " + r.err);
}

/// Writes the pod's --labels on its WorkloadEndpoint, next to the labels the CNI plugin put
/// there (projectcalico.org/*), and its --ports as spec.ports: the lab is the orchestrator,
/// and policy selects pods by these labels (and resolves named ports) on every datastore.
/// Runs in a thread inside the node's namespace, where the node's datastore is reachable
/// (the lab's etcd listens in the router namespace).
void label_pod(const pod_state& p, const node_state& n) {
  std::string failure;
  std::thread t([&] {
    try {
      nl::unique_fd fd(::open(netns_path(n.netns).c_str(), O_RDONLY | O_CLOEXEC));
      if (fd.get() < 0 || ::setns(fd.get(), CLONE_NEWNET) != 0) throw lab_error("entering " + n.netns + ": " + std::strerror(errno));
      auto prof = cnf::load_profile(n.profile);
      if (!prof) throw lab_error(prof.error().message);
      cnf::plugin_loader loader(plugin_search_path(&*prof));
      cnf::plugin_context ctx;
      ctx.node_name = n.name;
      auto parts = compose_parts(*prof, loader, {cnf::part::datastore}, ctx);
      if (!parts) throw lab_error(parts.error().message);
      const cnf::resource_key key{std::string(cnf::kinds::workload_endpoint), p.ns, cnf::model::workload_endpoint_name(n.name, true, p.name, "eth0")};
      for (int attempt = 0;; ++attempt) {
        auto cur = parts->datastore.get(key);
        if (!cur) throw lab_error("reading " + key.to_string() + ": " + cur.error().message);
        auto next = *cur;
        for (auto& [k, v] : p.labels) next.labels[k] = v;
        if (!p.ports.empty()) {
          auto spec = bj::parse(next.spec).as_object();
          spec["ports"] = bj::parse(p.ports);
          next.spec = bj::serialize(spec);
        }
        auto u = parts->datastore.update(next);
        if (u) return;
        if (u.error().code != cnf::errc::conflict || attempt >= 10) throw lab_error("writing " + key.to_string() + ": " + u.error().message);
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  t.join();
  if (!failure.empty()) throw lab_error("pod " + p.key() + ": labels: " + failure);
}

/// up --route-reflectors N: Calico's route reflection by label, in the datastore before the
/// agents start (so the first sessions they open are the reflector ones, and no mesh session
/// ever comes up). Each agent merges its own spec.bgp addresses into the Node written here and
/// keeps the labels and the cluster ID. Runs in a thread inside the first node's namespace,
/// where the lab's datastore is reachable (its etcd listens in the router namespace).
void write_route_reflectors(const lab_state& s, int count) {
  std::string failure;
  std::thread t([&] {
    try {
      const auto& first = s.nodes.front();
      nl::unique_fd fd(::open(netns_path(first.netns).c_str(), O_RDONLY | O_CLOEXEC));
      if (fd.get() < 0 || ::setns(fd.get(), CLONE_NEWNET) != 0) throw lab_error("entering " + first.netns + ": " + std::strerror(errno));
      auto prof = cnf::load_profile(first.profile);
      if (!prof) throw lab_error(prof.error().message);
      cnf::plugin_loader loader(plugin_search_path(&*prof));
      cnf::plugin_context ctx;
      ctx.node_name = first.name;
      auto parts = compose_parts(*prof, loader, {cnf::part::datastore}, ctx);
      if (!parts) throw lab_error(parts.error().message);
      auto create = [&](const cnf::resource& r) {
        if (auto w = parts->datastore.create(r); !w) throw lab_error("writing " + r.key().to_string() + ": " + w.error().message);
      };
      for (int i = 0; i < count; ++i) {
        cnf::model::node n;
        n.name = s.nodes[static_cast<std::size_t>(i)].name;
        n.labels["route-reflector"] = "true";
        n.bgp.emplace();
        n.bgp->route_reflector_cluster_id = route_reflector_cluster_id;
        create(cnf::model::to_resource(n));
      }
      create({std::string(cnf::kinds::bgp_peer), "", "peer-with-route-reflectors", {},
              R"j({"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"})j", ""});
      create({std::string(cnf::kinds::bgp_configuration), "", "default", {}, R"({"nodeToNodeMeshEnabled": false})", ""});
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  t.join();
  if (!failure.empty()) throw lab_error("--route-reflectors: " + failure);
}

/// Makes the pod's namespace and runs the CNI ADD in its node's namespace. On failure,
/// nothing of the pod is left (the plugin undoes its own ADD; a pod whose labels
/// cannot be written is DELeted).
void network_pod(pod_state& p, const node_state& n, bool pin) {
  create_netns(p.netns);
  try {
    auto r = run_in_netns(n.netns, {self_exe()}, cni_env("ADD", p), cni_config(n), std::chrono::seconds(60));
    if (r.status != 0) throw lab_error("pod " + p.key() + " on " + n.name + ": ADD failed: " + cni_failure(r));
    boost::system::error_code ec;
    auto v = bj::parse(r.out, ec);
    if (ec || !v.is_object()) throw lab_error("pod " + p.key() + ": the ADD result is not JSON: " + r.out);
    if (auto* ips = v.as_object().if_contains("ips"); ips && ips->is_array())
      for (auto& ip : ips->as_array())
        if (auto* a = ip.as_object().if_contains("address"); a && a->is_string()) {
          std::string addr(a->as_string());
          addr = addr.substr(0, addr.find('/'));
          p.ips.push_back(addr);
          if (p.ip.empty() && addr.find(':') == std::string::npos) p.ip = addr;
        }
    if (pin) pin_pod(p, n, v.as_object());
    if (!p.labels.empty() || !p.ports.empty()) {
      try {
        label_pod(p, n);
      } catch (...) {
        // No half-made pod: take back what the ADD did.
        (void)run_in_netns(n.netns, {self_exe()}, cni_env("DEL", p), cni_config(n), std::chrono::seconds(60));
        throw;
      }
    }
  } catch (...) {
    delete_netns(p.netns);
    throw;
  }
}

pod_state new_pod(lab_state& s, const std::string& ns, const std::string& name, const std::string& node) {
  pod_state p;
  p.ns = ns;
  p.name = name;
  p.node = node;
  const auto n = s.next_pod++;
  p.netns = netns_prefix(s.id) + "pod" + std::to_string(n);
  p.container_id = "cnflab-" + s.id + "-pod" + std::to_string(n);
  return p;
}

/// ADDs pods in parallel (at most `jobs` CNI calls in flight); the first error is thrown
/// after every call has returned, with the pods that were networked recorded in `s`.
void add_pods(lab_state& s, std::vector<pod_state> pods, int jobs) {
  std::mutex mu;
  std::atomic<std::size_t> next{0};
  std::string first_error;
  std::size_t failed = 0;
  auto work = [&] {
    for (std::size_t i; (i = next++) < pods.size();) {
      auto& p = pods[i];
      try {
        node_state n;
        {
          std::lock_guard l(mu);
          n = *s.find_node(p.node);
        }
        network_pod(p, n, s.static_neighbours);
        std::lock_guard l(mu);
        s.pods.push_back(p);
      } catch (const std::exception& e) {
        std::lock_guard l(mu);
        if (first_error.empty()) first_error = e.what();
        ++failed;
      }
    }
  };
  std::vector<std::thread> t;
  for (int i = 0; i < std::max(1, std::min<int>(jobs, static_cast<int>(pods.size()))); ++i) t.emplace_back(work);
  for (auto& x : t) x.join();
  if (failed) throw lab_error(first_error + (failed > 1 ? fmt::format(" (and {} more pod(s) failed)", failed - 1) : ""));
}

// ---- down ------------------------------------------------------------------------------

/// Stops every process given, all at once: SIGTERM, a grace period, SIGKILL.
void stop_all(const std::vector<process_ref>& procs, std::chrono::milliseconds grace) {
  std::vector<std::thread> t;
  for (auto& p : procs)
    if (alive(p)) t.emplace_back([p, grace] { stop_process(p, grace); });
  for (auto& x : t) x.join();
}

/// Removes everything of the lab: its processes (by PID: the agents and etcd of the
/// state, then anything else still running in the lab's namespaces), its namespaces (those
/// of the state and every one carrying the lab's id), its files. Returns the problems.
std::vector<std::string> teardown(const fs::path& dir, const std::string& id, const std::optional<lab_state>& s) {
  std::vector<std::string> problems;
  std::vector<process_ref> procs;
  std::set<std::string> namespaces;
  if (s) {
    for (auto& n : s->nodes) {
      procs.push_back(n.agent);
      namespaces.insert(n.netns);
    }
    for (auto& p : s->pods) namespaces.insert(p.netns);
    if (!s->router_netns.empty()) namespaces.insert(s->router_netns);
  }
  stop_all(procs, std::chrono::milliseconds(5000));
  if (s && s->etcd.pid) stop_all({s->etcd}, std::chrono::milliseconds(5000));
  for (auto& n : list_netns(netns_prefix(id))) namespaces.insert(n);
  std::vector<process_ref> stray;
  for (auto& n : namespaces)
    for (pid_t pid : processes_in_netns(n)) stray.push_back({pid, process_start_time(pid)});
  stop_all(stray, std::chrono::milliseconds(2000));
  for (auto& p : stray)
    if (alive(p)) problems.push_back("process " + std::to_string(p.pid) + " would not stop");
  for (auto& n : namespaces) delete_netns(n);
  for (auto& n : namespaces)
    if (netns_exists(n)) problems.push_back("namespace " + n + " is still there");
  std::error_code ec;
  for (auto f : {"datastore", "etcd", "nodes", "lab.json", "lab.json.tmp"}) {
    fs::remove_all(dir / f, ec);
    if (ec) problems.push_back("cannot remove " + (dir / f).string() + ": " + ec.message());
  }
  fs::remove(dir / "lock", ec);
  if (fs::exists(dir, ec)) {
    if (!fs::is_empty(dir, ec)) problems.push_back(dir.string() + " holds files the lab did not make; left in place");
    else fs::remove(dir, ec);
  }
  // The default parent, when nothing else is in it.
  if (dir.parent_path() == "/run/cnf-lab" && fs::exists(dir.parent_path(), ec) && fs::is_empty(dir.parent_path(), ec))
    fs::remove(dir.parent_path(), ec);
  return problems;
}

lab_state load_up(const fs::path& dir) {
  auto s = load_state(dir);
  if (!s) throw lab_error("no lab in " + dir.string() + " (start one with `cnf lab up`, or name its directory with --dir / CNF_LAB_DIR)");
  return std::move(*s);
}

}  // namespace

// ---- commands --------------------------------------------------------------------------

int up(const fs::path& dir, const up_options& o) {
  if (o.pods_per_node < 0) throw lab_error("--pods-per-node " + std::to_string(o.pods_per_node) + ": must be 0 or more");
  if (!o.datastore.empty() && o.datastore != "local" && o.datastore != "etcd")
    throw lab_error("--datastore '" + o.datastore + "': expected local or etcd");
  int subnets = 1;
  auto planned = plan_topology(o, subnets);
  auto tp = load_template(o);
  std::string datastore = o.datastore.empty() ? (tp.prof.datastore ? tp.prof.datastore->plugin : "local") : o.datastore;
  if (datastore != "local" && datastore != "etcd")
    throw lab_error("--profile: " + tp.file + ": [datastore] plugin = \"" + datastore + "\": the lab runs a local or an etcd datastore (--datastore local|etcd)");
  check_plugins(tp, datastore);
  if (o.route_reflectors < 0) throw lab_error("--route-reflectors " + std::to_string(o.route_reflectors) + ": must be 0 or more");
  if (o.route_reflectors > static_cast<int>(planned.size()))
    throw lab_error(fmt::format("--route-reflectors {}: more than the lab's {} node(s)", o.route_reflectors, planned.size()));
  if (o.route_reflectors > 0 && (!tp.prof.routing || tp.prof.routing->plugin != "bgp"))
    throw lab_error("--route-reflectors: --profile " + tp.file + ": needs [routing] plugin = \"bgp\" (route reflection is BGP's)");

  std::error_code ec;
  const bool existed = fs::exists(dir, ec);
  if (existed && fs::exists(dir / "lab.json", ec))
    throw lab_error("a lab is already up in " + dir.string() + " (`cnf lab down` first, or another --dir / CNF_LAB_DIR)");
  if (existed) {
    for (auto& e : fs::directory_iterator(dir, ec))
      if (e.path().filename() != "lock")
        throw lab_error(dir.string() + " is not empty and holds no lab; name an empty or new directory for the lab's state");
  }
  fs::create_directories(dir, ec);
  if (ec) throw lab_error("cannot create " + dir.string() + ": " + ec.message());
  ::chmod(dir.c_str(), 0700);
  dir_lock lock(dir);

  lab_state s;
  s.dir = dir.string();
  s.id = lab_id(dir);
  s.phase = "building";
  s.datastore = datastore;
  s.static_neighbours = o.static_neighbours;
  s.ipv6 = o.ipv6;
  if (!list_netns(netns_prefix(s.id)).empty())
    throw lab_error("network namespaces " + netns_prefix(s.id) + "* of an earlier lab in " + dir.string() + " are still there; run `cnf lab down` first");
  s.router_netns = netns_prefix(s.id) + "router";
  for (int k = 0; k < subnets; ++k) {
    s.subnets.push_back({fmt::format("10.{}.0.0/16", 100 + k), subnet_ip(k, 1), "br" + std::to_string(k), "", ""});
    if (o.ipv6) {
      s.subnets.back().cidr6 = fmt::format("fd00:cf:{:x}::/64", 100 + k);
      s.subnets.back().gateway6 = subnet_ip6(k, 1);
    }
  }
  std::vector<std::uint32_t> per_subnet(static_cast<std::size_t>(subnets), 0);
  for (std::size_t i = 0; i < planned.size(); ++i) {
    node_state n;
    n.name = planned[i].name;
    n.subnet = planned[i].subnet;
    n.netns = netns_prefix(s.id) + n.name;
    const auto host = 10 + per_subnet[static_cast<std::size_t>(n.subnet)]++;
    n.address = subnet_ip(n.subnet, host);
    if (o.ipv6) n.address6 = subnet_ip6(n.subnet, host);
    n.router_link = "n" + std::to_string(i);
    n.profile = (dir / "nodes" / n.name / "profile.toml").string();
    n.agent_socket = (dir / "nodes" / n.name / "cni.sock").string();
    s.nodes.push_back(std::move(n));
  }
  const auto t0 = clock::now();
  auto since = [&] { return std::chrono::duration<double>(clock::now() - t0).count(); };
  try {
    save_state(s);
    // Node profiles first: a profile the plugins refuse stops `up` before anything runs.
    for (auto& n : s.nodes) {
      fs::create_directories(node_dir(s, n));
      write_text(n.profile, node_profile_text(tp, s, n));
    }
    {
      auto p = cnf::load_profile(s.nodes.front().profile);
      if (!p) throw lab_error("the node profile made from " + tp.file + ": " + p.error().message);
      cnf::plugin_loader loader(plugin_search_path(&*p));
      for (auto prt : {cnf::part::datastore, cnf::part::ipam}) {
        auto lp = loader.find(prt, p->choice(prt)->plugin);
        if (!lp) throw lab_error(lp.error().message);
        if (auto v = cnf::plugin_loader::validate(*lp, p->config_for(prt)); !v) throw lab_error(v.error().message);
      }
    }
    if (datastore == "local") fs::create_directories(dir / "datastore");
    create_netns(s.router_netns);
    for (auto& n : s.nodes) create_netns(n.netns);
    build_router(s);
    build_node_links(s, 0);
    pin_fabric(s);
    fmt::print("fabric: {} node(s) on {} subnet(s) behind router {} ({:.1f} s)\n", s.nodes.size(), s.subnets.size(), s.router_netns, since());
    if (datastore == "etcd") {
      start_etcd(s);
      fmt::print("datastore: etcd at {} in the router namespace ({:.1f} s)\n", s.etcd_endpoint, since());
    }
    if (o.route_reflectors > 0) {
      write_route_reflectors(s, o.route_reflectors);
      fmt::print("route reflectors: {} (cluster {}), node-to-node mesh off ({:.1f} s)\n",
                 o.route_reflectors == 1 ? s.nodes.front().name : s.nodes.front().name + ".." + s.nodes[static_cast<std::size_t>(o.route_reflectors) - 1].name,
                 route_reflector_cluster_id, since());
    }
    start_agents(s);
    fmt::print("agents: {} serving ({:.1f} s)\n", s.nodes.size(), since());
    std::vector<pod_state> pods;
    for (int j = 0; j < o.pods_per_node; ++j)
      for (auto& n : s.nodes) pods.push_back(new_pod(s, "default", "pod-" + n.name + "-" + std::to_string(j), n.name));
    save_state(s);
    add_pods(s, std::move(pods), o.jobs);
    s.phase = "up";
    save_state(s);
    fmt::print("pods: {} networked ({:.1f} s)\n", s.pods.size(), since());
  } catch (...) {
    std::optional<lab_state> copy = s;
    auto problems = teardown(dir, s.id, copy);
    for (auto& p : problems) fmt::print(stderr, "cnf lab up: rollback: {}\n", p);
    throw;
  }
  fmt::print("lab up in {} (id {}): `cnf lab status`, `cnf lab ping`, `cnf lab down`\n", s.dir, s.id);
  return 0;
}

int down(const fs::path& dir) {
  const std::string id = lab_id(dir);
  std::error_code ec;
  const bool have_dir = fs::exists(dir, ec);
  if (!have_dir && list_netns(netns_prefix(id)).empty()) {
    fmt::print("no lab in {}: nothing to do\n", dir.string());
    return 0;
  }
  std::optional<dir_lock> lock;
  if (have_dir) lock.emplace(dir);
  std::optional<lab_state> s;
  try {
    s = load_state(dir);
  } catch (const lab_error& e) {
    fmt::print(stderr, "cnf lab down: {}\n", e.what());
  }
  auto problems = teardown(dir, id, s);
  lock.reset();
  for (auto& p : problems) fmt::print(stderr, "cnf lab down: {}\n", p);
  if (!problems.empty()) return 1;
  fmt::print("lab in {} is down: {} node(s), {} pod(s) and their namespaces, processes and files removed\n", dir.string(),
             s ? s->nodes.size() : 0, s ? s->pods.size() : 0);
  return 0;
}

int pod_add(const fs::path& dir, const std::string& key, const std::string& node, const std::string& labels, const std::string& ports) {
  auto [ns, name] = split_key(key);
  auto l = parse_labels(labels);
  auto named = parse_ports(ports);
  dir_lock lock(dir);
  auto s = load_up(dir);
  if (s.find_pod(key)) throw lab_error("pod " + key + " already exists (on node " + s.find_pod(key)->node + ")");
  std::string where = node;
  if (where.empty()) {
    // The node with the fewest pods (the first of them).
    std::map<std::string, int> count;
    for (auto& p : s.pods) ++count[p.node];
    for (auto& n : s.nodes)
      if (where.empty() || count[n.name] < count[where]) where = n.name;
  }
  auto* n = s.find_node(where);
  if (!n) {
    std::string names;
    for (auto& x : s.nodes) names += (names.empty() ? "" : ", ") + x.name;
    throw lab_error("--node " + where + ": no such node (the lab has " + names + ")");
  }
  auto p = new_pod(s, ns, name, where);
  p.labels = std::move(l);
  p.ports = std::move(named);
  save_state(s);  // the counter: a failed ADD never reuses a name
  network_pod(p, *n, s.static_neighbours);
  s.pods.push_back(p);
  save_state(s);
  fmt::print("pod {} on {}: {}\n", key, where, p.ips.empty() ? "(no address)" : fmt::format("{}", fmt::join(p.ips, ", ")));
  return 0;
}

int pod_del(const fs::path& dir, const std::string& key) {
  split_key(key);
  dir_lock lock(dir);
  auto s = load_up(dir);
  auto* p = s.find_pod(key);
  if (!p) throw lab_error("no pod " + key + " in the lab");
  auto* n = s.find_node(p->node);
  if (!n) throw lab_error("pod " + key + ": its node " + p->node + " is not in the lab's state");
  auto r = run_in_netns(n->netns, {self_exe()}, cni_env("DEL", *p), cni_config(*n), std::chrono::seconds(60));
  if (r.status != 0) throw lab_error("pod " + key + " on " + n->name + ": DEL failed: " + cni_failure(r) + "; the pod is kept");
  delete_netns(p->netns);
  std::erase_if(s.pods, [&](const pod_state& x) { return x.key() == key; });
  save_state(s);
  fmt::print("pod {} deleted from {}\n", key, n->name);
  return 0;
}

int exec(const fs::path& dir, const std::string& target, const std::vector<std::string>& cmd) {
  if (cmd.empty()) throw lab_error("nothing to run: cnf lab exec NODE|NAMESPACE/NAME -- CMD...");
  auto s = load_up(dir);
  std::string netns;
  if (target.find('/') != std::string::npos) {
    auto* p = s.find_pod(target);
    if (!p) throw lab_error("no pod " + target + " in the lab");
    netns = p->netns;
  } else if (target == "router") {
    netns = s.router_netns;
  } else {
    auto* n = s.find_node(target);
    if (!n) throw lab_error("no node " + target + " in the lab (a pod is NAMESPACE/NAME)");
    netns = n->netns;
    ::setenv("CNF_PROFILE", n->profile.c_str(), 1);  // `cnf ...` run there uses the node's profile
  }
  nl::unique_fd fd(::open(netns_path(netns).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd || ::setns(fd.get(), CLONE_NEWNET) != 0) throw lab_error("cannot enter " + netns + ": " + std::strerror(errno));
  std::vector<char*> argv;
  std::vector<std::string> copy = cmd;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::cout.flush();
  ::execvp(argv[0], argv.data());
  const int e = errno;
  fmt::print(stderr, "cnf lab exec: {}: {}\n", cmd[0], std::strerror(e));
  return e == ENOENT ? 127 : 126;
}

int status(const fs::path& dir) {
  auto s = load_up(dir);
  int down_agents = 0;
  fmt::print("lab {} in {} ({}), datastore {}{}\n", s.id, s.dir, s.phase, s.datastore,
             s.datastore == "etcd" ? fmt::format(" at {} ({})", s.etcd_endpoint, alive(s.etcd) ? "running, pid " + std::to_string(s.etcd.pid) : "NOT RUNNING")
                                   : " in " + (fs::path(s.dir) / "datastore").string());
  fmt::print("router {}: ", s.router_netns);
  for (std::size_t k = 0; k < s.subnets.size(); ++k) {
    fmt::print("{}{} via {} ({})", k ? ", " : "", s.subnets[k].cidr, s.subnets[k].gateway, s.subnets[k].bridge);
    if (!s.subnets[k].cidr6.empty()) fmt::print(" and {} via {}", s.subnets[k].cidr6, s.subnets[k].gateway6);
  }
  const int aw = s.ipv6 ? 30 : 16;  // the ADDRESS column: both families with --ipv6
  fmt::print("\n\n{:<12} {:<{}} {:<14} {:<22} {}\n", "NODE", "ADDRESS", aw, "SUBNET", "AGENT", "PODS");
  std::map<std::string, int> count;
  for (auto& p : s.pods) ++count[p.node];
  for (auto& n : s.nodes) {
    const bool up = alive(n.agent);
    if (!up) ++down_agents;
    fmt::print("{:<12} {:<{}} {:<14} {:<22} {}\n", n.name, n.address6.empty() ? n.address : n.address + "," + n.address6, aw, s.subnets[static_cast<std::size_t>(n.subnet)].cidr,
               up ? "running, pid " + std::to_string(n.agent.pid) : "NOT RUNNING", count[n.name]);
  }
  if (!s.pods.empty()) {
    fmt::print("\n{:<32} {:<12} {:<16} {}\n", "POD", "NODE", "ADDRESS", "LABELS");
    for (auto& p : s.pods) {
      std::string l;
      for (auto& [k, v] : p.labels) l += (l.empty() ? "" : ",") + k + "=" + v;
      fmt::print("{:<32} {:<12} {:<16} {}\n", p.key(), p.node, p.ips.empty() ? "-" : fmt::format("{}", fmt::join(p.ips, ",")), l);
    }
  }
  if (down_agents) fmt::print(stderr, "cnf lab status: {} agent(s) not running\n", down_agents);
  return down_agents ? 1 : 0;
}

}  // namespace cnf_app::lab
