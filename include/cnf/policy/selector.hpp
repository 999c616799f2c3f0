// cnf/policy/selector.hpp — Calico's label selector language.
//
//   k == 'v'   k != 'v'   k in {'a', 'b'}   k not in {'a'}   has(k)   !has(k)   all()
//   a && b     a || b     !a                ( ... )
//
// `!=` and `not in` are true when the label is absent (as in Calico). Strings take single or
// double quotes. A selector that does not parse gives an error naming the position and the
// problem ("selector \"a == \": at 5: expected a quoted string after '=='"). The canonical text
// (to_string) is the same for selectors that differ only in spacing or quotes, and is what IP
// set ids are derived from.
//
//   auto s = cnf::netpol::parse_selector("app == 'web' && !has(canary)").value();
//   bool m = s.matches({{"app", "web"}});   // true
#pragma once
#include <cnf/error.hpp>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace netpol {

using label_map = std::map<std::string, std::string>;

struct selector_node;

class selector {
 public:
  /// all(): matches everything.
  selector();
  bool matches(const label_map& labels) const;
  /// Canonical text: parse(to_string()) gives an equal selector.
  const std::string& to_string() const noexcept { return text_; }
  bool is_all() const noexcept;
  /// The same selector with every label key prefixed (namespaceSelector -> "pcns.<key>").
  /// all() becomes has(<all_key>) when all_key is not empty.
  selector prefixed(std::string_view prefix, std::string_view all_key = {}) const;
  /// a && b, with all() folded away.
  static selector both(const selector& a, const selector& b);
  static selector label_equals(std::string_view key, std::string_view value);
  friend bool operator==(const selector& a, const selector& b) noexcept { return a.text_ == b.text_; }

  explicit selector(std::shared_ptr<const selector_node> root);

 private:
  std::shared_ptr<const selector_node> root_;
  std::string text_;
};

result<selector> parse_selector(std::string_view text);

}  // namespace netpol
CNF_END_NAMESPACE
