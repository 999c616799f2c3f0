// cnf-shim: the thin CNI plugin. It hands each call to `cnf agent` (the profile's
// [cni] agent_socket) and does nothing else; when no agent serves the call it runs `cnf`
// (installed next to it) with the same environment and config, so the two binaries give
// the same answers. It exists for start-up cost: a runtime execs one plugin process per
// call, and this one maps a small program, parses the config and the profile's [cni]
// table, and makes one socket round trip (tests/bench/README.md has the figures).
#include "agent_client.hpp"

#include <cnf/cni/error.hpp>

#include <boost/json/src.hpp>  // Boost.JSON compiled into this program: no shared library to load
#include <toml++/toml.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

extern char** environ;

namespace {

constexpr std::string_view usage =
    "cnf-shim: a CNI plugin (CNI spec 1.1) that hands every call to `cnf agent`.\n"
    "A container runtime execs it with CNI_COMMAND and the other CNI_* variables set and the network\n"
    "config on stdin, like any CNI plugin; name it in the config's \"type\" (or \"ipam.type\").\n"
    "It reads the profile the config names (\"profile\", for IPAM \"ipam.profile\"; else $CNF_PROFILE,\n"
    "else /etc/cnf/profile.toml) for [cni] agent_socket and sends the call there. With no agent\n"
    "there (or one serving another profile) it runs `cnf` from its own directory instead, which does\n"
    "the call itself: same results, same errors. An agent that stops after reading a call gets\n"
    "error 11 (try again later). Start the agent with `cnf agent --profile <profile>`.\n";

std::string str_at(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

/// The agent socket the call's profile names; empty when there is none or anything about
/// the config or the profile is wrong (then `cnf` does the call and reports what is wrong).
std::string agent_socket_for(const cnf_app::cni_call& call, std::string& version) {
  boost::system::error_code ec;
  auto v = boost::json::parse(call.input, ec);
  const auto* cfg = ec ? nullptr : v.if_object();
  if (!cfg) return {};
  version = str_at(*cfg, "cniVersion");
  std::string profile = str_at(*cfg, "profile");
  // Named in another plugin's ipam.type, it is that plugin's IPAM: "ipam.profile" first.
  if (const auto* ipam = cfg->if_contains("ipam"); ipam && ipam->is_object())
    if (str_at(ipam->as_object(), "type") == call.self && str_at(*cfg, "type") != call.self)
      if (auto p = str_at(ipam->as_object(), "profile"); !p.empty()) profile = p;
  if (profile.empty()) {
    const char* e = std::getenv("CNF_PROFILE");
    profile = e && *e ? e : "/etc/cnf/profile.toml";
  }
  try {
    auto t = toml::parse_file(profile);
    return t["cni"]["agent_socket"].value<std::string>().value_or("");
  } catch (const std::exception&) {
    return {};
  }
}

[[noreturn]] void fail(const cnf::cni::error& e, const std::string& version) {
  auto out = e.to_json(version.empty() ? cnf::cni::spec_version : std::string_view(version)) + "\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "cnf-shim: %s\n", e.to_string().c_str());
  std::exit(1);
}

/// Runs `cnf` from this program's directory in its place: the same argv[0] (so that it
/// sees the same plugin name), environment and config (on a memfd as stdin).
[[noreturn]] void run_cnf(const char* argv0, const std::string& input, const std::string& version) {
  std::string self(4096, '\0');
  ssize_t n = ::readlink("/proc/self/exe", self.data(), self.size());
  if (n <= 0) fail({cnf::cni::error_code::io_failure, "cnf-shim: cannot find its own path", std::strerror(errno)}, version);
  self.resize(static_cast<std::size_t>(n));
  const std::string cnf = self.substr(0, self.rfind('/') + 1) + "cnf";
  int fd = ::memfd_create("cnf-network-config", 0);
  if (fd < 0 || ::write(fd, input.data(), input.size()) != static_cast<ssize_t>(input.size()) || ::lseek(fd, 0, SEEK_SET) != 0 ||
      ::dup2(fd, 0) != 0)
    fail({cnf::cni::error_code::io_failure, "cnf-shim: cannot pass the network config on to cnf", std::strerror(errno)}, version);
  if (fd != 0) ::close(fd);
  char* args[] = {const_cast<char*>(argv0), nullptr};
  ::execve(cnf.c_str(), args, environ);
  fail({cnf::cni::error_code::io_failure, "cnf-shim: cannot run " + cnf + " (it is installed next to cnf-shim)",
        std::strerror(errno)},
       version);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) {
    std::string_view a = argv[1];
    bool help = a == "-h" || a == "--help";
    std::fwrite(usage.data(), 1, usage.size(), help ? stdout : stderr);
    return help ? 0 : 2;
  }
  cnf_app::cni_call call;
  std::string_view self = argv[0] ? argv[0] : "cnf-shim";
  if (auto s = self.rfind('/'); s != std::string_view::npos) self.remove_prefix(s + 1);
  call.self = std::string(self);
  std::string version;
  if (int e = cnf_app::read_to_end(0, call.input, call.input.max_size()); e != 0)
    fail({cnf::cni::error_code::io_failure, "stdin: cannot read the network config", std::strerror(e)}, version);
  const char* cmd = std::getenv("CNI_COMMAND");
  const std::string_view command = cmd ? cmd : "";
  // VERSION and anything unexpected go to cnf, which answers them.
  if (command == "ADD" || command == "DEL" || command == "CHECK" || command == "STATUS" || command == "GC") {
    if (auto sock = agent_socket_for(call, version); !sock.empty()) {
      for (char** e = environ; *e; ++e) call.env.emplace_back(*e);
      auto a = cnf_app::ask_agent(sock, call);
      switch (a.what) {
        case cnf_app::agent_answer::kind::answered:
          std::fwrite(a.out.data(), 1, a.out.size(), stdout);
          return a.status;
        case cnf_app::agent_answer::kind::lost:
          fail({cnf::cni::error_code::try_again_later, a.out + "; what it did is unknown: try the call again"}, version);
        case cnf_app::agent_answer::kind::declined:
        case cnf_app::agent_answer::kind::absent:
          break;
      }
    }
  }
  run_cnf(argv[0] ? argv[0] : "cnf-shim", call.input, version);
}
