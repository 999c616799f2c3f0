// The node agent's policy pipeline on the kubernetes datastore, with real parts: the stand-in
// API server (tests/datastore-kubernetes), the kubernetes datastore, cnf::syncer listing and
// watching policy_host::kinds() (as examples/cnf/agent/node_agent.cpp does), the policy host
// and the iptables plugin programming a node namespace with two pods behind it. A label
// changed on the Pod object (not on the WorkloadEndpoint the CNI wrote) opens, then closes,
// a port, live: Calico's KDD behaviour (its endpoints are derived from the Pods).
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "../datastore-kubernetes/standin.hpp"
#include "../integration/netns_harness.hpp"
#include "../support/root_gate.hpp"
#include "support.hpp"

#include <cnf/event_loop.hpp>
#include <cnf/plugins/kubernetes.hpp>
#include <cnf/plugins/policy_iptables.hpp>
#include <cnf/policy/host.hpp>
#include <cnf/syncer.hpp>

#include <boost/json.hpp>

#include <atomic>
#include <future>
#include <thread>

CNF_TEST_ROOT_GATE("network namespaces and iptables");

using namespace std::chrono_literals;
using cnf_test::test_netns;
using policy_test::connects;
using policy_test::listen_in;

namespace {

/// An event loop on a thread of its own; `netns` (optional) is entered by that thread first.
struct loop_thread {
  cnf::event_loop loop;
  std::thread t;
  explicit loop_thread(const test_netns* ns = nullptr) {
    std::promise<void> entered;
    t = std::thread([this, ns, &entered] {
      if (ns) {
        int fd = ::open(ns->path().c_str(), O_RDONLY | O_CLOEXEC);
        if (fd >= 0) ::setns(fd, CLONE_NEWNET), ::close(fd);
      }
      entered.set_value();
      loop.run();
    });
    entered.get_future().wait();
  }
  template <class F>
  auto on_loop(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    loop.post([&] { task(); });
    if (fut.wait_for(30s) != std::future_status::ready) throw std::runtime_error("the loop did not run a posted function within 30 s");
    return fut.get();
  }
  ~loop_thread() {
    loop.stop();
    t.join();
  }
};

bool eventually(const std::function<bool()>& pred, std::chrono::seconds limit = 10s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return pred();
}

std::string wep_spec(const std::string& pod, const std::string& iface, const std::string& ip) {
  return R"({"orchestrator":"k8s","node":"node1","containerID":"c-)" + pod + R"(","pod":")" + pod +
         R"(","endpoint":"eth0","interfaceName":")" + iface + R"(","ipNetworks":[")" + ip +
         R"(/32"],"profiles":["kns.default","ksa.default.default"],"serviceAccountName":"default"})";
}

}  // namespace

TEST_CASE("kubernetes datastore: a label changed on the Pod object changes what the agent's pipeline allows", "[integration]") {
  {
    test_netns probe;
    if (!probe.exec("iptables-nft-save -t filter >/dev/null && ipset list -n >/dev/null").ok()) {
      WARN("iptables-nft or ipset does not work in a network namespace here; case skipped");
      return;
    }
  }
  namespace json = boost::json;
  // The cluster: namespace default, pods a (app=client) and b (app=server) on node1.
  json::array namespaces{json::object{{"metadata", json::object{{"name", "default"}}}}};
  json::array pods;
  for (auto [name, app] : {std::pair{"a", "client"}, std::pair{"b", "server"}})
    pods.push_back(json::object{{"metadata", json::object{{"name", name}, {"namespace", "default"}, {"labels", json::object{{"app", app}}}}},
                                {"spec", json::object{{"nodeName", "node1"}, {"serviceAccountName", "default"}}}});
  k8s_test::standin api({.fixtures = json::serialize(json::object{{"namespaces", namespaces}, {"pods", pods}})});
  auto ds = cnf::kubernetes::datastore::open(api.options());
  REQUIRE(ds);
  // What the CNI wrote at ADD: WorkloadEndpoints with the labels the pods had then.
  auto put = [&](std::string kind, std::string ns, std::string name, std::string spec, std::map<std::string, std::string> labels = {}) {
    cnf::resource r;
    r.kind = std::move(kind);
    r.ns = std::move(ns);
    r.name = std::move(name);
    r.spec = std::move(spec);
    r.labels = std::move(labels);
    auto c = ds->create(r);
    INFO(r.kind << "/" << r.name << ": " << (c ? std::string() : c.error().message));
    REQUIRE(c);
  };
  put("WorkloadEndpoint", "default", "node1-k8s-a-eth0", wep_spec("a", "calia0000000001", "10.65.0.1"), {{"app", "client"}});
  put("WorkloadEndpoint", "default", "node1-k8s-b-eth0", wep_spec("b", "calib0000000002", "10.65.0.2"), {{"app", "server"}});
  put("KubernetesNetworkPolicy", "default", "server-from-trusted",
      R"({"podSelector":{"matchLabels":{"app":"server"}},"ingress":[{"from":[{"podSelector":{"matchLabels":{"trust":"yes"}}}],"ports":[{"port":8080}]}]})");

  // The node and its pods (Calico's plumbing, as in support.hpp).
  test_netns node, a, b;
  cnf_test::set_ip_forward(node);
  node.exec_or_throw("ip link add up0 type veth peer name up1 && ip link set up1 up && ip link set up0 up && ip route add default dev up0");
  for (auto [p, ifc, ip] : {std::tuple{&a, "calia0000000001", "10.65.0.1"}, std::tuple{&b, "calib0000000002", "10.65.0.2"}}) {
    cnf_test::veth_between(node, ifc, *p, "eth0");
    node.exec_or_throw(std::string("sysctl -q -w net.ipv4.conf.") + ifc + ".proxy_arp=1 net.ipv4.neigh." + ifc + ".proxy_delay=0 && ip route add " + ip + "/32 dev " + ifc);
    p->exec_or_throw(std::string("ip addr add ") + ip + "/32 dev eth0 && ip route add 169.254.1.1 dev eth0 scope link && ip route add default via 169.254.1.1");
  }
  int s80 = listen_in(b, "10.65.0.2", 8080);
  REQUIRE(connects(a, "10.65.0.2", 8080));  // nothing programmed yet

  // The syncer talks to the API server from the host namespace; the policy host programs
  // the node namespace (in the agent both live in the node's namespace on one loop).
  loop_thread kernel_side(&node);
  loop_thread datastore_side;
  auto host = kernel_side.on_loop([&] {
    return std::make_unique<cnf::netpol::policy_host>(kernel_side.loop, cnf::any_policy{cnf::iptables_policy::dataplane({.backend = "nft", .ipv6 = false})},
                                                     cnf::netpol::policy_host::options{.node = "node1"});
  });
  std::atomic<int> refused{0};  // updates the host refused (Catch's macros stay on this thread)
  auto sync = datastore_side.on_loop([&] {
    auto s = std::make_unique<cnf::syncer>(cnf::any_datastore(*ds), datastore_side.loop,
                                           cnf::syncer::options{.kinds = cnf::netpol::policy_host::kinds(), .retry = 200ms});
    s->on_update([&](const cnf::sync_update& u) {
      kernel_side.loop.post([&, u] {
        if (!host->on_update(u)) ++refused;
      });
    });
    s->on_status([&](cnf::sync_status st) { kernel_side.loop.post([&, st] { host->set_in_sync(st == cnf::sync_status::in_sync); }); });
    s->start();
    return s;
  });
  auto flushed_since = [&](std::size_t n) { return eventually([&] { return kernel_side.on_loop([&] { return host->flushes() > n; }); }); };
  REQUIRE(flushed_since(0));
  CHECK(kernel_side.on_loop([&] { return host->failures(); }) == 0);
  CHECK_FALSE(connects(a, "10.65.0.2", 8080));  // a is not trust=yes

  // `kubectl label pod a trust=yes`: the Pod object changes, its WorkloadEndpoint does not.
  auto relabel = [&](std::map<std::string, std::string> labels) {
    auto p = ds->get({"Pod", "default", "a"});
    REQUIRE(p);
    p->labels = std::move(labels);
    REQUIRE(ds->update(*p));
  };
  relabel({{"app", "client"}, {"trust", "yes"}});
  CHECK(eventually([&] { return connects(a, "10.65.0.2", 8080); }));
  CHECK(ds->get({"WorkloadEndpoint", "default", "node1-k8s-a-eth0"})->labels == std::map<std::string, std::string>{{"app", "client"}});
  // The label taken away again: closed again.
  relabel({{"app", "client"}});
  CHECK(eventually([&] { return !connects(a, "10.65.0.2", 8080); }));
  CHECK(kernel_side.on_loop([&] { return host->failures(); }) == 0);
  CHECK(refused == 0);

  datastore_side.on_loop([&] {
    sync.reset();
    return true;
  });
  kernel_side.on_loop([&] {
    host.reset();
    return true;
  });
  ::close(s80);
}
