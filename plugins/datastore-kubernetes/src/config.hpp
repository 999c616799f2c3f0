// Where the API server is and how to authenticate: from a kubeconfig file or from the
// in-cluster service account. Internal to the kubernetes datastore.
#pragma once
#include "http.hpp"

#include <cnf/plugins/kubernetes.hpp>

#include <string>

CNF_BEGIN_NAMESPACE
namespace kubernetes::detail {

struct connection_config {
  endpoint ep;
  tls_material tls;
  std::string token;       ///< bearer token given inline
  std::string token_file;  ///< bearer token read from this file (re-read as it rotates)
  std::string source;      ///< "kubeconfig /path (context x)" or "in-cluster (/var/run/...)", for messages
};

/// Reads the kubeconfig or the service account files named by `o`; errors name the file
/// and the key. Applies o.server and enforces HTTPS unless o.insecure_http.
result<connection_config> resolve_connection(const options& o);

/// Reads a whole file; errc::invalid naming `what` and the path when it cannot.
result<std::string> read_file(const std::string& path, const std::string& what);

}  // namespace kubernetes::detail
CNF_END_NAMESPACE
