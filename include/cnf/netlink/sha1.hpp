// cnf/netlink/sha1.hpp — a tiny SHA-1 (FIPS 180-4), used only to derive interface names
// the way Calico does (not for security). Self-contained so that cnf::cnf needs no
// libcrypto; verified against the FIPS test vectors in the integration tests.
#pragma once
#include <cnf/config.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE
namespace netlink {
namespace detail {

inline std::array<std::uint8_t, 20> sha1(std::string_view data) {
  std::uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
  auto rol = [](std::uint32_t x, int n) { return (x << n) | (x >> (32 - n)); };
  auto block = [&](const std::uint8_t* p) {
    std::uint32_t w[80];
    for (int i = 0; i < 16; ++i)
      w[i] = std::uint32_t(p[4 * i]) << 24 | std::uint32_t(p[4 * i + 1]) << 16 | std::uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; ++i) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; ++i) {
      std::uint32_t f, k;
      if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999u; }
      else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1u; }
      else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDCu; }
      else { f = b ^ c ^ d; k = 0xCA62C1D6u; }
      std::uint32_t t = rol(a, 5) + f + e + k + w[i];
      e = d; d = c; c = rol(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
  };
  const auto* p = reinterpret_cast<const std::uint8_t*>(data.data());
  std::size_t n = data.size(), i = 0;
  for (; i + 64 <= n; i += 64) block(p + i);
  std::uint8_t tail[128] = {};
  std::size_t rest = n - i;
  for (std::size_t j = 0; j < rest; ++j) tail[j] = p[i + j];
  tail[rest] = 0x80;
  std::size_t tail_len = rest + 9 <= 64 ? 64 : 128;
  std::uint64_t bits = static_cast<std::uint64_t>(n) * 8;
  for (int j = 0; j < 8; ++j) tail[tail_len - 1 - j] = static_cast<std::uint8_t>(bits >> (8 * j));
  block(tail);
  if (tail_len == 128) block(tail + 64);
  std::array<std::uint8_t, 20> out{};
  for (int j = 0; j < 5; ++j)
    for (int k = 0; k < 4; ++k) out[4 * j + k] = static_cast<std::uint8_t>(h[j] >> (24 - 8 * k));
  return out;
}

inline std::string sha1_hex(std::string_view data) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (auto b : sha1(data)) { s += d[b >> 4]; s += d[b & 15]; }
  return s;
}

}  // namespace detail
}  // namespace netlink
CNF_END_NAMESPACE
