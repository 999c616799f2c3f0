// cnf/error.hpp — errors and results for every cnf part.
//
// Nothing throws across a plugin boundary: interfaces return cnf::result<T>, which holds
// either a value or a cnf::error (a category plus a message that says what, where and
// what to do). Plugin implementations may throw inside; the type-erasure layer turns an
// escaping exception into an error before it leaves the plugin.
//
//   cnf::result<int> parse(std::string_view s);
//   auto r = parse("42");
//   if (!r) return r.error();          // propagate
//   int v = r.value();                 // or throw cnf::error_exception
#pragma once
#include <cnf/config.hpp>

#include <exception>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

CNF_BEGIN_NAMESPACE

/// What kind of failure; callers branch on this, people read the message.
enum class errc {
  ok = 0,
  not_found,        // the resource / handle / address does not exist
  already_exists,   // create of an existing resource
  conflict,         // compare-and-swap lost: revision changed; re-read and retry
  unavailable,      // backend unreachable or timed out: try again later (CNI code 11)
  invalid,          // bad input: config, arguments, datastore content
  exhausted,        // no address / block left
  unsupported,      // the part cannot do this
  io,               // local I/O or kernel call failed
  internal,         // a bug or an escaped exception
};

inline constexpr std::string_view to_string(errc e) noexcept {
  switch (e) {
    case errc::ok: return "ok";
    case errc::not_found: return "not found";
    case errc::already_exists: return "already exists";
    case errc::conflict: return "conflict";
    case errc::unavailable: return "unavailable";
    case errc::invalid: return "invalid";
    case errc::exhausted: return "exhausted";
    case errc::unsupported: return "unsupported";
    case errc::io: return "i/o error";
    case errc::internal: return "internal error";
  }
  return "unknown";
}

struct error {
  errc code = errc::internal;
  std::string message;

  error() = default;
  error(errc c, std::string m) : code(c), message(std::move(m)) {}
  friend bool operator==(const error&, const error&) = default;
};

/// Thrown by result<T>::value() on an error, and by plugin code that prefers exceptions.
class error_exception : public std::exception {
 public:
  explicit error_exception(error e) : err_(std::move(e)) {}
  error_exception(errc c, std::string m) : err_(c, std::move(m)) {}
  const char* what() const noexcept override { return err_.message.c_str(); }
  const cnf::error& get() const noexcept { return err_; }
 private:
  cnf::error err_;
};

template <class T>
class [[nodiscard]] result {
 public:
  using value_type = T;
  template <class U = T, std::enable_if_t<std::is_constructible_v<T, U&&>, int> = 0>
  result(U&& v) : v_(std::in_place_index<0>, std::forward<U>(v)) {}
  result(cnf::error e) : v_(std::in_place_index<1>, std::move(e)) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { check(); return std::get<0>(v_); }
  const T& value() const& { check(); return std::get<0>(v_); }
  // By value: a reference into a temporary result would dangle in `for (x : f().value())`.
  T value() && { check(); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const cnf::error& error() const& { return std::get<1>(v_); }
  cnf::error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  void check() const { if (v_.index() != 0) throw error_exception(std::get<1>(v_)); }
  std::variant<T, cnf::error> v_;
};

template <>
class [[nodiscard]] result<void> {
 public:
  using value_type = void;
  result() = default;
  result(cnf::error e) : err_(std::move(e)), ok_(false) {}
  bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  void value() const { if (!ok_) throw error_exception(err_); }
  const cnf::error& error() const& { return err_; }
  cnf::error&& error() && { return std::move(err_); }
 private:
  cnf::error err_{errc::ok, {}};
  bool ok_ = true;
};

inline error make_error(errc c, std::string m) { return error(c, std::move(m)); }

namespace detail {
/// Runs f, turning any escaping exception into an error result. Used at every point
/// where control leaves a plugin.
template <class R, class F>
R guard(F&& f) noexcept {
  try {
    return std::forward<F>(f)();
  } catch (const error_exception& e) {
    return R(e.get());
  } catch (const std::exception& e) {
    return R(error(errc::internal, std::string("unexpected exception: ") + e.what()));
  } catch (...) {
    return R(error(errc::internal, "unexpected non-standard exception"));
  }
}
}  // namespace detail

CNF_END_NAMESPACE
