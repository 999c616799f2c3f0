// WorkloadEndpoint records: what the CNI plugin tells the rest of cnf about each pod
// interface. Resource kind WorkloadEndpoint, namespace = the pod's, name and spec fields
// as Calico's projectcalico.org/v3 WorkloadEndpoint (plus cnf's network/handle/netns).
#pragma once
#include <cnf/cni/env.hpp>
#include <cnf/datastore.hpp>

#include <boost/json.hpp>

#include <string>
#include <vector>

namespace cnf_app {

/// Who the attachment belongs to: a Kubernetes pod, or a bare container.
struct pod_identity {
  std::string ns;
  std::string name;
  bool k8s() const noexcept { return !name.empty(); }
  std::string describe() const { return k8s() ? ns + "/" + name : "(no pod)"; }
  static pod_identity from(const cnf::cni::cni_args& a) {
    pod_identity p;
    p.name = a.k8s_pod_name;
    p.ns = a.k8s_pod_namespace.empty() ? (p.name.empty() ? "" : "default") : a.k8s_pod_namespace;
    return p;
  }
};

inline std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (!s.empty()) {
    auto i = s.find(sep);
    out.push_back(s.substr(0, i));
    if (i == std::string_view::npos) break;
    s.remove_prefix(i + 1);
  }
  return out;
}

inline std::string join_prefixes(const std::vector<cnf::ip_prefix>& v) {
  std::string s;
  for (auto& p : v) s += (s.empty() ? "" : ",") + p.to_string();
  return s;
}

struct workload_endpoint_record {
  std::string node;
  pod_identity pod;
  std::string container_id;
  std::string pod_ifname;
  std::string host_ifname;
  std::string network;
  std::string handle;
  std::string netns;
  std::vector<cnf::ip_prefix> addresses;
  cnf::mac_address mac;
  std::string ns;    ///< resource namespace (filled when read back)
  std::string name;  ///< resource name (filled when read back)
  std::string revision;
};

/// Calico's naming: <node>-k8s-<pod>-<endpoint>, each part with '-' doubled; bare
/// containers use <node>-cni-<container id>-<ifname>.
inline std::string workload_endpoint_name(const std::string& node, const pod_identity& pod, const std::string& container_id,
                                          const std::string& ifname) {
  auto esc = [](std::string_view s) {
    std::string o;
    for (char c : s) {
      if (c == '-') o += "--";
      else o += c;
    }
    return o;
  };
  if (pod.k8s()) return esc(node) + "-k8s-" + esc(pod.name) + "-" + esc(ifname);
  return esc(node) + "-cni-" + esc(container_id) + "-" + esc(ifname);
}

inline std::string workload_endpoint_ns(const pod_identity& pod) { return pod.k8s() ? pod.ns : "cni"; }

inline cnf::result<void> put_workload_endpoint(const cnf::any_datastore& ds, const workload_endpoint_record& r) {
  boost::json::object spec;
  spec["orchestrator"] = r.pod.k8s() ? "k8s" : "cni";
  spec["node"] = r.node;
  spec["containerID"] = r.container_id;
  if (r.pod.k8s()) spec["pod"] = r.pod.name;
  spec["endpoint"] = r.pod_ifname;
  spec["interfaceName"] = r.host_ifname;
  boost::json::array nets;
  for (auto& a : r.addresses) nets.emplace_back(a.to_string());
  spec["ipNetworks"] = std::move(nets);
  spec["mac"] = r.mac.to_string();
  if (r.pod.k8s()) spec["profiles"] = boost::json::array{boost::json::string("kns." + r.pod.ns)};
  spec["network"] = r.network;
  spec["ipamHandle"] = r.handle;
  spec["netns"] = r.netns;
  cnf::resource res;
  res.kind = std::string(cnf::kinds::workload_endpoint);
  res.ns = workload_endpoint_ns(r.pod);
  res.name = workload_endpoint_name(r.node, r.pod, r.container_id, r.pod_ifname);
  res.labels = {{"projectcalico.org/orchestrator", r.pod.k8s() ? "k8s" : "cni"}};
  if (r.pod.k8s()) res.labels["projectcalico.org/namespace"] = r.pod.ns;
  res.spec = boost::json::serialize(spec);
  auto made = ds.create(res);
  if (made || made.error().code != cnf::errc::already_exists) return made ? cnf::result<void>{} : cnf::result<void>(made.error());
  // A retried ADD for the same attachment: replace the record.
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto cur = ds.get(res.key());
    if (!cur) {
      if (cur.error().code == cnf::errc::not_found) {
        if (auto m = ds.create(res); m || m.error().code != cnf::errc::already_exists) return m ? cnf::result<void>{} : cnf::result<void>(m.error());
        continue;
      }
      return cur.error();
    }
    res.revision = cur->revision;
    auto u = ds.update(res);
    if (u) return {};
    if (u.error().code != cnf::errc::conflict) return u.error();
  }
  return cnf::error(cnf::errc::conflict, "workload endpoint " + res.key().to_string() + ": kept changing while being replaced");
}

inline cnf::result<workload_endpoint_record> parse_workload_endpoint(const cnf::resource& r) {
  boost::system::error_code ec;
  auto v = boost::json::parse(r.spec, ec);
  if (ec || !v.is_object()) return cnf::error(cnf::errc::invalid, "workload endpoint " + r.key().to_string() + ": spec is not a JSON object");
  auto& o = v.as_object();
  auto str = [&](const char* k) -> std::string {
    auto* p = o.if_contains(k);
    return p && p->is_string() ? std::string(p->as_string()) : std::string();
  };
  workload_endpoint_record w;
  w.node = str("node");
  w.container_id = str("containerID");
  w.pod.name = str("pod");
  w.pod.ns = w.pod.name.empty() ? "" : r.ns;
  w.pod_ifname = str("endpoint");
  w.host_ifname = str("interfaceName");
  w.network = str("network");
  w.handle = str("ipamHandle");
  w.netns = str("netns");
  if (auto* nets = o.if_contains("ipNetworks"); nets && nets->is_array())
    for (auto& n : nets->as_array())
      if (n.is_string())
        if (auto p = cnf::ip_prefix::parse(std::string(n.as_string()), true)) w.addresses.push_back(*p);
  if (auto m = cnf::mac_address::parse(str("mac"))) w.mac = *m;
  w.ns = r.ns;
  w.name = r.name;
  w.revision = r.revision;
  if (w.node.empty() || w.container_id.empty())
    return cnf::error(cnf::errc::invalid, "workload endpoint " + r.key().to_string() + ": spec.node or spec.containerID missing");
  return w;
}

inline cnf::result<workload_endpoint_record> get_workload_endpoint(const cnf::any_datastore& ds, const std::string& node,
                                                                   const pod_identity& pod, const std::string& cid,
                                                                   const std::string& ifname) {
  auto r = ds.get({std::string(cnf::kinds::workload_endpoint), workload_endpoint_ns(pod), workload_endpoint_name(node, pod, cid, ifname)});
  if (!r) return r.error();
  return parse_workload_endpoint(*r);
}

/// Removes the record of this attachment; a missing record is not an error (DEL twice).
inline cnf::result<void> delete_workload_endpoint(const cnf::any_datastore& ds, const std::string& node, const pod_identity& pod,
                                                  const std::string& cid, const std::string& ifname) {
  auto r = ds.remove({std::string(cnf::kinds::workload_endpoint), workload_endpoint_ns(pod), workload_endpoint_name(node, pod, cid, ifname)});
  if (!r && r.error().code != cnf::errc::not_found) return r;
  return {};
}

inline cnf::result<void> remove_workload_endpoint(const cnf::any_datastore& ds, const workload_endpoint_record& w) {
  auto r = ds.remove({std::string(cnf::kinds::workload_endpoint), w.ns, w.name}, w.revision);
  if (!r && r.error().code != cnf::errc::not_found) return r;
  return {};
}

/// Every workload endpoint of `node` (all nodes when empty); records that do not parse
/// are skipped by callers that only clean up, and reported by `cnf ipam check`.
inline cnf::result<std::vector<workload_endpoint_record>> list_workload_endpoints(const cnf::any_datastore& ds, const std::string& node,
                                                                                  std::vector<cnf::error>* bad = nullptr) {
  auto all = ds.list_all({.kind = std::string(cnf::kinds::workload_endpoint)});
  if (!all) return all.error();
  std::vector<workload_endpoint_record> out;
  for (auto& r : all->items) {
    auto w = parse_workload_endpoint(r);
    if (!w) {
      if (bad) bad->push_back(w.error());
      continue;
    }
    if (node.empty() || w->node == node) out.push_back(std::move(*w));
  }
  return out;
}

}  // namespace cnf_app
