// cnf/plugins/kubernetes.hpp — the `kubernetes` datastore: cnf resources as custom
// resources (CRDs) in a Kubernetes API server, plus read access to core Nodes,
// Namespaces and Pods.
//
//   cnf::kubernetes::options o;
//   o.kubeconfig = "/etc/cnf/kubeconfig";                  // or o.in_cluster = true
//   auto ds = cnf::kubernetes::datastore::open(o).value();
//   auto pool = ds.get({"IPPool", "", "default-ipv4"});
//   auto nodes = ds.list_nodes();                         // core v1 Nodes
//
// Mapping (see examples/crds/README.md): kind K lives at
// /apis/<group>/<version>/[namespaces/<ns>/]<plural of K>; cnf's name, namespace, labels
// and revision are the object's metadata.name (encoded with encode_name() when it is not
// a DNS-1123 subdomain), metadata.namespace, metadata.labels and metadata.resourceVersion;
// cnf's spec is the object's `spec`. update() is a PUT carrying the revision as
// metadata.resourceVersion (409 -> errc::conflict) and the annotation
// cnf.dev/replaces=<that revision>, so that every update is a write with a new revision
// even when nothing else changed; create() is a POST (409 -> errc::already_exists),
// remove() a DELETE with preconditions.resourceVersion. Other annotations are not kept.
//
// Transport: HTTPS (Boost.Beast + Asio SSL) over kept-alive connections; plain HTTP only
// with insecure_http = true. Every call is bounded by `timeout`; an unreachable server
// gives errc::unavailable naming the endpoint. Asio and Beast stay inside the library.
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/executor.hpp>
#include <cnf/log.hpp>
#include <cnf/settings.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace kubernetes {

inline constexpr std::string_view default_group = "crd.cnf.dev";
inline constexpr std::string_view default_version = "v1";
inline constexpr std::string_view default_serviceaccount_dir = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The plugin's settings (profile section [datastore] with plugin = "kubernetes").
struct options {
  std::string kubeconfig;  ///< path of a kubeconfig file; or:
  bool in_cluster = false; ///< service account token + CA, KUBERNETES_SERVICE_HOST/PORT
  std::string context;     ///< kubeconfig context; empty = the file's current-context
  std::string serviceaccount_dir = std::string(default_serviceaccount_dir);
  std::string server;      ///< overrides the server URL from kubeconfig / environment
  bool insecure_http = false;  ///< allow http:// servers (tests, local proxies)
  std::chrono::milliseconds timeout{5000};   ///< bound on every request
  std::chrono::seconds watch_timeout{300};   ///< server-side length of one watch request
  std::string group = std::string(default_group);
  std::string version = std::string(default_version);
};

/// Reads and validates the plugin's settings; errors name the key. No I/O.
options configure(cnf::settings& s);

// ---- core resources (read-only) ------------------------------------------------------

struct node_address {
  std::string type;     ///< InternalIP, ExternalIP, Hostname, ...
  std::string address;
  friend bool operator==(const node_address&, const node_address&) = default;
};

struct node_info {
  std::string name;
  std::map<std::string, std::string> labels;
  std::vector<node_address> addresses;  ///< status.addresses
  std::vector<std::string> pod_cidrs;   ///< spec.podCIDRs (or spec.podCIDR)
  std::string resource_version;
};

struct namespace_info {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string resource_version;
};

struct pod_info {
  std::string ns;
  std::string name;
  std::map<std::string, std::string> labels;
  std::string node_name;              ///< spec.nodeName (empty while unscheduled)
  std::string service_account;        ///< spec.serviceAccountName
  bool host_network = false;          ///< spec.hostNetwork
  std::string phase;                  ///< status.phase
  std::string host_ip;                ///< status.hostIP
  std::vector<std::string> pod_ips;   ///< status.podIPs[].ip (or status.podIP)
  std::string resource_version;
};

// ---- names ---------------------------------------------------------------------------

/// True for a valid DNS-1123 subdomain: at most 253 characters of [a-z0-9.-], dot-separated
/// labels that start and end with [a-z0-9].
bool is_dns1123_subdomain(std::string_view s) noexcept;

/// Maps a cnf resource name to a Kubernetes object name, reversibly. A name that is a
/// DNS-1123 subdomain and does not start with "enc--" is used as it is. Any other name
/// becomes "enc--" followed by the name with every byte outside [a-z0-9] written as '-'
/// and two lowercase hex digits, except a '.' between two [a-z0-9] characters, which stays:
///   "10.244.0.0/26" -> "enc--10.244.0.0-2f26",  "fd00::/120" -> "enc--fd00-3a-3a-2f120".
/// errc::invalid when the result would exceed 253 characters.
result<std::string> encode_name(std::string_view name);
/// The inverse of encode_name(); errc::invalid for a malformed "enc--" name.
result<std::string> decode_name(std::string_view object_name);

/// The CRD plural of a cnf kind: lower case + "s" ("IPPool" -> "ippools"), "y" -> "ies"
/// ("BlockAffinity" -> "blockaffinities", "NetworkPolicy" -> "networkpolicies").
std::string plural_of(std::string_view kind);

/// Where a cnf kind lives in the API server. Calico's kinds are cnf's custom resources
/// (examples/crds): /apis/<group>/<version>/[namespaces/<ns>/]<plural_of(kind)>, the object's
/// kind cnf's kind. Two kinds the policy part reads are Kubernetes' own types:
///   KubernetesNetworkPolicy -> networking.k8s.io/v1 NetworkPolicy (namespaced; its spec is cnf's spec)
///   Namespace               -> core v1 Namespace (cluster-scoped; its labels are cnf's labels)
///   ServiceAccount          -> core v1 ServiceAccount (namespaced; labels only: it has no spec)
///   Pod                     -> core v1 Pod (namespaced; for the policy part, which watches them:
///                              labels, and as cnf's spec a summary {nodeName, serviceAccountName,
///                              hostNetwork, podIPs (status.podIPs[].ip)}; cnf only reads Pods,
///                              a write sends the summary as the spec, which only the stand-in
///                              API server of the tests takes)
struct api_resource {
  std::string prefix;       ///< "/apis/crd.cnf.dev/v1", "/apis/networking.k8s.io/v1", "/api/v1"
  std::string plural;       ///< "networkpolicies", "namespaces", ...
  std::string api_version;  ///< the object's apiVersion: "crd.cnf.dev/v1", "networking.k8s.io/v1", "v1"
  std::string kind;         ///< the object's kind ("NetworkPolicy" for KubernetesNetworkPolicy)
  bool custom = true;       ///< false for Kubernetes' own types (no CRD to install)
  bool has_spec = true;     ///< false for a type whose fields sit beside metadata (ServiceAccount)
};
api_resource api_resource_of(std::string_view kind, std::string_view group = default_group, std::string_view version = default_version);

/// Whether cnf's CRD for `kind` is namespaced (WorkloadEndpoint, NetworkPolicy,
/// NetworkSet, KubernetesNetworkPolicy, ServiceAccount, Pod) or cluster-scoped (every other kind in cnf::kinds,
/// GlobalNetworkSet, Namespace); nullopt for a kind cnf
/// ships no CRD for (its scope is then taken from the namespace the caller gives).
/// Keys that contradict the scope are errc::invalid: Kubernetes fixes a kind's scope.
std::optional<bool> kind_is_namespaced(std::string_view kind) noexcept;

// ---- the datastore -------------------------------------------------------------------

/// Models cnf::datastore. Copies share one connection pool; thread-safe.
class datastore {
 public:
  /// Reads the kubeconfig or in-cluster files and prepares TLS; does not connect yet.
  /// `exec`: where watch callbacks run (null: on the watch's own thread).
  static result<datastore> open(const options& o, logger* log = nullptr, executor* exec = nullptr);

  result<resource> get(const resource_key& k);
  result<resource_list> list(const list_options& o);
  result<resource> create(const resource& r);
  /// Compare-and-swap on r.revision. An empty revision updates whatever is stored
  /// (read, then PUT with the read revision, retried on conflict).
  result<resource> update(const resource& r);
  /// With a revision: only if it still matches (errc::conflict otherwise).
  result<void> remove(const resource_key& k, std::string_view revision);
  result<watch_handle> watch(const watch_options& o, watch_callback cb);
  result<datastore_status> status();

  result<std::vector<node_info>> list_nodes();
  result<node_info> get_node(std::string_view name);
  result<std::vector<namespace_info>> list_namespaces();
  /// Pods of one namespace, or of all namespaces when `ns` is nullopt.
  result<std::vector<pod_info>> list_pods(const std::optional<std::string>& ns = std::nullopt);

  /// The API server's URL, e.g. "https://10.96.0.1:443".
  std::string server() const;

  struct impl;

 private:
  explicit datastore(std::shared_ptr<impl> p) : p_(std::move(p)) {}
  std::shared_ptr<impl> p_;
};

}  // namespace kubernetes
CNF_END_NAMESPACE
