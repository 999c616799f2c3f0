// `cnf apply`, `cnf get`, `cnf delete`, and the `cnf ipam` commands that need no network
// namespaces, run as the built program against a temp local datastore. Needs no root.
// What the program prints is checked against the datastore read in-process.
#include <catch2/catch.hpp>

#include "cli_support.hpp"

#include <set>

using namespace cli_test;
using Catch::Matchers::Contains;

namespace {

const char* pools_yaml = R"(# two documents
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
  labels:
    team: net
spec:
  cidr: 10.10.0.0/16
  blockSize: 26
  ipipMode: CrossSubnet
  natOutgoing: true
  nodeSelector: all()
---
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata:
  name: default
spec:
  strictAffinity: true
  maxBlocksPerHost: 4
)";

const char* pools_json = R"({"apiVersion": "projectcalico.org/v3", "kind": "List", "items": [
  {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "pool-b"},
   "spec": {"cidr": "fd00:10::/48", "blockSize": 122, "vxlanMode": "Always", "disabled": true}},
  {"apiVersion": "projectcalico.org/v3", "kind": "IPReservation", "metadata": {"name": "res-1"},
   "spec": {"reservedCIDRs": ["10.10.0.0/30", "10.10.9.9"]}}
]})";

ci::pool stored_pool(const store& s, const std::string& name) {
  auto ds = s.open();
  auto r = ds.get({std::string(cnf::kinds::ip_pool), "", name});
  INFO(name << ": " << (r ? std::string() : r.error().message));
  REQUIRE(r);
  auto p = ci::parse_pool(*r);
  INFO((p ? std::string() : p.error().message));
  REQUIRE(p);
  return *p;
}

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> w;
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

/// Lines of a whitespace-aligned table whose first word is `first`.
std::vector<std::string> table_line(const std::string& out, const std::string& first) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (auto w = words(line); !w.empty() && w[0] == first) return w;
  return {};
}

}  // namespace

TEST_CASE("apply reads pools from YAML and JSON; get gives them back in every format", "[cli][apply][get]") {
  store s;
  auto y = s.file("pools.yaml", pools_yaml);
  auto j = s.file("more.json", pools_json);
  auto a = s.cnf({"apply", "-f", y, "-f", j});
  INFO(a.describe());
  REQUIRE(a.status == 0);
  CHECK_THAT(a.out, Contains("IPPool/pool-a created"));
  CHECK_THAT(a.out, Contains("IPPool/pool-b created"));
  CHECK_THAT(a.out, Contains("IPAMConfiguration/default created"));
  CHECK_THAT(a.out, Contains("IPReservation/res-1 created"));

  // Stored as Calico's model, defaults filled in.
  auto pa = stored_pool(s, "pool-a");
  CHECK(pa.cidr.to_string() == "10.10.0.0/16");
  CHECK(pa.block_size == 26);
  CHECK(pa.ipip_mode == "CrossSubnet");
  CHECK(pa.vxlan_mode == "Never");
  CHECK(pa.nat_outgoing);
  CHECK_FALSE(pa.disabled);
  auto pb = stored_pool(s, "pool-b");
  CHECK(pb.cidr.to_string() == "fd00:10::/48");
  CHECK(pb.block_size == 122);
  CHECK(pb.vxlan_mode == "Always");
  CHECK(pb.disabled);
  auto ds = s.open();
  auto cfg = ci::read_config(ds);
  REQUIRE(cfg);
  CHECK(cfg->strict_affinity);
  CHECK(cfg->max_blocks_per_host == 4);
  CHECK(cfg->auto_allocate_blocks);
  auto res = ds.get({std::string(cnf::kinds::ip_reservation), "", "res-1"});
  REQUIRE(res);
  auto rp = ci::parse_reservation(*res);
  REQUIRE(rp);
  REQUIRE(rp->cidrs.size() == 2);
  CHECK(rp->cidrs[1].to_string() == "10.10.9.9/32");
  auto labelled = ds.get({std::string(cnf::kinds::ip_pool), "", "pool-a"});
  REQUIRE(labelled);
  CHECK(labelled->labels == std::map<std::string, std::string>{{"team", "net"}});

  SECTION("table and wide") {
    auto t = s.cnf({"get", "ippools"});
    INFO(t.describe());
    REQUIRE(t.status == 0);
    CHECK(table_line(t.out, "NAME") == std::vector<std::string>{"NAME", "CIDR", "SELECTOR"});
    CHECK(table_line(t.out, "pool-a") == std::vector<std::string>{"pool-a", "10.10.0.0/16", "all()"});
    CHECK(table_line(t.out, "pool-b") == std::vector<std::string>{"pool-b", "fd00:10::/48", "all()"});
    auto w = s.cnf({"get", "ippools", "-o", "wide"});
    INFO(w.describe());
    REQUIRE(w.status == 0);
    CHECK(table_line(w.out, "pool-a") == std::vector<std::string>{"pool-a", "10.10.0.0/16", "true", "CrossSubnet", "Never", "false", "26", "all()"});
    CHECK(table_line(w.out, "pool-b") == std::vector<std::string>{"pool-b", "fd00:10::/48", "false", "Never", "Always", "true", "122", "all()"});
    auto one = s.cnf({"get", "ippool", "pool-b"});
    CHECK(table_line(one.out, "pool-a").empty());
    CHECK_FALSE(table_line(one.out, "pool-b").empty());
    auto missing = s.cnf({"get", "ippool", "nope"});
    CHECK(missing.status == 1);
    CHECK_THAT(missing.err, Contains("IPPool 'nope' not found"));
  }
  SECTION("json: a list, Calico's shape") {
    auto g = s.cnf({"get", "ippools", "-o", "json"});
    INFO(g.describe());
    REQUIRE(g.status == 0);
    auto v = bj::parse(g.out).as_object();
    CHECK(v.at("kind").as_string() == "IPPoolList");
    CHECK(v.at("apiVersion").as_string() == "projectcalico.org/v3");
    auto& items = v.at("items").as_array();
    REQUIRE(items.size() == 2);
    auto& first = items[0].as_object();
    CHECK(first.at("kind").as_string() == "IPPool");
    CHECK(first.at("metadata").as_object().at("name").as_string() == "pool-a");
    CHECK(first.at("metadata").as_object().at("labels").as_object().at("team").as_string() == "net");
    auto& spec = first.at("spec").as_object();
    CHECK(spec.at("cidr").as_string() == "10.10.0.0/16");
    CHECK(spec.at("blockSize").to_number<int>() == 26);
    CHECK(spec.at("natOutgoing").as_bool());
    CHECK(spec.at("ipipMode").as_string() == "CrossSubnet");
    // Given back to apply: nothing changes.
    auto f = s.file("back.json", g.out);
    auto before = snapshot(s.open());
    auto again = s.cnf({"apply", "-f", f});
    INFO(again.describe());
    REQUIRE(again.status == 0);
    CHECK_THAT(again.out, Contains("IPPool/pool-a unchanged"));
    CHECK_THAT(again.out, Contains("IPPool/pool-b unchanged"));
    CHECK(snapshot(s.open()) == before);
  }
  SECTION("yaml: applied back unchanged; an edit is applied") {
    auto g = s.cnf({"get", "ippools", "-o", "yaml"});
    INFO(g.describe());
    REQUIRE(g.status == 0);
    CHECK_THAT(g.out, Contains("kind: IPPoolList"));
    CHECK_THAT(g.out, Contains("cidr: 10.10.0.0/16"));
    CHECK_THAT(g.out, Contains("blockSize: 26"));
    auto f = s.file("back.yaml", g.out);
    auto before = snapshot(s.open());
    auto again = s.cnf({"apply", "-f", f});
    INFO(again.describe());
    REQUIRE(again.status == 0);
    CHECK_THAT(again.out, Contains("IPPool/pool-a unchanged"));
    CHECK(snapshot(s.open()) == before);

    auto one = s.cnf({"get", "ippool", "pool-a", "-o", "yaml"});
    REQUIRE(one.status == 0);
    CHECK_THAT(one.out, Contains("kind: IPPool\n"));
    std::string edited = one.out;
    auto at = edited.find("natOutgoing: true");
    REQUIRE(at != std::string::npos);
    edited.replace(at, 17, "natOutgoing: false");
    auto e = s.cnf({"apply", "-f", s.file("edit.yaml", edited)});
    INFO(e.describe());
    REQUIRE(e.status == 0);
    CHECK_THAT(e.out, Contains("IPPool/pool-a configured"));
    CHECK_FALSE(stored_pool(s, "pool-a").nat_outgoing);
  }
  SECTION("other kinds") {
    auto c = s.cnf({"get", "ipamconfigurations", "-o", "json"});
    REQUIRE(c.status == 0);
    auto v = bj::parse(c.out).as_object();
    REQUIRE(v.at("items").as_array().size() == 1);
    CHECK(v.at("items").as_array()[0].as_object().at("kind").as_string() == "IPAMConfiguration");
    auto r = s.cnf({"get", "ipreservations"});
    CHECK(table_line(r.out, "res-1") == std::vector<std::string>{"res-1", "10.10.0.0/30,10.10.9.9"});
  }
}

TEST_CASE("apply rejects bad documents naming the file, document and field, and writes nothing", "[cli][apply]") {
  store s;
  auto base = s.cnf({"apply", "-f", s.file("base.yaml", R"(apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: base}
spec: {cidr: 10.60.0.0/16}
)")});
  INFO(base.describe());
  REQUIRE(base.status == 0);
  const std::string good = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: good}\nspec: {cidr: 10.70.0.0/16}\n---\n";
  struct bad_case {
    const char* name;
    std::string text;
    std::vector<std::string> expect;
  };
  const std::string pool_head = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bad}\n";
  std::vector<bad_case> cases = {
      {"unknown spec field", pool_head + "spec: {cidr: 10.80.0.0/16, blockSise: 26}\n", {"document 2", "IPPool/bad", "spec.blockSise", "unknown field"}},
      {"not a network address", pool_head + "spec: {cidr: 10.80.0.1/16}\n", {"document 2", "spec.cidr", "not a network address"}},
      {"not a CIDR", pool_head + "spec: {cidr: 10.80.0.0/33}\n", {"document 2", "spec.cidr"}},
      {"blockSize too big", pool_head + "spec: {cidr: 10.80.0.0/16, blockSize: 33}\n", {"document 2", "spec.blockSize", "20-32"}},
      {"blockSize too small", pool_head + "spec: {cidr: 10.80.0.0/16, blockSize: 19}\n", {"document 2", "spec.blockSize", "20-32"}},
      {"IPv6 blockSize", pool_head + "spec: {cidr: 'fd00:80::/48', blockSize: 100}\n", {"document 2", "spec.blockSize", "116-128"}},
      {"blockSize not a number", pool_head + "spec: {cidr: 10.80.0.0/16, blockSize: big}\n", {"document 2", "spec.blockSize"}},
      {"overlaps a stored pool", pool_head + "spec: {cidr: 10.60.128.0/17}\n", {"document 2", "spec.cidr", "overlaps IPPool/base"}},
      {"overlaps a pool in the same file",
       pool_head + "spec: {cidr: 10.70.4.0/24}\n", {"document 2", "spec.cidr", "overlaps IPPool/good", "also in this apply"}},
      {"changes a pool's CIDR", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: base}\nspec: {cidr: 10.61.0.0/16}\n",
       {"document 2", "IPPool/base", "spec.cidr", "cannot change"}},
      {"unknown top-level field", pool_head + "spec: {cidr: 10.80.0.0/16}\nstatus: {}\n", {"document 2", "status: unknown field"}},
      {"unknown metadata field", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bad, nmespace: x}\nspec: {cidr: 10.80.0.0/16}\n",
       {"document 2", "metadata.nmespace", "unknown field"}},
      {"unknown kind", "apiVersion: projectcalico.org/v3\nkind: IPPoool\nmetadata: {name: bad}\nspec: {}\n", {"document 2", "kind", "IPPoool"}},
      {"wrong apiVersion", "apiVersion: v1\nkind: IPPool\nmetadata: {name: bad}\nspec: {cidr: 10.80.0.0/16}\n", {"document 2", "apiVersion"}},
      {"no name", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {}\nspec: {cidr: 10.80.0.0/16}\n", {"document 2", "metadata.name"}},
      {"reservation outside every pool", "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: [192.168.0.0/24]}\n",
       {"document 2", "IPReservation/r", "spec.reservedCIDRs[0]", "outside every IPPool"}},
      {"IPAMConfiguration not named default", "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: mine}\nspec: {strictAffinity: true}\n",
       {"document 2", "metadata.name", "default"}},
      {"IPAMConfiguration with a bad value", "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: {strictAffinity: maybe}\n",
       {"document 2", "spec.strictAffinity"}},
      {"the same pool twice", good, {"document 2", "IPPool/good", "metadata.name", "also defined at"}},
  };
  for (auto& c : cases) {
    DYNAMIC_SECTION(c.name) {
      auto before = snapshot(s.open());
      auto f = s.file("bad.yaml", good + c.text);
      auto r = s.cnf({"apply", "-f", f});
      INFO(r.describe());
      CHECK(r.status == 1);
      CHECK_THAT(r.err, Contains(f));
      for (auto& e : c.expect) CHECK_THAT(r.err, Contains(e));
      CHECK_THAT(r.err, Contains("nothing was written"));
      CHECK(r.out.empty());
      CHECK(snapshot(s.open()) == before);
    }
  }
  SECTION("JSON: the document and field are named") {
    auto before = snapshot(s.open());
    auto f = s.file("bad.json", R"([{"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "good"}, "spec": {"cidr": "10.70.0.0/16"}},
      {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "j"}, "spec": {"cidr": "10.90.0.0/16", "blockSize": 40}}])");
    auto r = s.cnf({"apply", "-f", f});
    INFO(r.describe());
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Contains(f + ": document 2 (IPPool/j): spec.blockSize: 40 is outside 20-32"));
    CHECK(snapshot(s.open()) == before);
  }
  SECTION("a YAML syntax error names the line; a second good file is not written either") {
    auto before = snapshot(s.open());
    auto ok = s.file("ok.yaml", good);
    auto f = s.file("broken.yaml", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: x\nspec: {}\n");
    auto r = s.cnf({"apply", "-f", ok, "-f", f});
    INFO(r.describe());
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Contains(f + ":"));
    CHECK_THAT(r.err, Contains("not valid YAML"));
    CHECK(snapshot(s.open()) == before);
  }
  SECTION("a missing file") {
    auto r = s.cnf({"apply", "-f", (s.dir.path / "nope.yaml").string()});
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Contains("nope.yaml"));
  }
}

namespace {

/// Assigns `n` addresses for `node` through calico-ipam in this process, one handle each.
std::vector<cnf::ip_address> assign(const store& s, const std::string& node, int n, const std::string& handle_prefix) {
  ci::ipam ipam(s.open(), node);
  std::vector<cnf::ip_address> out;
  for (int i = 0; i < n; ++i) {
    cnf::assign_request req;
    req.handle = handle_prefix + std::to_string(i);
    req.node = node;
    req.attributes = {{"node", node}, {"pod", "p" + std::to_string(i)}, {"namespace", "default"}};
    auto r = ipam.assign(req);
    INFO((r ? std::string() : r.error().message));
    REQUIRE(r);
    REQUIRE(r->size() == 1);
    out.push_back((*r)[0].address.address());
  }
  return out;
}

}  // namespace

TEST_CASE("ipam show, check, release and configure without pods", "[cli][ipam]") {
  store s;
  auto a = s.cnf({"apply", "-f", s.file("p.yaml", R"(apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: small}
spec: {cidr: 10.40.0.0/27, blockSize: 28}
)")});
  INFO(a.describe());
  REQUIRE(a.status == 0);
  auto n1 = assign(s, "node-1", 3, "k8s-pod-network.n1-");
  auto n2 = assign(s, "node-2", 2, "k8s-pod-network.n2-");

  auto show = s.cnf({"ipam", "show", "--show-blocks"});
  INFO(show.describe());
  REQUIRE(show.status == 0);
  auto pool_rows = rows(show.out, "IP Pool");
  REQUIRE(pool_rows.size() == 1);
  CHECK(pool_rows[0] == std::vector<std::string>{"IP Pool", "10.40.0.0/27", "32", "5 (16%)", "27 (84%)"});
  auto block_rows = rows(show.out, "Block");
  REQUIRE(block_rows.size() == 2);
  // Each node claimed its own block of 16.
  std::multiset<std::string> in_use{block_rows[0][3], block_rows[1][3]};
  CHECK(in_use == std::multiset<std::string>{"3 (19%)", "2 (13%)"});
  CHECK(block_rows[0][2] == "16");
  CHECK(rows(s.cnf({"ipam", "show"}).out, "Block").empty());

  SECTION("--ip") {
    auto in = s.cnf({"ipam", "show", "--ip", n1[1].to_string()});
    INFO(in.describe());
    REQUIRE(in.status == 0);
    CHECK_THAT(in.out, Contains("IP " + n1[1].to_string() + " is in use"));
    CHECK_THAT(in.out, Contains("k8s-pod-network.n1-1"));
    CHECK_THAT(in.out, Contains("pod:        p1"));
    CHECK_THAT(in.out, Contains("pool:       small (10.40.0.0/27)"));
    auto free = s.cnf({"ipam", "show", "--ip", "10.40.0.31"});
    CHECK_THAT(free.out, Contains("IP 10.40.0.31 is not assigned"));
    auto outside = s.cnf({"ipam", "show", "--ip", "192.0.2.1"});
    CHECK_THAT(outside.out, Contains("in no valid IPPool"));
    CHECK(s.cnf({"ipam", "show", "--ip", "not-an-ip"}).status == 1);
  }
  SECTION("--show-configuration and configure") {
    auto c = s.cnf({"ipam", "show", "--show-configuration"});
    CHECK(rows(c.out, "StrictAffinity") == std::vector<std::vector<std::string>>{{"StrictAffinity", "false"}});
    CHECK(rows(c.out, "MaxBlocksPerHost") == std::vector<std::vector<std::string>>{{"MaxBlocksPerHost", "0"}});
    auto set = s.cnf({"ipam", "configure", "--strictaffinity=true", "--max-blocks-per-host", "7"});
    INFO(set.describe());
    REQUIRE(set.status == 0);
    auto cfg = ci::read_config(s.open());
    REQUIRE(cfg);
    CHECK(cfg->strict_affinity);
    CHECK(cfg->max_blocks_per_host == 7);
    CHECK(rows(s.cnf({"ipam", "show", "--show-configuration"}).out, "StrictAffinity")[0][1] == "true");
    CHECK(s.cnf({"ipam", "configure", "--strictaffinity=maybe"}).status != 0);
    CHECK(s.cnf({"ipam", "configure"}).status == 1);
    CHECK(ci::read_config(s.open())->max_blocks_per_host == 7);
  }
  SECTION("--show-borrowed: node-3 borrows once both blocks are claimed") {
    auto n3 = assign(s, "node-3", 1, "k8s-pod-network.n3-");
    auto b = s.cnf({"ipam", "show", "--show-borrowed"});
    INFO(b.describe());
    auto r = rows(b.out, n3[0].to_string());
    REQUIRE(r.size() == 1);
    CHECK(r[0][1] == "node-3");
    CHECK(r[0][5] == "k8s-pod-network.n3-0");
  }
  SECTION("check finds the allocations with no endpoint; release --from-report frees exactly them") {
    auto c = s.cnf({"ipam", "check", "--show-problem-ips", "-o", (s.dir.path / "r.json").string()});
    INFO(c.describe());
    REQUIRE(c.status == 0);  // calicoctl's convention: problems are reported, not an error
    CHECK(problems_found(c.out) == 5);
    CHECK_THAT(c.out, Contains("Found 5 leaked addresses"));
    CHECK_THAT(c.out, Contains(n2[1].to_string() + " (handle 'k8s-pod-network.n2-1') has no workload endpoint"));
    auto rep = ci::parse_check_report(read_file(s.dir.path / "r.json"));
    REQUIRE(rep);
    CHECK(rep->problems.size() == 5);
    // One of them is assigned again (to another handle) after the report: left alone.
    REQUIRE(ci::release_addresses(s.open(), std::vector<cnf::ip_address>{n1[0]}));
    {
      ci::ipam ipam(s.open(), "node-1");
      cnf::assign_request req;
      req.handle = "k8s-pod-network.again";
      req.node = "node-1";
      req.requested = {n1[0]};
      REQUIRE(ipam.assign(req));
    }
    auto rel = s.cnf({"ipam", "release", "--from-report", (s.dir.path / "r.json").string()});
    INFO(rel.describe());
    REQUIRE(rel.status == 0);
    CHECK_THAT(rel.out, Contains("Released 4 address(es)."));
    CHECK_THAT(rel.out, Contains("Skipped " + n1[0].to_string() + ": now held by handle k8s-pod-network.again"));
    auto ds = s.open();
    for (auto& x : {n1[1], n1[2], n2[0], n2[1]}) CHECK_FALSE(ci::lookup(ds, x)->allocated);
    CHECK(ci::lookup(ds, n1[0])->handle == "k8s-pod-network.again");
    auto c2 = s.cnf({"ipam", "check"});
    CHECK(problems_found(c2.out) == 1);
  }
  SECTION("release --ip") {
    auto r = s.cnf({"ipam", "release", "--ip", n2[0].to_string()});
    INFO(r.describe());
    REQUIRE(r.status == 0);
    CHECK_THAT(r.out, Contains("Released " + n2[0].to_string() + " (handle k8s-pod-network.n2-0)"));
    CHECK_FALSE(ci::lookup(s.open(), n2[0])->allocated);
    auto again = s.cnf({"ipam", "release", "--ip", n2[0].to_string()});
    CHECK(again.status == 1);
    CHECK_THAT(again.out, Contains("is not assigned"));
    CHECK(s.cnf({"ipam", "release"}).status == 1);
  }
  SECTION("delete ippool refuses while addresses are allocated, disabled or not") {
    auto d = s.cnf({"delete", "ippool", "small"});
    INFO(d.describe());
    CHECK(d.status == 1);
    CHECK_THAT(d.err, Contains("5 address(es) are still allocated"));
    auto dis = s.cnf({"apply", "-f", s.file("dis.yaml", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: small}\n"
                                                        "spec: {cidr: 10.40.0.0/27, blockSize: 28, disabled: true}\n")});
    REQUIRE(dis.status == 0);
    CHECK(s.cnf({"delete", "ippool", "small"}).status == 1);
    auto ds = s.open();
    REQUIRE(ds.get({std::string(cnf::kinds::ip_pool), "", "small"}));
    SECTION("once released, it goes with its blocks and affinities") {
      std::vector<cnf::ip_address> all(n1);
      all.insert(all.end(), n2.begin(), n2.end());
      REQUIRE(ci::release_addresses(ds, all));
      auto ok = s.cnf({"delete", "ippool", "small"});
      INFO(ok.describe());
      REQUIRE(ok.status == 0);
      CHECK_THAT(ok.out, Contains("removed 2 empty block(s) and 2 block affinities"));
      auto ds2 = s.open();
      CHECK(ds2.list_all({.kind = std::string(cnf::kinds::ipam_block)})->items.empty());
      CHECK(ds2.list_all({.kind = std::string(cnf::kinds::block_affinity)})->items.empty());
      CHECK(ds2.list_all({.kind = std::string(cnf::kinds::ip_pool)})->items.empty());
    }
    SECTION("--force deletes it; check then reports its blocks") {
      auto f = s.cnf({"delete", "ippool", "small", "--force"});
      INFO(f.describe());
      REQUIRE(f.status == 0);
      CHECK_THAT(f.out, Contains("2 block(s) still holding addresses were kept"));
      auto c = s.cnf({"ipam", "check"});
      CHECK_THAT(c.out, Contains("Found 2 IPAM blocks outside every IPPool"));
    }
  }
}
