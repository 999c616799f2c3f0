// cnf/cni/version.hpp — CNI specification versions: the supported set, ordering and
// negotiation.
//
// cnf speaks the plugin side of CNI spec 1.1.0 and the result formats back to 0.3.0
// (0.1.0/0.2.0 had a different result shape and are not supported).
//
//   cni::parse_version("1.0.0");                       // cni::version::v1_0_0
//   cni::compare_versions("0.4.0", "1.0.0");           // std::strong_ordering::less
//   cni::negotiate("1.0.0", {"0.4.0", "1.1.0"});       // cni::version::v1_1_0
//
// Negotiation (SPEC "Version considerations"): the highest supported version among
// `cniVersion` and the entries of `cniVersions`. Unparseable or unknown entries are
// skipped here; config.hpp reports them.
#pragma once
#include <cnf/config.hpp>

#include <array>
#include <compare>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE
namespace cni {

/// A CNI spec version this library can read and write. Ordered: v0_3_0 < ... < v1_1_0.
enum class version : std::uint8_t { v0_3_0, v0_3_1, v0_4_0, v1_0_0, v1_1_0 };

inline constexpr std::array<version, 5> supported_versions{
    version::v0_3_0, version::v0_3_1, version::v0_4_0, version::v1_0_0, version::v1_1_0};
inline constexpr std::array<std::string_view, 5> supported_version_strings{
    "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
/// The spec version implemented: what errors and VERSION answers carry by default.
inline constexpr version latest_version = version::v1_1_0;
inline constexpr std::string_view spec_version = "1.1.0";

constexpr std::string_view to_string(version v) noexcept {
  return supported_version_strings[static_cast<std::size_t>(v)];
}

/// The supported version spelled exactly `s` ("1.0.0"), or nullopt.
constexpr std::optional<version> parse_version(std::string_view s) noexcept {
  for (std::size_t i = 0; i < supported_version_strings.size(); ++i)
    if (supported_version_strings[i] == s) return supported_versions[i];
  return std::nullopt;
}

constexpr bool is_supported(std::string_view s) noexcept { return parse_version(s).has_value(); }

/// "0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0" — for error messages.
inline std::string supported_versions_list() {
  std::string s;
  for (auto v : supported_version_strings) {
    if (!s.empty()) s += ", ";
    s += v;
  }
  return s;
}

/// Result-format facts per version.
/// ips[].version ("4"/"6") exists in 0.3.0 … 0.4.0 only (removed in 1.0.0).
constexpr bool has_ip_version_field(version v) noexcept { return v < version::v1_0_0; }
/// interfaces[].mtu/socketPath/pciID and routes[].mtu/advmss/priority/table/scope: 1.1.0.
constexpr bool has_1_1_fields(version v) noexcept { return v >= version::v1_1_0; }

/// Any dotted numeric version ("1", "0.4", "1.1.0"), for ordering versions this library
/// does not support (e.g. a "2.0.0" in cniVersions). Missing parts are 0, as libcni does.
struct semver {
  std::uint32_t major = 0, minor = 0, patch = 0;

  static constexpr std::optional<semver> parse(std::string_view s) noexcept {
    semver v;
    std::uint32_t* parts[3] = {&v.major, &v.minor, &v.patch};
    std::size_t n = 0, i = 0;
    if (s.empty()) return std::nullopt;
    while (true) {
      if (n == 3) return std::nullopt;  // too many parts
      std::size_t start = i;
      std::uint64_t x = 0;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        x = x * 10 + static_cast<std::uint64_t>(s[i] - '0');
        if (x > 0xffffffffu) return std::nullopt;
        ++i;
      }
      if (i == start) return std::nullopt;  // empty or non-numeric part
      *parts[n++] = static_cast<std::uint32_t>(x);
      if (i == s.size()) return v;
      if (s[i] != '.') return std::nullopt;
      ++i;
    }
  }

  std::string to_string() const {
    return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  }
  friend constexpr auto operator<=>(const semver&, const semver&) = default;
};

constexpr semver to_semver(version v) noexcept {
  switch (v) {
    case version::v0_3_0: return {0, 3, 0};
    case version::v0_3_1: return {0, 3, 1};
    case version::v0_4_0: return {0, 4, 0};
    case version::v1_0_0: return {1, 0, 0};
    case version::v1_1_0: return {1, 1, 0};
  }
  return {};
}

/// Orders two version strings; nullopt when either is not a dotted numeric version.
constexpr std::optional<std::strong_ordering> compare_versions(std::string_view a,
                                                               std::string_view b) noexcept {
  auto x = semver::parse(a), y = semver::parse(b);
  if (!x || !y) return std::nullopt;
  return *x <=> *y;
}

/// The highest supported version among `cni_version` (may be empty: absent) and
/// `cni_versions`; nullopt when none of them is supported.
inline std::optional<version> negotiate(std::string_view cni_version,
                                        std::span<const std::string_view> cni_versions) {
  std::optional<version> best = parse_version(cni_version);
  for (auto s : cni_versions)
    if (auto v = parse_version(s); v && (!best || *v > *best)) best = v;
  return best;
}
inline std::optional<version> negotiate(std::string_view cni_version,
                                        std::span<const std::string> cni_versions) {
  std::optional<version> best = parse_version(cni_version);
  for (const auto& s : cni_versions)
    if (auto v = parse_version(s); v && (!best || *v > *best)) best = v;
  return best;
}
inline std::optional<version> negotiate(std::string_view cni_version,
                                        std::initializer_list<std::string_view> cni_versions = {}) {
  return negotiate(cni_version, std::span<const std::string_view>(cni_versions.begin(), cni_versions.size()));
}

}  // namespace cni
CNF_END_NAMESPACE
