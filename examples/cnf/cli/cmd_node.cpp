// cnf node status: calicoctl's `node status`, from the running agent's status endpoint
// (127.0.0.1:[agent] health_port, GET /status, in this network namespace: run it on the node).
#include "app.hpp"

#include <boost/json.hpp>
#include <fmt/format.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>

namespace cnf_app {
namespace {

/// GET path from 127.0.0.1:port; the body, or an error saying why.
cnf::result<std::string> http_get(unsigned port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return cnf::error(cnf::errc::io, std::string("socket: ") + std::strerror(errno));
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    auto e = cnf::error(cnf::errc::unavailable, fmt::format("nothing answers on 127.0.0.1:{} ({})", port, std::strerror(errno)));
    ::close(fd);
    return e;
  }
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string resp;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    resp.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  auto body = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.", 0) != 0 || body == std::string::npos)
    return cnf::error(cnf::errc::io, fmt::format("127.0.0.1:{} answered something that is not HTTP", port));
  if (resp.compare(9, 3, "200") != 0) return cnf::error(cnf::errc::io, fmt::format("127.0.0.1:{}{}: {}", port, path, resp.substr(9, 3)));
  return resp.substr(body + 4);
}

std::string str(const boost::json::object& o, const char* k) {
  const auto* v = o.if_contains(k);
  if (!v) return {};
  if (v->is_string()) return std::string(v->get_string());
  return boost::json::serialize(*v);
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> w(rows[0].size(), 0);
  for (auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], r[i].size());
  std::string sep = "+";
  for (auto x : w) sep += std::string(x + 2, '-') + "+";
  std::cout << sep << "\n";
  for (std::size_t j = 0; j < rows.size(); ++j) {
    std::cout << "|";
    for (std::size_t i = 0; i < rows[j].size(); ++i) {
      const auto& c = rows[j][i];
      if (j == 0) {  // headers centred, as calicoctl prints them
        auto pad = w[i] - c.size();
        std::cout << std::string(1 + pad / 2, ' ') << c << std::string(1 + pad - pad / 2, ' ') << "|";
      } else {
        std::cout << " " << c << std::string(w[i] - c.size() + 1, ' ') << "|";
      }
    }
    std::cout << "\n";
    if (j == 0) std::cout << sep << "\n";
  }
  std::cout << sep << "\n";
}

int node_status(const std::string& profile_arg, const std::string& output) {
  const std::string path = profile_arg.empty() ? default_profile_path() : profile_arg;
  auto prof = cnf::load_profile(path);
  if (!prof) {
    std::cerr << "cnf node status: " << prof.error().message << "\n";
    return 2;
  }
  if (prof->agent.health_port == 0) {
    std::cerr << "cnf node status: " << path << ": [agent] health_port = 0: the agent serves no status\n";
    return 2;
  }
  auto body = http_get(prof->agent.health_port, "/status");
  if (!body) {
    if (output == "json") std::cout << "{\"running\":false}\n";
    else std::cout << "cnf agent is not running (" << body.error().message << ").\n";
    return 1;
  }
  if (output == "json") {
    std::cout << *body;
    return 0;
  }
  boost::system::error_code ec;
  auto v = boost::json::parse(*body, ec);
  if (ec || !v.is_object()) {
    std::cerr << "cnf node status: the agent's status is not a JSON object\n";
    return 1;
  }
  const auto& o = v.get_object();
  const bool ready = o.if_contains("ready") && o.at("ready").is_bool() && o.at("ready").get_bool();
  std::cout << "cnf agent is running (pid " << str(o, "pid") << ", " << (ready ? "in sync" : "not ready: " + str(o, "sync")) << ").\n";
  const boost::json::object* routing = o.if_contains("routing") ? o.at("routing").if_object() : nullptr;
  const std::string plugin = routing ? str(*routing, "plugin") : "none";
  if (plugin == "none" && !o.if_contains("encapsulation") && !o.if_contains("policy")) {
    std::cout << "\nNo routing part: this agent only serves CNI calls.\n";
    return 0;
  }
  const std::string title = plugin == "direct" ? "direct routing" : plugin == "bgp" ? "BGP" : plugin;
  for (const char* fam : {"IPv4", "IPv6"}) {
    if (plugin == "none") break;  // encapsulation or policy only
    std::vector<std::vector<std::string>> rows{{"PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"}};
    if (plugin == "direct") rows[0].insert(rows[0].begin(), "NODE");
    if (const auto* peers = routing->if_contains("peers"); peers && peers->is_array())
      for (auto& pv : peers->get_array()) {
        if (!pv.is_object()) continue;
        const auto& p = pv.get_object();
        auto addr = str(p, "address");
        const bool v6 = addr.find(':') != std::string::npos;
        if (v6 != (fam[3] == '6')) continue;
        std::vector<std::string> row{addr, str(p, "type"), str(p, "state"), str(p, "since"), str(p, "info")};
        if (plugin == "direct") row.insert(row.begin(), str(p, "name"));
        rows.push_back(std::move(row));
      }
    std::cout << "\n" << fam << " " << title << " status\n";
    if (rows.size() == 1) std::cout << "No " << fam << " peers found.\n";
    else print_table(rows);
  }
  if (const auto* notes = routing ? routing->if_contains("notes") : nullptr; notes && notes->is_array() && !notes->get_array().empty()) {
    std::cout << "\n";
    for (auto& n : notes->get_array())
      if (n.is_string()) std::cout << n.get_string() << "\n";
  }
  if (const auto* en = o.if_contains("encapsulation"); en && en->is_object()) {
    const auto& e = en->get_object();
    std::cout << "\nEncapsulation (" << str(e, "device") << ")\n";
    print_table({{"MODE", "DEVICE", "ADDRESS", "MAC", "MTU", "NODES VIA TUNNEL", "ROUTES"},
                 {str(e, "mode"), str(e, "device"), str(e, "address"), str(e, "mac"), str(e, "mtu"), str(e, "remoteNodes"), str(e, "routes")}});
    if (const auto* notes = e.if_contains("notes"); notes && notes->is_array())
      for (auto& n : notes->get_array())
        if (n.is_string()) std::cout << n.get_string() << "\n";
  }
  if (const auto* po = o.if_contains("policy"); po && po->is_object()) {
    const auto& p = po->get_object();
    std::cout << "\nPolicy (" << str(p, "plugin") << ")\n";
    print_table({{"PLUGIN", "DATAPLANE", "ENDPOINTS", "POLICIES", "PROFILES", "IP SETS", "RULES", "FLUSHES", "FAILURES", "DRIFT REPAIRS"},
                 {str(p, "plugin"), str(p, "dataplane"), str(p, "endpoints"), str(p, "policies"), str(p, "profiles"), str(p, "ipSets"),
                  str(p, "rules"), str(p, "flushes"), str(p, "failures"), str(p, "driftRepairs")}});
    if (const auto* notes = p.if_contains("notes"); notes && notes->is_array())
      for (auto& n : notes->get_array())
        if (n.is_string()) std::cout << n.get_string() << "\n";
  }
  if (const auto* inv = o.if_contains("invalid"); inv && inv->is_array() && !inv->get_array().empty()) {
    std::cout << "\nIgnored resources:\n";
    for (auto& n : inv->get_array())
      if (n.is_string()) std::cout << "  " << n.get_string() << "\n";
  }
  if (const auto* c = o.if_contains("conflicts"); c && c->is_array() && !c->get_array().empty()) {
    std::cout << "\nRoutes left to another owner:\n";
    for (auto& n : c->get_array())
      if (n.is_string()) std::cout << "  " << n.get_string() << "\n";
  }
  return 0;
}

}  // namespace

void add_node_commands(CLI::App& app) {
  static std::string profile, output;
  auto* node = app.add_subcommand("node", "This node, as its agent sees it");
  node->require_subcommand(1);
  auto* st = node->add_subcommand("status",
                                  "Peers and routes of the agent running in this network namespace (calicoctl node status); "
                                  "read from 127.0.0.1:[agent] health_port/status. Exit 1 when no agent answers.");
  st->add_option("--profile", profile, "Profile (default: $CNF_PROFILE, else /etc/cnf/profile.toml)");
  st->add_option("-o,--output", output, "Output format: json for the agent's full state")->check(CLI::IsMember({"json"}));
  st->callback([] { exit_code() = node_status(profile, output); });
}

}  // namespace cnf_app
