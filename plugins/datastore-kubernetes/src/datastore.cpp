// The kubernetes datastore: cnf resources <-> custom resources, CAS on resourceVersion,
// lists with continue tokens, watches with bookmarks, and core Node/Namespace/Pod reads.
#include "config.hpp"
#include "http.hpp"

#include <cnf/plugins/kubernetes.hpp>

#include <boost/json.hpp>

#include <atomic>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <thread>

CNF_BEGIN_NAMESPACE
namespace kubernetes {
namespace {

namespace json = boost::json;
using steady = std::chrono::steady_clock;

constexpr std::size_t page_size = 500;
constexpr std::size_t max_pending_line = 64u << 20;
constexpr std::chrono::seconds token_reread{60};
constexpr std::string_view replaces_annotation = "cnf.dev/replaces";

bool is_dns1123_label(std::string_view s) noexcept {
  return s.size() <= 63 && s.find('.') == std::string_view::npos && is_dns1123_subdomain(s);
}

std::string url_escape(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  return out;
}

std::string snippet(std::string_view s, std::size_t n = 120) {
  std::string out(s.substr(0, n));
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  if (s.size() > n) out += "...";
  return out;
}

std::string_view json_type_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_: return "a number";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
  }
  return "?";
}

const json::object* member_object(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v ? v->if_object() : nullptr;
}

std::string member_string(const json::object* o, std::string_view key) {
  if (!o) return {};
  auto* v = o->if_contains(key);
  if (!v || !v->is_string()) return {};
  return std::string(v->get_string());
}

/// metadata.labels as a map; errc::invalid naming `what` when it is not strings.
result<std::map<std::string, std::string>> read_labels(const json::object* meta, const std::string& what) {
  std::map<std::string, std::string> out;
  if (!meta) return out;
  auto* l = meta->if_contains("labels");
  if (!l || l->is_null()) return out;
  if (!l->is_object()) return error(errc::invalid, what + ": metadata.labels is " + std::string(json_type_name(*l)) + ", not an object");
  for (auto& [k, v] : l->get_object()) {
    if (!v.is_string()) return error(errc::invalid, what + ": label '" + std::string(k) + "' is not a string");
    out.emplace(std::string(k), std::string(v.get_string()));
  }
  return out;
}

/// The message of a Kubernetes Status object (or the raw body when it is not one).
struct status_info {
  std::string message;
  std::string reason;
  std::int64_t code = 0;
};

status_info parse_status(std::string_view body) {
  status_info s;
  json::error_code ec;
  auto v = json::parse(body, ec);
  if (!ec && v.is_object()) {
    auto& o = v.get_object();
    s.message = member_string(&o, "message");
    s.reason = member_string(&o, "reason");
    if (auto* c = o.if_contains("code"); c && c->is_int64()) s.code = c->get_int64();
  }
  if (s.message.empty() && !body.empty()) s.message = snippet(body);
  return s;
}

}  // namespace

// ---- the shared state behind every copy of a datastore --------------------------------

struct datastore::impl : std::enable_shared_from_this<datastore::impl> {
  options opt;
  detail::connection_config cc;
  std::optional<detail::http_client> http;
  logger* log = &default_logger();
  executor* exec = nullptr;
  std::string api_base;  // "/apis/<group>/<version>"

  std::mutex token_m;
  std::string token;
  steady::time_point token_time{};

  std::string url() const { return http->where().url(); }

  std::string authorization() {
    if (!cc.token_file.empty()) {
      std::lock_guard lk(token_m);
      auto now = steady::now();
      if (token.empty() || now - token_time > token_reread) {
        if (auto t = detail::read_file(cc.token_file, "bearer token")) {
          std::string s = std::move(*t);
          while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
          if (!s.empty()) token = std::move(s);
        } else {
          log->warn("kubernetes: " + t.error().message + "; keeping the previous token");
        }
        token_time = now;
      }
      return token.empty() ? std::string() : "Bearer " + token;
    }
    if (!cc.token.empty()) return "Bearer " + cc.token;
    return {};
  }

  // ---- paths ----
  result<std::string> collection(std::string_view kind, std::string_view ns) const {
    if (kind.empty()) return error(errc::invalid, "a resource kind must not be empty");
    for (char c : kind)
      if (!std::isalnum(static_cast<unsigned char>(c)))
        return error(errc::invalid, "resource kind '" + std::string(kind) + "' has no Kubernetes plural (letters and digits only)");
    if (!ns.empty() && !is_dns1123_label(ns))
      return error(errc::invalid, "namespace '" + std::string(ns) + "' is not a valid Kubernetes namespace name (a DNS-1123 label)");
    auto where = api_resource_of(kind, opt.group, opt.version);
    std::string p = where.prefix;
    if (!ns.empty()) p += "/namespaces/" + std::string(ns);
    return p + "/" + where.plural;
  }

  /// Keys of one object must match the kind's scope (Kubernetes fixes it per CRD).
  static result<void> check_scope(const resource_key& k) {
    auto namespaced = kind_is_namespaced(k.kind);
    if (namespaced && !*namespaced && !k.ns.empty())
      return error(errc::invalid, k.to_string() + ": " + k.kind + " is cluster-scoped in Kubernetes (see examples/crds): it cannot have a namespace");
    if (namespaced && *namespaced && k.ns.empty())
      return error(errc::invalid, k.to_string() + ": " + k.kind + " is namespaced in Kubernetes (see examples/crds): give a namespace");
    return {};
  }

  /// The namespace segment of a list or watch path: none for a cluster-scoped kind or
  /// when listing every namespace (the namespace filter is then applied here).
  static std::string path_namespace(std::string_view kind, const std::optional<std::string>& ns) {
    if (!ns || ns->empty() || kind_is_namespaced(kind) == false) return {};
    return *ns;
  }

  result<std::string> object_path(const resource_key& k) const {
    if (auto s = check_scope(k); !s) return s.error();
    auto c = collection(k.kind, k.ns);
    if (!c) return c;
    auto n = encode_name(k.name);
    if (!n) return error(errc::invalid, k.to_string() + ": " + n.error().message);
    return *c + "/" + *n;
  }

  // ---- requests ----
  result<detail::http_response> send(std::string_view method, const std::string& target, const std::string& body = {}) {
    return http->request(method, target, body, authorization());
  }

  /// An error for a reply that is not a success; `what` names the resource or collection.
  cnf::error status_error(const detail::http_response& r, const std::string& what, std::string_view method,
                          const std::string& target) const {
    auto st = parse_status(r.body);
    std::string where = "kubernetes API server " + url() + ": " + std::string(method) + " " + target + ": ";
    std::string tail = st.message.empty() ? "" : ": " + st.message;
    switch (r.status) {
      case 401:
        return {errc::invalid, where + "401 Unauthorized: the server rejected the credentials from " + cc.source +
                                   " (wrong or expired token, or an unknown client certificate)" + tail};
      case 403:
        return {errc::invalid, where + "403 Forbidden: the credentials from " + cc.source + " may not do this" + tail};
      case 404: return {errc::not_found, what + " not found (" + where + "404" + tail + ")"};
      case 409:
        if (st.reason == "AlreadyExists") return {errc::already_exists, what + " already exists" + tail};
        return {errc::conflict, what + ": revision conflict, re-read and retry" + tail};
      case 410: return {errc::conflict, what + ": " + where + "410 Gone (expired; list again from the start)" + tail};
      case 400:
      case 422: return {errc::invalid, what + ": the API server refused it (" + std::to_string(r.status) + ")" + tail};
      case 429:
      case 500:
      case 502:
      case 503:
      case 504: return {errc::unavailable, where + std::to_string(r.status) + tail};
      default: return {errc::invalid, where + "unexpected status " + std::to_string(r.status) + tail};
    }
  }

  result<json::value> parse_body(const detail::http_response& r, const std::string& what, const std::string& target) const {
    json::error_code ec;
    auto v = json::parse(r.body, ec);
    if (ec)
      return error(errc::invalid, what + ": the reply of " + url() + target + " is not JSON (" + ec.message() + "): " +
                                      snippet(r.body));
    return v;
  }

  // ---- mapping ----
  /// A custom resource object -> a cnf resource. `what` names it for messages.
  result<resource> to_resource(const json::value& v, std::string_view kind, const std::string& where) const {
    if (!v.is_object()) return error(errc::invalid, where + ": expected a JSON object, got " + std::string(json_type_name(v)));
    auto& o = v.get_object();
    auto* meta = member_object(o, "metadata");
    std::string raw_name = member_string(meta, "name");
    std::string ns = member_string(meta, "namespace");
    std::string what = std::string(kind) + "/" + (ns.empty() ? "" : ns + "/") + (raw_name.empty() ? "?" : raw_name);
    if (!meta) return error(errc::invalid, what + " (" + where + "): metadata is missing or not an object");
    if (raw_name.empty()) return error(errc::invalid, what + " (" + where + "): metadata.name is missing");
    auto name = decode_name(raw_name);
    if (!name) return error(errc::invalid, what + " (" + where + "): " + name.error().message);
    const auto object_kind = api_resource_of(kind, opt.group, opt.version).kind;
    if (auto k = member_string(&o, "kind"); !k.empty() && k != object_kind)
      return error(errc::invalid, what + " (" + where + "): the object's kind is '" + k + "', expected '" + object_kind + "'");
    resource r;
    r.kind = std::string(kind);
    r.ns = std::move(ns);
    r.name = std::move(*name);
    what = r.key().to_string();
    auto labels = read_labels(meta, what);
    if (!labels) return labels.error();
    r.labels = std::move(*labels);
    r.revision = member_string(meta, "resourceVersion");
    if (r.revision.empty()) return error(errc::invalid, what + " (" + where + "): metadata.resourceVersion is missing");
    auto* spec = o.if_contains("spec");
    if (!spec || spec->is_null()) r.spec = "{}";
    else if (!spec->is_object())
      return error(errc::invalid, what + " (" + where + "): spec is " + std::string(json_type_name(*spec)) +
                                      ", not a JSON object: " + snippet(json::serialize(*spec)));
    else if (r.kind == "Pod") r.spec = pod_summary(spec->get_object(), member_object(o, "status"));
    else r.spec = json::serialize(*spec);
    return r;
  }

  /// A Pod's spec is large (containers, volumes) and every agent caches every Pod: keep what
  /// the policy part and the IPAM checks read.
  static std::string pod_summary(const json::object& spec, const json::object* status) {
    json::object s;
    for (auto k : {"nodeName", "serviceAccountName", "hostNetwork"})
      if (auto* v = spec.if_contains(k); v && !v->is_null()) s[k] = *v;
    json::array ips;
    if (auto* p = status ? status->if_contains("podIPs") : nullptr; p && p->is_array())
      for (auto& ip : p->get_array())
        if (ip.is_object())
          if (auto a = member_string(&ip.get_object(), "ip"); !a.empty()) ips.emplace_back(json::string(a));
    if (!ips.empty()) s["podIPs"] = std::move(ips);
    return json::serialize(s);
  }

  /// A cnf resource -> the custom resource object to send.
  result<std::string> to_object(const resource& r, bool with_revision) const {
    auto name = encode_name(r.name);
    if (!name) return error(errc::invalid, r.key().to_string() + ": " + name.error().message);
    json::error_code ec;
    auto spec = json::parse(r.spec.empty() ? std::string_view("{}") : std::string_view(r.spec), ec);
    if (ec) return error(errc::invalid, r.key().to_string() + ": spec is not valid JSON (" + ec.message() + "): " + snippet(r.spec));
    if (!spec.is_object()) return error(errc::invalid, r.key().to_string() + ": spec must be a JSON object, not " + std::string(json_type_name(spec)));
    json::object meta;
    meta["name"] = *name;
    if (!r.ns.empty()) meta["namespace"] = r.ns;
    if (!r.labels.empty()) {
      json::object l;
      for (auto& [k, v] : r.labels) l[k] = v;
      meta["labels"] = std::move(l);
    }
    if (with_revision) {
      meta["resourceVersion"] = r.revision;
      // The API server skips a PUT that changes nothing (same resourceVersion, no event);
      // cnf promises that every update is a write. Naming the replaced revision makes
      // every PUT a change, since revisions only grow.
      meta["annotations"] = json::object{{replaces_annotation, r.revision}};
    }
    json::object o;
    const auto where = api_resource_of(r.kind, opt.group, opt.version);
    o["apiVersion"] = where.api_version;
    o["kind"] = where.kind;
    o["metadata"] = std::move(meta);
    if (where.has_spec) {
      o["spec"] = std::move(spec);
    } else if (!spec.get_object().empty()) {
      // A real API server drops an unknown top-level field with a warning: refuse rather
      // than lose it silently.
      return error(errc::invalid, r.key().to_string() + ": spec: a " + where.kind + " has no spec (cnf keeps only its labels), got " +
                                      snippet(r.spec));
    }
    return json::serialize(o);
  }

  // ---- operations ----
  result<resource> get(const resource_key& k) {
    auto path = object_path(k);
    if (!path) return path.error();
    auto r = send("GET", *path);
    if (!r) return r.error();
    if (r->status != 200) return status_error(*r, k.to_string(), "GET", *path);
    auto v = parse_body(*r, k.to_string(), *path);
    if (!v) return v.error();
    return to_resource(*v, k.kind, url() + *path);
  }

  result<resource_list> list(const list_options& o) {
    auto path = collection(o.kind, path_namespace(o.kind, o.ns));
    if (!path) return path.error();
    // A cluster-scoped kind has nothing in a namespace: one item is enough for the revision.
    bool nothing = o.ns && !o.ns->empty() && kind_is_namespaced(o.kind) == false;
    std::string target = *path;
    char sep = '?';
    if (nothing) target += "?limit=1";
    else if (o.limit) { target += sep + std::string("limit=") + std::to_string(o.limit); sep = '&'; }
    if (!nothing && !o.continue_token.empty()) target += sep + std::string("continue=") + url_escape(o.continue_token);
    std::string what = o.kind + " list";
    auto r = send("GET", target);
    if (!r) return r.error();
    if (r->status != 200) return status_error(*r, what, "GET", target);
    auto v = parse_body(*r, what, target);
    if (!v) return v.error();
    if (!v->is_object()) return error(errc::invalid, what + ": the reply of " + url() + target + " is not a JSON object");
    auto& lo = v->get_object();
    resource_list out;
    auto* meta = member_object(lo, "metadata");
    out.revision = member_string(meta, "resourceVersion");
    out.continue_token = nothing ? std::string() : member_string(meta, "continue");
    auto* items = lo.if_contains("items");
    if (items && !items->is_null()) {
      if (!items->is_array()) return error(errc::invalid, what + ": 'items' in the reply of " + url() + target + " is not an array");
      for (auto& item : items->get_array()) {
        auto res = to_resource(item, o.kind, url() + *path);
        if (!res) return res.error();
        if (o.ns && res->ns != *o.ns) continue;
        if (!o.name_prefix.empty() && !res->name.starts_with(o.name_prefix)) continue;
        out.items.push_back(std::move(*res));
      }
    }
    return out;
  }

  result<resource> create(const resource& r) {
    if (auto s = check_scope(r.key()); !s) return s.error();
    auto path = collection(r.kind, r.ns);
    if (!path) return path.error();
    auto body = to_object(r, false);
    if (!body) return body.error();
    auto rep = send("POST", *path, *body);
    if (!rep) return rep.error();
    if (rep->status != 200 && rep->status != 201 && rep->status != 202)
      return status_error(*rep, r.key().to_string(), "POST", *path);
    auto v = parse_body(*rep, r.key().to_string(), *path);
    if (!v) return v.error();
    return to_resource(*v, r.kind, url() + *path);
  }

  result<resource> put(const resource& r) {
    auto path = object_path(r.key());
    if (!path) return path.error();
    auto body = to_object(r, true);
    if (!body) return body.error();
    auto rep = send("PUT", *path, *body);
    if (!rep) return rep.error();
    if (rep->status != 200 && rep->status != 201) return status_error(*rep, r.key().to_string(), "PUT", *path);
    auto v = parse_body(*rep, r.key().to_string(), *path);
    if (!v) return v.error();
    return to_resource(*v, r.kind, url() + *path);
  }

  result<resource> update(const resource& r) {
    if (!r.revision.empty()) return put(r);
    // No expected revision: overwrite whatever is stored, still through CAS.
    for (int attempt = 0;; ++attempt) {
      auto cur = get(r.key());
      if (!cur) return cur.error();
      resource next = r;
      next.revision = cur->revision;
      auto u = put(next);
      if (u || u.error().code != errc::conflict || attempt >= 20) return u;
    }
  }

  result<void> remove(const resource_key& k, std::string_view revision) {
    auto path = object_path(k);
    if (!path) return path.error();
    json::object opts{{"apiVersion", "v1"}, {"kind", "DeleteOptions"}};
    if (!revision.empty()) opts["preconditions"] = json::object{{"resourceVersion", revision}};
    auto rep = send("DELETE", *path, json::serialize(opts));
    if (!rep) return rep.error();
    if (rep->status != 200 && rep->status != 202) return status_error(*rep, k.to_string(), "DELETE", *path);
    return {};
  }

  result<datastore_status> status() {
    std::string target = api_base + "/ippools?limit=1";
    auto r = send("GET", target);
    if (!r) return r.error();
    if (r->status != 200) return status_error(*r, "IPPool list", "GET", target);
    auto v = parse_body(*r, "IPPool list", target);
    if (!v) return v.error();
    std::string rev;
    if (v->is_object()) rev = member_string(member_object(v->get_object(), "metadata"), "resourceVersion");
    return datastore_status{"kubernetes", url(), rev};
  }

  // ---- core resources ----
  template <class T, class Conv>
  result<std::vector<T>> list_core(const std::string& path, const std::string& what, Conv conv) {
    std::vector<T> out;
    std::string cont;
    for (;;) {
      std::string target = path + "?limit=" + std::to_string(page_size);
      if (!cont.empty()) target += "&continue=" + url_escape(cont);
      auto r = send("GET", target);
      if (!r) return r.error();
      if (r->status != 200) return status_error(*r, what, "GET", target);
      auto v = parse_body(*r, what, target);
      if (!v) return v.error();
      if (!v->is_object()) return error(errc::invalid, what + ": the reply of " + url() + target + " is not a JSON object");
      auto& lo = v->get_object();
      if (auto* items = lo.if_contains("items"); items && items->is_array()) {
        for (auto& item : items->get_array()) {
          auto t = conv(item);
          if (!t) return t.error();
          out.push_back(std::move(*t));
        }
      } else if (items && !items->is_null()) {
        return error(errc::invalid, what + ": 'items' in the reply of " + url() + target + " is not an array");
      }
      cont = member_string(member_object(lo, "metadata"), "continue");
      if (cont.empty()) return out;
    }
  }

  static result<node_info> to_node(const json::value& v) {
    if (!v.is_object()) return error(errc::invalid, "Node: expected a JSON object");
    auto& o = v.get_object();
    auto* meta = member_object(o, "metadata");
    node_info n;
    n.name = member_string(meta, "name");
    std::string what = "Node/" + n.name;
    if (n.name.empty()) return error(errc::invalid, "Node: metadata.name is missing");
    auto l = read_labels(meta, what);
    if (!l) return l.error();
    n.labels = std::move(*l);
    n.resource_version = member_string(meta, "resourceVersion");
    if (auto* spec = member_object(o, "spec")) {
      if (auto* cidrs = spec->if_contains("podCIDRs"); cidrs && cidrs->is_array()) {
        for (auto& c : cidrs->get_array())
          if (c.is_string()) n.pod_cidrs.emplace_back(c.get_string());
      } else if (auto c = member_string(spec, "podCIDR"); !c.empty()) {
        n.pod_cidrs.push_back(c);
      }
    }
    if (auto* st = member_object(o, "status")) {
      if (auto* addrs = st->if_contains("addresses"); addrs && !addrs->is_null()) {
        if (!addrs->is_array()) return error(errc::invalid, what + ": status.addresses is not an array");
        for (auto& a : addrs->get_array()) {
          if (!a.is_object()) return error(errc::invalid, what + ": status.addresses holds " + std::string(json_type_name(a)));
          n.addresses.push_back({member_string(&a.get_object(), "type"), member_string(&a.get_object(), "address")});
        }
      }
    }
    return n;
  }

  static result<namespace_info> to_namespace(const json::value& v) {
    if (!v.is_object()) return error(errc::invalid, "Namespace: expected a JSON object");
    auto* meta = member_object(v.get_object(), "metadata");
    namespace_info n;
    n.name = member_string(meta, "name");
    if (n.name.empty()) return error(errc::invalid, "Namespace: metadata.name is missing");
    auto l = read_labels(meta, "Namespace/" + n.name);
    if (!l) return l.error();
    n.labels = std::move(*l);
    n.resource_version = member_string(meta, "resourceVersion");
    return n;
  }

  static result<pod_info> to_pod(const json::value& v) {
    if (!v.is_object()) return error(errc::invalid, "Pod: expected a JSON object");
    auto& o = v.get_object();
    auto* meta = member_object(o, "metadata");
    pod_info p;
    p.ns = member_string(meta, "namespace");
    p.name = member_string(meta, "name");
    std::string what = "Pod/" + p.ns + "/" + p.name;
    if (p.name.empty()) return error(errc::invalid, "Pod: metadata.name is missing");
    auto l = read_labels(meta, what);
    if (!l) return l.error();
    p.labels = std::move(*l);
    p.resource_version = member_string(meta, "resourceVersion");
    if (auto* spec = member_object(o, "spec")) {
      p.node_name = member_string(spec, "nodeName");
      p.service_account = member_string(spec, "serviceAccountName");
      if (auto* h = spec->if_contains("hostNetwork"); h && h->is_bool()) p.host_network = h->get_bool();
    }
    if (auto* st = member_object(o, "status")) {
      p.phase = member_string(st, "phase");
      p.host_ip = member_string(st, "hostIP");
      if (auto* ips = st->if_contains("podIPs"); ips && ips->is_array()) {
        for (auto& ip : ips->get_array()) {
          if (!ip.is_object()) return error(errc::invalid, what + ": status.podIPs holds " + std::string(json_type_name(ip)));
          p.pod_ips.push_back(member_string(&ip.get_object(), "ip"));
        }
      } else if (auto ip = member_string(st, "podIP"); !ip.empty()) {
        p.pod_ips.push_back(ip);
      }
    }
    return p;
  }
};

// ---- watch ---------------------------------------------------------------------------

namespace {

class watch_state final : public watch_handle::state, public std::enable_shared_from_this<watch_state> {
 public:
  watch_state(std::shared_ptr<datastore::impl> ds, watch_options o, watch_callback cb)
      : ds_(std::move(ds)), o_(std::move(o)), cb_(std::move(cb)) {}

  void start(std::vector<resource> initial, std::string revision, bool deliver_initial) {
    initial_ = std::move(initial);
    deliver_initial_ = deliver_initial;
    rv_ = std::move(revision);
    thread_ = std::thread([self = shared_from_this()] { self->run(); });
  }

  void cancel() noexcept override {
    cancelled_ = true;
    std::thread t;
    {
      std::lock_guard lk(m_);
      if (stream_) stream_->interrupt();
      t = std::move(thread_);
    }
    cv_.notify_all();
    if (t.joinable()) {
      if (t.get_id() == std::this_thread::get_id()) t.detach();  // cancelled from its own callback
      else t.join();
    }
  }

 private:
  enum class next { keep_reading, reconnect, stop };

  void deliver(watch_event ev) {
    if (cancelled_) return;
    if (ds_->exec) {
      ds_->exec->post([self = shared_from_this(), ev = std::move(ev)] {
        if (!self->cancelled_) self->invoke(ev);
      });
    } else {
      invoke(ev);
    }
  }

  void invoke(const watch_event& ev) {
    try {
      cb_(ev);
    } catch (const std::exception& e) {
      ds_->log->error("kubernetes: a watch callback threw: " + std::string(e.what()));
    } catch (...) {
      ds_->log->error("kubernetes: a watch callback threw");
    }
  }

  void deliver_error(cnf::error e) {
    watch_event ev;
    ev.kind = watch_event::type::error;
    ev.err = std::move(e);
    ev.revision = rv_;
    ds_->log->warn("kubernetes watch: " + ev.err.message);
    deliver(std::move(ev));
  }

  /// Waits `d` or until cancelled; true when cancelled.
  bool pause(std::chrono::milliseconds d) {
    std::unique_lock lk(m_);
    return cv_.wait_for(lk, d, [&] { return cancelled_.load(); });
  }

  std::string target() const {
    auto c = ds_->collection(o_.kind, datastore::impl::path_namespace(o_.kind, o_.ns));  // validated in watch()
    return c.value() + "?watch=1&allowWatchBookmarks=true&resourceVersion=" + url_escape(rv_) +
           "&timeoutSeconds=" + std::to_string(ds_->opt.watch_timeout.count());
  }

  void run() {
    if (deliver_initial_) {
      for (auto& r : initial_) {
        watch_event ev;
        ev.kind = watch_event::type::added;
        ev.revision = r.revision;
        ev.object = std::move(r);
        deliver(std::move(ev));
      }
      initial_.clear();
      watch_event sync;
      sync.kind = watch_event::type::in_sync;
      sync.revision = rv_;
      deliver(std::move(sync));
    }
    constexpr std::chrono::milliseconds first_backoff{100}, max_backoff{5000};
    auto backoff = first_backoff;
    auto retry = [&] {
      bool c = pause(backoff);
      backoff = std::min(backoff * 2, max_backoff);
      return !c;
    };
    while (!cancelled_) {
      auto s = ds_->http->stream();
      detail::http_stream* st = s.get();
      {
        std::lock_guard lk(m_);
        if (cancelled_) break;
        stream_ = std::move(s);
      }
      std::string t = target();
      auto r = st->open(t, ds_->authorization(), ds_->opt.timeout);
      if (cancelled_) break;
      if (!r) {
        deliver_error(cnf::error(r.error().code, "watch " + o_.kind + ": " + r.error().message));
        if (!retry()) break;
        continue;
      }
      if (r->status == 410) {
        resync();
        break;
      }
      if (r->status != 200) {
        deliver_error(ds_->status_error(*r, "watch " + o_.kind, "GET", t));
        if (!retry()) break;
        continue;
      }
      std::string pending;
      next n = next::keep_reading;
      bool dropped = false;
      while (n == next::keep_reading) {
        auto piece = st->read(ds_->opt.watch_timeout + ds_->opt.timeout);
        if (cancelled_) { n = next::stop; break; }
        if (!piece) {
          ds_->log->info("kubernetes watch " + o_.kind + ": " + piece.error().message + "; resuming from revision " + rv_);
          dropped = true;
          break;
        }
        bool ended = piece->empty();
        pending += *piece;
        std::size_t pos;
        while (n == next::keep_reading && (pos = pending.find('\n')) != std::string::npos) {
          std::string line = pending.substr(0, pos);
          pending.erase(0, pos + 1);
          if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
          n = handle_line(line, t);
        }
        if (n == next::keep_reading && ended) {
          if (pending.find_first_not_of(" \r\t") != std::string::npos) n = handle_line(pending, t);
          break;  // the server ended this watch request (timeoutSeconds): watch again
        }
        if (pending.size() > max_pending_line) {
          deliver_error(cnf::error(errc::invalid, "watch " + o_.kind + " on " + ds_->url() + t +
                                                      ": a line longer than 64 MiB without a newline"));
          n = next::reconnect;
        }
      }
      {
        std::lock_guard lk(m_);
        stream_.reset();
      }
      if (n == next::stop) break;
      if (n == next::reconnect || dropped) {
        if (!retry()) break;
      } else {
        backoff = first_backoff;
      }
    }
    std::lock_guard lk(m_);
    stream_.reset();
  }

  void resync() {
    watch_event ev;
    ev.kind = watch_event::type::resync_needed;
    ev.revision = rv_;
    ds_->log->info("kubernetes watch " + o_.kind + ": revision " + rv_ + " is too old (410 Gone); the consumer must list again");
    deliver(std::move(ev));
  }

  next handle_line(const std::string& line, const std::string& t) {
    std::string where = "watch " + o_.kind + " on " + ds_->url() + t;
    json::error_code ec;
    auto v = json::parse(line, ec);
    if (ec) {
      deliver_error(cnf::error(errc::invalid, where + ": the API server sent a line that is not JSON (" + ec.message() + "): " + snippet(line)));
      return next::reconnect;
    }
    const json::object* o = v.if_object();
    const json::value* type = o ? o->if_contains("type") : nullptr;
    const json::value* obj = o ? o->if_contains("object") : nullptr;
    if (!type || !type->is_string() || !obj || !obj->is_object()) {
      deliver_error(cnf::error(errc::invalid, where + ": an event without a string 'type' and an 'object': " + snippet(line)));
      return next::reconnect;
    }
    std::string_view ty = type->get_string();
    if (ty == "BOOKMARK") {
      auto rv = member_string(member_object(obj->get_object(), "metadata"), "resourceVersion");
      if (rv.empty()) {
        deliver_error(cnf::error(errc::invalid, where + ": a BOOKMARK without metadata.resourceVersion"));
        return next::reconnect;
      }
      rv_ = rv;
      return next::keep_reading;
    }
    if (ty == "ERROR") {
      auto st = parse_status(json::serialize(*obj));
      if (st.code == 410) {
        resync();
        return next::stop;
      }
      deliver_error(cnf::error(st.code >= 500 || st.code == 429 ? errc::unavailable : errc::invalid,
                               where + ": the API server reported an error (" + std::to_string(st.code) + " " + st.reason + "): " + st.message));
      return next::reconnect;
    }
    watch_event ev;
    if (ty == "ADDED") ev.kind = watch_event::type::added;
    else if (ty == "MODIFIED") ev.kind = watch_event::type::modified;
    else if (ty == "DELETED") ev.kind = watch_event::type::deleted;
    else {
      deliver_error(cnf::error(errc::invalid, where + ": unknown event type '" + std::string(ty) + "'"));
      return next::reconnect;
    }
    auto res = ds_->to_resource(*obj, o_.kind, where);
    if (!res) {
      // Skip it, but move past it: re-reading the same broken object would not help.
      auto rv = member_string(member_object(obj->get_object(), "metadata"), "resourceVersion");
      if (!rv.empty()) rv_ = rv;
      deliver_error(res.error());
      return next::keep_reading;
    }
    rv_ = res->revision;
    if (o_.ns && res->ns != *o_.ns) return next::keep_reading;
    if (!o_.name_prefix.empty() && !res->name.starts_with(o_.name_prefix)) return next::keep_reading;
    ev.revision = res->revision;
    ev.object = std::move(*res);
    deliver(std::move(ev));
    return next::keep_reading;
  }

  std::shared_ptr<datastore::impl> ds_;
  watch_options o_;
  watch_callback cb_;
  std::vector<resource> initial_;
  bool deliver_initial_ = false;
  std::string rv_;  // resume from here; only the watch thread touches it after start()
  std::atomic<bool> cancelled_{false};
  std::mutex m_;
  std::condition_variable cv_;
  std::unique_ptr<detail::http_stream> stream_;
  std::thread thread_;
};

}  // namespace

// ---- datastore -------------------------------------------------------------------------

result<datastore> datastore::open(const options& o, logger* log, executor* exec) {
  auto p = std::make_shared<impl>();
  p->opt = o;
  if (log) p->log = log;
  p->exec = exec;
  auto cc = detail::resolve_connection(o);
  if (!cc) return cc.error();
  p->cc = std::move(*cc);
  auto http = detail::http_client::make(p->cc.ep, p->cc.tls, o.timeout);
  if (!http) return error(http.error().code, p->cc.source + ": " + http.error().message);
  p->http.emplace(std::move(*http));
  p->api_base = "/apis/" + o.group + "/" + o.version;
  p->log->debug("kubernetes: using " + p->http->where().url() + " from " + p->cc.source);
  return datastore(std::move(p));
}

result<resource> datastore::get(const resource_key& k) { return p_->get(k); }
result<resource_list> datastore::list(const list_options& o) { return p_->list(o); }
result<resource> datastore::create(const resource& r) { return p_->create(r); }
result<resource> datastore::update(const resource& r) { return p_->update(r); }
result<void> datastore::remove(const resource_key& k, std::string_view revision) { return p_->remove(k, revision); }
result<datastore_status> datastore::status() { return p_->status(); }
std::string datastore::server() const { return p_->url(); }

result<watch_handle> datastore::watch(const watch_options& o, watch_callback cb) {
  if (!cb) return error(errc::invalid, "watch " + o.kind + ": no callback");
  if (auto c = p_->collection(o.kind, impl::path_namespace(o.kind, o.ns)); !c) return c.error();
  if (o.ns && !o.ns->empty()) {
    if (auto c = p_->collection(o.kind, *o.ns); !c) return c.error();  // a valid namespace name
  }
  std::vector<resource> initial;
  std::string rev = o.revision;
  bool from_list = rev.empty();
  if (from_list) {
    list_options lo;
    lo.kind = o.kind;
    lo.ns = o.ns;
    lo.name_prefix = o.name_prefix;
    lo.limit = page_size;
    for (;;) {
      auto page = p_->list(lo);
      if (!page) return page.error();
      if (rev.empty()) rev = page->revision;
      for (auto& r : page->items) initial.push_back(std::move(r));
      if (page->continue_token.empty()) break;
      lo.continue_token = page->continue_token;
    }
    if (rev.empty()) return error(errc::invalid, "watch " + o.kind + ": the list reply of " + p_->url() + " carried no resourceVersion");
  }
  auto st = std::make_shared<watch_state>(p_, o, std::move(cb));
  st->start(std::move(initial), std::move(rev), from_list);
  return watch_handle(st);
}

result<std::vector<node_info>> datastore::list_nodes() {
  return p_->list_core<node_info>("/api/v1/nodes", "Node list", &impl::to_node);
}

result<node_info> datastore::get_node(std::string_view name) {
  if (!is_dns1123_subdomain(name)) return error(errc::invalid, "Node '" + std::string(name) + "': not a valid node name");
  std::string target = "/api/v1/nodes/" + std::string(name);
  std::string what = "Node/" + std::string(name);
  auto r = p_->send("GET", target);
  if (!r) return r.error();
  if (r->status != 200) return p_->status_error(*r, what, "GET", target);
  auto v = p_->parse_body(*r, what, target);
  if (!v) return v.error();
  return impl::to_node(*v);
}

result<std::vector<namespace_info>> datastore::list_namespaces() {
  return p_->list_core<namespace_info>("/api/v1/namespaces", "Namespace list", &impl::to_namespace);
}

result<std::vector<pod_info>> datastore::list_pods(const std::optional<std::string>& ns) {
  std::string path = "/api/v1/pods";
  if (ns) {
    if (!is_dns1123_label(*ns)) return error(errc::invalid, "namespace '" + *ns + "' is not a valid Kubernetes namespace name");
    path = "/api/v1/namespaces/" + *ns + "/pods";
  }
  return p_->list_core<pod_info>(path, "Pod list", &impl::to_pod);
}

}  // namespace kubernetes
CNF_END_NAMESPACE
