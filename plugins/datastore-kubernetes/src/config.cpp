// Settings, kubeconfig (yaml-cpp) and in-cluster configuration.
#include "config.hpp"

#include <boost/beast/core/detail/base64.hpp>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

CNF_BEGIN_NAMESPACE
namespace kubernetes {

options configure(cnf::settings& s) {
  options o;
  o.kubeconfig = s.get<std::string>("kubeconfig", "");
  o.context = s.get<std::string>("context", "");
  o.in_cluster = s.get<bool>("in_cluster", false);
  o.serviceaccount_dir = s.get<std::string>("serviceaccount_dir", std::string(default_serviceaccount_dir));
  o.server = s.get<std::string>("server", "");
  o.insecure_http = s.get<bool>("insecure_http", false);
  auto timeout_ms = s.get<std::int64_t>("timeout_ms", 5000);
  auto watch_timeout_s = s.get<std::int64_t>("watch_timeout_s", 300);
  o.group = s.get<std::string>("group", std::string(default_group));
  o.version = s.get<std::string>("version", std::string(default_version));

  if (o.in_cluster && !o.kubeconfig.empty())
    s.fail("in_cluster", "conflicts with kubeconfig: use either a kubeconfig file or the in-cluster service account");
  else if (!o.in_cluster && o.kubeconfig.empty())
    s.fail("kubeconfig", "is required: give the path of a kubeconfig file, or set in_cluster = true");
  if (s.has("context") && o.in_cluster) s.fail("context", "applies only to a kubeconfig file");
  if (s.has("serviceaccount_dir") && !o.in_cluster) s.fail("serviceaccount_dir", "applies only with in_cluster = true");
  if (s.has("serviceaccount_dir") && o.serviceaccount_dir.empty()) s.fail("serviceaccount_dir", "must not be empty");
  if (!o.server.empty()) {
    auto ep = detail::parse_url(o.server);
    if (!ep) s.fail("server", ep.error().message);
    else if (!ep->tls && !o.insecure_http)
      s.fail("server", "is plain http: the API server must be reached over https (set insecure_http = true only for tests)");
  }
  if (timeout_ms < 1 || timeout_ms > 600000) s.fail("timeout_ms", "must be between 1 and 600000");
  else o.timeout = std::chrono::milliseconds(timeout_ms);
  if (watch_timeout_s < 1 || watch_timeout_s > 3600) s.fail("watch_timeout_s", "must be between 1 and 3600");
  else o.watch_timeout = std::chrono::seconds(watch_timeout_s);
  if (!is_dns1123_subdomain(o.group) || o.group.find('.') == std::string::npos)
    s.fail("group", "must be a DNS subdomain with at least one dot, like crd.cnf.dev");
  if (o.version.empty() || !is_dns1123_subdomain(o.version) || o.version.find('.') != std::string::npos)
    s.fail("version", "must be a DNS label, like v1");
  return o;
}

namespace detail {

std::string endpoint::url() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return std::string(tls ? "https://" : "http://") + h + ":" + port;
}

result<endpoint> parse_url(std::string_view url) {
  endpoint ep;
  std::string_view rest;
  if (url.starts_with("https://")) {
    rest = url.substr(8);
  } else if (url.starts_with("http://")) {
    ep.tls = false;
    rest = url.substr(7);
  } else {
    return error(errc::invalid, "'" + std::string(url) + "' is not an https:// or http:// URL");
  }
  auto slash = rest.find('/');
  if (slash != std::string_view::npos) {
    if (rest.substr(slash) != "/")
      return error(errc::invalid, "'" + std::string(url) + "': a path after the host is not supported");
    rest = rest.substr(0, slash);
  }
  if (rest.starts_with("[")) {
    auto close = rest.find(']');
    if (close == std::string_view::npos) return error(errc::invalid, "'" + std::string(url) + "': unterminated [ in the host");
    ep.host = std::string(rest.substr(1, close - 1));
    rest = rest.substr(close + 1);
    if (!rest.empty() && rest[0] != ':') return error(errc::invalid, "'" + std::string(url) + "': expected :port after ]");
    if (!rest.empty()) ep.port = std::string(rest.substr(1));
  } else {
    auto colon = rest.rfind(':');
    ep.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) ep.port = std::string(rest.substr(colon + 1));
  }
  if (ep.host.empty()) return error(errc::invalid, "'" + std::string(url) + "' names no host");
  if (ep.port.empty()) ep.port = ep.tls ? "443" : "80";
  for (char c : ep.port)
    if (c < '0' || c > '9') return error(errc::invalid, "'" + std::string(url) + "': port '" + ep.port + "' is not a number");
  auto port = std::stoul(ep.port.size() > 6 ? std::string("999999") : ep.port);
  if (port == 0 || port > 65535) return error(errc::invalid, "'" + std::string(url) + "': port out of range");
  return ep;
}

result<std::string> read_file(const std::string& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return error(errc::invalid, what + ": cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return error(errc::invalid, what + ": cannot read " + path);
  return ss.str();
}

namespace {

namespace b64 = boost::beast::detail::base64;

result<std::string> base64_decode(std::string_view in, const std::string& what) {
  std::string clean;
  for (char c : in)
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') clean += c;
  std::size_t pad = 0;
  while (!clean.empty() && clean.back() == '=' && pad < 2) { clean.pop_back(); ++pad; }
  std::string out((clean.size() + 3) / 4 * 3, '\0');  // room for an unpadded tail
  auto [written, read] = b64::decode(out.data(), clean.data(), clean.size());
  if (read != clean.size()) return error(errc::invalid, what + ": not valid base64");
  out.resize(written);
  return out;
}

/// The entry named `name` in a kubeconfig list such as `clusters`, and its index.
YAML::Node find_named(const YAML::Node& list, const std::string& name) {
  if (!list || !list.IsSequence()) return YAML::Node(YAML::NodeType::Undefined);
  for (const auto& e : list)
    if (e.IsMap() && e["name"] && e["name"].IsScalar() && e["name"].as<std::string>() == name) return e;
  return YAML::Node(YAML::NodeType::Undefined);
}

class kubeconfig_reader {
 public:
  explicit kubeconfig_reader(std::string path) : path_(std::move(path)) {
    dir_ = std::filesystem::path(path_).parent_path();
  }

  result<connection_config> read(const options& o) {
    YAML::Node root;
    try {
      root = YAML::LoadFile(path_);
    } catch (const YAML::BadFile&) {
      return error(errc::invalid, "kubeconfig " + path_ + ": cannot read the file: " + std::strerror(errno));
    } catch (const YAML::Exception& e) {
      return error(errc::invalid, "kubeconfig " + path_ + ": not valid YAML: " + e.what());
    }
    if (!root.IsMap()) return fail("", "expected a YAML mapping (apiVersion: v1, kind: Config)");
    try {
      return read_root(root, o);
    } catch (const YAML::Exception& e) {
      return fail("", std::string("unexpected structure: ") + e.what());
    }
  }

 private:
  cnf::error fail(const std::string& key, const std::string& msg) const {
    return cnf::error(errc::invalid, "kubeconfig " + path_ + ": " + (key.empty() ? "" : key + ": ") + msg);
  }

  std::string resolve(const std::string& p) const {
    std::filesystem::path fp(p);
    return fp.is_absolute() || dir_.empty() ? p : (dir_ / fp).string();
  }

  result<std::string> scalar(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) return fail(key, "expected a string");
    return n.as<std::string>();
  }

  /// `key-data` (base64) or `key` (a path, relative to the kubeconfig's directory).
  result<std::string> data_or_file(const YAML::Node& parent, const std::string& where, const std::string& key,
                                   std::string& source) {
    if (auto d = parent[key + "-data"]) {
      auto s = scalar(d, where + "." + key + "-data");
      if (!s) return s;
      source = "kubeconfig " + path_ + " " + where + "." + key + "-data";
      auto dec = base64_decode(*s, "kubeconfig " + path_ + ": " + where + "." + key + "-data");
      return dec;
    }
    if (auto f = parent[key]) {
      auto s = scalar(f, where + "." + key);
      if (!s) return s;
      auto file = resolve(*s);
      source = file;
      return read_file(file, "kubeconfig " + path_ + ": " + where + "." + key);
    }
    return std::string();
  }

  result<connection_config> read_root(const YAML::Node& root, const options& o) {
    std::string ctx_name = o.context;
    if (ctx_name.empty()) {
      auto cur = root["current-context"];
      if (!cur || !cur.IsScalar() || cur.as<std::string>().empty())
        return fail("current-context", "is not set; name a context with the `context` setting");
      ctx_name = cur.as<std::string>();
    }
    auto ctx_entry = find_named(root["contexts"], ctx_name);
    if (!ctx_entry) return fail("contexts", "has no context named '" + ctx_name + "'");
    auto ctx = ctx_entry["context"];
    std::string cwhere = "contexts[" + ctx_name + "].context";
    if (!ctx || !ctx.IsMap()) return fail(cwhere, "expected a mapping with cluster and user");
    if (!ctx["cluster"] || !ctx["cluster"].IsScalar()) return fail(cwhere + ".cluster", "is required");
    std::string cluster_name = ctx["cluster"].as<std::string>();
    std::string user_name = ctx["user"] && ctx["user"].IsScalar() ? ctx["user"].as<std::string>() : "";

    connection_config cc;
    cc.source = "kubeconfig " + path_ + " (context " + ctx_name + ")";

    auto cl_entry = find_named(root["clusters"], cluster_name);
    if (!cl_entry) return fail("clusters", "has no cluster named '" + cluster_name + "' (used by context '" + ctx_name + "')");
    auto cl = cl_entry["cluster"];
    std::string where = "clusters[" + cluster_name + "].cluster";
    if (!cl || !cl.IsMap()) return fail(where, "expected a mapping");
    std::string server = o.server;
    if (server.empty()) {
      if (!cl["server"]) return fail(where + ".server", "is required");
      auto s = scalar(cl["server"], where + ".server");
      if (!s) return s.error();
      server = *s;
    }
    auto ep = parse_url(server);
    if (!ep) return fail(o.server.empty() ? where + ".server" : "server", ep.error().message);
    cc.ep = *ep;
    if (cl["insecure-skip-tls-verify"] && cl["insecure-skip-tls-verify"].IsScalar() &&
        cl["insecure-skip-tls-verify"].as<std::string>() == "true")
      return fail(where + ".insecure-skip-tls-verify", "is not supported: give certificate-authority(-data) instead");
    if (cc.ep.tls) {
      auto ca = data_or_file(cl, where, "certificate-authority", cc.tls.ca_source);
      if (!ca) return ca.error();
      cc.tls.ca_pem = std::move(*ca);
      if (cc.tls.ca_pem.empty()) cc.tls.ca_source = "the system's default CA certificates";
    }

    if (!user_name.empty()) {
      auto us_entry = find_named(root["users"], user_name);
      if (!us_entry) return fail("users", "has no user named '" + user_name + "' (used by context '" + ctx_name + "')");
      auto us = us_entry["user"];
      std::string uw = "users[" + user_name + "].user";
      if (us && !us.IsMap() && !us.IsNull()) return fail(uw, "expected a mapping");
      if (us && us.IsMap()) {
        for (const char* unsupported : {"exec", "auth-provider", "username", "password"})
          if (us[unsupported])
            return fail(uw + "." + unsupported, "is not supported; use token, tokenFile or client-certificate/client-key");
        if (auto t = us["token"]) {
          auto s = scalar(t, uw + ".token");
          if (!s) return s.error();
          cc.token = *s;
        } else if (auto tf = us["tokenFile"]) {
          auto s = scalar(tf, uw + ".tokenFile");
          if (!s) return s.error();
          cc.token_file = resolve(*s);
          auto tok = read_file(cc.token_file, "kubeconfig " + path_ + ": " + uw + ".tokenFile");
          if (!tok) return tok.error();
        }
        auto cert = data_or_file(us, uw, "client-certificate", cc.tls.cert_source);
        if (!cert) return cert.error();
        auto key = data_or_file(us, uw, "client-key", cc.tls.key_source);
        if (!key) return key.error();
        if (cert->empty() != key->empty())
          return fail(uw, "client-certificate and client-key must be given together");
        cc.tls.cert_pem = std::move(*cert);
        cc.tls.key_pem = std::move(*key);
        if (!cc.tls.cert_pem.empty() && !cc.ep.tls)
          return fail(uw + ".client-certificate", "needs an https server");
      }
    }
    return cc;
  }

  std::string path_;
  std::filesystem::path dir_;
};

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

result<connection_config> read_in_cluster(const options& o) {
  connection_config cc;
  cc.source = "in-cluster service account (" + o.serviceaccount_dir + ")";
  std::string server = o.server;
  if (server.empty()) {
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !*host || !port || !*port)
      return error(errc::invalid,
                   "in_cluster = true but KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT are not set: "
                   "not running in a pod? (or set `server`)");
    std::string h = host;
    if (h.find(':') != std::string::npos) h = "[" + h + "]";
    server = "https://" + h + ":" + port;
  }
  auto ep = parse_url(server);
  if (!ep) return error(errc::invalid, (o.server.empty() ? "KUBERNETES_SERVICE_HOST/PORT: " : "server: ") + ep.error().message);
  cc.ep = *ep;
  cc.token_file = o.serviceaccount_dir + "/token";
  auto tok = read_file(cc.token_file, "in-cluster service account token");
  if (!tok) return tok.error();
  if (trim(*tok).empty()) return error(errc::invalid, "in-cluster service account token " + cc.token_file + " is empty");
  if (cc.ep.tls) {
    cc.tls.ca_source = o.serviceaccount_dir + "/ca.crt";
    auto ca = read_file(cc.tls.ca_source, "in-cluster service account CA");
    if (!ca) return ca.error();
    cc.tls.ca_pem = std::move(*ca);
  }
  return cc;
}

}  // namespace

result<connection_config> resolve_connection(const options& o) {
  result<connection_config> cc = o.in_cluster ? read_in_cluster(o) : kubeconfig_reader(o.kubeconfig).read(o);
  if (!cc) return cc;
  if (!cc->ep.tls && !o.insecure_http)
    return error(errc::invalid, cc->source + ": server " + cc->ep.url() +
                                    " is plain http: the API server must be reached over https "
                                    "(set insecure_http = true only for tests)");
  return cc;
}

}  // namespace detail
}  // namespace kubernetes
CNF_END_NAMESPACE
