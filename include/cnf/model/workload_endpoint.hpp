// cnf/model/workload_endpoint.hpp — Calico's projectcalico.org/v3 WorkloadEndpoint, typed,
// with its JSON codec: the one model of a pod interface that the CNI plugin writes, the
// tools read, and the policy part (cnf/policy.hpp) receives.
//
// The CNI plugin writes one per attachment; resource namespace = the pod's ("cni" for a bare
// container), name = Calico's <node>-k8s-<pod>-<endpoint> (or <node>-cni-<container>-<endpoint>),
// every '-' in a part doubled. Besides Calico's spec fields, cnf keeps three of its own
// (network, ipamHandle, netns) that DEL and GC need. The codec validates what it reads: a bad
// field names the resource and the field ("WorkloadEndpoint/ns1/n-k8s-p-eth0: spec.ipNetworks[1]:
// '10.0.0.300/32' is not an address with a prefix length"); unknown fields are ignored.
//
//   auto w = cnf::model::parse_workload_endpoint(res);   // res: kind WorkloadEndpoint
//   cnf::resource out = cnf::model::to_resource(*w);
//
// Uses Boost.JSON: code that calls the codec links Boost::json.
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/net.hpp>

#include <boost/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace model {

struct workload_endpoint {
  std::string ns;    ///< resource namespace: the pod's, "cni" for a bare container
  std::string name;  ///< resource name (workload_endpoint_name)
  std::map<std::string, std::string> labels;  ///< the pod's labels, plus projectcalico.org/{namespace,orchestrator}
  std::string orchestrator;    ///< spec.orchestrator: "k8s" or "cni"
  std::string node;            ///< spec.node
  std::string container_id;    ///< spec.containerID
  std::string pod;             ///< spec.pod (k8s only)
  std::string endpoint;        ///< spec.endpoint: the interface name in the pod (CNI_IFNAME)
  std::string interface_name;  ///< spec.interfaceName: the host side of the veth
  std::vector<ip_prefix> ip_networks;  ///< spec.ipNetworks: /32 and /128 in Calico
  std::optional<mac_address> mac;      ///< spec.mac (the pod side)
  std::vector<std::string> profiles;   ///< spec.profiles: "kns.<namespace>", ...
  std::string service_account_name;    ///< spec.serviceAccountName
  std::string network;      ///< cnf: the CNI network name
  std::string ipam_handle;  ///< cnf: the IPAM handle holding ip_networks
  std::string netns;        ///< cnf: CNI_NETNS of the ADD
  std::string revision;     ///< the resource's, when read from the datastore
  friend bool operator==(const workload_endpoint&, const workload_endpoint&) = default;

  bool k8s() const noexcept { return orchestrator == "k8s"; }
  /// "<ns>/<name>": the key a policy part indexes endpoints by.
  std::string key() const { return ns + "/" + name; }
};

/// Calico's naming: <node>-k8s-<pod>-<endpoint>, or for a bare container
/// <node>-cni-<container id>-<endpoint>, each part with '-' doubled.
inline std::string workload_endpoint_name(std::string_view node, bool k8s, std::string_view pod_or_container, std::string_view endpoint) {
  auto esc = [](std::string_view s) {
    std::string o;
    for (char c : s) o += c == '-' ? std::string("--") : std::string(1, c);
    return o;
  };
  return esc(node) + (k8s ? "-k8s-" : "-cni-") + esc(pod_or_container) + "-" + esc(endpoint);
}

/// Reads a WorkloadEndpoint resource. Errors name the resource and the field.
inline result<workload_endpoint> parse_workload_endpoint(const resource& r) {
  const std::string what = "WorkloadEndpoint/" + (r.ns.empty() ? "" : r.ns + "/") + r.name;
  auto fail = [&](std::string_view field, std::string_view msg) {
    return error(errc::invalid, what + ": " + std::string(field) + ": " + std::string(msg));
  };
  boost::system::error_code ec;
  auto v = boost::json::parse(r.spec, ec);
  if (ec || !v.is_object()) return fail("spec", "not a JSON object");
  const auto& o = v.get_object();
  workload_endpoint w;
  w.ns = r.ns;
  w.name = r.name;
  w.labels = r.labels;
  w.revision = r.revision;
  struct field {
    const char* key;
    std::string* out;
  };
  for (auto [key, out] : {field{"orchestrator", &w.orchestrator}, field{"node", &w.node}, field{"containerID", &w.container_id},
                          field{"pod", &w.pod}, field{"endpoint", &w.endpoint}, field{"interfaceName", &w.interface_name},
                          field{"serviceAccountName", &w.service_account_name}, field{"network", &w.network},
                          field{"ipamHandle", &w.ipam_handle}, field{"netns", &w.netns}}) {
    const auto* p = o.if_contains(key);
    if (!p || p->is_null()) continue;
    if (!p->is_string()) return fail(std::string("spec.") + key, "expected a string");
    *out = std::string(p->get_string());
  }
  if (w.node.empty()) return fail("spec.node", "missing");
  if (w.container_id.empty()) return fail("spec.containerID", "missing");
  if (!w.orchestrator.empty() && w.orchestrator != "k8s" && w.orchestrator != "cni")
    return fail("spec.orchestrator", "'" + w.orchestrator + "' is neither \"k8s\" nor \"cni\"");
  if (w.orchestrator.empty()) w.orchestrator = w.pod.empty() ? "cni" : "k8s";
  auto strings = [&](const char* key, auto&& each) -> result<void> {
    const auto* p = o.if_contains(key);
    if (!p || p->is_null()) return {};
    if (!p->is_array()) return fail(std::string("spec.") + key, "expected an array");
    std::size_t i = 0;
    for (auto& e : p->get_array()) {
      const std::string f = std::string("spec.") + key + "[" + std::to_string(i++) + "]";
      if (!e.is_string()) return fail(f, "expected a string");
      if (auto r2 = each(f, std::string_view(e.get_string())); !r2) return r2;
    }
    return {};
  };
  if (auto s = strings("ipNetworks", [&](const std::string& f, std::string_view t) -> result<void> {
        auto p = ip_prefix::parse(t, /*allow_host_bits=*/true);
        if (!p) return fail(f, "'" + std::string(t) + "' is not an address with a prefix length");
        w.ip_networks.push_back(*p);
        return {};
      });
      !s)
    return s.error();
  if (auto s = strings("profiles", [&](const std::string&, std::string_view t) -> result<void> {
        w.profiles.emplace_back(t);
        return {};
      });
      !s)
    return s.error();
  if (const auto* m = o.if_contains("mac"); m && !m->is_null()) {
    if (!m->is_string()) return fail("spec.mac", "expected a string");
    if (!m->get_string().empty()) {
      auto mac = mac_address::parse(std::string_view(m->get_string()));
      if (!mac) return fail("spec.mac", "'" + std::string(m->get_string()) + "' is not a MAC address (aa:bb:cc:dd:ee:ff)");
      w.mac = *mac;
    }
  }
  return w;
}

/// The spec JSON, in Calico's field names (empty optional fields left out).
inline std::string to_spec_json(const workload_endpoint& w) {
  boost::json::object spec;
  auto put = [&](const char* k, const std::string& v) {
    if (!v.empty()) spec[k] = v;
  };
  put("orchestrator", w.orchestrator);
  put("node", w.node);
  put("containerID", w.container_id);
  put("pod", w.pod);
  put("endpoint", w.endpoint);
  put("interfaceName", w.interface_name);
  boost::json::array nets;
  for (auto& a : w.ip_networks) nets.emplace_back(a.to_string());
  spec["ipNetworks"] = std::move(nets);
  if (w.mac) spec["mac"] = w.mac->to_string();
  if (!w.profiles.empty()) {
    boost::json::array p;
    for (auto& s : w.profiles) p.emplace_back(s);
    spec["profiles"] = std::move(p);
  }
  put("serviceAccountName", w.service_account_name);
  put("network", w.network);
  put("ipamHandle", w.ipam_handle);
  put("netns", w.netns);
  return boost::json::serialize(spec);
}

inline resource to_resource(const workload_endpoint& w) {
  resource r;
  r.kind = std::string(kinds::workload_endpoint);
  r.ns = w.ns;
  r.name = w.name;
  r.labels = w.labels;
  r.revision = w.revision;
  r.spec = to_spec_json(w);
  return r;
}

}  // namespace model
CNF_END_NAMESPACE
