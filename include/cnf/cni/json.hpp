// cnf/cni/json.hpp — typed, path-aware reading of CNI JSON (Boost.JSON).
//
// Every read knows where it is, so errors name the field the way a person would look
// for it: "ipam.ranges[0][1].subnet: expected string, got number".
//
//   auto doc = cni::parse_json(text);                         // code 6 if not JSON
//   cni::json_node root(*doc);
//   auto subnet = root["ipam"]["ranges"][0][1]["subnet"].as_string();
//   if (!subnet) return subnet.error();                       // code 7, names the path
//
// Absent keys, out-of-range indexes and explicit nulls read as "not present"; the opt_*
// readers return nullopt for them, the required readers return a "missing" error. Reads
// into a node whose parent had the wrong type also report "missing", so check parents
// with as_object()/as_array() first when the distinction matters (the parsers here do).
//
// Plugins (e.g. an IPAM plugin reading its `ipam` section) use the same reader so their
// errors look the same.
#pragma once
#include <cnf/cni/error.hpp>

#include <boost/json.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace cni {

/// Parses `text` as strict JSON (RFC 8259: no comments, no trailing commas).
/// Not JSON -> code 6 (decoding failure), naming `what` and the parser's reason.
inline result<boost::json::value> parse_json(std::string_view text,
                                             std::string_view what = "network config") {
  boost::json::error_code ec;
  boost::json::value v = boost::json::parse(text, ec);
  if (ec)
    return make_error(error_code::decoding_failure,
                      std::string(what) + ": not valid JSON: " + ec.message());
  return v;
}

/// "object", "array", "string", "number", "boolean", "null".
inline std::string_view json_kind(const boost::json::value& v) noexcept {
  switch (v.kind()) {
    case boost::json::kind::object: return "object";
    case boost::json::kind::array: return "array";
    case boost::json::kind::string: return "string";
    case boost::json::kind::int64:
    case boost::json::kind::uint64:
    case boost::json::kind::double_: return "number";
    case boost::json::kind::bool_: return "boolean";
    case boost::json::kind::null: return "null";
  }
  return "value";
}

/// A position in a JSON document: a (possibly absent) value and its path.
class json_node {
 public:
  json_node() = default;
  explicit json_node(const boost::json::value& v, std::string path = {}) : v_(&v), path_(std::move(path)) {}
  json_node(const boost::json::value* v, std::string path) : v_(v), path_(std::move(path)) {}

  /// Present: exists and is not null.
  bool present() const noexcept { return v_ != nullptr && !v_->is_null(); }
  const boost::json::value* get() const noexcept { return v_; }
  const std::string& path() const noexcept { return path_; }

  json_node operator[](std::string_view key) const {
    std::string p = path_.empty() ? std::string(key) : path_ + "." + std::string(key);
    const boost::json::object* o = v_ ? v_->if_object() : nullptr;
    return json_node(o ? o->if_contains(key) : nullptr, std::move(p));
  }
  json_node operator[](std::size_t i) const {
    std::string p = path_ + "[" + std::to_string(i) + "]";
    const boost::json::array* a = v_ ? v_->if_array() : nullptr;
    return json_node(a && i < a->size() ? &(*a)[i] : nullptr, std::move(p));
  }
  json_node operator[](int i) const { return (*this)[static_cast<std::size_t>(i)]; }

  // ---- errors, all code 7 (invalid config) unless told otherwise ----
  /// "<path>: <problem>"
  error invalid(std::string_view problem, error_code c = error_code::invalid_config) const {
    return make_error(c, path_.empty() ? std::string(problem) : path_ + ": " + std::string(problem));
  }
  error missing() const { return invalid("required field missing"); }
  error type_error(std::string_view expected) const {
    std::string p = "expected " + std::string(expected);
    if (v_) p += ", got " + std::string(json_kind(*v_));
    return invalid(p);
  }

  // ---- required reads ----
  result<const boost::json::object*> as_object() const {
    if (!present()) return missing();
    if (auto* o = v_->if_object()) return o;
    return type_error("object");
  }
  result<const boost::json::array*> as_array() const {
    if (!present()) return missing();
    if (auto* a = v_->if_array()) return a;
    return type_error("array");
  }
  result<std::string_view> as_string() const {
    if (!present()) return missing();
    if (auto* s = v_->if_string()) return std::string_view(*s);
    return type_error("string");
  }
  result<bool> as_bool() const {
    if (!present()) return missing();
    if (auto* b = v_->if_bool()) return *b;
    return type_error("boolean");
  }
  /// A non-negative integer <= max (1500, not 1500.0 or "1500").
  result<std::uint64_t> as_uint(std::uint64_t max = std::numeric_limits<std::uint64_t>::max()) const {
    if (!present()) return missing();
    std::uint64_t n = 0;
    if (auto* u = v_->if_uint64()) n = *u;
    else if (auto* i = v_->if_int64()) {
      if (*i < 0) return invalid("expected non-negative integer, got " + std::to_string(*i));
      n = static_cast<std::uint64_t>(*i);
    } else return type_error("non-negative integer");
    if (n > max) return invalid(std::to_string(n) + " out of range (max " + std::to_string(max) + ")");
    return n;
  }
  /// An array whose every element is a string.
  result<std::vector<std::string>> as_string_list() const {
    auto a = as_array();
    if (!a) return a.error();
    std::vector<std::string> out;
    out.reserve((*a)->size());
    for (std::size_t i = 0; i < (*a)->size(); ++i) {
      auto s = (*this)[i].as_string();
      if (!s) return s.error();
      out.emplace_back(*s);
    }
    return out;
  }

  // ---- optional reads: nullopt when absent or null, error when of the wrong type ----
  result<std::optional<std::string_view>> opt_string() const { return opt(&json_node::as_string); }
  result<std::optional<bool>> opt_bool() const { return opt(&json_node::as_bool); }
  result<std::optional<std::uint64_t>> opt_uint(std::uint64_t max = std::numeric_limits<std::uint64_t>::max()) const {
    if (!present()) return std::optional<std::uint64_t>{};
    auto r = as_uint(max);
    if (!r) return r.error();
    return std::optional<std::uint64_t>(*r);
  }
  result<std::optional<const boost::json::object*>> opt_object() const { return opt(&json_node::as_object); }
  result<std::optional<const boost::json::array*>> opt_array() const { return opt(&json_node::as_array); }
  /// Absent -> empty list.
  result<std::vector<std::string>> opt_string_list() const {
    if (!present()) return std::vector<std::string>{};
    return as_string_list();
  }

 private:
  template <class T>
  result<std::optional<T>> opt(result<T> (json_node::*read)() const) const {
    if (!present()) return std::optional<T>{};
    auto r = (this->*read)();
    if (!r) return std::move(r).error();
    return std::optional<T>(std::move(*r));
  }

  const boost::json::value* v_ = nullptr;
  std::string path_;
};

}  // namespace cni
CNF_END_NAMESPACE
