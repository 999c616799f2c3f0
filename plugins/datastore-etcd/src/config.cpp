// Settings of the etcd datastore: reading a profile section and validating a config.
#include <cnf/plugins/etcd.hpp>
#include <cnf/settings.hpp>

#include "transport.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>

CNF_BEGIN_NAMESPACE

namespace {

using report_fn = std::function<void(std::string_view key, std::string message)>;

void check_file(const std::string& path, std::string_view key, const report_fn& report) {
  if (path.empty()) return;
  if (::access(path.c_str(), R_OK) != 0) report(key, "cannot read '" + path + "': " + std::strerror(errno));
}

// Every rule in one place, for both the profile reader and code-built configs.
void check(const etcd_config& c, const report_fn& report) {
  bool any_tls = false;
  if (c.endpoints.empty()) report("endpoints", "needs at least one URL, e.g. [\"http://127.0.0.1:2379\"]");
  for (auto& url : c.endpoints) {
    auto ep = detail::etcd::parse_endpoint(url);
    if (!ep) report("endpoints", ep.error().message);
    else any_tls = any_tls || ep->tls;
  }
  check_file(c.ca_file, "ca_file", report);
  check_file(c.cert_file, "cert_file", report);
  check_file(c.key_file, "key_file", report);
  if (!c.cert_file.empty() && c.key_file.empty()) report("key_file", "is required with cert_file");
  if (c.cert_file.empty() && !c.key_file.empty()) report("cert_file", "is required with key_file");
  if (!any_tls && !c.endpoints.empty()) {
    if (!c.ca_file.empty()) report("ca_file", "is set but no endpoint uses https://");
    if (!c.cert_file.empty()) report("cert_file", "is set but no endpoint uses https://");
  }
  if (!c.username.empty() && c.password.empty()) report("password", "is required with username");
  if (c.username.empty() && !c.password.empty()) report("username", "is required with password");
  if (c.timeout.count() < 1 || c.timeout.count() > 3'600'000) report("timeout_ms", "must be between 1 and 3600000 milliseconds");
  if (c.prefix.size() < 2 || c.prefix.front() != '/' || c.prefix.back() == '/')
    report("prefix", "must start with '/' and not end with '/', e.g. \"/cnf\" (got '" + c.prefix + "')");
  else if (c.prefix.find('\0') != std::string::npos)
    report("prefix", "must not contain NUL bytes");
}

}  // namespace

etcd_config configure_etcd(settings& s) {
  etcd_config c;
  c.endpoints = s.get<std::vector<std::string>>("endpoints", c.endpoints);
  c.ca_file = s.get<std::string>("ca_file", "");
  c.cert_file = s.get<std::string>("cert_file", "");
  c.key_file = s.get<std::string>("key_file", "");
  c.username = s.get<std::string>("username", "");
  c.password = s.get<std::string>("password", "");
  c.timeout = std::chrono::milliseconds(s.get<std::int64_t>("timeout_ms", c.timeout.count()));
  c.prefix = s.get<std::string>("prefix", c.prefix);
  check(c, [&](std::string_view key, std::string msg) { s.fail(key, std::move(msg)); });
  return c;
}

result<void> check_etcd_config(const etcd_config& c) {
  std::optional<error> first;
  check(c, [&](std::string_view key, std::string msg) {
    if (!first) first = error(errc::invalid, "etcd datastore: " + std::string(key) + ": " + msg);
  });
  if (first) return *first;
  return {};
}

CNF_END_NAMESPACE
