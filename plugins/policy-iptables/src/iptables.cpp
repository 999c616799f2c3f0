#include <cnf/plugins/policy_iptables.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sstream>
#include <sys/mman.h>
#include <sys/wait.h>
#include <tuple>
#include <unistd.h>

CNF_BEGIN_NAMESPACE
namespace iptables_policy {

using netpol::chain_difference;
using netpol::policy_display_name;
using netpol::protocol_name;
using netpol::rule_in_family;
using netpol::short_hash;

namespace {

constexpr const char* accept_mark = "0x10000/0x10000";
constexpr const char* pass_mark = "0x20000/0x20000";

struct run_output {
  int status = -1;
  std::string out, err;
};

std::string read_all(int fd) {
  std::string s;
  ::lseek(fd, 0, SEEK_SET);
  char buf[65536];
  for (;;) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    s.append(buf, static_cast<std::size_t>(n));
  }
  return s;
}

/// Runs argv with `input` on stdin; stdout and stderr captured (memfds: no pipe deadlock).
result<run_output> run(const std::vector<std::string>& argv, std::string_view input) {
  int in = ::memfd_create("cnf-in", MFD_CLOEXEC), out = ::memfd_create("cnf-out", MFD_CLOEXEC), err = ::memfd_create("cnf-err", MFD_CLOEXEC);
  auto close_all = [&] {
    for (int fd : {in, out, err})
      if (fd >= 0) ::close(fd);
  };
  if (in < 0 || out < 0 || err < 0) {
    close_all();
    return cnf::error(errc::io, "memfd_create: " + std::string(std::strerror(errno)));
  }
  for (std::size_t off = 0; off < input.size();) {
    auto n = ::write(in, input.data() + off, input.size() - off);
    if (n <= 0) {
      close_all();
      return cnf::error(errc::io, "writing the input of " + argv[0] + ": " + std::strerror(errno));
    }
    off += static_cast<std::size_t>(n);
  }
  ::lseek(in, 0, SEEK_SET);
  // Resolved before fork: between fork and exec the child only makes async-signal-safe calls.
  std::string exe = argv[0];
  if (exe.find('/') == std::string::npos) {
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/sbin:/usr/bin:/sbin:/bin";
    for (std::size_t b = 0; b <= dirs.size();) {
      auto e = dirs.find(':', b);
      if (e == std::string::npos) e = dirs.size();
      auto cand = dirs.substr(b, e - b) + "/" + argv[0];
      if (::access(cand.c_str(), X_OK) == 0) {
        exe = cand;
        break;
      }
      b = e + 1;
    }
  }
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    close_all();
    return cnf::error(errc::io, "fork: " + std::string(std::strerror(errno)));
  }
  if (pid == 0) {
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execv(exe.c_str(), args.data());
    ::_exit(127);
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  run_output r;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = read_all(out);
  r.err = read_all(err);
  close_all();
  if (r.status == 127 && r.err.empty()) return cnf::error(errc::unavailable, argv[0] + ": not found or not executable");
  return r;
}

/// multiport takes at most 15 slots (a range takes two).
std::vector<std::string> port_chunks(const std::vector<port_range>& ports) {
  std::vector<std::string> out;
  std::string cur;
  int slots = 0;
  for (auto& p : ports) {
    int need = p.first == p.last ? 1 : 2;
    if (slots + need > 15) out.push_back(cur), cur.clear(), slots = 0;
    cur += (cur.empty() ? "" : ",") + (p.first == p.last ? std::to_string(p.first) : std::to_string(p.first) + ":" + std::to_string(p.last));
    slots += need;
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

/// Not-nets become a set of their own ("n:<hash of one family's nets>"): iptables takes one
/// -s per rule.
std::string net_set_id(const std::vector<ip_prefix>& nets, ip_family f) {
  std::string key;
  for (auto& n : nets)
    if (n.family() == f) key += n.to_string() + ",";
  return key.empty() ? std::string() : "n:" + short_hash(key, 22);
}

const char* set_prefix(ip_family f) { return f == ip_family::v4 ? "cali40" : "cali60"; }
const char* temp_prefix(ip_family f) { return f == ip_family::v4 ? "cali4t" : "cali6t"; }

}  // namespace

std::string chain_name(std::string_view prefix, std::string_view name) { return netpol::chain_name(prefix, name); }

std::string ipset_name(std::string_view id, ip_family f) { return set_prefix(f) + std::string(id); }

chain render_chain(std::string name, const std::vector<std::string>& bodies) {
  chain c;
  c.name = std::move(name);
  std::string prev;
  for (auto& b : bodies) {
    auto h = short_hash(c.name + "\n" + prev + "\n" + b, 16);
    c.hashes.push_back(h);
    c.rules.push_back("-m comment --comment \"cali:" + h + "\"" + (b.empty() ? "" : " " + b));
    prev = h;
  }
  return c;
}

dataplane::dataplane(options o) : opt_(std::move(o)) {}

std::vector<ip_family> dataplane::families() const {
  if (opt_.ipv6) return {ip_family::v4, ip_family::v6};
  return {ip_family::v4};
}

std::string dataplane::tool(ip_family f, std::string_view what) const {
  return std::string(f == ip_family::v4 ? "iptables-" : "ip6tables-") + opt_.backend + "-" + std::string(what);
}

std::vector<std::string> dataplane::render_rules(const std::vector<policy_rule>& rules, ip_family f) const {
  std::vector<std::string> out;
  const bool v6 = f == ip_family::v6;
  for (const auto& r : rules) {
    if (!rule_in_family(r, f)) continue;  // matches nothing in this family
    std::string m;
    if (r.protocol) {
      if (r.not_protocol == r.protocol) continue;
      m += " -p " + protocol_name(*r.protocol);
    } else if (r.not_protocol && *r.not_protocol != (v6 ? 1 : 58)) {  // not the other family's ICMP: always true
      m += " ! -p " + protocol_name(*r.not_protocol);
    }
    auto of_family = [&](const std::vector<ip_prefix>& nets) {
      std::vector<std::string> o;
      for (auto& n : nets)
        if (n.family() == f) o.push_back(n.to_string());
      return o;
    };
    auto src = of_family(r.source_nets);
    auto dst = of_family(r.destination_nets);
    for (auto& id : r.source_ip_sets) m += " -m set --match-set " + ipset_name(id, f) + " src";
    for (auto& id : r.not_source_ip_sets) m += " -m set ! --match-set " + ipset_name(id, f) + " src";
    for (auto& id : r.destination_ip_sets) m += " -m set --match-set " + ipset_name(id, f) + " dst";
    for (auto& id : r.not_destination_ip_sets) m += " -m set ! --match-set " + ipset_name(id, f) + " dst";
    auto not_nets = [&](const std::vector<ip_prefix>& nets, const char* dir) {
      if (auto id = net_set_id(nets, f); !id.empty()) m += " -m set ! --match-set " + ipset_name(id, f) + " " + dir;
    };
    not_nets(r.not_source_nets, "src");
    not_nets(r.not_destination_nets, "dst");
    for (auto& c : port_chunks(r.not_source_ports)) m += " -m multiport ! --sports " + c;
    for (auto& c : port_chunks(r.not_destination_ports)) m += " -m multiport ! --dports " + c;
    const std::string icmp = v6 ? " -m icmp6 " : " -m icmp ", icmp_type = v6 ? "--icmpv6-type " : "--icmp-type ";
    if (r.icmp_type)
      m += icmp + icmp_type + std::to_string(*r.icmp_type) + (r.icmp_code ? "/" + std::to_string(*r.icmp_code) : "");
    if (r.not_icmp_type)
      m += icmp + "! " + icmp_type + std::to_string(*r.not_icmp_type) + (r.not_icmp_code ? "/" + std::to_string(*r.not_icmp_code) : "");
    std::vector<std::string> sp = port_chunks(r.source_ports), dp = port_chunks(r.destination_ports);
    if (sp.empty()) sp.emplace_back();
    if (dp.empty()) dp.emplace_back();
    if (src.empty()) src.emplace_back();
    if (dst.empty()) dst.emplace_back();
    std::string action;
    switch (r.action) {
      case policy_rule::action_type::allow: action = std::string(" -j MARK --set-xmark ") + accept_mark; break;
      case policy_rule::action_type::pass: action = std::string(" -j MARK --set-xmark ") + pass_mark; break;
      case policy_rule::action_type::deny: action = " -j DROP"; break;
      case policy_rule::action_type::log: action = " -j LOG --log-prefix \"calico-packet: \" --log-level 5"; break;
    }
    for (auto& s : src)
      for (auto& d : dst)
        for (auto& a : sp)
          for (auto& b : dp) {
            std::string nets;
            if (!s.empty()) nets += " -s " + s;
            if (!d.empty()) nets += " -d " + d;
            std::string ports;
            if (!a.empty()) ports += " -m multiport --sports " + a;
            if (!b.empty()) ports += " -m multiport --dports " + b;
            std::string body = m + nets + ports + action;
            out.push_back(body.empty() ? body : body.substr(1));
          }
    if (r.action == policy_rule::action_type::allow) out.push_back(std::string("-m mark --mark ") + accept_mark + " -j RETURN");
    if (r.action == policy_rule::action_type::pass) out.push_back(std::string("-m mark --mark ") + pass_mark + " -j RETURN");
  }
  return out;
}

namespace {
/// The not-net sets a rendered rule list refers to: id -> (family, members).
void collect_net_sets(const std::vector<policy_rule>& rules, std::map<std::string, std::pair<ip_family, std::set<ip_prefix>>>& out) {
  for (auto& r : rules)
    for (auto* nets : {&r.not_source_nets, &r.not_destination_nets})
      for (auto f : {ip_family::v4, ip_family::v6})
        if (auto id = net_set_id(*nets, f); !id.empty() && rule_in_family(r, f))
          for (auto& n : *nets)
            if (n.family() == f) out[id].first = f, out[id].second.insert(n);
}
}  // namespace

result<void> dataplane::upsert_endpoint(const workload_endpoint& e) {
  if (e.interface_name.empty()) return cnf::error(errc::invalid, "WorkloadEndpoint/" + e.key() + ": spec.interfaceName: missing (the policy chains are per interface)");
  if (e.interface_name.size() > 15) return cnf::error(errc::invalid, "WorkloadEndpoint/" + e.key() + ": spec.interfaceName: '" + e.interface_name + "' is longer than 15 characters");
  auto& slot = eps_[e.key()];
  if (slot == e) return {};
  slot = e;
  ++pending_;
  return {};
}

result<void> dataplane::remove_endpoint(std::string_view key) {
  if (eps_.erase(std::string(key))) ++pending_;
  return {};
}

void dataplane::keep_set(const std::string& id) {
  for (auto f : {ip_family::v4, ip_family::v6}) sets_to_destroy_.erase(ipset_name(id, f));
}

/// The chains of one policy or profile (key), in every family, and the sets they use.
void dataplane::render_owner(const std::string& key, const std::string& in_name, const std::string& out_name, const std::vector<policy_rule>* in,
                             const std::vector<policy_rule>* out) {
  if (auto it = chains_of_.find(key); it != chains_of_.end())
    for (auto& c : it->second) {
      for (auto& pc : policy_chains_) pc.erase(c);
      dirty_chains_.insert(c);
    }
  std::vector<std::string> names;
  std::map<std::string, std::pair<ip_family, std::set<ip_prefix>>> net_sets;
  for (auto [rules, name] : {std::pair{in, &in_name}, std::pair{out, &out_name}}) {
    if (!rules) continue;
    names.push_back(*name);
    dirty_chains_.insert(*name);
    for (auto f : families()) policy_chains_[fi(f)][*name] = render_chain(*name, render_rules(*rules, f));
    collect_net_sets(*rules, net_sets);
    for (auto& r : *rules)
      for (auto* ids : {&r.source_ip_sets, &r.destination_ip_sets, &r.not_source_ip_sets, &r.not_destination_ip_sets})
        for (auto& id : *ids) sets_.try_emplace(id), keep_set(id);
  }
  for (auto& [id, fm] : net_sets) {
    auto [it, fresh] = sets_.try_emplace(id);
    if (fresh) it->second.members = fm.second, it->second.only = fm.first;
    keep_set(id);
  }
  chains_of_[key] = std::move(names);
}

result<void> dataplane::upsert_policy(const network_policy& p) {
  const auto key = p.key();
  if (auto it = pols_.find(key); it != pols_.end() && it->second == p) return {};
  if (auto it = pols_.find(key); it != pols_.end())
    for (auto& e : it->second.endpoints) pols_of_ep_[e].erase(key);
  for (auto& e : p.endpoints) pols_of_ep_[e].insert(key);
  render_owner(key, chain_name("cali-pi-", policy_display_name(p)), chain_name("cali-po-", policy_display_name(p)),
               p.ingress_applies ? &p.ingress : nullptr, p.egress_applies ? &p.egress : nullptr);
  pols_[key] = p;
  ++pending_;
  return {};
}

result<void> dataplane::remove_policy(std::string_view key) {
  auto it = pols_.find(std::string(key));
  if (it == pols_.end()) return {};
  for (auto& e : it->second.endpoints) pols_of_ep_[e].erase(it->first);
  for (auto& c : chains_of_[it->first]) {
    for (auto& pc : policy_chains_) pc.erase(c);
    dirty_chains_.insert(c);
  }
  chains_of_.erase(it->first);
  pols_.erase(it);
  ++pending_;
  return {};
}

result<void> dataplane::upsert_profile(const policy_profile& p) {
  if (auto it = profiles_.find(p.name); it != profiles_.end() && it->second == p) return {};
  render_owner("profile:" + p.name, chain_name("cali-pri-", p.name), chain_name("cali-pro-", p.name), &p.ingress, &p.egress);
  profiles_[p.name] = p;
  ++pending_;
  return {};
}

result<void> dataplane::remove_profile(std::string_view name) {
  auto it = profiles_.find(std::string(name));
  if (it == profiles_.end()) return {};
  for (auto& c : chains_of_["profile:" + it->first]) {
    for (auto& pc : policy_chains_) pc.erase(c);
    dirty_chains_.insert(c);
  }
  chains_of_.erase("profile:" + it->first);
  profiles_.erase(it);
  ++pending_;
  return {};
}

result<void> dataplane::add_ip_set_members(std::string_view id, std::span<const ip_prefix> m) {
  keep_set(std::string(id));
  sets_[std::string(id)].add(m, opt_.ipv6);
  ++pending_;
  return {};
}

result<void> dataplane::remove_ip_set_members(std::string_view id, std::span<const ip_prefix> m) {
  auto it = sets_.find(std::string(id));
  if (it == sets_.end()) return {};
  it->second.remove(m);
  ++pending_;
  return {};
}

result<void> dataplane::remove_ip_set(std::string_view id) {
  if (auto it = sets_.find(std::string(id)); it != sets_.end()) {
    for (auto f : families())
      if (!it->second.only || *it->second.only == f) sets_to_destroy_.insert(ipset_name(id, f));
    sets_.erase(it);
  }
  ++pending_;
  return {};
}

chain dataplane::endpoint_chain(const workload_endpoint& e, bool ingress) const {
  std::vector<std::string> r{"-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "-m conntrack --ctstate INVALID -j DROP",
                             "-j MARK --set-xmark 0x0/0x30000"};
  std::vector<const network_policy*> pols;
  const auto key = e.key();
  if (auto it = pols_of_ep_.find(key); it != pols_of_ep_.end())
    for (auto& k : it->second)
      if (auto p = pols_.find(k); p != pols_.end() && (ingress ? p->second.ingress_applies : p->second.egress_applies)) pols.push_back(&p->second);
  std::sort(pols.begin(), pols.end(), [](auto* a, auto* b) { return std::tie(a->order, a->kind, a->ns, a->name) < std::tie(b->order, b->kind, b->ns, b->name); });
  if (!pols.empty()) {
    r.push_back("-m comment --comment \"Start of policies\" -j MARK --set-xmark 0x0/0x20000");
    for (auto* p : pols) {
      r.push_back("-m mark --mark 0x0/0x20000 -j " + chain_name(ingress ? "cali-pi-" : "cali-po-", policy_display_name(*p)));
      r.push_back(std::string("-m mark --mark ") + accept_mark + " -m comment --comment \"Return if policy accepted\" -j RETURN");
    }
    r.push_back("-m mark --mark 0x0/0x20000 -m comment --comment \"Drop if no policies passed packet\" -j DROP");
  }
  for (auto& prof : e.profiles) {
    if (!profiles_.contains(prof)) continue;
    r.push_back("-j " + chain_name(ingress ? "cali-pri-" : "cali-pro-", prof));
    r.push_back(std::string("-m mark --mark ") + accept_mark + " -m comment --comment \"Return if profile accepted\" -j RETURN");
  }
  r.push_back("-m comment --comment \"Drop if no profiles matched\" -j DROP");
  return render_chain((ingress ? "cali-tw-" : "cali-fw-") + e.interface_name, r);
}

void dataplane::render_dispatch(std::map<std::string, chain>& out, ip_family f) const {
  std::vector<const workload_endpoint*> eps;
  for (auto& [k, e] : eps_) eps.push_back(&e);
  std::sort(eps.begin(), eps.end(), [](auto* a, auto* b) { return a->interface_name < b->interface_name; });
  const std::string drop = "-m comment --comment \"Unknown interface\" -j DROP";
  // Past about 100 endpoints a flat list costs every packet a long walk: split into a tree by
  // the character after the interface prefix, as Felix does.
  const bool split = eps.size() > 100;
  std::map<std::string, std::vector<const workload_endpoint*>> groups;
  for (auto* e : eps) {
    const auto& n = e->interface_name;
    groups[split && n.size() > opt_.interface_prefix.size() ? n.substr(opt_.interface_prefix.size(), 1) : std::string()].push_back(e);
  }
  for (bool from : {true, false}) {
    const std::string root = from ? "cali-from-wl-dispatch" : "cali-to-wl-dispatch";
    const std::string dir = from ? "-i " : "-o ";
    std::vector<std::string> top;
    for (auto& [key, members] : groups) {
      std::vector<std::string> leaf;
      for (auto* e : members) leaf.push_back(dir + e->interface_name + " -g " + (from ? "cali-fw-" : "cali-tw-") + e->interface_name);
      if (!split || key.empty()) {
        top.insert(top.end(), leaf.begin(), leaf.end());
        continue;
      }
      const std::string child = root + "-" + key;
      leaf.push_back(drop);
      out[child] = render_chain(child, leaf);
      top.push_back(dir + opt_.interface_prefix + key + "+ -g " + child);
    }
    top.push_back(drop);
    out[root] = render_chain(root, top);
  }
  const std::string any = opt_.interface_prefix + "+";
  out["cali-INPUT"] = render_chain("cali-INPUT", {"-i " + any + " -g cali-wl-to-host"});
  const std::string to_host = opt_.endpoint_to_host_action == "drop" ? "DROP" : opt_.endpoint_to_host_action == "return" ? "RETURN" : "ACCEPT";
  std::vector<std::string> wl_to_host;
  // IPv6: router and neighbour discovery between a workload and its host pass before the
  // workload's egress policy (Felix's rules), or a default-deny egress cuts the pod off.
  if (f == ip_family::v6)
    for (int type : {130, 131, 132, 133, 135, 136})
      wl_to_host.push_back("-p ipv6-icmp -m icmp6 --icmpv6-type " + std::to_string(type) + " -j ACCEPT");
  wl_to_host.push_back("-j cali-from-wl-dispatch");
  wl_to_host.push_back("-m comment --comment \"Configured DefaultEndpointToHostAction\" -j " + to_host);
  out["cali-wl-to-host"] = render_chain("cali-wl-to-host", wl_to_host);
  out["cali-FORWARD"] = render_chain("cali-FORWARD", {"-j MARK --set-xmark 0x0/0x30000", "-i " + any + " -j cali-from-wl-dispatch",
                                                      "-o " + any + " -j cali-to-wl-dispatch",
                                                      std::string("-m mark --mark ") + accept_mark +
                                                          " -m comment --comment \"Policy explicitly accepted packet.\" -j ACCEPT"});
}

std::map<std::string, chain> dataplane::dynamic_chains(ip_family f) const {
  std::map<std::string, chain> out;
  for (auto& [k, e] : eps_) {
    auto tw = endpoint_chain(e, true);
    auto fw = endpoint_chain(e, false);
    out[tw.name] = std::move(tw);
    out[fw.name] = std::move(fw);
  }
  render_dispatch(out, f);
  return out;
}

std::map<std::string, chain> dataplane::desired(ip_family f) const {
  auto out = dynamic_chains(f);
  const auto& pc = policy_chains_[fi(f)];
  out.insert(pc.begin(), pc.end());
  return out;
}

result<void> dataplane::read_chains(ip_family f) {
  const auto save = tool(f, "save");
  auto r = run({save, "-t", "filter"}, {});
  if (!r) return r.error();
  if (r->status != 0) return cnf::error(errc::io, save + " -t filter: " + r->err);
  auto& kernel = kernel_[fi(f)];
  auto& kernel_rules = kernel_rules_[fi(f)];
  kernel.clear();
  kernel_rules.clear();
  bool forward = false, input = false;
  std::istringstream in(r->out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(":cali-")) {
      kernel[line.substr(1, line.find(' ') - 1)];
      kernel_rules[line.substr(1, line.find(' ') - 1)];
    } else if (line.starts_with("-A ")) {
      auto sp = line.find(' ', 3);
      auto name = line.substr(3, sp - 3);
      if (name == "FORWARD" && line.find("-j cali-FORWARD") != std::string::npos) forward = true;
      if (name == "INPUT" && line.find("-j cali-INPUT") != std::string::npos) input = true;
      if (!name.starts_with("cali-")) continue;
      auto c = line.find("cali:");
      std::string h;
      if (c != std::string::npos) {
        auto e = line.find_first_of("\" ", c);
        h = line.substr(c + 5, e == std::string::npos ? std::string::npos : e - c - 5);
      }
      kernel[name].push_back(h);
      kernel_rules[name].push_back(sp == std::string::npos ? std::string() : line.substr(sp + 1));
    }
  }
  forward_hooked_[fi(f)] = forward;
  input_hooked_[fi(f)] = input;
  return {};
}

result<std::map<std::string, std::set<std::string>>> dataplane::read_sets() const {
  auto r = run({opt_.ipset, "save"}, {});
  if (!r) return r.error();
  if (r->status != 0) return cnf::error(errc::io, opt_.ipset + " save: " + r->err);
  std::map<std::string, std::set<std::string>> out;
  std::istringstream in(r->out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream w(line);
    std::string verb, name, member;
    w >> verb >> name >> member;
    const bool v4 = name.starts_with("cali40");
    if (!v4 && !name.starts_with("cali60")) continue;
    if (verb == "create") out[name];
    else if (verb == "add") out[name].insert(member.find('/') == std::string::npos ? member + (v4 ? "/32" : "/128") : member);
  }
  return out;
}

result<void> dataplane::read_kernel() {
  for (auto f : families())
    if (auto r = read_chains(f); !r) return r;
  // IP sets: every cali40/cali60 set is rebuilt by swap; those nobody wants are destroyed.
  auto l = run({opt_.ipset, "list", "-n"}, {});
  if (!l) return l.error();
  if (l->status != 0) return cnf::error(errc::io, opt_.ipset + " list -n: " + l->err);
  std::set<std::string> wanted;
  for (auto& [id, s] : sets_)
    for (auto f : families())
      if (!s.only || *s.only == f) wanted.insert(ipset_name(id, f));
  std::istringstream sets(l->out);
  std::string line;
  while (std::getline(sets, line)) {
    if (line.starts_with("cali4t") || line.starts_with("cali6t")) sets_to_destroy_.insert(line);  // a temporary left by a crash
    if ((line.starts_with("cali40") || line.starts_with("cali60")) && !wanted.contains(line)) sets_to_destroy_.insert(line);
  }
  for (auto& [id, s] : sets_) s.fresh[0] = s.fresh[1] = true;
  kernel_read_ = true;
  compare_all_ = true;
  return {};
}

void dataplane::stage_family(ip_family f, staged& st) const {
  // One restore of this family's filter table: only chains whose hashes differ. Policy and
  // profile chains: those changed since the last apply (all after a read of the kernel);
  // endpoint and dispatch chains: rendered each time, cheap.
  const auto i = fi(f);
  const auto& kernel = kernel_[i];
  const auto& pchains = policy_chains_[i];
  st.dyn = dynamic_chains(f);
  std::string decl, rules, dels;
  auto consider = [&](const chain& c) {
    auto k = kernel.find(c.name);
    if (k != kernel.end() && k->second == c.hashes) return;
    decl += ":" + c.name + " - [0:0]\n";
    for (auto& r : c.rules) rules += "-A " + c.name + " " + r + "\n";
    st.written.push_back(&c);
  };
  if (compare_all_)
    for (auto& [name, c] : pchains) consider(c);
  else
    for (auto& name : dirty_chains_)
      if (auto it = pchains.find(name); it != pchains.end()) consider(it->second);
  for (auto& [name, c] : st.dyn) consider(c);
  for (auto& [name, h] : kernel)
    if (!pchains.contains(name) && !st.dyn.contains(name)) {
      decl += ":" + name + " - [0:0]\n";
      dels += "-X " + name + "\n";
      st.stale.push_back(name);
    }
  st.hook_forward = !forward_hooked_[i];
  st.hook_input = !input_hooked_[i];
  if (st.hook_forward) rules += "-I FORWARD 1 -m comment --comment \"cali:" + short_hash("FORWARD\n\n-j cali-FORWARD", 16) + "\" -j cali-FORWARD\n";
  if (st.hook_input) rules += "-I INPUT 1 -m comment --comment \"cali:" + short_hash("INPUT\n\n-j cali-INPUT", 16) + "\" -j cali-INPUT\n";
  if (decl.empty() && !st.hook_forward && !st.hook_input) return;
  st.input = "*filter\n" + decl + rules + dels + "COMMIT\n";
}

std::string dataplane::undo_input(ip_family f, const staged& st) const {
  const auto i = fi(f);
  std::string decl, rules, dels;
  auto put_back = [&](const std::string& name) {
    decl += ":" + name + " - [0:0]\n";
    if (auto k = kernel_rules_[i].find(name); k != kernel_rules_[i].end())
      for (auto& r : k->second) rules += "-A " + name + " " + r + "\n";
    else
      dels += "-X " + name + "\n";  // it was not there
  };
  for (auto* c : st.written) put_back(c->name);
  for (auto& n : st.stale) put_back(n);
  std::string unhook;
  if (st.hook_forward) unhook += "-D FORWARD -m comment --comment \"cali:" + short_hash("FORWARD\n\n-j cali-FORWARD", 16) + "\" -j cali-FORWARD\n";
  if (st.hook_input) unhook += "-D INPUT -m comment --comment \"cali:" + short_hash("INPUT\n\n-j cali-INPUT", 16) + "\" -j cali-INPUT\n";
  return "*filter\n" + decl + unhook + rules + dels + "COMMIT\n";
}

result<void> dataplane::commit_family(ip_family f, staged& st) {
  if (st.input.empty()) return {};
  const auto i = fi(f);
  last_restore_[i] = st.input;
  const auto restore = tool(f, "restore");
  auto r = run({restore, "--noflush", "--wait"}, st.input);
  if (!r) return r.error();
  if (r->status != 0) {
    std::string msg = r->err;
    // "iptables-restore: line N failed": name the line.
    // legacy: "Error occurred at line: N"; nft: "line N failed".
    auto p = msg.find("line: ");
    if (p != std::string::npos) p += 6;
    else if ((p = msg.find("line ")) != std::string::npos) p += 5;
    if (p != std::string::npos) {
      auto n = std::strtoul(msg.c_str() + p, nullptr, 10);
      std::istringstream in(st.input);
      std::string l;
      for (unsigned long k = 1; k <= n && std::getline(in, l); ++k) {
      }
      if (n) msg = "line " + std::to_string(n) + " (" + l + "): " + msg;
    }
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    return cnf::error(errc::io, restore + " refused the change, nothing applied: " + msg);
  }
  return {};
}

result<void> dataplane::apply() {
  if (!kernel_read_)
    if (auto r = read_kernel(); !r) return r;
  // 1. IP sets: new ones filled under a temporary name and swapped in; changes by add/del.
  // Each id is two kernel sets, cali40<id> (IPv4 members) and cali60<id> (IPv6 members).
  std::string ips;
  for (auto& [id, s] : sets_)
    for (auto f : families()) {
      if (s.only && *s.only != f) continue;
      const auto name = ipset_name(id, f);
      const std::string create = std::string(" hash:net family ") + (f == ip_family::v4 ? "inet" : "inet6") + " maxelem 1048576 -exist\n";
      if (s.fresh[fi(f)]) {
        const auto tmp = temp_prefix(f) + id.substr(1);
        ips += "create " + tmp + create + "flush " + tmp + "\n";
        for (auto& m : s.members)
          if (m.family() == f) ips += "add " + tmp + " " + m.to_string() + "\n";
        ips += "create " + name + create + "swap " + tmp + " " + name + "\ndestroy " + tmp + "\n";
      } else {
        for (auto& m : s.removed)
          if (m.family() == f) ips += "del " + name + " " + m.to_string() + " -exist\n";
        for (auto& m : s.added)
          if (m.family() == f) ips += "add " + name + " " + m.to_string() + " -exist\n";
      }
    }
  if (!ips.empty()) {
    auto r = run({opt_.ipset, "restore"}, ips);
    if (!r) return r.error();
    if (r->status != 0) return cnf::error(errc::io, "ipset restore: " + r->err);
    for (auto& [id, s] : sets_) s.applied();
  }
  // 2. One restore per family's filter table, all or none: when a later family's restore is
  // refused, the families already committed get their previous chains back (from the rules
  // last read or written), so a refused change leaves both tables as they were. (Nothing is
  // checked with --test first: it parses in user space only, the kernel's refusals come at
  // commit, and at 100k rules it would double the time of a full restore.)
  const auto fams = families();
  std::array<staged, 2> st;
  for (auto f : fams) stage_family(f, st[fi(f)]);
  for (std::size_t n = 0; n < fams.size(); ++n) {
    if (auto r = commit_family(fams[n], st[fi(fams[n])]); !r) {
      std::string undone;
      for (std::size_t m = 0; m < n; ++m) {
        const auto g = fams[m];
        if (st[fi(g)].input.empty()) continue;
        auto u = run({tool(g, "restore"), "--noflush", "--wait"}, undo_input(g, st[fi(g)]));
        if (!u || u->status != 0) {
          // The kernel is not what cnf believes: read it again before the next apply.
          kernel_read_ = false;
          return cnf::error(errc::io, r.error().message + "; putting back the " + tool(g, "restore") + " change failed too: " +
                                          (u ? u->err : u.error().message));
        }
        undone += (undone.empty() ? "" : ", ") + tool(g, "restore");
      }
      if (!undone.empty()) return cnf::error(errc::io, r.error().message + " (the " + undone + " change was put back)");
      return r;
    }
  }
  for (auto f : fams) {
    const auto i = fi(f);
    auto& s = st[i];
    if (s.input.empty()) continue;
    for (auto* c : s.written) kernel_[i][c->name] = c->hashes, kernel_rules_[i][c->name] = c->rules;
    for (auto& n : s.stale) kernel_[i].erase(n), kernel_rules_[i].erase(n);
    forward_hooked_[i] = input_hooked_[i] = true;
  }
  dirty_chains_.clear();
  compare_all_ = false;
  // 3. Sets no rule refers to any more.
  if (!sets_to_destroy_.empty()) {
    std::string d;
    for (auto& name : sets_to_destroy_) d += "destroy " + name + "\n";
    auto r = run({opt_.ipset, "restore", "-exist"}, d);
    if (!r) return r.error();
    if (r->status != 0) return cnf::error(errc::io, "ipset destroy of unused sets: " + r->err);
    sets_to_destroy_.clear();
  }
  pending_ = 0;
  return {};
}


result<policy_drift> dataplane::check_drift() {
  // What was recorded and not applied yet is not drift: apply it first.
  if (!kernel_read_ || pending_ || !dirty_chains_.empty())
    if (auto r = apply(); !r) return r.error();
  policy_drift d;
  for (auto f : families()) {
    const auto i = fi(f);
    // IPv4 objects are named as they are; IPv6 ones say so.
    const std::string fam = f == ip_family::v4 ? "" : " (ip6tables)";
    if (auto r = read_chains(f); !r) return r.error();
    const auto want = desired(f);
    for (auto& [name, c] : want) {
      ++d.checked;
      auto k = kernel_[i].find(name);
      if (k == kernel_[i].end()) d.repaired.push_back({"chain " + name + fam, "missing"});
      else if (k->second != c.hashes) d.repaired.push_back({"chain " + name + fam, chain_difference(k->second, c.hashes)});
    }
    for (auto& [name, h] : kernel_[i])
      if (!want.contains(name)) d.repaired.push_back({"chain " + name + fam, "not cnf's: deleted"});
    d.checked += 2;
    if (!forward_hooked_[i]) d.repaired.push_back({"hook FORWARD" + fam, "the jump to cali-FORWARD is missing"});
    if (!input_hooked_[i]) d.repaired.push_back({"hook INPUT" + fam, "the jump to cali-INPUT is missing"});
  }
  auto kernel_sets = read_sets();
  if (!kernel_sets) return kernel_sets.error();
  for (auto& [id, s] : sets_)
    for (auto f : families()) {
      if (s.only && *s.only != f) continue;
      ++d.checked;
      const auto name = ipset_name(id, f);
      auto k = kernel_sets->find(name);
      if (k == kernel_sets->end()) {
        s.fresh[fi(f)] = true;
        d.repaired.push_back({"set " + name, "missing"});
        continue;
      }
      if (auto diff = netpol::set_difference(s.members, f, k->second); !diff.empty()) {
        s.fresh[fi(f)] = true;  // refilled under a temporary name and swapped in
        d.repaired.push_back({"set " + name, diff});
      }
    }
  if (d.repaired.empty()) return d;
  compare_all_ = true;
  if (auto r = apply(); !r) return r.error();
  return d;
}

result<policy_status> dataplane::status() {
  policy_status s;
  s.endpoints = eps_.size();
  s.policies = pols_.size();
  s.profiles = profiles_.size();
  s.ip_sets = sets_.size();
  for (auto f : families()) {
    for (auto& [n, c] : policy_chains_[fi(f)]) s.rules += c.rules.size();
    for (auto& [n, c] : dynamic_chains(f)) s.rules += c.rules.size();
  }
  s.pending = pending_;
  s.dataplane = "iptables-" + opt_.backend;
  return s;
}

result<void> dataplane::stop() { return {}; }

}  // namespace iptables_policy
CNF_END_NAMESPACE
