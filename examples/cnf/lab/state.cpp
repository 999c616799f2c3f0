// The lab's state directory: lab.json (what the lab made), its lock, the lab id.
#include "lab/lab.hpp"

#include <cnf/netlink/sha1.hpp>

#include <boost/json.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace cnf_app::lab {
namespace fs = std::filesystem;
namespace bj = boost::json;

node_state* lab_state::find_node(const std::string& name) {
  for (auto& n : nodes)
    if (n.name == name) return &n;
  return nullptr;
}

pod_state* lab_state::find_pod(const std::string& key) {
  for (auto& p : pods)
    if (p.key() == key) return &p;
  return nullptr;
}

fs::path resolve_dir(const std::string& opt) {
  std::string d = opt;
  if (d.empty())
    if (const char* e = std::getenv("CNF_LAB_DIR"); e && *e) d = e;
  if (d.empty()) d = "/run/cnf-lab/default";
  std::error_code ec;
  auto abs = fs::absolute(d, ec);
  if (ec) throw lab_error("state directory " + d + ": " + ec.message());
  return abs.lexically_normal();
}

std::string lab_id(const fs::path& dir) { return cnf::netlink::detail::sha1_hex(dir.string()).substr(0, 6); }
std::string netns_prefix(const std::string& id) { return "cnflab-" + id + "-"; }

namespace {

bj::object to_json(const process_ref& p) { return {{"pid", p.pid}, {"start_time", p.start_time}}; }
process_ref process_of(const bj::value& v) {
  process_ref p;
  if (auto* o = v.if_object()) {
    if (auto* x = o->if_contains("pid")) p.pid = static_cast<pid_t>(x->to_number<std::int64_t>());
    if (auto* x = o->if_contains("start_time")) p.start_time = x->to_number<std::uint64_t>();
  }
  return p;
}
std::string str(const bj::object& o, const char* k) {
  auto* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}
std::int64_t num(const bj::object& o, const char* k) {
  auto* v = o.if_contains(k);
  return v && v->is_number() ? v->to_number<std::int64_t>() : 0;
}

}  // namespace

void save_state(const lab_state& s) {
  bj::array subnets, nodes, pods;
  for (auto& x : s.subnets) subnets.push_back(bj::object{{"cidr", x.cidr}, {"gateway", x.gateway}, {"bridge", x.bridge}, {"cidr6", x.cidr6}, {"gateway6", x.gateway6}});
  for (auto& n : s.nodes)
    nodes.push_back(bj::object{{"name", n.name},
                               {"netns", n.netns},
                               {"subnet", n.subnet},
                               {"address", n.address},
                               {"address6", n.address6},
                               {"router_link", n.router_link},
                               {"profile", n.profile},
                               {"agent_socket", n.agent_socket},
                               {"agent", to_json(n.agent)}});
  for (auto& p : s.pods) {
    bj::object labels;
    for (auto& [k, v] : p.labels) labels[k] = v;
    bj::array ips;
    for (auto& a : p.ips) ips.push_back(bj::string(a));
    pods.push_back(bj::object{{"namespace", p.ns},
                              {"name", p.name},
                              {"node", p.node},
                              {"netns", p.netns},
                              {"container_id", p.container_id},
                              {"ip", p.ip},
                              {"ips", ips},
                              {"labels", labels}});
  }
  bj::object o{{"id", s.id},
               {"dir", s.dir},
               {"phase", s.phase},
               {"datastore", s.datastore},
               {"etcd_endpoint", s.etcd_endpoint},
               {"etcd", to_json(s.etcd)},
               {"router_netns", s.router_netns},
               {"next_pod", s.next_pod},
               {"static_neighbours", s.static_neighbours},
               {"ipv6", s.ipv6},
               {"subnets", subnets},
               {"nodes", nodes},
               {"pods", pods}};
  const fs::path file = fs::path(s.dir) / "lab.json", tmp = fs::path(s.dir) / "lab.json.tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << bj::serialize(o) << "\n";
    if (!f) throw lab_error("cannot write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, file, ec);
  if (ec) throw lab_error("cannot write " + file.string() + ": " + ec.message());
}

std::optional<lab_state> load_state(const fs::path& dir) {
  const fs::path file = dir / "lab.json";
  std::ifstream f(file);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  boost::system::error_code ec;
  auto v = bj::parse(ss.str(), ec);
  if (ec || !v.is_object()) throw lab_error(file.string() + " is not the lab's JSON state (" + ec.message() + "); `cnf lab down` still removes what carries the lab's id");
  auto& o = v.as_object();
  lab_state s;
  s.id = str(o, "id");
  s.dir = str(o, "dir");
  s.phase = str(o, "phase");
  s.datastore = str(o, "datastore");
  s.etcd_endpoint = str(o, "etcd_endpoint");
  if (auto* e = o.if_contains("etcd")) s.etcd = process_of(*e);
  s.router_netns = str(o, "router_netns");
  s.next_pod = static_cast<std::uint64_t>(num(o, "next_pod"));
  if (auto* x = o.if_contains("static_neighbours"); x && x->is_bool()) s.static_neighbours = x->as_bool();
  if (auto* x = o.if_contains("ipv6"); x && x->is_bool()) s.ipv6 = x->as_bool();
  if (auto* a = o.if_contains("subnets"); a && a->is_array())
    for (auto& x : a->as_array()) {
      auto& xo = x.as_object();
      s.subnets.push_back({str(xo, "cidr"), str(xo, "gateway"), str(xo, "bridge"), str(xo, "cidr6"), str(xo, "gateway6")});
    }
  if (auto* a = o.if_contains("nodes"); a && a->is_array())
    for (auto& x : a->as_array()) {
      auto& xo = x.as_object();
      node_state n;
      n.name = str(xo, "name");
      n.netns = str(xo, "netns");
      n.subnet = static_cast<int>(num(xo, "subnet"));
      n.address = str(xo, "address");
      n.address6 = str(xo, "address6");
      n.router_link = str(xo, "router_link");
      n.profile = str(xo, "profile");
      n.agent_socket = str(xo, "agent_socket");
      if (auto* ag = xo.if_contains("agent")) n.agent = process_of(*ag);
      s.nodes.push_back(std::move(n));
    }
  if (auto* a = o.if_contains("pods"); a && a->is_array())
    for (auto& x : a->as_array()) {
      auto& xo = x.as_object();
      pod_state p;
      p.ns = str(xo, "namespace");
      p.name = str(xo, "name");
      p.node = str(xo, "node");
      p.netns = str(xo, "netns");
      p.container_id = str(xo, "container_id");
      p.ip = str(xo, "ip");
      if (auto* ips = xo.if_contains("ips"); ips && ips->is_array())
        for (auto& i : ips->as_array())
          if (i.is_string()) p.ips.emplace_back(i.as_string());
      if (auto* l = xo.if_contains("labels"); l && l->is_object())
        for (auto& [k, lv] : l->as_object())
          if (lv.is_string()) p.labels[std::string(k)] = std::string(lv.as_string());
      s.pods.push_back(std::move(p));
    }
  return s;
}

dir_lock::dir_lock(const fs::path& dir) {
  const auto p = (dir / "lock").string();
  fd_ = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) throw lab_error("cannot open " + p + ": " + std::strerror(errno));
  while (::flock(fd_, LOCK_EX) != 0)
    if (errno != EINTR) throw lab_error("cannot lock " + p + ": " + std::strerror(errno));
}

dir_lock::~dir_lock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace cnf_app::lab
