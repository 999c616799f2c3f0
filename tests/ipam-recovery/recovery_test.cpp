// calico-ipam after interrupted operations (issue 19), on the local datastore, a real etcd
// and the kubernetes datastore against its STAND-IN API server: every write of an ADD that
// claims a block, an ADD that borrows, a DEL that empties a block and a GC is interrupted
// in turn (scenarios.hpp), and issue 19's reproduction ends with nothing in use.
#include "scenarios.hpp"

#include "etcd_server.hpp"
#include "process.hpp"
#include "../datastore-kubernetes/standin.hpp"

#include <cnf/loader.hpp>
#include <cnf/plugins/kubernetes.hpp>

#include <cstdlib>
#include <filesystem>

using namespace recovery_test;

namespace {

struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/cnf-ipam-recovery-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

cnf::result<cnf::any_datastore> open_plugin(const std::string& plugin, const std::string& profile) {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  return loader.make<cnf::part::datastore>(plugin, {}, {profile, "test.toml", "datastore"});
}

void report(const std::string& name, const counts& c, const std::chrono::steady_clock::time_point start) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %zu interrupted runs, %zu killed processes, %lld ms\n", name.c_str(), c.runs, c.forked, static_cast<long long>(ms));
  std::fflush(stdout);
}

}  // namespace

TEST_CASE("recovery: local datastore", "[local]") {
  temp_dir dir;
  auto start = std::chrono::steady_clock::now();
  std::string profile = "[datastore]\nplugin = \"local\"\ndir = \"" + dir.path + "/store\"\nfsync = false\n";
  auto ds = open_plugin("local", profile);
  REQUIRE(ds);
  reproduction(*ds, dir.path + "/locks");
  backend b{"local", *ds, [profile] { return open_plugin("local", profile); }};
  report("local", run_scenarios(b, dir.path + "/locks"), start);
}

TEST_CASE("recovery: etcd", "[etcd]") {
  if (auto why = cnf_test::etcd_server::unavailable_reason()) {
    cnf_test::exit_77_skipped(*why);  // reported as skipped by ctest, not passed
  }
  temp_dir dir;
  cnf_test::etcd_server etcd;
  auto start = std::chrono::steady_clock::now();
  std::string profile = "[datastore]\nplugin = \"etcd\"\nendpoints = [\"" + etcd.endpoint() + "\"]\ntimeout_ms = 10000\n";
  auto ds = open_plugin("etcd", profile);
  REQUIRE(ds);
  reproduction(*ds, dir.path + "/locks");
  backend b{"etcd", *ds, {}};
  report("etcd", run_scenarios(b, dir.path + "/locks"), start);
}

TEST_CASE("recovery: kubernetes (stand-in API server)", "[kubernetes]") {
  temp_dir dir;
  k8s_test::standin server;
  auto start = std::chrono::steady_clock::now();
  cnf::any_datastore ds(cnf::kubernetes::datastore::open(server.options()).value());
  reproduction(ds, dir.path + "/locks");
  backend b{"kubernetes", ds, {}};
  report("kubernetes", run_scenarios(b, dir.path + "/locks"), start);
}
