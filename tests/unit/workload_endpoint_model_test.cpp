// cnf/model/workload_endpoint.hpp: the one WorkloadEndpoint model and its codec. The header
// comes first, alone: it must be self-contained.
#include <cnf/model/workload_endpoint.hpp>

#include <cnf/policy.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <type_traits>

namespace {
namespace bj = boost::json;
using Catch::Matchers::Contains;

cnf::resource wep(const std::string& spec, const std::string& name = "node--1-k8s-web-eth0") {
  cnf::resource r;
  r.kind = "WorkloadEndpoint";
  r.ns = "shop";
  r.name = name;
  r.labels = {{"app", "web"}};
  r.spec = spec;
  r.revision = "7";
  return r;
}

cnf::model::workload_endpoint sample() {
  cnf::model::workload_endpoint w;
  w.ns = "shop";
  w.name = cnf::model::workload_endpoint_name("node-1", true, "web", "eth0");
  w.labels = {{"projectcalico.org/namespace", "shop"}, {"app", "web"}};
  w.orchestrator = "k8s";
  w.node = "node-1";
  w.container_id = "c0ffee";
  w.pod = "web";
  w.endpoint = "eth0";
  w.interface_name = "cali0123456789a";
  w.ip_networks = {cnf::ip_prefix::parse("10.244.1.5/32").value(), cnf::ip_prefix::parse("fd00::5/128").value()};
  w.mac = cnf::mac_address::parse("ee:ee:ee:ee:ee:ee").value();
  w.profiles = {"kns.shop"};
  w.service_account_name = "default";
  w.network = "k8s-pod-network";
  w.ipam_handle = "k8s-pod-network.c0ffee";
  w.netns = "/var/run/netns/cni-1";
  w.revision = "3";
  return w;
}

}  // namespace

// The policy part receives exactly this type: there is one model.
static_assert(std::is_same_v<cnf::workload_endpoint, cnf::model::workload_endpoint>);

TEST_CASE("WorkloadEndpoint: Calico's names, with every '-' doubled", "[unit][model]") {
  CHECK(cnf::model::workload_endpoint_name("node-1", true, "web-0", "eth0") == "node--1-k8s-web--0-eth0");
  CHECK(cnf::model::workload_endpoint_name("n", false, "abc-def", "eth0") == "n-cni-abc--def-eth0");
  CHECK(sample().key() == "shop/node--1-k8s-web-eth0");
}

TEST_CASE("WorkloadEndpoint: what is written reads back the same", "[unit][model]") {
  const auto w = sample();
  const auto r = cnf::model::to_resource(w);
  CHECK(r.kind == "WorkloadEndpoint");
  CHECK(r.ns == "shop");
  CHECK(r.name == w.name);
  CHECK(r.labels == w.labels);
  auto spec = bj::parse(r.spec).as_object();
  CHECK(spec.at("containerID").as_string() == "c0ffee");
  CHECK(spec.at("interfaceName").as_string() == "cali0123456789a");
  CHECK(spec.at("ipNetworks").as_array().size() == 2);
  CHECK(spec.at("profiles").as_array().at(0).as_string() == "kns.shop");
  CHECK(spec.at("ipamHandle").as_string() == "k8s-pod-network.c0ffee");
  auto back = cnf::model::parse_workload_endpoint(r);
  REQUIRE(back);
  CHECK(*back == w);

  // A bare container: no pod, orchestrator cni, fields left empty stay out of the JSON.
  cnf::model::workload_endpoint c;
  c.ns = "cni";
  c.name = cnf::model::workload_endpoint_name("n", false, "abc", "eth0");
  c.orchestrator = "cni";
  c.node = "n";
  c.container_id = "abc";
  c.endpoint = "eth0";
  auto cr = cnf::model::to_resource(c);
  CHECK_FALSE(bj::parse(cr.spec).as_object().contains("pod"));
  CHECK_FALSE(bj::parse(cr.spec).as_object().contains("mac"));
  auto cb = cnf::model::parse_workload_endpoint(cr);
  REQUIRE(cb);
  CHECK(*cb == c);
  CHECK_FALSE(cb->k8s());
}

TEST_CASE("WorkloadEndpoint: a Calico-written spec reads, unknown fields ignored", "[unit][model]") {
  auto w = cnf::model::parse_workload_endpoint(wep(R"({"orchestrator":"k8s","workload":"","node":"node-1","containerID":"c1",
      "pod":"web","endpoint":"eth0","interfaceName":"calia","ipNetworks":["10.0.0.1/32"],"mac":"aa:bb:cc:dd:ee:ff",
      "profiles":["kns.shop","ksa.shop.default"],"ports":[{"name":"http","protocol":"TCP","port":80}],"ipv4Gateway":null})"));
  REQUIRE(w);
  CHECK(w->k8s());
  CHECK(w->revision == "7");
  CHECK(w->labels.at("app") == "web");
  CHECK(w->ip_networks.front().to_string() == "10.0.0.1/32");
  CHECK(w->profiles.size() == 2);
  // No orchestrator: k8s when it names a pod, cni otherwise.
  auto bare = cnf::model::parse_workload_endpoint(wep(R"({"node":"n","containerID":"c1"})"));
  REQUIRE(bare);
  CHECK(bare->orchestrator == "cni");
}

TEST_CASE("WorkloadEndpoint: bad input names the resource and the field", "[unit][model]") {
  auto err = [](const std::string& spec) {
    auto w = cnf::model::parse_workload_endpoint(wep(spec));
    REQUIRE_FALSE(w);
    CHECK(w.error().code == cnf::errc::invalid);
    return w.error().message;
  };
  const std::string base = R"("node":"n","containerID":"c")";
  CHECK_THAT(err("[]"), Contains("WorkloadEndpoint/shop/node--1-k8s-web-eth0: spec: not a JSON object"));
  CHECK_THAT(err("{" + base + R"(,"ipNetworks":["10.0.0.1/32","10.0.0.300/32"]})"),
             Contains("spec.ipNetworks[1]: '10.0.0.300/32' is not an address with a prefix length"));
  CHECK_THAT(err("{" + base + R"(,"ipNetworks":"10.0.0.1/32"})"), Contains("spec.ipNetworks: expected an array"));
  CHECK_THAT(err("{" + base + R"(,"ipNetworks":[1]})"), Contains("spec.ipNetworks[0]: expected a string"));
  CHECK_THAT(err("{" + base + R"(,"mac":"zz:bb:cc:dd:ee:ff"})"), Contains("spec.mac: 'zz:bb:cc:dd:ee:ff' is not a MAC address"));
  CHECK_THAT(err("{" + base + R"(,"pod":5})"), Contains("spec.pod: expected a string"));
  CHECK_THAT(err("{" + base + R"(,"orchestrator":"mesos"})"), Contains("spec.orchestrator: 'mesos'"));
  CHECK_THAT(err(R"({"containerID":"c"})"), Contains("spec.node: missing"));
  CHECK_THAT(err(R"({"node":"n"})"), Contains("spec.containerID: missing"));
}
