// cnf/cni/json_writer.hpp — a small, allocation-light JSON emitter for CNI output.
//
// The CNI binary runs once per pod operation and prints one small document, so results
// and errors are written straight into a std::string (compact, no intermediate DOM, no
// iostreams). Key order is fixed by the caller, so output is deterministic.
//
//   std::string out;
//   cni::detail::json_writer w(out);
//   w.begin_object().key("code").value(std::uint64_t{7}).key("msg").value("bad").end_object();
//   // out == R"({"code":7,"msg":"bad"})"
#pragma once
#include <cnf/config.hpp>

#include <array>
#include <cassert>
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE
namespace cni {
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

/// Streaming writer; inserts commas itself. Nesting depth is bounded (16), which every
/// CNI document fits in.
class json_writer {
 public:
  explicit json_writer(std::string& out) noexcept : out_(out) {}

  json_writer& begin_object() { open('{'); return *this; }
  json_writer& end_object() { close('}'); return *this; }
  json_writer& begin_array() { open('['); return *this; }
  json_writer& end_array() { close(']'); return *this; }

  json_writer& key(std::string_view k) {
    separate();
    append_json_string(out_, k);
    out_ += ':';
    after_key_ = true;
    return *this;
  }
  json_writer& value(std::string_view s) { before_value(); append_json_string(out_, s); return *this; }
  json_writer& value(const char* s) { return value(std::string_view(s)); }
  json_writer& value(const std::string& s) { return value(std::string_view(s)); }
  json_writer& value(std::uint64_t v) { before_value(); append_uint(out_, v); return *this; }
  json_writer& value(std::uint32_t v) { return value(std::uint64_t{v}); }
  json_writer& value(bool b) { before_value(); out_ += b ? "true" : "false"; return *this; }
  /// Inserts already-serialized JSON as one value.
  json_writer& raw(std::string_view json) { before_value(); out_ += json; return *this; }

  /// key + value in one call.
  template <class T>
  json_writer& member(std::string_view k, const T& v) { key(k); return value(v); }

  std::string& out() noexcept { return out_; }

 private:
  void separate() {
    if (depth_ && !first_[depth_ - 1]) out_ += ',';
    if (depth_) first_[depth_ - 1] = false;
  }
  void before_value() {
    if (after_key_) { after_key_ = false; return; }
    separate();
  }
  void open(char c) {
    before_value();
    out_ += c;
    assert(depth_ < first_.size());
    first_[depth_++] = true;
  }
  void close(char c) {
    assert(depth_ > 0);
    --depth_;
    out_ += c;
  }

  std::string& out_;
  std::array<bool, 16> first_{};
  std::size_t depth_ = 0;
  bool after_key_ = false;
};

}  // namespace detail
}  // namespace cni
CNF_END_NAMESPACE
