// WorkloadEndpoint records: what the CNI plugin tells the rest of cnf about each pod
// interface, as the CNI commands see it (pod identity, interface names). The resource, its
// name and its JSON are the framework's one model, cnf::model::workload_endpoint
// (cnf/model/workload_endpoint.hpp), which the policy part receives too; this file only
// converts between the two and stores them.
#pragma once
#include <cnf/cni/env.hpp>
#include <cnf/datastore.hpp>
#include <cnf/model/workload_endpoint.hpp>

#include <boost/json.hpp>

#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace cni {

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

/// Calico's naming (cnf::model::workload_endpoint_name).
inline std::string workload_endpoint_name(const std::string& node, const pod_identity& pod, const std::string& container_id,
                                          const std::string& ifname) {
  return cnf::model::workload_endpoint_name(node, pod.k8s(), pod.k8s() ? pod.name : container_id, ifname);
}

inline std::string workload_endpoint_ns(const pod_identity& pod) { return pod.k8s() ? pod.ns : "cni"; }

/// The framework's model of this record (resource name, namespace and labels included).
inline cnf::model::workload_endpoint to_model(const workload_endpoint_record& r) {
  cnf::model::workload_endpoint w;
  w.ns = workload_endpoint_ns(r.pod);
  w.name = workload_endpoint_name(r.node, r.pod, r.container_id, r.pod_ifname);
  w.orchestrator = r.pod.k8s() ? "k8s" : "cni";
  w.labels = {{"projectcalico.org/orchestrator", w.orchestrator}};
  if (r.pod.k8s()) w.labels["projectcalico.org/namespace"] = r.pod.ns;
  w.node = r.node;
  w.container_id = r.container_id;
  if (r.pod.k8s()) w.pod = r.pod.name;
  w.endpoint = r.pod_ifname;
  w.interface_name = r.host_ifname;
  w.ip_networks = r.addresses;
  w.mac = r.mac;
  if (r.pod.k8s()) w.profiles = {"kns." + r.pod.ns};
  w.network = r.network;
  w.ipam_handle = r.handle;
  w.netns = r.netns;
  return w;
}

inline cnf::result<void> put_workload_endpoint(const cnf::any_datastore& ds, const workload_endpoint_record& r) {
  cnf::resource res = cnf::model::to_resource(to_model(r));
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
  auto m = cnf::model::parse_workload_endpoint(r);
  if (!m) return m.error();
  workload_endpoint_record w;
  w.node = m->node;
  w.container_id = m->container_id;
  w.pod.name = m->pod;
  w.pod.ns = w.pod.name.empty() ? "" : r.ns;
  w.pod_ifname = m->endpoint;
  w.host_ifname = m->interface_name;
  w.network = m->network;
  w.handle = m->ipam_handle;
  w.netns = m->netns;
  w.addresses = m->ip_networks;
  if (m->mac) w.mac = *m->mac;
  w.ns = r.ns;
  w.name = r.name;
  w.revision = r.revision;
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

}  // namespace cni
CNF_END_NAMESPACE
