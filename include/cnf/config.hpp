// cnf/config.hpp — versioning and build identity shared by every cnf header.
//
// CNF_ABI_VERSION is the plugin ABI: a plugin built with one number is refused by a
// host built with another, before any of its code runs. It also names the inline
// namespace, so objects from two incompatible builds cannot be linked together.
// CNF_BUILD_TAG names what else must match across the boundary (compiler, standard
// library, sanitizers): C++ types cross the plugin boundary, so both sides must agree.
#pragma once
#include <version>  // defines the standard library release macros used in CNF_BUILD_TAG

#ifndef CNF_ABI_VERSION
#define CNF_ABI_VERSION 1
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

#if defined(__SANITIZE_ADDRESS__)
#define CNF_DETAIL_SAN "+asan"
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CNF_DETAIL_SAN "+asan"
#endif
#endif
#ifndef CNF_DETAIL_SAN
#define CNF_DETAIL_SAN ""
#endif

#ifndef CNF_BUILD_TAG
#define CNF_BUILD_TAG CNF_DETAIL_COMPILER "/" CNF_DETAIL_STDLIB "/c++" CNF_DETAIL_STR(__cplusplus) CNF_DETAIL_SAN
#endif

#define CNF_EXPORT __attribute__((visibility("default")))
