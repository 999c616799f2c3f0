// cnf-shim on the wire (examples/cnf-shim/main.c; the format is examples/cnf/cni_call.hpp's):
// what it reads from the config and the profile, what it sends, and what it makes of each
// kind of answer. The other end is a stand-in for `cnf agent` that records each request
// and answers what the test sets, because the answers that matter here (a lost agent,
// garbage, exit 1) cannot be had from the real agent on demand; the real agent serving
// cnf-shim is tested in tests/integration/cni_test.cpp ("[shim]").
//
// The shim runs as a copy in a temp directory with no `cnf` beside it, so every call it
// leaves to cnf ends in error 5 ("cannot run .../cnf"): that tells the two paths apart.
// No root, no network namespace: a Unix socket in the temp directory.
#include <catch2/catch.hpp>

#include "../support/process.hpp"

#include <boost/json.hpp>

#include <poll.h>
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

class stand_in_agent {
 public:
  explicit stand_in_agent(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof sa.sun_path);
    std::memcpy(sa.sun_path, path.c_str(), path.size());
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
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
      std::string rq;
      char buf[65536];
      for (ssize_t n; (n = ::read(c, buf, sizeof buf)) > 0;) rq.append(buf, static_cast<std::size_t>(n));
      std::string reply;
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
  std::vector<std::string> requests_;
  std::thread thread_;
};

struct shim_lab {
  cnf_test::temp_dir dir{"/tmp/cnf-shim-test-"};
  std::string shim = (dir.path / "cnf-shim").string();
  std::string sock = (dir.path / "agent.sock").string();
  std::string profile = (dir.path / "profile.toml").string();
  stand_in_agent agent{sock};

  shim_lab() {
    fs::copy_file(std::string(CNF_TEST_BIN_DIR) + "/cnf-shim", shim);
    cnf_test::write_file(profile, "[node]\nname = \"n\"\n\n[cni]\nagent_socket = \"" + sock + "\"\n");
  }
  cnf_test::process_result run(const std::string& input, std::vector<std::string> env = {"CNI_COMMAND=ADD"},
                               const std::string& binary = {}) const {
    return cnf_test::run_process({binary.empty() ? shim : binary}, env, input, 10s);
  }
  std::string config(const std::string& more = {}) const {
    return R"({"cniVersion":"1.0.0","name":"net","type":"cnf-shim","profile":")" + profile + "\"" + more + "}";
  }
};

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

TEST_CASE("cnf-shim sends the call as it came and prints the agent's answer as it went", "[shim]") {
  shim_lab L;
  // Escapes of every kind in the config, including the profile path itself ("\/").
  std::string escaped_profile;
  for (char c : L.profile) escaped_profile += c == '/' ? std::string("\\/") : std::string(1, c);
  const std::string cfg = " {\"cniVersion\":\"1.0.0\",\"name\":\"n\\u00e9t\",\"type\":\"cnf-shim\",\"profile\":\"" + escaped_profile +
                          "\",\"x\":[1,-2.5e3,{\"y\":\"a\\\"b\\\\c\\n\"},null,true,[]],\"z\":\"\xe2\x98\x83 \\ud83d\\ude00\",\"e\":{}}\n";
  const std::vector<std::string> env{"CNI_COMMAND=ADD", "CNI_CONTAINERID=c1", "ODD=tab\there \"q\" \\ \xc3\xa9 \x01"};
  L.agent.answer(R"({"exit":0,"stdout":"{\"cniVersion\":\"1.0.0\",\"ips\":[]}\n\u2603 \ud83d\ude00 \u0001\/"})");
  auto r = L.run(cfg, env);
  INFO("stderr: " << r.err);
  CHECK(r.status == 0);
  CHECK(r.out == "{\"cniVersion\":\"1.0.0\",\"ips\":[]}\n\xe2\x98\x83 \xf0\x9f\x98\x80 \x01/");
  auto rqs = L.agent.requests();
  REQUIRE(rqs.size() == 1);
  auto rq = bj::parse(rqs[0]).as_object();
  CHECK(rq.at("cnf_agent").to_number<int>() == 1);
  CHECK(rq.at("self").as_string() == "cnf-shim");
  CHECK(rq.at("stdin").as_string() == cfg);
  std::vector<std::string> sent;
  for (auto& v : rq.at("env").as_array()) sent.emplace_back(v.as_string());
  CHECK(sent == env);

  // The agent's exit status is the shim's.
  L.agent.answer(R"({"stdout":"{\"code\":7}","exit":1})");
  r = L.run(L.config());
  CHECK(r.status == 1);
  CHECK(r.out == "{\"code\":7}");

  // Called by another name (a CNI bin directory entry), it says so.
  const std::string other = (L.dir.path / "my-net").string();
  fs::create_symlink(L.shim, other);
  L.agent.answer(R"({"exit":0,"stdout":"ok"})");
  r = L.run(R"({"cniVersion":"1.0.0","type":"my-net","profile":")" + L.profile + "\"}", {"CNI_COMMAND=DEL"}, other);
  CHECK(r.out == "ok");
  CHECK(bj::parse(L.agent.requests().back()).at("self").as_string() == "my-net");
}

TEST_CASE("cnf-shim as another plugin's IPAM takes ipam.profile", "[shim]") {
  shim_lab L;
  L.agent.answer(R"({"exit":0,"stdout":"ok"})");
  const std::string ipam = R"(,"ipam":{"type":"cnf-shim","profile":")" + L.profile + "\"}";
  // "type" is another plugin: ipam.profile wins over a top-level profile that does not exist.
  auto r = L.run(R"({"cniVersion":"1.0.0","type":"ptp","profile":"/nonexistent/p.toml")" + ipam + "}");
  CHECK(r.out == "ok");
  CHECK(L.agent.requests().size() == 1);
  // Named in both, it is the plugin itself: the top-level profile (missing here) counts.
  require_left_to_cnf(L.run(R"({"cniVersion":"1.0.0","type":"cnf-shim","profile":"/nonexistent/p.toml")" + ipam + "}"));
  CHECK(L.agent.requests().size() == 1);
}

TEST_CASE("cnf-shim answers 11 when the agent is lost mid-call and leaves declined calls to cnf", "[shim]") {
  shim_lab L;
  L.agent.answer("");  // closes without an answer
  auto r = L.run(L.config());
  CHECK(r.status == 1);
  auto e = error_of(r);
  CHECK(e.at("code").to_number<int>() == 11);
  CHECK(e.at("cniVersion").as_string() == "1.0.0");  // the config's
  CHECK_THAT(std::string(e.at("msg").as_string()), Contains("closed the connection without an answer") && Contains("try the call again"));

  for (const char* garbage : {"not json", R"({"exit":"0","stdout":"x"})", R"({"exit":0})", R"({"exit":0.5,"stdout":"x"})", "{\"exit\":0,\"stdout\":\"x\"} x"}) {
    INFO(garbage);
    L.agent.answer(garbage);
    e = error_of(L.run(L.config()));
    CHECK(e.at("code").to_number<int>() == 11);
    CHECK_THAT(std::string(e.at("msg").as_string()), Contains("answered something that is not a reply"));
  }

  L.agent.answer(R"({"declined":"this agent serves another profile"})");
  require_left_to_cnf(L.run(L.config()));
  CHECK(L.agent.requests().size() == 7);
}

TEST_CASE("cnf-shim leaves to cnf every call it cannot read for sure, and never reaches the agent with it", "[shim]") {
  shim_lab L;
  L.agent.answer(R"({"exit":0,"stdout":"ok"})");
  const std::string good = L.config();
  // Not the commands it hands over.
  require_left_to_cnf(L.run(good, {"CNI_COMMAND=VERSION"}));
  require_left_to_cnf(L.run(good, {}));
  // Configs that are not one valid JSON object, or that repeat a key it reads.
  std::vector<std::string> bad{"", "[]", good + "x", good + "}", R"({"a":tru})", R"({"a":"\ud800"})", R"({"a":"\u12"})",
                               R"({"a":01})", R"({"a":1.})", "{\"a\":\"\x01\"}", R"({"a":[1,]})", R"({,})",
                               std::string(100, '[') + std::string(100, ']'),                  // not an object
                               "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}",  // nested too deep
                               R"({"cniVersion":"1.0.0","profile":")" + L.profile + R"(","profile":")" + L.profile + "\"}",
                               R"({"cniVersion":"1.0.0","profile":")" + L.profile + R"(\u0000x"})"};
  for (std::size_t cut = 1; cut < good.size(); cut += 7) bad.push_back(good.substr(0, cut));
  for (auto& b : bad) {
    INFO(b);
    require_left_to_cnf(L.run(b));
  }
  // Profiles it does not read for sure (the real agent's test runs the forms it does).
  const std::string head = "[node]\nname = \"n\"\n\n";
  for (const std::string& p : {head + "[cni]\n\"agent_socket\" = \"" + L.sock + "\"\n",            // quoted key
                               head + "[cni]\nagent_socket = \"\"\"" + L.sock + "\"\"\"\n",        // multi-line string
                               head + "[cni]\nagent_socket = \"" + L.sock + "\" x\n",              // trailing junk
                               head + "[cni]\nagent_socket = \"" + L.sock + "\"\nagent_socket = \"" + L.sock + "\"\n",
                               head + "[cni.x]\nagent_socket = \"" + L.sock + "\"\n",              // another table
                               "agent_socket = \"" + L.sock + "\"\n" + head,                       // no table
                               head + "[cni]\nagent_socket = \"\\U0000002f\"\n",                   // an escape JSON lacks
                               head + "[cni]\nagent_socket = \"\"\n",
                               head + "[cni]\nagent_socket = \"run/agent.sock\"\n",             // relative
                               head + "[cni]\nagent_socket = \"/" + std::string(107, 'x') + "\"\n"}) {  // too long
    INFO(p);
    cnf_test::write_file(L.profile, p);
    require_left_to_cnf(L.run(good));
  }
  CHECK(L.agent.requests().empty());
  // The plain forms it does read: blanks, a comment, a literal string.
  cnf_test::write_file(L.profile, head + " [ cni ]  # the CNI side\n  mtu = 1400\n  agent_socket = '" + L.sock + "'  # here\n");
  CHECK(L.run(good).out == "ok");
  CHECK(L.agent.requests().size() == 1);
}
