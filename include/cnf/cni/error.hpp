// cnf/cni/error.hpp — CNI error codes, the CNI error object, and cni::result<T>.
//
// A plugin that fails prints (SPEC section 5, "Error"):
//   {"cniVersion":"1.1.0","code":7,"msg":"...","details":"..."}
// and exits non-zero. Codes 0-99 are reserved by the spec; 100+ are plugin specific —
// cnf's are listed below and are stable (runtimes and operators may match on them).
//
//   cni::result<int> f() { return cni::error{cni::error_code::invalid_config, "mtu: ..."}; }
//   auto e = cni::from_cnf(cnf::error(cnf::errc::exhausted, "pool full"));  // code 100
//   std::fputs(e.to_json("1.0.0").c_str(), stdout);
//
// cni::result<T> mirrors cnf::result<T> but carries a cni::error, so the CNI layer keeps
// the spec code; a cnf::error converts implicitly (through from_cnf) so `return r.error();`
// works for a cnf::result r.
#pragma once
#include <cnf/cni/json_writer.hpp>
#include <cnf/cni/version.hpp>
#include <cnf/error.hpp>

#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

CNF_BEGIN_NAMESPACE
namespace cni {

enum class error_code : std::uint32_t {
  // ---- reserved by the spec (0-99) ----
  incompatible_version = 1,   ///< incompatible CNI version
  unsupported_field = 2,      ///< unsupported field in network config (message has key and value)
  unknown_container = 3,      ///< container unknown or gone: runtime needs no cleanup (no DEL)
  invalid_environment = 4,    ///< invalid CNI_* environment variables (message names them)
  io_failure = 5,             ///< I/O failure, e.g. reading stdin
  decoding_failure = 6,       ///< failed to decode content, e.g. stdin is not JSON
  invalid_config = 7,         ///< network config failed validation
  invalid_netns = 8,          ///< CNI_NETNS unusable (libcni's code; not in the spec's table)
  try_again_later = 11,       ///< transient condition: the runtime should retry later
  plugin_not_available = 50,  ///< STATUS: cannot service ADD requests
  limited_connectivity = 51,  ///< STATUS: not available, existing pods may have limited connectivity
  // ---- cnf plugin-specific (100+) ----
  ipam_exhausted = 100,       ///< no address left in the pools allowed for this pod
  datastore_error = 101,      ///< the datastore answered with an error or bad content (not a timeout: that is 11)
  dataplane_failure = 102,    ///< a netlink / dataplane programming call failed
  interface_exists = 103,     ///< the attachment exists: CNI_IFNAME, the host-side veth, or (cnf as an IPAM) the handle's addresses
  internal = 999,             ///< a bug or an escaped exception (libcni uses 999 likewise)
};

constexpr std::uint32_t to_uint(error_code c) noexcept { return static_cast<std::uint32_t>(c); }
constexpr bool is_plugin_specific(error_code c) noexcept { return to_uint(c) >= 100; }

/// The spec's description of a code ("Invalid network config"); "" for unknown codes.
constexpr std::string_view description(error_code c) noexcept {
  switch (c) {
    case error_code::incompatible_version: return "Incompatible CNI version";
    case error_code::unsupported_field: return "Unsupported field in network configuration";
    case error_code::unknown_container: return "Container unknown or does not exist";
    case error_code::invalid_environment: return "Invalid necessary environment variables";
    case error_code::io_failure: return "I/O failure";
    case error_code::decoding_failure: return "Failed to decode content";
    case error_code::invalid_config: return "Invalid network config";
    case error_code::invalid_netns: return "Invalid network namespace";
    case error_code::try_again_later: return "Try again later";
    case error_code::plugin_not_available: return "The plugin is not available";
    case error_code::limited_connectivity: return "The plugin is not available; existing containers may have limited connectivity";
    case error_code::ipam_exhausted: return "IP addresses exhausted";
    case error_code::datastore_error: return "Datastore error";
    case error_code::dataplane_failure: return "Dataplane programming failed";
    case error_code::interface_exists: return "Interface already exists";
    case error_code::internal: return "Internal error";
  }
  return "";
}

/// The CNI error result. `msg` is the one-line message that says what failed and where
/// (it names the variable or field path); `details` is optional longer context.
struct error {
  error_code code = error_code::internal;
  std::string msg;
  std::string details;

  /// Appends the spec's error object: always all four keys, in spec order.
  void write_json(std::string& out, std::string_view cni_version = spec_version) const {
    detail::json_writer w(out);
    w.begin_object()
        .member("cniVersion", cni_version)
        .member("code", std::uint64_t{to_uint(code)})
        .member("msg", msg)
        .member("details", details)
        .end_object();
  }
  /// `cni_version`: the version in use (the negotiated one once known).
  std::string to_json(std::string_view cni_version = spec_version) const {
    std::string out;
    out.reserve(64 + msg.size() + details.size());
    write_json(out, cni_version);
    return out;
  }
  /// "msg; details" (as libcni prints errors) — for logs.
  std::string to_string() const { return details.empty() ? msg : msg + "; " + details; }

  friend bool operator==(const error&, const error&) = default;
};

inline error make_error(error_code c, std::string msg, std::string details = {}) {
  return error{c, std::move(msg), std::move(details)};
}

/// cnf::errc -> CNI code. Callers that know more decide before mapping: e.g. DEL treats
/// not_found as success, CHECK of a vanished container returns unknown_container, and
/// the dataplane reports dataplane_failure rather than the generic io_failure.
constexpr error_code to_cni_code(cnf::errc e) noexcept {
  switch (e) {
    case cnf::errc::unavailable: return error_code::try_again_later;
    case cnf::errc::conflict: return error_code::try_again_later;  // CAS lost: retry is the fix
    case cnf::errc::invalid: return error_code::invalid_config;
    case cnf::errc::not_found: return error_code::invalid_config;   // something the config names is missing
    case cnf::errc::exhausted: return error_code::ipam_exhausted;
    case cnf::errc::already_exists: return error_code::interface_exists;
    case cnf::errc::unsupported: return error_code::unsupported_field;
    case cnf::errc::io: return error_code::io_failure;
    case cnf::errc::ok:
    case cnf::errc::internal: return error_code::internal;
  }
  return error_code::internal;
}

inline error from_cnf(const cnf::error& e) { return error{to_cni_code(e.code), e.message, {}}; }

class error_exception : public std::exception {
 public:
  explicit error_exception(cni::error e) : err_(std::move(e)) {}
  const char* what() const noexcept override { return err_.msg.c_str(); }
  const cni::error& get() const noexcept { return err_; }
 private:
  cni::error err_;
};

/// A value or a cni::error (same interface as cnf::result<T>).
template <class T>
class [[nodiscard]] result {
 public:
  using value_type = T;
  template <class U = T, std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                              !std::is_same_v<std::decay_t<U>, cni::error> &&
                                              !std::is_same_v<std::decay_t<U>, cnf::error>, int> = 0>
  result(U&& v) : v_(std::in_place_index<0>, std::forward<U>(v)) {}
  result(cni::error e) : v_(std::in_place_index<1>, std::move(e)) {}
  result(const cnf::error& e) : v_(std::in_place_index<1>, from_cnf(e)) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { check(); return std::get<0>(v_); }
  const T& value() const& { check(); return std::get<0>(v_); }
  // By value, as cnf::result: a reference into a temporary would dangle in `for (x : f().value())`.
  T value() && { check(); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const cni::error& error() const& { return std::get<1>(v_); }
  cni::error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  void check() const { if (v_.index() != 0) throw error_exception(std::get<1>(v_)); }
  std::variant<T, cni::error> v_;
};

template <>
class [[nodiscard]] result<void> {
 public:
  using value_type = void;
  result() = default;
  result(cni::error e) : err_(std::move(e)), ok_(false) {}
  result(const cnf::error& e) : err_(from_cnf(e)), ok_(false) {}
  bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  void value() const { if (!ok_) throw error_exception(err_); }
  const cni::error& error() const& { return err_; }
  cni::error&& error() && { return std::move(err_); }
 private:
  cni::error err_{};
  bool ok_ = true;
};

}  // namespace cni
CNF_END_NAMESPACE
