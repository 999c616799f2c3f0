// cnf/plugins/etcd.hpp — the `etcd` datastore: cnf resources in etcd v3.
//
// Talks to etcd's v3 JSON gateway (`/v3/kv/*`, `/v3/watch`, `/v3/auth/authenticate`) over
// HTTP/1.1 or HTTPS, with a small pool of kept-alive connections per endpoint, failover
// across a list of endpoints, TLS with a CA and a client certificate, optional user/password
// authentication, and one bounded timeout on every call. Asio and Beast stay inside the
// library: this header only needs the cnf core headers.
//
//   cnf::etcd_config c;
//   c.endpoints = {"http://127.0.0.1:2379"};
//   auto ds = cnf::etcd_datastore::open(c);            // validates; does not contact etcd
//   if (!ds) { /* ds.error().message names the setting */ }
//   auto r = ds->create({"IPPool", "", "default", {}, R"({"cidr":"10.244.0.0/16"})"});
//   cnf::any_datastore any = *ds;                      // models cnf::datastore
//
// Key layout (see plugins/datastore-etcd/README.md):
//   <prefix>/resources/v3/<kind>/<namespace or _cluster>/<name>
// value = {"labels":{...},"spec":{...}}; a resource's revision is its key's mod_revision.
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/executor.hpp>
#include <cnf/log.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE

class settings;

/// Settings of the etcd datastore (profile keys of the same names).
struct etcd_config {
  std::vector<std::string> endpoints{"http://127.0.0.1:2379"};  ///< http:// or https:// URLs, tried in order
  std::string ca_file;    ///< PEM CA bundle for https endpoints (system store when empty)
  std::string cert_file;  ///< PEM client certificate (with key_file)
  std::string key_file;   ///< PEM private key of cert_file
  std::string username;   ///< etcd user (with password); empty = no authentication
  std::string password;
  std::chrono::milliseconds timeout{5000};  ///< bound on every call (timeout_ms)
  std::string prefix = "/cnf";             ///< root of cnf's keys
};

/// Reads and validates the etcd settings of a profile section; problems are recorded in
/// `s` (naming the key), the host reports them with s.finish().
etcd_config configure_etcd(settings& s);

/// Validates a config built in code; the error names the field.
result<void> check_etcd_config(const etcd_config& c);

/// The etcd key of a resource: <prefix>/resources/v3/<kind>/<namespace or _cluster>/<name>,
/// each segment percent-escaped (see README.md).
std::string etcd_resource_key(std::string_view prefix, const resource_key& k);

/// The resource key encoded in an etcd key, or errc::invalid naming the key.
result<resource_key> etcd_parse_resource_key(std::string_view prefix, std::string_view key);

namespace detail {
class etcd_store;
}

/// The etcd datastore. Copies share one client (connections, watches, auth token).
/// Every operation returns within the configured timeout.
class etcd_datastore {
 public:
  /// Validates `c`, loads TLS files. Does not contact etcd: an unreachable endpoint shows
  /// up as errc::unavailable on the first call. Watch events go to `exec` when given,
  /// otherwise to a thread of each watch.
  static result<etcd_datastore> open(etcd_config c, logger* log = nullptr, executor* exec = nullptr);

  result<resource> get(const resource_key& k);
  result<resource_list> list(const list_options& o);
  result<resource> create(const resource& r);
  result<resource> update(const resource& r);
  result<void> remove(const resource_key& k, std::string_view revision = {});
  result<watch_handle> watch(const watch_options& o, watch_callback cb);
  result<datastore_status> status();

  const etcd_config& config() const noexcept;

 private:
  explicit etcd_datastore(std::shared_ptr<detail::etcd_store> s) : s_(std::move(s)) {}
  std::shared_ptr<detail::etcd_store> s_;
};

CNF_END_NAMESPACE
