// cnf/datastore.hpp — the Datastore part: where cluster state lives.
//
// State is a set of typed resources named by (kind, namespace, name), each with a JSON
// spec, labels and an opaque revision. Kinds and field names follow Calico's
// projectcalico.org/v3 model (IPPool, IPAMBlock, BlockAffinity, IPAMHandle, Node, ...).
// Every write is compare-and-swap on the revision: correctness of IPAM and of the node
// agent rests on that, never on a process-local lock.
//
//   cnf::any_datastore ds = ...;                          // from a plugin or built in
//   auto r = ds.get({"IPPool", "", "default-ipv4"});
//   if (!r && r.error().code == cnf::errc::not_found) { ... }
//   cnf::resource pool = *r;  pool.spec = R"({"cidr":"10.244.0.0/16"})";
//   auto u = ds.update(pool);                             // errc::conflict if it changed
//
// Backends: local (files, the default), etcd v3, Kubernetes CRDs. Errors distinguish
// errc::not_found, errc::already_exists, errc::conflict, errc::unavailable (the CNI plugin
// answers 11, "try again later") and errc::invalid (content that does not parse).
//
// Watch delivers events on the executor the host gave the plugin (or, when the host gave
// none, on a thread of the datastore's own). Order: one `added` per existing resource
// when starting without a revision, then `in_sync`, then changes in revision order. After
// a compaction (etcd) or 410 Gone (Kubernetes) the watch delivers `resync_needed` and
// ends: the consumer lists again and watches from the list's revision.
//
// Optional: deferred durability, for a datastore whose every write pays a flush (local).
// After defer_sync(true), a write through this handle is decided at once (compare-and-
// swap, its place in the order, visible to this handle's own reads) but becomes durable,
// and visible to other readers, only at the next sync(): one flush covers every write of
// a CNI ADD (addresses, handle, endpoint). Nothing may be acknowledged to the outside
// (a CNI result) before sync() succeeds. A process that dies before sync() leaves those
// writes as a machine crash before acknowledgement would: committed in order, or lost
// together with everything after them. A datastore whose writes are durable when they
// return (etcd, Kubernetes) need not have it: any_datastore then makes both no-ops.
#pragma once
#include <cnf/detail/erasure.hpp>
#include <cnf/error.hpp>

#include <concepts>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE

/// Resource kinds cnf uses (projectcalico.org/v3 names).
namespace kinds {
inline constexpr std::string_view ip_pool = "IPPool";
inline constexpr std::string_view ipam_block = "IPAMBlock";
inline constexpr std::string_view block_affinity = "BlockAffinity";
inline constexpr std::string_view ipam_handle = "IPAMHandle";
inline constexpr std::string_view ipam_config = "IPAMConfig";
inline constexpr std::string_view ip_reservation = "IPReservation";
inline constexpr std::string_view node = "Node";
inline constexpr std::string_view bgp_peer = "BGPPeer";
inline constexpr std::string_view bgp_configuration = "BGPConfiguration";
inline constexpr std::string_view bgp_filter = "BGPFilter";
inline constexpr std::string_view workload_endpoint = "WorkloadEndpoint";
inline constexpr std::string_view network_policy = "NetworkPolicy";
inline constexpr std::string_view global_network_policy = "GlobalNetworkPolicy";
inline constexpr std::string_view host_endpoint = "HostEndpoint";
inline constexpr std::string_view network_set = "NetworkSet";
}  // namespace kinds

struct resource_key {
  std::string kind;
  std::string ns;  ///< empty for cluster-scoped kinds
  std::string name;
  friend bool operator==(const resource_key&, const resource_key&) = default;
  std::string to_string() const { return ns.empty() ? kind + "/" + name : kind + "/" + ns + "/" + name; }
};

struct resource {
  std::string kind;
  std::string ns;
  std::string name;
  std::map<std::string, std::string> labels;
  std::string spec = "{}";  ///< JSON object text
  std::string revision;     ///< opaque; empty before the first write

  resource_key key() const { return {kind, ns, name}; }
  friend bool operator==(const resource&, const resource&) = default;
};

struct list_options {
  std::string kind;
  std::optional<std::string> ns;  ///< only this namespace; nullopt = all
  std::string name_prefix;        ///< only names starting with this
  std::size_t limit = 0;          ///< page size; 0 = everything
  std::string continue_token;     ///< from the previous page
};

struct resource_list {
  std::vector<resource> items;
  std::string revision;        ///< store revision the list is consistent with; watch from here
  std::string continue_token;  ///< non-empty when more pages follow
};

struct watch_options {
  std::string kind;
  std::optional<std::string> ns;
  std::string name_prefix;
  /// Deliver changes after this revision. Empty: first deliver the current state as
  /// `added` events, then `in_sync`, then changes.
  std::string revision;
};

struct watch_event {
  enum class type { added, modified, deleted, in_sync, resync_needed, error };
  type kind = type::added;
  resource object;         ///< for deleted: the last known state (at least the key)
  std::string revision;    ///< store revision of this event
  cnf::error err;          ///< for type::error (the watch keeps retrying)
};

inline constexpr std::string_view to_string(watch_event::type t) noexcept {
  switch (t) {
    case watch_event::type::added: return "added";
    case watch_event::type::modified: return "modified";
    case watch_event::type::deleted: return "deleted";
    case watch_event::type::in_sync: return "in-sync";
    case watch_event::type::resync_needed: return "resync-needed";
    case watch_event::type::error: return "error";
  }
  return "?";
}

using watch_callback = std::function<void(const watch_event&)>;

/// Owns a running watch; destroying it (or cancel()) stops delivery. Events already
/// handed to the executor may still run, so callbacks must not outlive their captures.
class watch_handle {
 public:
  struct state {
    virtual ~state() = default;
    virtual void cancel() noexcept = 0;
  };
  watch_handle() = default;
  explicit watch_handle(std::shared_ptr<state> s) : s_(std::move(s)) {}
  watch_handle(watch_handle&&) noexcept = default;
  watch_handle& operator=(watch_handle&& o) noexcept {
    if (this != &o) { cancel(); s_ = std::move(o.s_); }
    return *this;
  }
  ~watch_handle() { cancel(); }
  void cancel() noexcept {
    if (s_) s_->cancel();
    s_.reset();
  }
  bool active() const noexcept { return s_ != nullptr; }

 private:
  std::shared_ptr<state> s_;
};

struct datastore_status {
  std::string backend;   ///< "local", "etcd", "kubernetes"
  std::string endpoint;  ///< directory, URL of the endpoint in use
  std::string revision;  ///< current store revision
};

namespace detail {
template <class T> concept ds_get = requires(T& t, const resource_key& k) { { t.get(k) } -> returns<resource>; };
template <class T> concept ds_list = requires(T& t, const list_options& o) { { t.list(o) } -> returns<resource_list>; };
template <class T> concept ds_create = requires(T& t, const resource& r) { { t.create(r) } -> returns<resource>; };
template <class T> concept ds_update = requires(T& t, const resource& r) { { t.update(r) } -> returns<resource>; };
template <class T> concept ds_remove = requires(T& t, const resource_key& k, std::string_view rev) { { t.remove(k, rev) } -> returns<void>; };
template <class T> concept ds_watch = requires(T& t, const watch_options& o, watch_callback cb) { { t.watch(o, std::move(cb)) } -> returns<watch_handle>; };
template <class T> concept ds_status = requires(T& t) { { t.status() } -> returns<datastore_status>; };
/// The optional capability above: defer_sync(bool) and sync().
template <class T> concept ds_deferred_sync = requires(T& t, const T& ct, bool on) {
  t.defer_sync(on);
  { t.sync() } -> returns<void>;
  { ct.sync_deferred() } -> std::convertible_to<bool>;
};
}  // namespace detail

/// A Datastore: get, list, create, update (compare-and-swap on revision), remove (with an
/// optional expected revision), watch and status. Each operation may return its value
/// (and throw cnf::error_exception) or return cnf::result<value>.
template <class T>
concept datastore = detail::ds_get<T> && detail::ds_list<T> && detail::ds_create<T> && detail::ds_update<T> &&
                    detail::ds_remove<T> && detail::ds_watch<T> && detail::ds_status<T>;

/// static_assert(cnf::check_datastore<my_store>()) names the first missing operation.
template <class T>
consteval bool check_datastore() {
  static_assert(detail::ds_get<T>, "cnf::datastore needs: get(const resource_key&) -> resource or result<resource>");
  static_assert(detail::ds_list<T>, "cnf::datastore needs: list(const list_options&) -> resource_list or result<resource_list>");
  static_assert(detail::ds_create<T>, "cnf::datastore needs: create(const resource&) -> resource or result<resource>");
  static_assert(detail::ds_update<T>, "cnf::datastore needs: update(const resource&) -> resource or result<resource> (compare-and-swap on revision)");
  static_assert(detail::ds_remove<T>, "cnf::datastore needs: remove(const resource_key&, std::string_view revision) -> void or result<void>");
  static_assert(detail::ds_watch<T>, "cnf::datastore needs: watch(const watch_options&, watch_callback) -> watch_handle or result<watch_handle>");
  static_assert(detail::ds_status<T>, "cnf::datastore needs: status() -> datastore_status or result<datastore_status>");
  return datastore<T>;
}

namespace detail {
struct datastore_iface {
  virtual ~datastore_iface() = default;
  virtual result<resource> get(const resource_key& k) noexcept = 0;
  virtual result<resource_list> list(const list_options& o) noexcept = 0;
  virtual result<resource> create(const resource& r) noexcept = 0;
  virtual result<resource> update(const resource& r) noexcept = 0;
  virtual result<void> remove(const resource_key& k, std::string_view revision) noexcept = 0;
  virtual result<watch_handle> watch(const watch_options& o, watch_callback cb) noexcept = 0;
  virtual result<datastore_status> status() noexcept = 0;
  virtual void defer_sync(bool on) noexcept = 0;
  virtual result<void> sync() noexcept = 0;
  virtual bool sync_deferred() const noexcept = 0;
};

template <class T>
struct datastore_model final : datastore_iface {
  template <class... A>
  explicit datastore_model(A&&... a) : impl(std::forward<A>(a)...) {}
  result<resource> get(const resource_key& k) noexcept override { return call<resource>([&] { return impl.get(k); }); }
  result<resource_list> list(const list_options& o) noexcept override { return call<resource_list>([&] { return impl.list(o); }); }
  result<resource> create(const resource& r) noexcept override { return call<resource>([&] { return impl.create(r); }); }
  result<resource> update(const resource& r) noexcept override { return call<resource>([&] { return impl.update(r); }); }
  result<void> remove(const resource_key& k, std::string_view rev) noexcept override { return call<void>([&] { return impl.remove(k, rev); }); }
  result<watch_handle> watch(const watch_options& o, watch_callback cb) noexcept override {
    return call<watch_handle>([&] { return impl.watch(o, std::move(cb)); });
  }
  result<datastore_status> status() noexcept override { return call<datastore_status>([&] { return impl.status(); }); }
  void defer_sync(bool on) noexcept override {
    if constexpr (ds_deferred_sync<T>) (void)call<void>([&] { impl.defer_sync(on); });
  }
  result<void> sync() noexcept override {
    if constexpr (ds_deferred_sync<T>) return call<void>([&] { return impl.sync(); });
    else return {};
  }
  bool sync_deferred() const noexcept override {
    if constexpr (ds_deferred_sync<T>) {
      try {
        return impl.sync_deferred();
      } catch (...) {
        return false;
      }
    } else {
      return false;
    }
  }
  T impl;
};
}  // namespace detail

/// Holds any datastore; copies share the same store. Models cnf::datastore itself.
class any_datastore {
 public:
  any_datastore() = default;
  template <class T>
    requires detail::not_self<T, any_datastore> && datastore<std::remove_cvref_t<T>>
  any_datastore(T&& t)  // NOLINT: implicit by design, like std::function
      : p_(std::make_shared<detail::datastore_model<std::remove_cvref_t<T>>>(std::forward<T>(t))) {}
  explicit any_datastore(std::shared_ptr<detail::datastore_iface> p) : p_(std::move(p)) {}

  explicit operator bool() const noexcept { return p_ != nullptr; }

  result<resource> get(const resource_key& k) const { return p_->get(k); }
  result<resource_list> list(const list_options& o) const { return p_->list(o); }
  result<resource> create(const resource& r) const { return p_->create(r); }
  result<resource> update(const resource& r) const { return p_->update(r); }
  result<void> remove(const resource_key& k, std::string_view revision = {}) const { return p_->remove(k, revision); }
  result<watch_handle> watch(const watch_options& o, watch_callback cb) const { return p_->watch(o, std::move(cb)); }
  result<datastore_status> status() const { return p_->status(); }
  /// Deferred durability (see the top of this file); no-ops for a datastore without it.
  void defer_sync(bool on) const { p_->defer_sync(on); }
  result<void> sync() const { return p_->sync(); }
  /// True while writes wait for sync(): concurrent writes then gain nothing.
  bool sync_deferred() const { return p_->sync_deferred(); }

  /// All pages of a list, concatenated.
  result<resource_list> list_all(list_options o) const {
    resource_list all;
    for (;;) {
      auto page = list(o);
      if (!page) return page.error();
      for (auto& r : page->items) all.items.push_back(std::move(r));
      if (all.revision.empty()) all.revision = page->revision;
      if (page->continue_token.empty()) return all;
      o.continue_token = page->continue_token;
    }
  }

  const std::shared_ptr<detail::datastore_iface>& interface() const noexcept { return p_; }

 private:
  std::shared_ptr<detail::datastore_iface> p_;
};

static_assert(datastore<any_datastore>);

CNF_END_NAMESPACE
