// A datastore wrapper for one CNI call: after the first errc::unavailable (etcd down or
// hung, the API server unreachable), every later operation fails at once with the same
// error instead of waiting for the datastore's timeout again. A call then fails with
// code 11 within one timeout, however many writes its rollback would have made; what
// the rollback could not release is the runtime's DEL's (or CNI GC's) to release.
#pragma once
#include <cnf/datastore.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

CNF_BEGIN_NAMESPACE
namespace cni {

class fail_fast_datastore {
 public:
  explicit fail_fast_datastore(cnf::any_datastore inner) : s_(std::make_shared<state>()) { s_->inner = std::move(inner); }

  cnf::result<cnf::resource> get(const cnf::resource_key& k) const { return run([&] { return s_->inner.get(k); }); }
  cnf::result<cnf::resource_list> list(const cnf::list_options& o) const { return run([&] { return s_->inner.list(o); }); }
  cnf::result<cnf::resource> create(const cnf::resource& r) const { return run([&] { return s_->inner.create(r); }); }
  cnf::result<cnf::resource> update(const cnf::resource& r) const { return run([&] { return s_->inner.update(r); }); }
  cnf::result<void> remove(const cnf::resource_key& k, std::string_view rev) const { return run([&] { return s_->inner.remove(k, rev); }); }
  cnf::result<cnf::watch_handle> watch(const cnf::watch_options& o, cnf::watch_callback cb) const {
    return run([&] { return s_->inner.watch(o, std::move(cb)); });
  }
  cnf::result<cnf::datastore_status> status() const { return run([&] { return s_->inner.status(); }); }
  void defer_sync(bool on) const { s_->inner.defer_sync(on); }
  cnf::result<void> sync() const { return run([&] { return s_->inner.sync(); }); }
  bool sync_deferred() const { return s_->inner.sync_deferred(); }

 private:
  struct state {
    cnf::any_datastore inner;
    std::atomic<bool> tripped{false};
    std::mutex mu;
    cnf::error first;
  };
  template <class F>
  auto run(F&& f) const -> decltype(f()) {
    if (s_->tripped.load()) {
      std::lock_guard l(s_->mu);
      return cnf::error(cnf::errc::unavailable, s_->first.message + " (not asked again in this call)");
    }
    auto r = f();
    if (!r && r.error().code == cnf::errc::unavailable) {
      std::lock_guard l(s_->mu);
      if (!s_->tripped.exchange(true)) s_->first = r.error();
    }
    return r;
  }
  std::shared_ptr<state> s_;
};

}  // namespace cni
CNF_END_NAMESPACE
