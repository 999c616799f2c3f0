// cnf/config.hpp — versioning and build identity shared by every cnf header.
//
// CNF_ABI_VERSION is the plugin ABI: a plugin built with one number is refused by a
// host built with another, before any of its code runs. It also names the inline
// namespace, so objects from two incompatible builds cannot be linked together.
// CNF_BUILD_TAG names what else must match across the boundary (compiler, standard
// library and its debug mode and string ABI, sanitizers, a static C++ runtime when the
// build says so): C++ types cross the plugin boundary, so both sides must agree.
#pragma once
#include <version>  // defines the standard library release macros used in CNF_BUILD_TAG

#ifndef CNF_ABI_VERSION
#define CNF_ABI_VERSION 3
#endif

#define CNF_VERSION_MAJOR 0
#define CNF_VERSION_MINOR 1
#define CNF_VERSION_PATCH 0
#define CNF_VERSION_STRING "0.1.0"

#define CNF_DETAIL_STR2(x) #x
#define CNF_DETAIL_STR(x) CNF_DETAIL_STR2(x)

#define CNF_DETAIL_NS_NAME2(v) abi_v##v
#define CNF_DETAIL_NS_NAME(v) CNF_DETAIL_NS_NAME2(v)
#define CNF_BEGIN_NAMESPACE namespace cnf { inline namespace CNF_DETAIL_NS_NAME(CNF_ABI_VERSION) {
#define CNF_END_NAMESPACE } }

#if defined(__clang__)
#define CNF_DETAIL_COMPILER "clang-" CNF_DETAIL_STR(__clang_major__)
#elif defined(__GNUC__)
#define CNF_DETAIL_COMPILER "gcc-" CNF_DETAIL_STR(__GNUC__)
#else
#define CNF_DETAIL_COMPILER "cc"
#endif

#if defined(_GLIBCXX_RELEASE)
#define CNF_DETAIL_STDLIB "libstdc++-" CNF_DETAIL_STR(_GLIBCXX_RELEASE)
#elif defined(_LIBCPP_VERSION)
#define CNF_DETAIL_STDLIB "libc++-" CNF_DETAIL_STR(_LIBCPP_VERSION)
#else
#define CNF_DETAIL_STDLIB "stdlib"
#endif

// Sanitizers change object layouts or the runtime a plugin needs (ASan, TSan); GCC's
// UBSan has no macro to test and changes no layout.
#if defined(__SANITIZE_ADDRESS__)
#define CNF_DETAIL_ASAN "+asan"
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CNF_DETAIL_ASAN "+asan"
#endif
#endif
#ifndef CNF_DETAIL_ASAN
#define CNF_DETAIL_ASAN ""
#endif
#if defined(__SANITIZE_THREAD__)
#define CNF_DETAIL_TSAN "+tsan"
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CNF_DETAIL_TSAN "+tsan"
#endif
#endif
#ifndef CNF_DETAIL_TSAN
#define CNF_DETAIL_TSAN ""
#endif
#define CNF_DETAIL_SAN CNF_DETAIL_ASAN CNF_DETAIL_TSAN

// The debug standard library (_GLIBCXX_DEBUG) and the pre-C++11 std::string ABI change the
// layout of the std types that cross the plugin boundary.
#if defined(_GLIBCXX_DEBUG)
#define CNF_DETAIL_STDLIB_DEBUG "+debug"
#else
#define CNF_DETAIL_STDLIB_DEBUG ""
#endif
#if defined(_GLIBCXX_USE_CXX11_ABI) && !_GLIBCXX_USE_CXX11_ABI
#define CNF_DETAIL_STDLIB_ABI "+cxx03-abi"
#else
#define CNF_DETAIL_STDLIB_ABI ""
#endif

// How the C++ runtime is linked: the build defines CNF_STATIC_CXX_RUNTIME=1 for code linked
// with -static-libstdc++ (a second copy of the runtime in the process).
#if defined(CNF_STATIC_CXX_RUNTIME) && CNF_STATIC_CXX_RUNTIME
#define CNF_DETAIL_RUNTIME "+static-rt"
#else
#define CNF_DETAIL_RUNTIME ""
#endif

#ifndef CNF_BUILD_TAG
#define CNF_BUILD_TAG                                                                              \
  CNF_DETAIL_COMPILER "/" CNF_DETAIL_STDLIB CNF_DETAIL_STDLIB_DEBUG CNF_DETAIL_STDLIB_ABI "/c++" CNF_DETAIL_STR(__cplusplus) \
      CNF_DETAIL_SAN CNF_DETAIL_RUNTIME
#endif

#define CNF_EXPORT __attribute__((visibility("default")))
