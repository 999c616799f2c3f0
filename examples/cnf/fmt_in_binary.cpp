// With CNF_CNI_BUILTIN_PLUGINS the program links no shared C++ library (each one would
// load the shared C++ runtime at start-up), and Debian ships fmt only as a shared library:
// this translation unit compiles fmt's implementation into the program instead, with the
// few instantiations the shared library would otherwise provide.
#if CNF_FMT_IN_BINARY
#include <fmt/format-inl.h>

FMT_BEGIN_NAMESPACE
namespace detail {
template FMT_API auto thousands_sep_impl(locale_ref) -> thousands_sep_result<char>;
template FMT_API auto decimal_point_impl(locale_ref) -> char;
template FMT_API void buffer<char>::append(const char*, const char*);
}  // namespace detail
FMT_END_NAMESPACE
#endif
