// cnf/detail/erasure.hpp — shared pieces of the five type-erased part wrappers.
#pragma once
#include <cnf/error.hpp>

#include <concepts>
#include <type_traits>
#include <utility>

CNF_BEGIN_NAMESPACE
namespace detail {

/// An operation of a part may return X (and throw on failure) or result<X>.
template <class R, class X>
concept returns = std::same_as<std::remove_cvref_t<R>, X> || std::same_as<std::remove_cvref_t<R>, result<X>>;

/// Calls f inside the plugin and hands back result<X> whatever f returns or throws.
template <class X, class F>
result<X> call(F&& f) noexcept {
  try {
    if constexpr (std::is_void_v<X>) {
      if constexpr (std::is_void_v<std::invoke_result_t<F>>) {
        std::forward<F>(f)();
        return {};
      } else {
        return std::forward<F>(f)();
      }
    } else {
      return result<X>(std::forward<F>(f)());
    }
  } catch (const error_exception& e) {
    return e.get();
  } catch (const std::bad_alloc&) {
    return error(errc::internal, "out of memory");
  } catch (const std::exception& e) {
    return error(errc::internal, std::string("unexpected exception: ") + e.what());
  } catch (...) {
    return error(errc::internal, "unexpected non-standard exception");
  }
}

template <class T, class Self>
concept not_self = !std::same_as<std::remove_cvref_t<T>, Self>;

}  // namespace detail
CNF_END_NAMESPACE
