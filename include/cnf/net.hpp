// cnf/net.hpp — IP addresses, prefixes and MAC addresses as small value types.
//
//   auto p = cnf::ip_prefix::parse("10.244.1.0/26").value();
//   p.contains(cnf::ip_address::parse("10.244.1.7").value());   // true
//   p.address().to_string();                                    // "10.244.1.0"
#pragma once
#include <cnf/error.hpp>

#include <arpa/inet.h>

#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE

enum class ip_family : std::uint8_t { v4 = 4, v6 = 6 };

/// An IPv4 or IPv6 address; IPv4 is kept in the first 4 bytes.
class ip_address {
 public:
  ip_address() = default;
  static ip_address v4(std::uint32_t host_order) {
    ip_address a;
    a.family_ = ip_family::v4;
    std::uint32_t n = htonl(host_order);
    std::memcpy(a.bytes_.data(), &n, 4);
    return a;
  }
  static ip_address from_bytes(ip_family f, const void* data) {
    ip_address a;
    a.family_ = f;
    std::memcpy(a.bytes_.data(), data, f == ip_family::v4 ? 4 : 16);
    return a;
  }
  static result<ip_address> parse(std::string_view s) {
    char buf[INET6_ADDRSTRLEN + 1];
    if (s.empty() || s.size() >= sizeof buf)
      return error(errc::invalid, "invalid IP address '" + std::string(s) + "'");
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = 0;
    ip_address a;
    if (inet_pton(AF_INET, buf, a.bytes_.data()) == 1) { a.family_ = ip_family::v4; return a; }
    if (inet_pton(AF_INET6, buf, a.bytes_.data()) == 1) { a.family_ = ip_family::v6; return a; }
    return error(errc::invalid, "invalid IP address '" + std::string(s) + "'");
  }

  ip_family family() const noexcept { return family_; }
  bool is_v4() const noexcept { return family_ == ip_family::v4; }
  bool is_v6() const noexcept { return family_ == ip_family::v6; }
  int af() const noexcept { return is_v4() ? AF_INET : AF_INET6; }
  std::size_t size() const noexcept { return is_v4() ? 4 : 16; }
  unsigned bits() const noexcept { return is_v4() ? 32 : 128; }
  const std::uint8_t* data() const noexcept { return bytes_.data(); }
  std::uint8_t* data() noexcept { return bytes_.data(); }
  std::uint32_t v4_host_order() const noexcept {
    std::uint32_t n;
    std::memcpy(&n, bytes_.data(), 4);
    return ntohl(n);
  }

  std::string to_string() const {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(af(), bytes_.data(), buf, sizeof buf);
    return buf;
  }

  /// The address `n` positions after this one (wraps within the family).
  ip_address offset(std::uint64_t n) const noexcept {
    ip_address r = *this;
    int i = static_cast<int>(size()) - 1;
    unsigned carry = 0;
    while (i >= 0 && (n || carry)) {
      unsigned v = r.bytes_[i] + static_cast<unsigned>(n & 0xff) + carry;
      r.bytes_[i] = static_cast<std::uint8_t>(v);
      carry = v >> 8;
      n >>= 8;
      --i;
    }
    return r;
  }

  friend bool operator==(const ip_address& a, const ip_address& b) noexcept {
    return a.family_ == b.family_ && a.bytes_ == b.bytes_;
  }
  friend std::strong_ordering operator<=>(const ip_address& a, const ip_address& b) noexcept {
    if (auto c = a.family_ <=> b.family_; c != 0) return c;
    return a.bytes_ <=> b.bytes_;
  }

 private:
  std::array<std::uint8_t, 16> bytes_{};
  ip_family family_ = ip_family::v4;
};

/// A prefix: an address and a length. `parse` accepts "a.b.c.d/n" and, where
/// `allow_host_bits` is true (pod addresses such as "10.0.0.5/26"), host bits set.
class ip_prefix {
 public:
  ip_prefix() = default;
  ip_prefix(ip_address a, unsigned len) : addr_(a), len_(static_cast<std::uint8_t>(len)) {}

  static result<ip_prefix> parse(std::string_view s, bool allow_host_bits = false) {
    auto slash = s.find('/');
    if (slash == std::string_view::npos)
      return error(errc::invalid, "invalid CIDR '" + std::string(s) + "': missing /length");
    auto a = ip_address::parse(s.substr(0, slash));
    if (!a) return error(errc::invalid, "invalid CIDR '" + std::string(s) + "': bad address");
    auto ls = s.substr(slash + 1);
    unsigned len = 0;
    if (ls.empty() || ls.size() > 3) return error(errc::invalid, "invalid CIDR '" + std::string(s) + "': bad length");
    for (char c : ls) {
      if (c < '0' || c > '9') return error(errc::invalid, "invalid CIDR '" + std::string(s) + "': bad length");
      len = len * 10 + static_cast<unsigned>(c - '0');
    }
    if (len > a->bits()) return error(errc::invalid, "invalid CIDR '" + std::string(s) + "': length above " + std::to_string(a->bits()));
    ip_prefix p(*a, len);
    if (!allow_host_bits && p.network() != *a)
      return error(errc::invalid, "invalid CIDR '" + std::string(s) + "': host bits set (network is " + p.network().to_string() + "/" + std::to_string(len) + ")");
    return p;
  }

  const ip_address& address() const noexcept { return addr_; }
  unsigned length() const noexcept { return len_; }
  ip_family family() const noexcept { return addr_.family(); }

  ip_address network() const noexcept { return masked(false); }
  ip_address last() const noexcept { return masked(true); }
  ip_prefix canonical() const noexcept { return ip_prefix(network(), len_); }
  /// Number of addresses, saturating at 2^63 for huge IPv6 prefixes.
  std::uint64_t size() const noexcept {
    unsigned host = addr_.bits() - len_;
    return host >= 63 ? (std::uint64_t(1) << 63) : (std::uint64_t(1) << host);
  }
  bool contains(const ip_address& a) const noexcept {
    return a.family() == addr_.family() && ip_prefix(a, len_).network() == network();
  }
  bool contains(const ip_prefix& p) const noexcept { return p.len_ >= len_ && contains(p.addr_); }
  bool overlaps(const ip_prefix& p) const noexcept { return contains(p) || p.contains(*this); }

  std::string to_string() const { return addr_.to_string() + "/" + std::to_string(len_); }

  friend bool operator==(const ip_prefix&, const ip_prefix&) = default;
  friend std::strong_ordering operator<=>(const ip_prefix& a, const ip_prefix& b) noexcept {
    if (auto c = a.addr_ <=> b.addr_; c != 0) return c;
    return a.len_ <=> b.len_;
  }

 private:
  ip_address masked(bool ones) const noexcept {
    ip_address r = addr_;
    unsigned n = addr_.bits();
    for (unsigned i = len_; i < n; ++i) {
      std::uint8_t bit = static_cast<std::uint8_t>(0x80u >> (i % 8));
      if (ones) r.data()[i / 8] |= bit; else r.data()[i / 8] &= static_cast<std::uint8_t>(~bit);
    }
    return r;
  }
  ip_address addr_;
  std::uint8_t len_ = 0;
};

struct mac_address {
  std::array<std::uint8_t, 6> bytes{};

  static result<mac_address> parse(std::string_view s) {
    mac_address m;
    if (s.size() != 17) return error(errc::invalid, "invalid MAC address '" + std::string(s) + "'");
    for (int i = 0; i < 6; ++i) {
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      int hi = hex(s[i * 3]), lo = hex(s[i * 3 + 1]);
      if (hi < 0 || lo < 0 || (i < 5 && s[i * 3 + 2] != ':'))
        return error(errc::invalid, "invalid MAC address '" + std::string(s) + "'");
      m.bytes[i] = static_cast<std::uint8_t>(hi * 16 + lo);
    }
    return m;
  }
  std::string to_string() const {
    static const char* d = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 6; ++i) {
      if (i) s += ':';
      s += d[bytes[i] >> 4];
      s += d[bytes[i] & 15];
    }
    return s;
  }
  friend bool operator==(const mac_address&, const mac_address&) = default;
};

CNF_END_NAMESPACE

template <>
struct std::hash<cnf::ip_address> {
  std::size_t operator()(const cnf::ip_address& a) const noexcept {
    return std::hash<std::string_view>{}(std::string_view(reinterpret_cast<const char*>(a.data()), a.size())) ^ static_cast<std::size_t>(a.family());
  }
};
