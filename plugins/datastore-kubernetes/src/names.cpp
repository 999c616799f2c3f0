// Kubernetes object names for cnf resource names, CRD plurals for cnf kinds, and where each
// kind lives in the API server (cnf's CRDs, or Kubernetes' own NetworkPolicy, Namespace,
// ServiceAccount and Pod).
#include <cnf/plugins/kubernetes.hpp>

CNF_BEGIN_NAMESPACE
namespace kubernetes {
namespace {

constexpr std::string_view marker = "enc--";
constexpr std::size_t max_name = 253;
// Kinds the policy part reads that cnf::kinds does not name (cnf/policy/host.hpp).
constexpr std::string_view kubernetes_network_policy = "KubernetesNetworkPolicy";
constexpr std::string_view namespace_kind = "Namespace";
constexpr std::string_view service_account_kind = "ServiceAccount";
constexpr std::string_view pod_kind = "Pod";
constexpr std::string_view global_network_set = "GlobalNetworkSet";

bool alnum(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

bool is_dns1123_subdomain(std::string_view s) noexcept {
  if (s.empty() || s.size() > max_name) return false;
  std::size_t label_start = 0;
  for (std::size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == '.') {
      if (i == label_start) return false;                      // empty label
      if (!alnum(s[label_start]) || !alnum(s[i - 1])) return false;
      label_start = i + 1;
    } else if (!alnum(s[i]) && s[i] != '-') {
      return false;
    }
  }
  return true;
}

result<std::string> encode_name(std::string_view name) {
  if (name.empty()) return error(errc::invalid, "a resource name must not be empty");
  if (is_dns1123_subdomain(name) && name.substr(0, marker.size()) != marker) return std::string(name);
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(marker);
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool keep_dot = c == '.' && i > 0 && i + 1 < name.size() && alnum(name[i - 1]) && alnum(name[i + 1]);
    if (alnum(c) || keep_dot) {
      out += c;
    } else {
      auto b = static_cast<unsigned char>(c);
      out += '-';
      out += digits[b >> 4];
      out += digits[b & 15];
    }
  }
  if (out.size() > max_name)
    return error(errc::invalid, "resource name '" + std::string(name) + "' is too long for Kubernetes once encoded (" +
                                    std::to_string(out.size()) + " > 253 characters)");
  return out;
}

result<std::string> decode_name(std::string_view object_name) {
  if (object_name.substr(0, marker.size()) != marker) return std::string(object_name);
  auto body = object_name.substr(marker.size());
  std::string out;
  for (std::size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (alnum(c) || c == '.') {
      out += c;
    } else if (c == '-' && i + 2 < body.size() && hex_value(body[i + 1]) >= 0 && hex_value(body[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(body[i + 1]) * 16 + hex_value(body[i + 2]));
      i += 2;
    } else {
      return error(errc::invalid, "object name '" + std::string(object_name) + "' is not a valid encoded cnf name");
    }
  }
  // Only the canonical form decodes, so that two object names never map to one cnf name.
  auto again = encode_name(out);
  if (!again || *again != object_name)
    return error(errc::invalid, "object name '" + std::string(object_name) + "' is not a canonical encoded cnf name");
  return out;
}

std::string plural_of(std::string_view kind) {
  std::string s;
  for (char c : kind) s += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  if (s.size() >= 2 && s.back() == 'y' && std::string_view("aeiou").find(s[s.size() - 2]) == std::string_view::npos) {
    s.pop_back();
    return s + "ies";
  }
  if (!s.empty() && s.back() == 's') return s + "es";
  return s + "s";
}

api_resource api_resource_of(std::string_view kind, std::string_view group, std::string_view version) {
  if (kind == kubernetes_network_policy) return {"/apis/networking.k8s.io/v1", "networkpolicies", "networking.k8s.io/v1", "NetworkPolicy", false};
  if (kind == namespace_kind) return {"/api/v1", "namespaces", "v1", "Namespace", false};
  if (kind == service_account_kind) return {"/api/v1", "serviceaccounts", "v1", "ServiceAccount", false, false};
  if (kind == pod_kind) return {"/api/v1", "pods", "v1", "Pod", false};
  const std::string gv = std::string(group) + "/" + std::string(version);
  return {"/apis/" + gv, plural_of(kind), gv, std::string(kind), true};
}

std::optional<bool> kind_is_namespaced(std::string_view kind) noexcept {
  if (kind == kinds::workload_endpoint || kind == kinds::network_policy || kind == kinds::network_set ||
      kind == kubernetes_network_policy || kind == service_account_kind || kind == pod_kind)
    return true;
  if (kind == global_network_set || kind == namespace_kind) return false;
  for (auto k : {kinds::ip_pool, kinds::ipam_block, kinds::block_affinity, kinds::ipam_handle, kinds::ipam_config,
                 kinds::ip_reservation, kinds::node, kinds::bgp_peer, kinds::bgp_configuration, kinds::bgp_filter,
                 kinds::global_network_policy, kinds::host_endpoint})
    if (kind == k) return false;
  return std::nullopt;
}

}  // namespace kubernetes
CNF_END_NAMESPACE
