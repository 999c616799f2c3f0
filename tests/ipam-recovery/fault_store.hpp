// A test-only datastore wrapper that interrupts an operation at its k-th write, the way a
// crash or a lost connection would. Never used outside tests.
//
//   fault_store f(inner);            // counts writes (create, update, remove)
//   f.arm(3, fault_store::mode::die_after);
//   cnf::calico_ipam::ipam ipam(cnf::any_datastore(f), "node-1");
//
// Modes at the k-th write:
//   die_before  the write is not applied; it and every later call fail (the process is gone)
//   die_after   the write is applied, reported failed; every later call fails (a crash right
//               after the datastore took it, or an etcd timeout on an applied request)
//   fail_once   the write is not applied and fails; later calls work (a transient error:
//               the operation's own rollback runs)
//   exit_after  the write is applied, then the process ends with _exit(137) (forked
//               children only: a real kill, with the kernel releasing its file locks)
#pragma once
#include <cnf/datastore.hpp>

#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>

namespace recovery_test {

class fault_store {
 public:
  enum class mode { die_before, die_after, fail_once, exit_after };

  explicit fault_store(cnf::any_datastore inner) : s_(std::make_shared<shared>()) { s_->inner = std::move(inner); }

  void arm(std::uint64_t k, mode m) {
    s_->writes = 0;
    s_->at = k;
    s_->how = m;
    s_->dead = false;
    s_->fired = false;
  }
  void disarm() { s_->at = 0; }
  std::uint64_t writes() const { return s_->writes; }
  bool fired() const { return s_->fired; }

  cnf::result<cnf::resource> get(const cnf::resource_key& k) {
    if (s_->dead) return gone();
    return s_->inner.get(k);
  }
  cnf::result<cnf::resource_list> list(const cnf::list_options& o) {
    if (s_->dead) return gone();
    return s_->inner.list(o);
  }
  cnf::result<cnf::resource> create(const cnf::resource& r) {
    return write<cnf::resource>([&] { return s_->inner.create(r); });
  }
  cnf::result<cnf::resource> update(const cnf::resource& r) {
    return write<cnf::resource>([&] { return s_->inner.update(r); });
  }
  cnf::result<void> remove(const cnf::resource_key& k, std::string_view rev) {
    return write<void>([&] { return s_->inner.remove(k, rev); });
  }
  cnf::result<cnf::watch_handle> watch(const cnf::watch_options& o, cnf::watch_callback cb) { return s_->inner.watch(o, std::move(cb)); }
  cnf::result<cnf::datastore_status> status() { return s_->inner.status(); }

 private:
  struct shared {
    cnf::any_datastore inner;
    std::atomic<std::uint64_t> writes{0};
    std::uint64_t at = 0;
    mode how = mode::die_before;
    std::atomic<bool> dead{false}, fired{false};
  };

  static cnf::error gone() { return cnf::error(cnf::errc::unavailable, "fault_store: the datastore is unreachable (injected)"); }

  template <class T, class F>
  cnf::result<T> write(F&& f) {
    if (s_->dead) return gone();
    std::uint64_t n = ++s_->writes;
    if (s_->at == 0 || n != s_->at) return f();
    s_->fired = true;
    switch (s_->how) {
      case mode::die_before:
        s_->dead = true;
        return gone();
      case mode::fail_once:
        return gone();
      case mode::die_after: {
        auto r = f();
        (void)r;
        s_->dead = true;
        return gone();
      }
      case mode::exit_after: {
        auto r = f();
        (void)r;
        ::_exit(137);
      }
    }
    return gone();
  }

  std::shared_ptr<shared> s_;
};

static_assert(cnf::check_datastore<fault_store>());

}  // namespace recovery_test
