// The etcd datastore: resources <-> keys, compare-and-swap through txn, paginated lists,
// and watches that resume after a dropped connection. The HTTP side is in transport.cpp.
#include <cnf/plugins/etcd.hpp>

#include "transport.hpp"

#include <boost/json.hpp>
#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <mutex>
#include <thread>

CNF_BEGIN_NAMESPACE

namespace json = boost::json;

// ---- key layout --------------------------------------------------------------------------

namespace {

constexpr std::string_view resources_dir = "/resources/v3/";
constexpr std::string_view cluster_segment = "_cluster";

bool plain_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' ||
         c == '~' || c == ':' || c == '@' || c == '+' || c == '=' || c == ',';
}

// Percent-escapes every byte outside a safe set ('/' and '%' included). Escaping is done
// byte by byte, so the escape of a prefix is a prefix of the escape: name_prefix lists stay
// etcd prefix ranges. In a namespace segment a leading '_' is escaped too, so no namespace
// can collide with the "_cluster" segment of cluster-scoped resources.
std::string escape_segment(std::string_view s, bool ns_segment = false) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (plain_char(c) && !(ns_segment && i == 0 && c == '_')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::optional<std::string> unescape_segment(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') { out += s[i]; continue; }
    if (i + 2 >= s.size()) return std::nullopt;
    int h = hex_value(s[i + 1]), l = hex_value(s[i + 2]);
    if (h < 0 || l < 0) return std::nullopt;
    out += static_cast<char>(h * 16 + l);
    i += 2;
  }
  return out;
}

std::string ns_segment(std::string_view ns) { return ns.empty() ? std::string(cluster_segment) : escape_segment(ns, true); }

std::string kind_dir(std::string_view prefix, std::string_view kind) {
  return std::string(prefix) + std::string(resources_dir) + escape_segment(kind) + "/";
}

// The first key after every key that starts with p (etcd's "prefix" range_end).
std::string prefix_end(std::string p) {
  while (!p.empty()) {
    auto c = static_cast<unsigned char>(p.back());
    if (c < 0xff) {
      p.back() = static_cast<char>(c + 1);
      return p;
    }
    p.pop_back();
  }
  return std::string(1, '\0');  // everything
}

}  // namespace

std::string etcd_resource_key(std::string_view prefix, const resource_key& k) {
  return kind_dir(prefix, k.kind) + ns_segment(k.ns) + "/" + escape_segment(k.name);
}

result<resource_key> etcd_parse_resource_key(std::string_view prefix, std::string_view key) {
  auto bad = [&](std::string why) {
    return error(errc::invalid, "etcd key '" + std::string(key) + "' is not a cnf resource key: " + why);
  };
  std::string head = std::string(prefix) + std::string(resources_dir);
  if (!key.starts_with(head)) return bad("it does not start with '" + head + "'");
  auto rest = key.substr(head.size());
  auto s1 = rest.find('/');
  if (s1 == std::string_view::npos) return bad("expected <kind>/<namespace>/<name> after '" + head + "'");
  auto s2 = rest.find('/', s1 + 1);
  if (s2 == std::string_view::npos || rest.find('/', s2 + 1) != std::string_view::npos)
    return bad("expected <kind>/<namespace>/<name> after '" + head + "'");
  auto kind = unescape_segment(rest.substr(0, s1));
  auto nsseg = rest.substr(s1 + 1, s2 - s1 - 1);
  auto ns = nsseg == cluster_segment ? std::optional<std::string>("") : unescape_segment(nsseg);
  auto name = unescape_segment(rest.substr(s2 + 1));
  if (!kind || !ns || !name) return bad("a segment has a malformed %-escape");
  if (kind->empty() || name->empty()) return bad("empty kind or name");
  if (nsseg != cluster_segment && ns->empty()) return bad("empty namespace segment");
  return resource_key{std::move(*kind), std::move(*ns), std::move(*name)};
}

namespace detail {

// ---- small helpers -----------------------------------------------------------------------

namespace {

std::string b64encode(std::string_view s) {
  std::string out(4 * ((s.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(s.data()),
                          static_cast<int>(s.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::optional<std::string> b64decode(std::string_view s) {
  if (s.empty()) return std::string();
  if (s.size() % 4 != 0) return std::nullopt;
  std::string out(s.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(s.data()),
                          static_cast<int>(s.size()));
  if (n < 0) return std::nullopt;
  std::size_t pad = 0;
  if (s.back() == '=') ++pad;
  if (s.size() >= 2 && s[s.size() - 2] == '=') ++pad;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

bool all_digits(std::string_view s) {
  return !s.empty() && s.size() <= 19 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::int64_t to_int(std::string_view s) {
  std::int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// An int64 field as etcd's gateway writes it (a decimal string; absent = 0).
std::optional<std::int64_t> int_field(const json::object& o, std::string_view name) {
  auto* v = o.if_contains(name);
  if (!v) return 0;
  if (v->is_string() && all_digits(v->get_string())) return to_int(v->get_string());
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
  return std::nullopt;
}

std::string excerpt(std::string_view s, std::size_t n = 160) {
  std::string e(s.substr(0, n));
  for (auto& c : e)
    if (c == '\n' || c == '\r') c = ' ';
  if (s.size() > n) e += "...";
  return e;
}

const json::object* obj_field(const json::object& o, std::string_view name) {
  auto* v = o.if_contains(name);
  return v && v->is_object() ? &v->get_object() : nullptr;
}
const json::array* arr_field(const json::object& o, std::string_view name) {
  auto* v = o.if_contains(name);
  return v && v->is_array() ? &v->get_array() : nullptr;
}
bool bool_field(const json::object& o, std::string_view name) {
  auto* v = o.if_contains(name);
  return v && v->is_bool() && v->get_bool();
}

result<void> check_key(const resource_key& k) {
  if (k.kind.empty()) return error(errc::invalid, "resource '" + k.to_string() + "': kind is empty");
  if (k.name.empty()) return error(errc::invalid, "resource '" + k.to_string() + "': name is empty");
  return {};
}

result<std::string> encode_value(const resource& r) {
  json::object labels;
  for (auto& [k, v] : r.labels) labels[k] = v;
  boost::system::error_code ec;
  auto spec = json::parse(r.spec.empty() ? std::string_view("{}") : std::string_view(r.spec), ec);
  if (ec) return error(errc::invalid, r.key().to_string() + ": spec is not valid JSON: " + ec.message());
  if (!spec.is_object()) return error(errc::invalid, r.key().to_string() + ": spec must be a JSON object");
  json::object v;
  v["labels"] = std::move(labels);
  v["spec"] = std::move(spec);
  return json::serialize(v);
}

json::object txn_compare(const std::string& key64, std::string_view target, std::string_view field, std::string rev) {
  return json::object{{"key", key64}, {"target", target}, {"result", "EQUAL"}, {field, std::move(rev)}};
}

}  // namespace

// ---- the store ---------------------------------------------------------------------------

class etcd_store : public std::enable_shared_from_this<etcd_store> {
 public:
  etcd_store(etcd_config c, std::shared_ptr<etcd::transport> t, logger* log, executor* exec)
      : cfg_(std::move(c)), tr_(std::move(t)), log_(log ? log : &default_logger()), exec_(exec) {}

  const etcd_config& config() const noexcept { return cfg_; }

  struct reply {
    json::object obj;
    std::string endpoint;
  };

  result<reply> call(std::string_view path, const json::object& req, bool idempotent) {
    auto r = tr_->post(path, json::serialize(req), idempotent);
    if (!r) return std::move(r).error();
    boost::system::error_code ec;
    auto v = json::parse(r->body, ec);
    if (ec || !v.is_object())
      return error(errc::unavailable, "etcd " + r->endpoint + ": the reply to " + std::string(path) +
                                          " is not a JSON object: " + (ec ? ec.message() + ": " : "") + excerpt(r->body));
    return reply{std::move(v.get_object()), std::move(r->endpoint)};
  }

  result<std::int64_t> header_revision(const reply& r, std::string_view path) {
    if (auto* h = obj_field(r.obj, "header"))
      if (auto rev = int_field(*h, "revision"); rev && *rev > 0) return *rev;
    return error(errc::unavailable, "etcd " + r.endpoint + ": the reply to " + std::string(path) + " has no header.revision: " +
                                        excerpt(json::serialize(r.obj)));
  }

  std::string key_of(const resource_key& k) const { return etcd_resource_key(cfg_.prefix, k); }

  // A key-value from etcd as a resource, or errc::invalid naming the key.
  result<resource> decode(const json::object& kv, std::string_view endpoint) const {
    auto* k64 = kv.if_contains("key");
    std::optional<std::string> key;
    if (k64 && k64->is_string()) key = b64decode(k64->get_string());
    if (!key) return error(errc::unavailable, "etcd " + std::string(endpoint) + ": a key-value without a valid base64 key: " + excerpt(json::serialize(kv)));
    auto rk = etcd_parse_resource_key(cfg_.prefix, *key);
    if (!rk) return rk.error();
    auto bad = [&](std::string why) {
      return error(errc::invalid, "etcd key '" + *key + "' (" + rk->to_string() + "): the stored value is not a cnf resource: " + why +
                                      "; fix or delete the key");
    };
    auto* v64 = kv.if_contains("value");
    std::optional<std::string> value = std::string();
    if (v64) value = v64->is_string() ? b64decode(v64->get_string()) : std::nullopt;
    if (!value) return bad("the value is not base64");
    boost::system::error_code ec;
    auto v = json::parse(*value, ec);
    if (ec) return bad("not JSON (" + ec.message() + "): " + excerpt(*value));
    if (!v.is_object()) return bad("expected a JSON object {\"labels\":{...},\"spec\":{...}}: " + excerpt(*value));
    auto& o = v.get_object();
    resource r;
    r.kind = rk->kind;
    r.ns = rk->ns;
    r.name = rk->name;
    if (auto* l = o.if_contains("labels"); l && !l->is_null()) {
      if (!l->is_object()) return bad("\"labels\" must be an object of strings");
      for (auto& [lk, lv] : l->get_object()) {
        if (!lv.is_string()) return bad("label '" + std::string(lk) + "' is not a string");
        r.labels.emplace(std::string(lk), std::string(lv.get_string()));
      }
    }
    if (auto* s = o.if_contains("spec"); s && !s->is_null()) {
      if (!s->is_object()) return bad("\"spec\" must be a JSON object");
      r.spec = json::serialize(*s);
    }
    auto mod = int_field(kv, "mod_revision");
    if (!mod || *mod <= 0) return bad("no mod_revision");
    r.revision = std::to_string(*mod);
    return r;
  }

  // ---- operations ----

  result<resource> get(const resource_key& k) {
    if (auto c = check_key(k); !c) return c.error();
    auto r = call("/v3/kv/range", json::object{{"key", b64encode(key_of(k))}}, true);
    if (!r) return r.error();
    auto* kvs = arr_field(r->obj, "kvs");
    if (!kvs || kvs->empty() || !kvs->at(0).is_object()) return error(errc::not_found, k.to_string() + ": not found (etcd " + r->endpoint + ")");
    return decode(kvs->at(0).get_object(), r->endpoint);
  }

  result<resource> create(const resource& in) {
    if (auto c = check_key(in.key()); !c) return c.error();
    auto value = encode_value(in);
    if (!value) return value.error();
    auto key64 = b64encode(key_of(in.key()));
    json::object txn{
        {"compare", json::array{txn_compare(key64, "CREATE", "create_revision", "0")}},
        {"success", json::array{json::object{{"request_put", json::object{{"key", key64}, {"value", b64encode(*value)}}}}}},
    };
    auto r = call("/v3/kv/txn", txn, false);
    if (!r) return r.error();
    if (!bool_field(r->obj, "succeeded")) return error(errc::already_exists, in.key().to_string() + ": already exists (etcd " + r->endpoint + ")");
    auto rev = header_revision(*r, "/v3/kv/txn");
    if (!rev) return rev.error();
    return stored(in, *rev);
  }

  result<resource> update(const resource& in) {
    if (auto c = check_key(in.key()); !c) return c.error();
    // An empty revision updates whatever is there (the key must exist); otherwise compare-and-swap.
    if (!in.revision.empty() && !all_digits(in.revision))
      return error(errc::invalid, in.key().to_string() + ": '" + in.revision + "' is not an etcd revision");
    auto value = encode_value(in);
    if (!value) return value.error();
    auto key64 = b64encode(key_of(in.key()));
    json::object cmp = in.revision.empty() ? json::object{{"key", key64}, {"target", "CREATE"}, {"result", "GREATER"}, {"create_revision", "0"}}
                                           : txn_compare(key64, "MOD", "mod_revision", in.revision);
    json::object txn{
        {"compare", json::array{std::move(cmp)}},
        {"success", json::array{json::object{{"request_put", json::object{{"key", key64}, {"value", b64encode(*value)}}}}}},
        {"failure", json::array{json::object{{"request_range", json::object{{"key", key64}}}}}},
    };
    auto r = call("/v3/kv/txn", txn, false);
    if (!r) return r.error();
    if (!bool_field(r->obj, "succeeded")) return cas_failure(in.key(), in.revision, *r);
    auto rev = header_revision(*r, "/v3/kv/txn");
    if (!rev) return rev.error();
    return stored(in, *rev);
  }

  result<void> remove(const resource_key& k, std::string_view revision) {
    if (auto c = check_key(k); !c) return c.error();
    auto key64 = b64encode(key_of(k));
    if (revision.empty()) {
      auto r = call("/v3/kv/deleterange", json::object{{"key", key64}}, false);
      if (!r) return r.error();
      auto n = int_field(r->obj, "deleted");
      if (!n || *n == 0) return error(errc::not_found, k.to_string() + ": not found (etcd " + r->endpoint + ")");
      return {};
    }
    if (!all_digits(revision)) return error(errc::invalid, k.to_string() + ": '" + std::string(revision) + "' is not an etcd revision");
    json::object txn{
        {"compare", json::array{txn_compare(key64, "MOD", "mod_revision", std::string(revision))}},
        {"success", json::array{json::object{{"request_delete_range", json::object{{"key", key64}}}}}},
        {"failure", json::array{json::object{{"request_range", json::object{{"key", key64}}}}}},
    };
    auto r = call("/v3/kv/txn", txn, false);
    if (!r) return r.error();
    if (!bool_field(r->obj, "succeeded")) return cas_failure(k, std::string(revision), *r).error();
    return {};
  }

  result<resource_list> list(const list_options& o) {
    if (o.kind.empty()) return error(errc::invalid, "list: kind is empty");
    std::string begin = kind_dir(cfg_.prefix, o.kind);
    bool filter_names = false;
    if (o.ns) begin += ns_segment(*o.ns) + "/" + escape_segment(o.name_prefix);
    else filter_names = !o.name_prefix.empty();
    const std::string end = prefix_end(begin);
    std::string start = begin;
    std::int64_t at = 0;  // the revision every page reads at
    if (!o.continue_token.empty()) {
      auto colon = o.continue_token.find(':');
      std::optional<std::string> key;
      if (colon != std::string::npos && all_digits(std::string_view(o.continue_token).substr(0, colon)))
        key = b64decode(std::string_view(o.continue_token).substr(colon + 1));
      if (!key || *key < begin || *key >= end)
        return error(errc::invalid, "list " + o.kind + ": continue token '" + excerpt(o.continue_token, 60) + "' does not belong to this list");
      at = to_int(std::string_view(o.continue_token).substr(0, colon));
      start = std::move(*key);
    }
    resource_list out;
    for (;;) {
      json::object req{{"key", b64encode(start)}, {"range_end", b64encode(end)}};
      if (o.limit) req["limit"] = std::to_string(o.limit - out.items.size());
      if (at) req["revision"] = std::to_string(at);
      auto r = call("/v3/kv/range", req, true);
      if (!r) {
        if (r.error().code == errc::conflict && at)
          return error(errc::conflict, r.error().message + "; the list's revision " + std::to_string(at) + " is gone: list again from the start");
        return r.error();
      }
      if (!at) {
        auto rev = header_revision(*r, "/v3/kv/range");
        if (!rev) return rev.error();
        at = *rev;
      }
      std::string last;
      if (auto* kvs = arr_field(r->obj, "kvs")) {
        for (auto& kv : *kvs) {
          if (!kv.is_object()) continue;
          auto res = decode(kv.get_object(), r->endpoint);
          if (!res) return res.error();
          if (auto* k = kv.get_object().if_contains("key"); k && k->is_string()) last = b64decode(k->get_string()).value_or("");
          if (filter_names && !res->name.starts_with(o.name_prefix)) continue;
          out.items.push_back(std::move(*res));
        }
      }
      bool more = bool_field(r->obj, "more");
      if (!more || last.empty()) break;
      start = last + std::string(1, '\0');
      if (o.limit && out.items.size() >= o.limit) {
        out.continue_token = std::to_string(at) + ":" + b64encode(start);
        break;
      }
    }
    out.revision = std::to_string(at);
    return out;
  }

  result<datastore_status> status() {
    // A count of one key under the prefix: cheap, and readable by a role limited to the prefix.
    auto r = call("/v3/kv/range", json::object{{"key", b64encode(cfg_.prefix + "/")}, {"count_only", true}}, true);
    if (!r) return r.error();
    auto rev = header_revision(*r, "/v3/kv/range");
    if (!rev) return rev.error();
    return datastore_status{"etcd", r->endpoint, std::to_string(*rev)};
  }

  result<watch_handle> watch(const watch_options& o, watch_callback cb);

  etcd::transport& transport() { return *tr_; }
  logger& log() { return *log_; }
  executor* exec() const { return exec_; }

 private:
  resource stored(const resource& in, std::int64_t rev) const {
    resource out = in;
    out.revision = std::to_string(rev);
    boost::system::error_code ec;
    auto v = json::parse(in.spec.empty() ? std::string_view("{}") : std::string_view(in.spec), ec);
    if (!ec) out.spec = json::serialize(v);
    return out;
  }

  // A failed compare on mod_revision: the failure branch read the key back.
  result<resource> cas_failure(const resource_key& k, const std::string& expected, const reply& r) {
    std::int64_t current = 0;
    if (auto* resps = arr_field(r.obj, "responses"); resps && !resps->empty() && resps->at(0).is_object()) {
      if (auto* rr = obj_field(resps->at(0).get_object(), "response_range"))
        if (auto* kvs = arr_field(*rr, "kvs"); kvs && !kvs->empty() && kvs->at(0).is_object())
          current = int_field(kvs->at(0).get_object(), "mod_revision").value_or(0);
    }
    if (current == 0) return error(errc::not_found, k.to_string() + ": not found (etcd " + r.endpoint + ")");
    return error(errc::conflict, k.to_string() + ": revision " + expected + " is stale, the resource is now at revision " +
                                     std::to_string(current) + " (etcd " + r.endpoint + "); re-read and retry");
  }

  etcd_config cfg_;
  std::shared_ptr<etcd::transport> tr_;
  logger* log_;
  executor* exec_;
};

// ---- watch -------------------------------------------------------------------------------

namespace {

class etcd_watch final : public watch_handle::state, public std::enable_shared_from_this<etcd_watch> {
 public:
  etcd_watch(std::shared_ptr<etcd_store> store, watch_options o, watch_callback cb)
      : store_(std::move(store)), opts_(std::move(o)), cb_(std::move(cb)) {}

  void start() {
    thread_ = std::thread([self = shared_from_this()] { self->run(); });
  }

  void cancel() noexcept override {
    if (cancel_started_.exchange(true)) return;
    const auto me = std::this_thread::get_id();
    if (delivering_.load() == me || thread_.get_id() == me) {
      cancelled_ = true;  // from inside a callback: cb_mu_ is ours already
    } else {
      std::lock_guard lk(cb_mu_);
      cancelled_ = true;
    }
    {
      std::lock_guard lk(stream_mu_);
      if (stream_) stream_->close();
    }
    sleep_cv_.notify_all();
    if (thread_.joinable()) {
      if (thread_.get_id() == me) thread_.detach();
      else thread_.join();
    }
  }

 private:
  using type = watch_event::type;

  void deliver(watch_event ev) {
    if (auto* ex = store_->exec()) {
      ex->post([self = shared_from_this(), ev = std::move(ev)] { self->invoke(ev); });
    } else {
      invoke(ev);
    }
  }

  void invoke(const watch_event& ev) {
    if (cancelled_) return;
    std::unique_lock lk(cb_mu_);
    if (cancelled_) return;
    delivering_ = std::this_thread::get_id();
    try {
      cb_(ev);
    } catch (const std::exception& e) {
      store_->log().error(std::string("etcd watch: the callback threw: ") + e.what());
    } catch (...) {
      store_->log().error("etcd watch: the callback threw");
    }
    delivering_ = std::thread::id();
  }

  void deliver_error(error e) {
    store_->log().warn(e.message);
    watch_event ev;
    ev.kind = type::error;
    ev.err = std::move(e);
    deliver(std::move(ev));
  }

  // Waits before the next attempt; false when cancelled meanwhile.
  bool pause() {
    std::unique_lock lk(sleep_mu_);
    bool cancelled = sleep_cv_.wait_for(lk, backoff_, [&] { return cancelled_.load(); });
    backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(2000));
    return !cancelled;
  }

  bool wanted(const resource& r) const {
    if (r.kind != opts_.kind) return false;
    if (opts_.ns && r.ns != *opts_.ns) return false;
    return r.name.starts_with(opts_.name_prefix);
  }

  // The initial state: every page at one revision, then in_sync.
  bool initial_list() {
    list_options lo;
    lo.kind = opts_.kind;
    lo.ns = opts_.ns;
    lo.name_prefix = opts_.name_prefix;
    lo.limit = 1000;
    std::string revision;
    std::vector<resource> items;
    for (;;) {
      auto page = store_->list(lo);
      if (!page) {
        deliver_error(page.error());
        return false;
      }
      if (revision.empty()) revision = page->revision;
      for (auto& r : page->items) items.push_back(std::move(r));
      if (page->continue_token.empty()) break;
      lo.continue_token = page->continue_token;
      if (cancelled_) return false;
    }
    for (auto& r : items) {
      watch_event ev;
      ev.kind = type::added;
      ev.revision = r.revision;
      ev.object = std::move(r);
      deliver(std::move(ev));
    }
    watch_event sync;
    sync.kind = type::in_sync;
    sync.revision = revision;
    deliver(std::move(sync));
    next_ = to_int(revision) + 1;
    return true;
  }

  std::string watch_request() const {
    std::string begin = kind_dir(store_->config().prefix, opts_.kind);
    if (opts_.ns) begin += ns_segment(*opts_.ns) + "/" + escape_segment(opts_.name_prefix);
    json::object create{
        {"key", b64encode(begin)},
        {"range_end", b64encode(prefix_end(begin))},
        {"start_revision", std::to_string(next_)},
        {"prev_kv", true},
        {"progress_notify", true},
    };
    return json::serialize(json::object{{"create_request", std::move(create)}});
  }

  enum class step { more, reconnect, end };

  // One message of the stream.
  step handle(const std::string& line, const std::string& endpoint) {
    boost::system::error_code ec;
    auto v = json::parse(line, ec);
    if (ec || !v.is_object()) {
      deliver_error(error(errc::unavailable, "etcd " + endpoint + ": the watch stream sent something that is not JSON (" +
                                                 (ec ? ec.message() : std::string("not an object")) + "): " + excerpt(line) + "; reconnecting"));
      return step::reconnect;
    }
    auto& top = v.get_object();
    if (auto* e = obj_field(top, "error")) {
      std::string msg = "etcd " + endpoint + ": the watch stream failed: ";
      if (auto* m = e->if_contains("message"); m && m->is_string()) msg += std::string(m->get_string());
      else msg += excerpt(json::serialize(*e));
      deliver_error(error(errc::unavailable, msg + "; reconnecting"));
      return step::reconnect;
    }
    auto* res = obj_field(top, "result");
    if (!res) {
      deliver_error(error(errc::unavailable, "etcd " + endpoint + ": unexpected watch message: " + excerpt(line) + "; reconnecting"));
      return step::reconnect;
    }
    if (bool_field(*res, "canceled")) {
      auto compact = int_field(*res, "compact_revision").value_or(0);
      if (compact > 0) {
        watch_event ev;
        ev.kind = type::resync_needed;
        ev.revision = std::to_string(compact);
        ev.err = error(errc::conflict, "etcd " + endpoint + ": revision " + std::to_string(next_) + " was compacted (compact revision " +
                                           std::to_string(compact) + "); list again and watch from the list's revision");
        deliver(std::move(ev));
        return step::end;
      }
      std::string reason = "canceled by the server";
      if (auto* r = res->if_contains("cancel_reason"); r && r->is_string()) reason += ": " + std::string(r->get_string());
      deliver_error(error(errc::unavailable, "etcd " + endpoint + ": watch " + reason + "; reconnecting"));
      return step::reconnect;
    }
    if (bool_field(*res, "created")) {
      backoff_ = std::chrono::milliseconds(100);
      return step::more;
    }
    auto* events = arr_field(*res, "events");
    if (!events || events->empty()) {
      // A progress notification: every event up to header.revision has been sent.
      if (auto* h = obj_field(*res, "header"))
        if (auto rev = int_field(*h, "revision"); rev && *rev >= next_) next_ = *rev + 1;
      return step::more;
    }
    for (auto& e : *events) {
      if (!e.is_object()) continue;
      auto& eo = e.get_object();
      auto* kv = obj_field(eo, "kv");
      if (!kv) continue;
      auto mod = int_field(*kv, "mod_revision").value_or(0);
      bool is_delete = false;
      if (auto* t = eo.if_contains("type"); t && t->is_string()) is_delete = t->get_string() == "DELETE";
      watch_event ev;
      ev.revision = std::to_string(mod);
      if (is_delete) {
        ev.kind = type::deleted;
        std::optional<resource> prev;
        if (auto* p = obj_field(eo, "prev_kv"))
          if (auto d = store_->decode(*p, endpoint)) prev = std::move(*d);
        if (!prev) {
          std::optional<std::string> key;
          if (auto* k = kv->if_contains("key"); k && k->is_string()) key = b64decode(k->get_string());
          auto rk = key ? etcd_parse_resource_key(store_->config().prefix, *key) : result<resource_key>(error(errc::invalid, "no key"));
          if (!rk) {
            deliver_error(error(errc::invalid, "etcd " + endpoint + ": watch: " + rk.error().message));
            if (mod >= next_) next_ = mod + 1;
            continue;
          }
          prev = resource{};
          prev->kind = rk->kind;
          prev->ns = rk->ns;
          prev->name = rk->name;
        }
        ev.object = std::move(*prev);
        ev.object.revision = ev.revision;  // the revision of the deletion
      } else {
        auto d = store_->decode(*kv, endpoint);
        if (!d) {
          deliver_error(d.error());
          if (mod >= next_) next_ = mod + 1;
          continue;
        }
        auto created = int_field(*kv, "create_revision").value_or(0);
        ev.kind = created == mod ? type::added : type::modified;
        ev.object = std::move(*d);
      }
      if (mod >= next_) next_ = mod + 1;
      if (!wanted(ev.object)) continue;
      deliver(std::move(ev));
      if (cancelled_) return step::end;
    }
    return step::more;
  }

  void run() {
    bool listed = !opts_.revision.empty();
    if (listed) next_ = to_int(opts_.revision) + 1;
    while (!cancelled_) {
      if (!listed) {
        if (!initial_list()) {
          if (!pause()) return;
          continue;
        }
        listed = true;
      }
      auto s = store_->transport().stream("/v3/watch", watch_request());
      if (!s) {
        deliver_error(s.error());
        if (!pause()) return;
        continue;
      }
      std::shared_ptr<etcd::line_stream> stream(std::move(*s));
      {
        std::lock_guard lk(stream_mu_);
        stream_ = stream;
      }
      if (cancelled_) stream->close();
      step st = step::more;
      while (st == step::more && !cancelled_) {
        auto line = stream->next();
        if (!line) {
          if (!cancelled_) deliver_error(error(line.error().code, line.error().message + "; reconnecting from revision " + std::to_string(next_)));
          st = step::reconnect;
          break;
        }
        st = handle(*line, stream->endpoint());
      }
      stream->close();
      {
        std::lock_guard lk(stream_mu_);
        stream_.reset();
      }
      if (st == step::end || cancelled_) return;
      if (!pause()) return;
    }
  }

  std::shared_ptr<etcd_store> store_;
  watch_options opts_;
  watch_callback cb_;
  std::thread thread_;
  std::int64_t next_ = 0;  // the first revision not delivered yet (watch thread only)
  std::chrono::milliseconds backoff_{100};

  std::mutex cb_mu_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> cancel_started_{false};
  std::atomic<std::thread::id> delivering_{};
  std::mutex stream_mu_;
  std::shared_ptr<etcd::line_stream> stream_;
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
};

}  // namespace

result<watch_handle> etcd_store::watch(const watch_options& o, watch_callback cb) {
  if (o.kind.empty()) return error(errc::invalid, "watch: kind is empty");
  if (!o.revision.empty() && !all_digits(o.revision))
    return error(errc::invalid, "watch " + o.kind + ": '" + o.revision + "' is not an etcd revision");
  if (!cb) return error(errc::invalid, "watch " + o.kind + ": no callback");
  auto w = std::make_shared<etcd_watch>(shared_from_this(), o, std::move(cb));
  w->start();
  return watch_handle(std::move(w));
}

}  // namespace detail

// ---- the public type -----------------------------------------------------------------------

result<etcd_datastore> etcd_datastore::open(etcd_config c, logger* log, executor* exec) {
  if (auto r = check_etcd_config(c); !r) return r.error();
  detail::etcd::transport_options t;
  for (auto& url : c.endpoints) {
    auto ep = detail::etcd::parse_endpoint(url);
    if (!ep) return error(errc::invalid, "endpoints: " + ep.error().message);
    t.endpoints.push_back(std::move(*ep));
  }
  t.ca_file = c.ca_file;
  t.cert_file = c.cert_file;
  t.key_file = c.key_file;
  t.username = c.username;
  t.password = c.password;
  t.timeout = c.timeout;
  auto tr = detail::etcd::transport::create(std::move(t));
  if (!tr) return tr.error();
  return etcd_datastore(std::make_shared<detail::etcd_store>(std::move(c), std::move(*tr), log, exec));
}

result<resource> etcd_datastore::get(const resource_key& k) { return s_->get(k); }
result<resource_list> etcd_datastore::list(const list_options& o) { return s_->list(o); }
result<resource> etcd_datastore::create(const resource& r) { return s_->create(r); }
result<resource> etcd_datastore::update(const resource& r) { return s_->update(r); }
result<void> etcd_datastore::remove(const resource_key& k, std::string_view revision) { return s_->remove(k, revision); }
result<watch_handle> etcd_datastore::watch(const watch_options& o, watch_callback cb) { return s_->watch(o, std::move(cb)); }
result<datastore_status> etcd_datastore::status() { return s_->status(); }
const etcd_config& etcd_datastore::config() const noexcept { return s_->config(); }

static_assert(datastore<etcd_datastore>);

CNF_END_NAMESPACE
