// Internals shared by the host-local sources: 128-bit address arithmetic.
#pragma once
#include <cnf/net.hpp>

#include <cstdint>
#include <limits>

CNF_BEGIN_NAMESPACE
namespace host_local::detail {

// GCC's 128-bit integer; __extension__ keeps -Wpedantic quiet about it.
__extension__ typedef unsigned __int128 u128;

inline u128 to_u128(const ip_address& a) noexcept {
  u128 v = 0;
  for (std::size_t i = 0; i < a.size(); ++i) v = (v << 8) | a.data()[i];
  return v;
}

inline ip_address from_u128(ip_family f, u128 v) noexcept {
  std::uint8_t b[16] = {};
  std::size_t n = f == ip_family::v4 ? 4 : 16;
  for (std::size_t i = n; i-- > 0;) {
    b[i] = static_cast<std::uint8_t>(v & 0xff);
    v >>= 8;
  }
  return ip_address::from_bytes(f, b);
}

inline u128 first_of(const ip_prefix& p) noexcept { return to_u128(p.network()); }
inline u128 last_of(const ip_prefix& p) noexcept { return to_u128(p.last()); }

/// Saturating conversion for counts reported as uint64.
inline std::uint64_t saturate(u128 v) noexcept {
  return v > std::numeric_limits<std::uint64_t>::max() ? std::numeric_limits<std::uint64_t>::max()
                                                        : static_cast<std::uint64_t>(v);
}

}  // namespace host_local::detail
CNF_END_NAMESPACE
