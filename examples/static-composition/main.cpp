// Static composition: a research prototype builds a node's datastore and IPAM at compile
// time from cnf's parts. No plugin library is loaded (check: LD_DEBUG=libs ./static-composition).
#include <cnf/memory_datastore.hpp>
#include <cnf/plugins/host-local.hpp>

#include <cstdio>
#include <string>

// Generic over the concepts: any datastore, any IPAM, no type erasure.
template <cnf::datastore Store, cnf::ipam Ipam>
struct node {
  Store store;
  Ipam ipam;

  cnf::result<std::string> add_pod(const std::string& ns, const std::string& pod) {
    cnf::assign_request req;
    req.handle = "demo." + ns + "." + pod;
    req.node = "node-1";
    req.attributes = {{"namespace", ns}, {"pod", pod}};
    auto ips = ipam.assign(req);
    if (!ips) return ips.error();
    cnf::resource wep{"WorkloadEndpoint", ns, pod, {}, "{\"ip\":\"" + ips->front().address.to_string() + "\"}"};
    if (auto r = store.create(wep); !r) return r.error();
    return ips->front().address.to_string();
  }

  cnf::result<void> del_pod(const std::string& ns, const std::string& pod) {
    if (auto r = ipam.release_handle("demo." + ns + "." + pod); !r) return r;
    return store.remove({"WorkloadEndpoint", ns, pod}, "");
  }
};

int main() {
  cnf::memory_datastore store;
  auto cfg = cnf::host_local::parse_config(R"([ipam]
ranges = [[{ subnet = "10.77.0.0/29" }]]
)");
  if (!cfg) return std::fprintf(stderr, "%s\n", cfg.error().message.c_str()), 1;
  node<cnf::memory_datastore, cnf::host_local_ipam> n{store, cnf::host_local_ipam(store, *cfg, "node-1")};

  for (const char* pod : {"web-0", "web-1", "db-0"}) {
    auto ip = n.add_pod("default", pod);
    if (!ip) return std::fprintf(stderr, "ADD %s: %s\n", pod, ip.error().message.c_str()), 1;
    std::printf("ADD default/%-6s -> %s\n", pod, ip->c_str());
  }
  auto usage = n.ipam.usage();
  if (usage)
    for (auto& p : usage->pools) std::printf("pool %s: %llu of %llu in use\n", p.cidr.to_string().c_str(),
                                             static_cast<unsigned long long>(p.in_use), static_cast<unsigned long long>(p.total));
  for (const char* pod : {"web-0", "web-1", "db-0"})
    if (auto r = n.del_pod("default", pod); !r) return std::fprintf(stderr, "DEL %s: %s\n", pod, r.error().message.c_str()), 1;
  std::printf("DEL all -> %zu workload endpoints left\n", store.list({.kind = "WorkloadEndpoint"})->items.size());
  return 0;
}
