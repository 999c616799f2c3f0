// `cnf ipam` against state made by real CNI calls: the built `cnf` run as a CNI plugin
// (one process per call, `ip netns exec` in a throw-away node namespace, pods in their
// own throw-away namespaces), then run as the tool. What the tool prints is compared
// with the ADD results and with the datastore read in-process.
//
// Root only: otherwise prints "skipped: needs root" and exits 77. Nothing happens in the
// host's network namespace (netns_harness.hpp: cnf-t<pid>-<n>, removed on every exit path).
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "cli_support.hpp"
#include "netns_harness.hpp"
#include "root_gate.hpp"

#include <map>
#include <memory>
#include <set>

using namespace cli_test;
using Catch::Matchers::Contains;
using cnf_test::test_netns;

CNF_TEST_ROOT_GATE("network namespaces");

namespace {

constexpr const char* network = "k8s-pod-network";

std::string ip_binary() {
  for (const char* c : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (::access(c, X_OK) == 0) return c;
  throw std::runtime_error("ip(8) not found");
}

struct pod {
  std::unique_ptr<test_netns> ns = std::make_unique<test_netns>();
  std::string cid, name;
  std::string address;  ///< from the ADD result, without the prefix length
  std::string handle() const { return std::string(network) + "." + cid; }
};

/// A node namespace, a datastore with one pool, and CNI calls through the built cnf.
struct lab {
  test_netns node;
  store s;
  std::string tag = std::to_string(::getpid());

  lab() {
    auto a = s.cnf({"apply", "-f", s.file("pool.yaml", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\n"
                                                       "spec: {cidr: 10.50.0.0/24, blockSize: 28}\n")});
    INFO(a.describe());
    REQUIRE(a.status == 0);
  }
  std::string config() const {
    return bj::serialize(bj::object{{"cniVersion", "1.1.0"}, {"name", network}, {"type", "cnf"}, {"profile", s.profile}});
  }
  run_result cni(const std::vector<std::string>& env, const std::string& stdin_json) const {
    std::vector<std::string> e{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
    e.insert(e.end(), env.begin(), env.end());
    return run({ip_binary(), "netns", "exec", node.name(), cnf_bin}, e, stdin_json);
  }
  std::vector<std::string> env(const pod& p, const std::string& cmd) const {
    return {"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + p.cid, "CNI_NETNS=" + p.ns->path(), "CNI_IFNAME=eth0",
            "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + p.name + ";K8S_POD_INFRA_CONTAINER_ID=" + p.cid};
  }
  std::unique_ptr<pod> add(const std::string& short_name) const {
    auto p = std::make_unique<pod>();
    p->cid = "cli-" + tag + "-" + short_name;
    p->name = "pod-" + short_name;
    auto r = cni(env(*p, "ADD"), config());
    INFO("ADD " << p->cid << "\n" << r.describe());
    REQUIRE(r.status == 0);
    auto v = bj::parse(r.out).as_object();
    auto& ips = v.at("ips").as_array();
    REQUIRE(ips.size() == 1);
    std::string a(ips[0].as_object().at("address").as_string());
    p->address = a.substr(0, a.find('/'));
    return p;
  }
  void del(const pod& p) const {
    auto r = cni(env(p, "DEL"), config());
    INFO("DEL " << p.cid << "\n" << r.describe());
    REQUIRE(r.status == 0);
  }
  run_result gc(const std::vector<const pod*>& valid) const {
    bj::array va;
    for (auto* p : valid) va.push_back(bj::object{{"containerID", p->cid}, {"ifname", "eth0"}});
    auto cfg = bj::parse(config()).as_object();
    cfg["cni.dev/valid-attachments"] = std::move(va);
    return cni({"CNI_COMMAND=GC", "CNI_PATH=/usr/lib/cni"}, bj::serialize(cfg));
  }
  /// address -> handle, read in-process.
  std::map<std::string, std::string> allocations() const {
    ci::ipam ipam(s.open(), "");
    auto a = ipam.allocations();
    INFO((a ? std::string() : a.error().message));
    REQUIRE(a);
    std::map<std::string, std::string> out;
    for (auto& x : *a) out[x.address.to_string()] = x.handle;
    return out;
  }
  /// Removes the WorkloadEndpoint record of a pod, leaving its IPAM allocation.
  void drop_endpoint(const pod& p) const {
    auto ds = s.open();
    auto l = ds.list_all({.kind = std::string(cnf::kinds::workload_endpoint)});
    REQUIRE(l);
    int removed = 0;
    for (auto& r : l->items)
      if (auto o = bj::parse(r.spec).as_object(); o.at("containerID").as_string() == p.cid) {
        REQUIRE(ds.remove(r.key(), r.revision));
        ++removed;
      }
    REQUIRE(removed == 1);
  }
  run_result check(const std::string& report = {}) const {
    std::vector<std::string> args{"ipam", "check", "--show-problem-ips"};
    if (!report.empty()) {
      args.push_back("-o");
      args.push_back(report);
    }
    auto r = s.cnf(args);
    INFO(r.describe());
    REQUIRE(r.status == 0);
    return r;
  }
};

/// "addr=handle addr=handle" (readable when a CHECK fails).
std::string text(const std::map<std::string, std::string>& m) {
  std::string s;
  for (auto& [a, h] : m) s += (s.empty() ? "" : " ") + a + "=" + h;
  return s;
}

/// address -> handle of the leaked-address problems of a report.
std::map<std::string, std::string> leaks_in(const std::string& report_path) {
  auto rep = ci::parse_check_report(read_file(report_path));
  INFO((rep ? std::string() : rep.error().message));
  REQUIRE(rep);
  std::map<std::string, std::string> out;
  for (auto& p : rep->problems) {
    INFO(p.message);
    REQUIRE(p.what == ci::problem::kind::leaked_address);
    REQUIRE(p.address);
    out[p.address->to_string()] = p.handle;
  }
  return out;
}

}  // namespace

TEST_CASE("ipam show and check agree with real CNI ADDs; a leak is found and released from the report", "[cli][ipam][cni]") {
  lab L;
  std::vector<std::unique_ptr<pod>> pods;
  for (auto n : {"a", "b", "c", "d", "e"}) pods.push_back(L.add(n));
  std::set<std::string> added;
  for (auto& p : pods) added.insert(p->address);
  REQUIRE(added.size() == 5);
  auto allocs = L.allocations();
  REQUIRE(allocs.size() == 5);
  for (auto& p : pods) CHECK(allocs[p->address] == p->handle());

  // The table counts what was assigned.
  auto show = L.s.cnf({"ipam", "show", "--show-blocks"});
  INFO(show.describe());
  REQUIRE(show.status == 0);
  CHECK(rows(show.out, "IP Pool") == std::vector<std::vector<std::string>>{{"IP Pool", "10.50.0.0/24", "256", "5 (2%)", "251 (98%)"}});
  auto blocks = rows(show.out, "Block");
  REQUIRE(blocks.size() == 1);  // one node: all five in its first /28
  CHECK(blocks[0][2] == "16");
  CHECK(blocks[0][3] == "5 (31%)");
  CHECK(cnf::ip_prefix::parse(blocks[0][1])->contains(*cnf::ip_address::parse(pods[0]->address)));

  auto clean = L.check();
  CHECK(problems_found(clean.out) == 0);
  CHECK_THAT(clean.out, Contains("5 addresses in use, 5 workload endpoints"));

  // --ip names the handle, the pod and its endpoint.
  auto ip = L.s.cnf({"ipam", "show", "--ip", pods[0]->address});
  CHECK_THAT(ip.out, Contains("is in use"));
  CHECK_THAT(ip.out, Contains(pods[0]->handle()));
  CHECK_THAT(ip.out, Contains("pod:        pod-a"));
  CHECK_THAT(ip.out, Contains("endpoint:   default/"));

  // A live endpoint's address is not released without --force.
  auto refused = L.s.cnf({"ipam", "release", "--ip", pods[0]->address});
  CHECK(refused.status == 1);
  CHECK_THAT(refused.err, Contains("Refused " + pods[0]->address));
  CHECK(L.allocations().count(pods[0]->address) == 1);

  SECTION("an endpoint record lost: check reports its address, release --from-report frees only it") {
    L.drop_endpoint(*pods[1]);
    auto report = (L.s.dir.path / "report.json").string();
    auto c = L.check(report);
    CHECK(problems_found(c.out) == 1);
    CHECK_THAT(c.out, Contains(pods[1]->address + " (handle '" + pods[1]->handle() + "') has no workload endpoint"));
    CHECK(text(leaks_in(report)) == text({{pods[1]->address, pods[1]->handle()}}));
    auto rel = L.s.cnf({"ipam", "release", "--from-report", report});
    INFO(rel.describe());
    REQUIRE(rel.status == 0);
    CHECK_THAT(rel.out, Contains("Released " + pods[1]->address + " (handle " + pods[1]->handle() + ")"));
    CHECK_THAT(rel.out, Contains("Released 1 address(es)."));
    auto after = L.allocations();
    CHECK(after.size() == 4);
    CHECK(after.count(pods[1]->address) == 0);
    CHECK(problems_found(L.check().out) == 0);
    // Releasing from the same report again changes nothing.
    auto again = L.s.cnf({"ipam", "release", "--from-report", report});
    CHECK_THAT(again.out, Contains("Released 0 address(es)."));
    CHECK(text(L.allocations()) == text(after));
  }
  SECTION("an address assigned with no endpoint (an ADD that died after the IPAM step) is a leak") {
    {
      ci::ipam ipam(L.s.open(), "node-1");
      cnf::assign_request req;
      req.handle = std::string(network) + ".ghost-" + L.tag;
      req.node = "node-1";
      req.attributes = {{"node", "node-1"}};
      REQUIRE(ipam.assign(req));
    }
    auto report = (L.s.dir.path / "ghost.json").string();
    auto c = L.check(report);
    CHECK(problems_found(c.out) == 1);
    auto leaks = leaks_in(report);
    REQUIRE(leaks.size() == 1);
    CHECK(leaks.begin()->second == std::string(network) + ".ghost-" + L.tag);
    CHECK(added.count(leaks.begin()->first) == 0);
    REQUIRE(L.s.cnf({"ipam", "release", "--from-report", report}).status == 0);
    CHECK(problems_found(L.check().out) == 0);
    CHECK(L.allocations().size() == 5);
  }
  SECTION("an endpoint whose address was released is reported") {
    auto r = L.s.cnf({"ipam", "release", "--force", "--ip", pods[2]->address});
    INFO(r.describe());
    REQUIRE(r.status == 0);
    auto c = L.check();
    CHECK(problems_found(c.out) == 1);
    CHECK_THAT(c.out, Contains("Found 1 workload endpoint addresses that are not allocated"));
    CHECK_THAT(c.out, Contains(pods[2]->address + " is not allocated in IPAM"));
  }
  SECTION("after every DEL: nothing in use, nothing wrong") {
    for (auto& p : pods) L.del(*p);
    CHECK(L.allocations().empty());
    auto s2 = L.s.cnf({"ipam", "show"});
    CHECK(rows(s2.out, "IP Pool") == std::vector<std::vector<std::string>>{{"IP Pool", "10.50.0.0/24", "256", "0 (0%)", "256 (100%)"}});
    CHECK(problems_found(L.check().out) == 0);
  }
}

// GC decides liveness by the runtime's list of attachments; check by WorkloadEndpoint
// records. Both name the same attachments (the CNI writes one record per attachment and
// GC removes the records of the attachments it drops), so:
//  - records lost for some pods: check reports exactly their addresses as leaked, and a
//    GC whose list holds the other pods releases exactly those addresses;
//  - GC dropping pods whose records still exist: check before GC sees nothing wrong, GC
//    releases their addresses and their records together, check after GC is clean.
TEST_CASE("CNI GC and ipam check agree on what is live", "[cli][ipam][cni][gc]") {
  lab L;
  std::vector<std::unique_ptr<pod>> pods;
  for (auto n : {"a", "b", "c", "d", "e", "f"}) pods.push_back(L.add(n));
  REQUIRE(problems_found(L.check().out) == 0);

  // d and e lose their endpoint records.
  L.drop_endpoint(*pods[3]);
  L.drop_endpoint(*pods[4]);
  auto report = (L.s.dir.path / "before-gc.json").string();
  L.check(report);
  auto leaked = leaks_in(report);
  CHECK(text(leaked) == text({{pods[3]->address, pods[3]->handle()}, {pods[4]->address, pods[4]->handle()}}));

  // The runtime knows a, b, c and f: GC releases what check called leaked, nothing else.
  auto before = L.allocations();
  auto gc = L.gc({pods[0].get(), pods[1].get(), pods[2].get(), pods[5].get()});
  INFO(gc.describe());
  REQUIRE(gc.status == 0);
  auto after = L.allocations();
  std::map<std::string, std::string> released;
  for (auto& [a, h] : before)
    if (!after.count(a)) released[a] = h;
  CHECK(text(released) == text(leaked));
  CHECK(problems_found(L.check().out) == 0);

  // The runtime drops f while its record exists: nothing is wrong before GC, and GC
  // removes the record and the address together.
  auto pre = L.check();
  CHECK(problems_found(pre.out) == 0);
  auto gc2 = L.gc({pods[0].get(), pods[1].get(), pods[2].get()});
  INFO(gc2.describe());
  REQUIRE(gc2.status == 0);
  auto final_allocs = L.allocations();
  CHECK(text(final_allocs) == text({{pods[0]->address, pods[0]->handle()}, {pods[1]->address, pods[1]->handle()},
                                    {pods[2]->address, pods[2]->handle()}}));
  auto post = L.check();
  CHECK(problems_found(post.out) == 0);
  CHECK_THAT(post.out, Contains("3 addresses in use, 3 workload endpoints"));
  for (int i = 0; i < 3; ++i) L.del(*pods[static_cast<std::size_t>(i)]);
  CHECK(L.allocations().empty());
}
