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
#include <cnf/detail/json_text.hpp>

#include <array>
#include <cassert>
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE
namespace cni {
namespace detail {

using cnf::detail::append_json_string;
using cnf::detail::append_uint;

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
