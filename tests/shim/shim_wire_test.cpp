// cnf-shim on the wire (examples/cnf-shim/main.c; the format is examples/cnf/agent_client.hpp's):
// what it sends, and what it makes of each kind of answer. The other end is a stand-in for
// `cnf agent` that records each request and answers what the test sets, because the answers
// that matter here (a lost agent, garbage, exit 1) cannot be had from the real agent on
// demand; the real agent serving cnf-shim is tested in tests/integration/cni_test.cpp ("[shim]").
//
// The stand-in listens where the agent does, at the abstract address @cnf-agent, which is
// per network namespace: this program first moves itself into a network namespace of its
// own (unshare, so nothing to name or delete: it goes when the process exits), so a real
// agent on the host is never reached or disturbed. Needs root for that.
//
// The shim runs as a copy in a temp directory with no `cnf` beside it, so every call it
// leaves to cnf ends in error 5 ("cannot run .../cnf"): that tells the two paths apart.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include <cnf/cni/agent_client.hpp>
#include "../support/process.hpp"

#include <boost/json.hpp>

#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace bj = boost::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

struct own_netns : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testRunStarting(Catch::TestRunInfo const& info) override {
    cnf_test::exit_77_unless_root("a network namespace of its own, for the abstract socket @cnf-agent");
    if (::unshare(CLONE_NEWNET) != 0) cnf_test::exit_77_skipped(std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno));
    TestEventListenerBase::testRunStarting(info);
  }
};

}  // namespace
CATCH_REGISTER_LISTENER(own_netns)

namespace {

class stand_in_agent {
 public:
  stand_in_agent() {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un sa{};
    socklen_t len = 0;
    REQUIRE(cnf::cni::agent_sockaddr("@cnf-agent", sa, len));
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&sa), len) == 0);
    REQUIRE(::listen(fd_, 8) == 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~stand_in_agent() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  void answer(std::string reply) {
    std::lock_guard l(mu_);
    reply_ = std::move(reply);
  }
  /// Closes each connection at once, with the request unread (as the agent does to a caller
  /// of another uid).
  void refuse() {
    std::lock_guard l(mu_);
    refuse_ = true;
  }
  std::vector<std::string> requests() {
    std::lock_guard l(mu_);
    return requests_;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::string rq, reply;
      {
        std::lock_guard l(mu_);
        if (refuse_) {
          ::close(c);
          continue;
        }
      }
      char buf[65536];
      for (ssize_t n; (n = ::read(c, buf, sizeof buf)) > 0;) rq.append(buf, static_cast<std::size_t>(n));
      {
        std::lock_guard l(mu_);
        requests_.push_back(rq);
        reply = reply_;
      }
      for (std::size_t off = 0; off < reply.size();) {
        ssize_t n = ::write(c, reply.data() + off, reply.size() - off);
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
      }
      ::close(c);
    }
  }
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string reply_;
  bool refuse_ = false;
  std::vector<std::string> requests_;
  std::thread thread_;
};

struct shim_lab {
  cnf_test::temp_dir dir{"/tmp/cnf-shim-test-"};
  std::string shim = (dir.path / "cnf-shim").string();
  shim_lab() { fs::copy_file(std::string(CNF_TEST_BIN_DIR) + "/cnf-shim", shim); }
  cnf_test::process_result run(const std::string& input, std::vector<std::string> env = {"CNI_COMMAND=ADD"},
                               const std::string& binary = {}) const {
    return cnf_test::run_process({binary.empty() ? shim : binary}, env, input, 10s);
  }
};

/// A request split as the wire says: the magic line, then NUL-terminated strings up to an
/// empty one (self first), then the rest.
struct request {
  std::string magic, self, input;
  std::vector<std::string> env;
};
request split(const std::string& t) {
  request r;
  auto nl = t.find('\n');
  REQUIRE(nl != std::string::npos);
  r.magic = t.substr(0, nl + 1);
  std::size_t pos = nl + 1;
  auto next = [&] {
    auto z = t.find('\0', pos);
    REQUIRE(z != std::string::npos);
    std::string s = t.substr(pos, z - pos);
    pos = z + 1;
    return s;
  };
  r.self = next();
  for (std::string s; !(s = next()).empty();) r.env.push_back(s);
  r.input = t.substr(pos);
  return r;
}

std::string reply(int status, const std::string& out) {
  return "exit " + std::to_string(status) + " " + std::to_string(out.size()) + "\n" + out;
}

bj::object error_of(const cnf_test::process_result& r) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  boost::system::error_code ec;
  auto v = bj::parse(r.out, ec);
  REQUIRE((!ec && v.is_object()));
  return v.as_object();
}

void require_left_to_cnf(const cnf_test::process_result& r) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.status != 0);
  auto e = error_of(r);
  CHECK(e.at("code").to_number<int>() == 5);
  CHECK_THAT(std::string(e.at("msg").as_string()), Contains("cannot run") && Contains("installed next to cnf-shim"));
}

}  // namespace

TEST_CASE("cnf-shim sends its environment and stdin as they are and prints the agent's answer as it went", "[shim]") {
  shim_lab L;
  stand_in_agent agent;
  // Not JSON, a NUL, bytes of every kind: the shim reads none of it.
  std::string cfg = "not { json \"at all\n";
  cfg += std::string("\0\x01\xff\xfe tail", 10);
  const std::vector<std::string> env{"CNI_COMMAND=ADD", "CNI_CONTAINERID=c1", "ODD=tab\there \"q\" \\ \xc3\xa9 \x01", "EMPTY="};
  std::string out = "{\"cniVersion\":\"1.0.0\",\"ips\":[]}\n";
  out += std::string("\0\xe2\x98\x83 \n", 6);
  agent.answer(reply(0, out));
  auto r = L.run(cfg, env);
  INFO("stderr: " << r.err);
  CHECK(r.status == 0);
  CHECK(r.out == out);
  auto rqs = agent.requests();
  REQUIRE(rqs.size() == 1);
  auto rq = split(rqs[0]);
  CHECK(rq.magic == "cnf-agent/2\n");
  CHECK(rq.self == "cnf-shim");
  CHECK(rq.env == env);
  CHECK(rq.input == cfg);

  // The agent's exit status is the shim's.
  agent.answer(reply(1, "{\"code\":7}"));
  r = L.run("{}");
  CHECK(r.status == 1);
  CHECK(r.out == "{\"code\":7}");

  // Called by another name (a CNI bin directory entry), it says so; an empty stdin goes as
  // it is; an empty string in the environment is left out (it would end the list).
  const std::string other = (L.dir.path / "my-net").string();
  fs::create_symlink(L.shim, other);
  agent.answer(reply(0, "ok"));
  r = L.run("", {"CNI_COMMAND=DEL", "", "A=b"}, other);
  CHECK(r.out == "ok");
  rq = split(agent.requests().back());
  CHECK(rq.self == "my-net");
  CHECK(rq.env == std::vector<std::string>{"CNI_COMMAND=DEL", "A=b"});
  CHECK(rq.input.empty());
}

TEST_CASE("cnf-shim answers 11 when the agent is lost mid-call and leaves declined calls to cnf", "[shim]") {
  shim_lab L;
  stand_in_agent agent;
  agent.answer("");  // closes without an answer
  auto r = L.run("{}");
  CHECK(r.status == 1);
  auto e = error_of(r);
  CHECK(e.at("code").to_number<int>() == 11);
  CHECK_THAT(std::string(e.at("msg").as_string()), Contains("closed the connection without an answer") && Contains("try the call again"));

  // Not a reply, or cut short: as lost (the agent read the call; what it did is unknown).
  for (const std::string garbage : {"not a reply", R"({"exit":0,"stdout":"x"})", "exit 0 5\nabc", "exit 0 2\nabc",
                                    "exit x 1\na", "exit 256 0\n", "exit 0 1", "exit -1 0\n", "declined 3\nab", "exit  0 0\n"}) {
    INFO(garbage);
    agent.answer(garbage);
    e = error_of(L.run("{}"));
    CHECK(e.at("code").to_number<int>() == 11);
    CHECK_THAT(std::string(e.at("msg").as_string()), Contains("answered something that is not a reply"));
  }

  agent.answer("declined 33\nthis agent serves another profile");
  require_left_to_cnf(L.run("{}"));
  agent.answer("declined 0\n");
  require_left_to_cnf(L.run("{}"));
  CHECK(agent.requests().size() == 13);

  // A caller the agent refuses (closed unread): as if no agent, cnf does the call.
  agent.refuse();
  require_left_to_cnf(L.run("{}"));
}

TEST_CASE("cnf-shim runs cnf with no agent and for the commands it does not hand over", "[shim]") {
  shim_lab L;
  require_left_to_cnf(L.run("{}"));  // nobody at @cnf-agent
  stand_in_agent agent;
  agent.answer(reply(0, "ok"));
  require_left_to_cnf(L.run("{}", {"CNI_COMMAND=VERSION"}));
  require_left_to_cnf(L.run("{}", {}));
  require_left_to_cnf(L.run("{}", {"CNI_COMMAND=add"}));
  CHECK(agent.requests().empty());
  for (const char* cmd : {"ADD", "DEL", "CHECK", "STATUS", "GC"}) CHECK(L.run("{}", {std::string("CNI_COMMAND=") + cmd}).out == "ok");
  CHECK(agent.requests().size() == 5);
  // --help says what it is; other arguments are a usage error.
  auto h = cnf_test::run_process(std::vector<std::string>{L.shim, "--help"}, {}, "", 10s);
  CHECK(h.status == 0);
  CHECK_THAT(h.out, Contains("@cnf-agent") && Contains("cnf agent"));
  CHECK(cnf_test::run_process(std::vector<std::string>{L.shim, "x"}, {}, "", 10s).status == 2);
}

TEST_CASE("the agent wire: the C++ side's codec agrees with itself and refuses what is not a message", "[shim]") {
  using namespace cnf::cni;
  plugin_call c;
  c.self = "cnf-shim";
  c.env = {"CNI_COMMAND=ADD", "X=a=b"};
  c.input = std::string("{\0}", 3);
  auto d = decode_request(encode_request(c));
  REQUIRE(d);
  CHECK(d->self == c.self);
  CHECK(d->env == c.env);
  CHECK(d->input == c.input);
  CHECK_THAT(decode_request(R"({"cnf_agent":1})").error().message, Contains("older cnf-shim"));
  CHECK_THAT(decode_request("cnf-agent/1\nx").error().message, Contains("cnf-agent/2"));
  CHECK_THAT(decode_request(std::string("cnf-agent/2\nself\0NOEQUALS\0\0", 26)).error().message, Contains("NOEQUALS"));
  CHECK_THAT(decode_request(std::string("cnf-agent/2\nself\0A=b\0", 21)).error().message, Contains("empty string"));

  auto a = decode_reply(encode_reply({.exit = 1, .out = std::string("o\0k", 3)}));
  REQUIRE(a);
  CHECK_FALSE(a->declined);
  CHECK(a->exit == 1);
  CHECK(a->out == std::string("o\0k", 3));
  auto n = decode_reply(encode_reply({.declined = "why"}));
  REQUIRE((n && n->declined));
  CHECK(*n->declined == "why");
  for (std::string bad : {"", "exit 0 3\nab", "exit 0 1\nab", "exit 300 0\n", "declined x\n", "exit 0 0"}) {
    INFO(bad);
    CHECK_FALSE(decode_reply(bad));
  }
}
