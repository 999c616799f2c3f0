// cnf/detail/json_text.hpp — appending JSON string literals and unsigned numbers to a
// std::string, for the places that write JSON without a DOM because they run on every
// call (CNI results and errors, calico-ipam's blocks on every write).
#pragma once
#include <cnf/config.hpp>

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE
namespace detail {

/// Appends `s` as a JSON string literal (quotes included). Bytes >= 0x80 pass through:
/// input is UTF-8 (Boost.JSON validates everything we parse).
inline void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0;  // start of the pending run of plain bytes
  for (std::size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 15];
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

inline void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

}  // namespace detail
CNF_END_NAMESPACE
