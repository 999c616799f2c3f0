#include <cnf/netlink/sha1.hpp>
#include <cnf/plugins/policy_iptables.hpp>

#include <algorithm>
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

std::string proto_name(std::uint8_t p) {
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

std::string policy_display_name(const network_policy& p) { return p.ns.empty() ? p.name : p.ns + "." + p.name; }

/// Not-nets become a set of their own ("n:<hash of the nets>"): iptables takes one -s per rule.
std::string net_set_id(const std::vector<ip_prefix>& nets) {
  std::string key;
  for (auto& n : nets)
    if (n.family() == ip_family::v4) key += n.to_string() + ",";
  return key.empty() ? std::string() : "n:" + short_hash(key, 22);
}

}  // namespace

std::string chain_name(std::string_view prefix, std::string_view name) {
  std::string full = std::string(prefix) + std::string(name);
  bool clean = std::all_of(name.begin(), name.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'; });
  if (full.size() <= 28 && clean && !name.starts_with("_")) return full;
  return std::string(prefix) + "_" + short_hash(name, 28 - prefix.size() - 1);
}

std::string ipset_name(std::string_view id) { return "cali40" + std::string(id); }

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

std::vector<std::string> dataplane::render_rules(const std::vector<policy_rule>& rules, std::string_view) const {
  std::vector<std::string> out;
  for (const auto& r : rules) {
    if (r.family == ip_family::v6) continue;
    std::string m;
    if (r.protocol) {
      if (r.not_protocol == r.protocol) continue;
      m += " -p " + proto_name(*r.protocol);
    } else if (r.not_protocol) {
      m += " ! -p " + proto_name(*r.not_protocol);
    }
    auto v4 = [](const std::vector<ip_prefix>& nets, bool& none_left) {
      std::vector<std::string> o;
      for (auto& n : nets)
        if (n.family() == ip_family::v4) o.push_back(n.to_string());
      none_left = !nets.empty() && o.empty();
      return o;
    };
    bool dead = false, d2 = false;
    auto src = v4(r.source_nets, dead);
    auto dst = v4(r.destination_nets, d2);
    if (dead || d2) continue;  // only IPv6 nets: matches nothing here
    for (auto& id : r.source_ip_sets) m += " -m set --match-set " + ipset_name(id) + " src";
    for (auto& id : r.not_source_ip_sets) m += " -m set ! --match-set " + ipset_name(id) + " src";
    for (auto& id : r.destination_ip_sets) m += " -m set --match-set " + ipset_name(id) + " dst";
    for (auto& id : r.not_destination_ip_sets) m += " -m set ! --match-set " + ipset_name(id) + " dst";
    auto not_nets = [&](const std::vector<ip_prefix>& nets, const char* dir) {
      if (auto id = net_set_id(nets); !id.empty()) m += " -m set ! --match-set " + ipset_name(id) + " " + dir;
    };
    not_nets(r.not_source_nets, "src");
    not_nets(r.not_destination_nets, "dst");
    for (auto& c : port_chunks(r.not_source_ports)) m += " -m multiport ! --sports " + c;
    for (auto& c : port_chunks(r.not_destination_ports)) m += " -m multiport ! --dports " + c;
    if (r.icmp_type)
      m += " -m icmp --icmp-type " + std::to_string(*r.icmp_type) + (r.icmp_code ? "/" + std::to_string(*r.icmp_code) : "");
    if (r.not_icmp_type)
      m += " -m icmp ! --icmp-type " + std::to_string(*r.not_icmp_type) + (r.not_icmp_code ? "/" + std::to_string(*r.not_icmp_code) : "");
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
/// The not-net sets a rendered rule list refers to: id -> members.
void collect_net_sets(const std::vector<policy_rule>& rules, std::map<std::string, std::set<ip_prefix>>& out) {
  for (auto& r : rules)
    for (auto* nets : {&r.not_source_nets, &r.not_destination_nets})
      if (auto id = net_set_id(*nets); !id.empty())
        for (auto& n : *nets)
          if (n.family() == ip_family::v4) out[id].insert(n);
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

result<void> dataplane::upsert_policy(const network_policy& p) {
  const auto key = p.key();
  if (auto it = pols_.find(key); it != pols_.end() && it->second == p) return {};
  if (auto it = chains_of_.find(key); it != chains_of_.end())
    for (auto& c : it->second) policy_chains_.erase(c), dirty_chains_.insert(c);
  if (auto it = pols_.find(key); it != pols_.end())
    for (auto& e : it->second.endpoints) pols_of_ep_[e].erase(key);
  for (auto& e : p.endpoints) pols_of_ep_[e].insert(key);
  std::vector<std::string> names;
  std::map<std::string, std::set<ip_prefix>> net_sets;
  for (bool in : {true, false}) {
    const auto& rules = in ? p.ingress : p.egress;
    if (!(in ? p.ingress_applies : p.egress_applies)) continue;
    auto c = render_chain(chain_name(in ? "cali-pi-" : "cali-po-", policy_display_name(p)), render_rules(rules, in ? "ingress" : "egress"));
    names.push_back(c.name);
    dirty_chains_.insert(c.name);
    policy_chains_[c.name] = std::move(c);
    collect_net_sets(rules, net_sets);
    for (auto& r : rules)
      for (auto* ids : {&r.source_ip_sets, &r.destination_ip_sets, &r.not_source_ip_sets, &r.not_destination_ip_sets})
        for (auto& id : *ids) sets_.try_emplace(id), sets_to_destroy_.erase(id);
  }
  for (auto& [id, members] : net_sets) {
    auto [it, fresh] = sets_.try_emplace(id);
    if (fresh) it->second.members = members;
    sets_to_destroy_.erase(id);
  }
  chains_of_[key] = std::move(names);
  pols_[key] = p;
  ++pending_;
  return {};
}

result<void> dataplane::remove_policy(std::string_view key) {
  auto it = pols_.find(std::string(key));
  if (it == pols_.end()) return {};
  for (auto& e : it->second.endpoints) pols_of_ep_[e].erase(it->first);
  for (auto& c : chains_of_[it->first]) policy_chains_.erase(c), dirty_chains_.insert(c);
  chains_of_.erase(it->first);
  pols_.erase(it);
  ++pending_;
  return {};
}

result<void> dataplane::upsert_profile(const policy_profile& p) {
  if (auto it = profiles_.find(p.name); it != profiles_.end() && it->second == p) return {};
  if (auto it = chains_of_.find("profile:" + p.name); it != chains_of_.end())
    for (auto& c : it->second) policy_chains_.erase(c), dirty_chains_.insert(c);
  std::vector<std::string> names;
  std::map<std::string, std::set<ip_prefix>> net_sets;
  for (bool in : {true, false}) {
    const auto& rules = in ? p.ingress : p.egress;
    auto c = render_chain(chain_name(in ? "cali-pri-" : "cali-pro-", p.name), render_rules(rules, in ? "ingress" : "egress"));
    names.push_back(c.name);
    dirty_chains_.insert(c.name);
    policy_chains_[c.name] = std::move(c);
    collect_net_sets(rules, net_sets);
  }
  for (auto& [id, members] : net_sets) {
    auto [it, fresh] = sets_.try_emplace(id);
    if (fresh) it->second.members = members;
  }
  chains_of_["profile:" + p.name] = std::move(names);
  profiles_[p.name] = p;
  ++pending_;
  return {};
}

result<void> dataplane::remove_profile(std::string_view name) {
  auto it = profiles_.find(std::string(name));
  if (it == profiles_.end()) return {};
  for (auto& c : chains_of_["profile:" + it->first]) policy_chains_.erase(c), dirty_chains_.insert(c);
  chains_of_.erase("profile:" + it->first);
  profiles_.erase(it);
  ++pending_;
  return {};
}

result<void> dataplane::add_ip_set_members(std::string_view id, std::span<const ip_prefix> m) {
  auto& s = sets_[std::string(id)];
  sets_to_destroy_.erase(std::string(id));
  for (auto& a : m) {
    if (a.family() != ip_family::v4) continue;
    if (s.members.insert(a).second) {
      if (!s.removed.erase(a)) s.added.insert(a);
    }
  }
  ++pending_;
  return {};
}

result<void> dataplane::remove_ip_set_members(std::string_view id, std::span<const ip_prefix> m) {
  auto it = sets_.find(std::string(id));
  if (it == sets_.end()) return {};
  for (auto& a : m)
    if (it->second.members.erase(a)) {
      if (!it->second.added.erase(a)) it->second.removed.insert(a);
    }
  ++pending_;
  return {};
}

result<void> dataplane::remove_ip_set(std::string_view id) {
  if (sets_.erase(std::string(id))) sets_to_destroy_.insert(std::string(id));
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

void dataplane::render_dispatch(std::map<std::string, chain>& out) const {
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
  out["cali-wl-to-host"] = render_chain("cali-wl-to-host", {"-j cali-from-wl-dispatch",
                                                            "-m comment --comment \"Configured DefaultEndpointToHostAction\" -j " + to_host});
  out["cali-FORWARD"] = render_chain("cali-FORWARD", {"-j MARK --set-xmark 0x0/0x30000", "-i " + any + " -j cali-from-wl-dispatch",
                                                      "-o " + any + " -j cali-to-wl-dispatch",
                                                      std::string("-m mark --mark ") + accept_mark +
                                                          " -m comment --comment \"Policy explicitly accepted packet.\" -j ACCEPT"});
}

std::map<std::string, chain> dataplane::dynamic_chains() const {
  std::map<std::string, chain> out;
  for (auto& [k, e] : eps_) {
    auto tw = endpoint_chain(e, true);
    auto fw = endpoint_chain(e, false);
    out[tw.name] = std::move(tw);
    out[fw.name] = std::move(fw);
  }
  render_dispatch(out);
  return out;
}

std::map<std::string, chain> dataplane::desired() const {
  auto out = dynamic_chains();
  out.insert(policy_chains_.begin(), policy_chains_.end());
  return out;
}

result<void> dataplane::read_chains() {
  auto r = run({"iptables-" + opt_.backend + "-save", "-t", "filter"}, {});
  if (!r) return r.error();
  if (r->status != 0) return cnf::error(errc::io, "iptables-" + opt_.backend + "-save -t filter: " + r->err);
  kernel_.clear();
  forward_hooked_ = input_hooked_ = false;
  std::istringstream in(r->out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(":cali-")) {
      kernel_[line.substr(1, line.find(' ') - 1)];
    } else if (line.starts_with("-A ")) {
      auto sp = line.find(' ', 3);
      auto name = line.substr(3, sp - 3);
      if (name == "FORWARD" && line.find("-j cali-FORWARD") != std::string::npos) forward_hooked_ = true;
      if (name == "INPUT" && line.find("-j cali-INPUT") != std::string::npos) input_hooked_ = true;
      if (!name.starts_with("cali-")) continue;
      auto c = line.find("cali:");
      std::string h;
      if (c != std::string::npos) {
        auto e = line.find_first_of("\" ", c);
        h = line.substr(c + 5, e == std::string::npos ? std::string::npos : e - c - 5);
      }
      kernel_[name].push_back(h);
    }
  }
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
    if (!name.starts_with("cali40")) continue;
    if (verb == "create") out[name];
    else if (verb == "add") out[name].insert(member.find('/') == std::string::npos ? member + "/32" : member);
  }
  return out;
}

result<void> dataplane::read_kernel() {
  if (auto r = read_chains(); !r) return r;
  // IP sets: every cali40 set is rebuilt by swap; those nobody wants are destroyed.
  auto l = run({opt_.ipset, "list", "-n"}, {});
  if (!l) return l.error();
  if (l->status != 0) return cnf::error(errc::io, opt_.ipset + " list -n: " + l->err);
  std::istringstream sets(l->out);
  std::string line;
  while (std::getline(sets, line)) {
    if (line.starts_with("cali4t")) sets_to_destroy_.insert("\x01" + line);  // a temporary left by a crash
    if (!line.starts_with("cali40")) continue;
    auto id = line.substr(6);
    if (!sets_.contains(id)) sets_to_destroy_.insert(id);
  }
  for (auto& [id, s] : sets_) s.fresh = true;
  kernel_read_ = true;
  compare_all_ = true;
  return {};
}

result<void> dataplane::apply() {
  if (!kernel_read_)
    if (auto r = read_kernel(); !r) return r;
  // 1. IP sets: new ones filled under a temporary name and swapped in; changes by add/del.
  std::string ips;
  for (auto& [id, s] : sets_) {
    const auto name = ipset_name(id);
    if (s.fresh) {
      const auto tmp = "cali4t" + id.substr(1);
      ips += "create " + tmp + " hash:net family inet maxelem 1048576 -exist\nflush " + tmp + "\n";
      for (auto& m : s.members) ips += "add " + tmp + " " + m.to_string() + "\n";
      ips += "create " + name + " hash:net family inet maxelem 1048576 -exist\nswap " + tmp + " " + name + "\ndestroy " + tmp + "\n";
    } else {
      for (auto& m : s.removed) ips += "del " + name + " " + m.to_string() + " -exist\n";
      for (auto& m : s.added) ips += "add " + name + " " + m.to_string() + " -exist\n";
    }
  }
  if (!ips.empty()) {
    auto r = run({opt_.ipset, "restore"}, ips);
    if (!r) return r.error();
    if (r->status != 0) return cnf::error(errc::io, "ipset restore: " + r->err);
    for (auto& [id, s] : sets_) s.fresh = false, s.added.clear(), s.removed.clear();
  }
  // 2. One iptables-restore of the filter table: only chains whose hashes differ.
  // Policy and profile chains: those changed since the last apply (all after a read of the
  // kernel); endpoint and dispatch chains: rendered each time, cheap.
  auto dyn = dynamic_chains();
  std::string decl, rules, dels;
  std::vector<const chain*> written;
  std::vector<std::string> stale;
  auto consider = [&](const chain& c) {
    auto k = kernel_.find(c.name);
    if (k != kernel_.end() && k->second == c.hashes) return;
    decl += ":" + c.name + " - [0:0]\n";
    for (auto& r : c.rules) rules += "-A " + c.name + " " + r + "\n";
    written.push_back(&c);
  };
  if (compare_all_)
    for (auto& [name, c] : policy_chains_) consider(c);
  else
    for (auto& name : dirty_chains_)
      if (auto it = policy_chains_.find(name); it != policy_chains_.end()) consider(it->second);
  for (auto& [name, c] : dyn) consider(c);
  for (auto& [name, h] : kernel_)
    if (!policy_chains_.contains(name) && !dyn.contains(name)) {
      decl += ":" + name + " - [0:0]\n";
      dels += "-X " + name + "\n";
      stale.push_back(name);
    }
  if (!forward_hooked_) rules += "-I FORWARD 1 -m comment --comment \"cali:" + short_hash("FORWARD\n\n-j cali-FORWARD", 16) + "\" -j cali-FORWARD\n";
  if (!input_hooked_) rules += "-I INPUT 1 -m comment --comment \"cali:" + short_hash("INPUT\n\n-j cali-INPUT", 16) + "\" -j cali-INPUT\n";
  if (!decl.empty() || !forward_hooked_ || !input_hooked_) {
    last_restore_ = "*filter\n" + decl + rules + dels + "COMMIT\n";
    auto r = run({"iptables-" + opt_.backend + "-restore", "--noflush", "--wait"}, last_restore_);
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
        std::istringstream in(last_restore_);
        std::string l;
        for (unsigned long i = 1; i <= n && std::getline(in, l); ++i) {
        }
        if (n) msg = "line " + std::to_string(n) + " (" + l + "): " + msg;
      }
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      return cnf::error(errc::io, "iptables-" + opt_.backend + "-restore refused the change, nothing applied: " + msg);
    }
    for (auto* c : written) kernel_[c->name] = c->hashes;
    for (auto& n : stale) kernel_.erase(n);
    forward_hooked_ = input_hooked_ = true;
  }
  dirty_chains_.clear();
  compare_all_ = false;
  // 3. Sets no rule refers to any more.
  if (!sets_to_destroy_.empty()) {
    std::string d;
    for (auto& id : sets_to_destroy_) d += "destroy " + (id.starts_with("\x01") ? id.substr(1) : ipset_name(id)) + "\n";
    auto r = run({opt_.ipset, "restore", "-exist"}, d);
    if (!r) return r.error();
    if (r->status != 0) return cnf::error(errc::io, "ipset destroy of unused sets: " + r->err);
    sets_to_destroy_.clear();
  }
  pending_ = 0;
  return {};
}

namespace {
/// "holds 7 of its 8 rules" (+ ", 1 other"): how a chain read back differs from the wanted one.
std::string chain_difference(const std::vector<std::string>& have, const std::vector<std::string>& want) {
  std::set<std::string> h(have.begin(), have.end()), w(want.begin(), want.end());
  std::size_t kept = 0;
  for (auto& x : w) kept += h.count(x);
  std::size_t others = 0;
  for (auto& x : have) others += w.count(x) ? 0 : 1;
  std::string d = "holds " + std::to_string(kept) + " of its " + std::to_string(want.size()) + " rules";
  if (others) d += ", and " + std::to_string(others) + " rule" + (others == 1 ? "" : "s") + " cnf did not write";
  if (kept == want.size() && !others) d += " out of order";
  return d;
}
}  // namespace

result<policy_drift> dataplane::check_drift() {
  // What was recorded and not applied yet is not drift: apply it first.
  if (!kernel_read_ || pending_ || !dirty_chains_.empty())
    if (auto r = apply(); !r) return r.error();
  policy_drift d;
  if (auto r = read_chains(); !r) return r.error();
  const auto want = desired();
  for (auto& [name, c] : want) {
    ++d.checked;
    auto k = kernel_.find(name);
    if (k == kernel_.end()) d.repaired.push_back({"chain " + name, "missing"});
    else if (k->second != c.hashes) d.repaired.push_back({"chain " + name, chain_difference(k->second, c.hashes)});
  }
  for (auto& [name, h] : kernel_)
    if (!want.contains(name)) d.repaired.push_back({"chain " + name, "not cnf's: deleted"});
  d.checked += 2;
  if (!forward_hooked_) d.repaired.push_back({"hook FORWARD", "the jump to cali-FORWARD is missing"});
  if (!input_hooked_) d.repaired.push_back({"hook INPUT", "the jump to cali-INPUT is missing"});
  auto kernel_sets = read_sets();
  if (!kernel_sets) return kernel_sets.error();
  for (auto& [id, s] : sets_) {
    ++d.checked;
    const auto name = ipset_name(id);
    auto k = kernel_sets->find(name);
    if (k == kernel_sets->end()) {
      s.fresh = true;
      d.repaired.push_back({"set " + name, "missing"});
      continue;
    }
    std::size_t missing = 0, extra = k->second.size();
    for (auto& m : s.members) {
      if (k->second.count(m.canonical().to_string())) --extra;
      else ++missing;
    }
    if (missing || extra) {
      s.fresh = true;  // refilled under a temporary name and swapped in
      d.repaired.push_back({"set " + name, std::to_string(missing) + " member" + (missing == 1 ? "" : "s") + " missing, " +
                                               std::to_string(extra) + " not cnf's"});
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
  for (auto& [n, c] : policy_chains_) s.rules += c.rules.size();
  for (auto& [n, c] : dynamic_chains()) s.rules += c.rules.size();
  s.pending = pending_;
  s.dataplane = "iptables-" + opt_.backend;
  return s;
}

result<void> dataplane::stop() { return {}; }

}  // namespace iptables_policy
CNF_END_NAMESPACE
