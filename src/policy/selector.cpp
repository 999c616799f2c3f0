#include <cnf/policy/selector.hpp>

#include <algorithm>
#include <cctype>
#include <set>

CNF_BEGIN_NAMESPACE
namespace netpol {

struct selector_node {
  enum class type { all, has, eq, ne, in, not_in, negate, conj, disj } kind = type::all;
  std::string key;
  std::set<std::string> values;  // eq/ne: one value
  std::vector<std::shared_ptr<const selector_node>> kids;
};

namespace {

using node_ptr = std::shared_ptr<const selector_node>;

std::string quote(const std::string& v) {
  return v.find('"') == std::string::npos ? "\"" + v + "\"" : "'" + v + "'";
}

std::string render(const selector_node& n, bool top) {
  using t = selector_node::type;
  switch (n.kind) {
    case t::all: return "all()";
    case t::has: return "has(" + n.key + ")";
    case t::eq: return n.key + " == " + quote(*n.values.begin());
    case t::ne: return n.key + " != " + quote(*n.values.begin());
    case t::in:
    case t::not_in: {
      std::string s = n.key + (n.kind == t::in ? " in {" : " not in {");
      bool first = true;
      for (auto& v : n.values) s += (first ? "" : ", ") + quote(v), first = false;
      return s + "}";
    }
    case t::negate: {
      const auto& k = *n.kids[0];
      if (k.kind == t::has) return "!" + render(k, false);
      if (k.kind == t::conj || k.kind == t::disj) return "!" + render(k, false);
      return "!(" + render(k, true) + ")";
    }
    case t::conj:
    case t::disj: {
      std::string s;
      for (std::size_t i = 0; i < n.kids.size(); ++i) s += (i ? (n.kind == t::conj ? " && " : " || ") : "") + render(*n.kids[i], false);
      return top ? s : "(" + s + ")";
    }
  }
  return {};
}

bool eval(const selector_node& n, const label_map& l) {
  using t = selector_node::type;
  switch (n.kind) {
    case t::all: return true;
    case t::has: return l.contains(n.key);
    case t::eq: {
      auto it = l.find(n.key);
      return it != l.end() && it->second == *n.values.begin();
    }
    case t::ne: {
      auto it = l.find(n.key);
      return it == l.end() || it->second != *n.values.begin();
    }
    case t::in: {
      auto it = l.find(n.key);
      return it != l.end() && n.values.contains(it->second);
    }
    case t::not_in: {
      auto it = l.find(n.key);
      return it == l.end() || !n.values.contains(it->second);
    }
    case t::negate: return !eval(*n.kids[0], l);
    case t::conj:
      for (auto& k : n.kids)
        if (!eval(*k, l)) return false;
      return true;
    case t::disj:
      for (auto& k : n.kids)
        if (eval(*k, l)) return true;
      return false;
  }
  return false;
}

node_ptr with_prefix(const node_ptr& n, std::string_view prefix, std::string_view all_key) {
  using t = selector_node::type;
  auto c = std::make_shared<selector_node>(*n);
  if (c->kind == t::all) {
    if (!all_key.empty()) {
      c->kind = t::has;
      c->key = std::string(all_key);
    }
    return c;
  }
  if (!c->key.empty()) c->key = std::string(prefix) + c->key;
  for (auto& k : c->kids) k = with_prefix(k, prefix, all_key);
  return c;
}

class parser {
 public:
  explicit parser(std::string_view s) : s_(s) {}

  result<node_ptr> run() {
    skip();
    if (at_end()) return fail("the selector is empty (use all() to select everything)");
    auto n = disjunction();
    if (!n) return n;
    skip();
    if (!at_end()) return fail("unexpected '" + std::string(s_.substr(pos_, 1)) + "' (expected '&&', '||' or the end)");
    return n;
  }

 private:
  cnf::error fail(std::string what) const {
    return cnf::error(errc::invalid, "selector \"" + std::string(s_) + "\": at " + std::to_string(pos_ + 1) + ": " + what);
  }
  bool at_end() const { return pos_ >= s_.size(); }
  void skip() {
    while (!at_end() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool eat(std::string_view tok) {
    skip();
    if (s_.substr(pos_, tok.size()) == tok) {
      pos_ += tok.size();
      return true;
    }
    return false;
  }
  bool eat_word(std::string_view w) {
    skip();
    if (s_.substr(pos_, w.size()) != w) return false;
    auto e = pos_ + w.size();
    if (e < s_.size() && key_char(s_[e])) return false;
    pos_ = e;
    return true;
  }
  static bool key_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '/' || c == '-';
  }

  result<node_ptr> disjunction() {
    auto first = conjunction();
    if (!first) return first;
    std::vector<node_ptr> kids{*first};
    while (eat("||")) {
      auto n = conjunction();
      if (!n) return n;
      kids.push_back(*n);
    }
    if (kids.size() == 1) return kids[0];
    auto d = std::make_shared<selector_node>();
    d->kind = selector_node::type::disj;
    d->kids = std::move(kids);
    return node_ptr(d);
  }
  result<node_ptr> conjunction() {
    auto first = unary();
    if (!first) return first;
    std::vector<node_ptr> kids{*first};
    while (eat("&&")) {
      auto n = unary();
      if (!n) return n;
      kids.push_back(*n);
    }
    if (kids.size() == 1) return kids[0];
    auto d = std::make_shared<selector_node>();
    d->kind = selector_node::type::conj;
    d->kids = std::move(kids);
    return node_ptr(d);
  }
  result<node_ptr> unary() {
    skip();
    if (at_end()) return fail("expected a label expression, found the end");
    if (s_[pos_] == '!' && s_.substr(pos_, 2) != "!=") {
      ++pos_;
      auto k = unary();
      if (!k) return k;
      auto n = std::make_shared<selector_node>();
      n->kind = selector_node::type::negate;
      n->kids = {*k};
      return node_ptr(n);
    }
    if (eat("(")) {
      auto n = disjunction();
      if (!n) return n;
      if (!eat(")")) return fail("expected ')'");
      return n;
    }
    auto save = pos_;
    if (eat_word("all")) {
      if (eat("(")) {
        if (!eat(")")) return fail("expected ')' after 'all('");
        return node_ptr(std::make_shared<selector_node>());
      }
      pos_ = save;
    }
    if (eat_word("has")) {
      if (eat("(")) {
        auto k = key();
        if (!k) return k.error();
        if (!eat(")")) return fail("expected ')' after the label name in has()");
        auto n = std::make_shared<selector_node>();
        n->kind = selector_node::type::has;
        n->key = *k;
        return node_ptr(n);
      }
      pos_ = save;
    }
    auto k = key();
    if (!k) return k.error();
    auto n = std::make_shared<selector_node>();
    n->key = *k;
    skip();
    if (eat("==") || eat("!=")) {
      n->kind = s_[pos_ - 2] == '=' ? selector_node::type::eq : selector_node::type::ne;
      auto v = string_literal(n->kind == selector_node::type::eq ? "'=='" : "'!='");
      if (!v) return v.error();
      n->values.insert(*v);
      return node_ptr(n);
    }
    if (eat_word("in")) {
      n->kind = selector_node::type::in;
    } else if (eat_word("not")) {
      if (!eat_word("in")) return fail("expected 'in' after 'not'");
      n->kind = selector_node::type::not_in;
    } else {
      if (at_end()) return fail("expected an operator (==, !=, in, not in) after label '" + *k + "', found the end");
      return fail("expected an operator (==, !=, in, not in) after label '" + *k + "'");
    }
    if (!eat("{")) return fail("expected '{' to start the set of values");
    if (!eat("}")) {
      for (;;) {
        auto v = string_literal("the set");
        if (!v) return v.error();
        n->values.insert(*v);
        if (eat("}")) break;
        if (!eat(",")) return fail("expected ',' or '}' in the set of values");
      }
    }
    return node_ptr(n);
  }
  result<std::string> key() {
    skip();
    auto b = pos_;
    while (!at_end() && key_char(s_[pos_])) ++pos_;
    if (b == pos_) {
      if (at_end()) return fail("expected a label name, found the end");
      return fail("expected a label name, found '" + std::string(s_.substr(pos_, 1)) + "'");
    }
    return std::string(s_.substr(b, pos_ - b));
  }
  result<std::string> string_literal(std::string_view after) {
    skip();
    if (at_end() || (s_[pos_] != '\'' && s_[pos_] != '"')) return fail("expected a quoted string in " + std::string(after));
    char q = s_[pos_];
    auto b = ++pos_;
    while (!at_end() && s_[pos_] != q) ++pos_;
    if (at_end()) {
      pos_ = b - 1;
      return fail("unterminated string");
    }
    return std::string(s_.substr(b, pos_++ - b));
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

}  // namespace

selector::selector() : selector(std::make_shared<selector_node>()) {}
selector::selector(std::shared_ptr<const selector_node> root) : root_(std::move(root)), text_(render(*root_, true)) {}

bool selector::matches(const label_map& labels) const { return eval(*root_, labels); }
bool selector::is_all() const noexcept { return root_->kind == selector_node::type::all; }

selector selector::prefixed(std::string_view prefix, std::string_view all_key) const {
  return selector(with_prefix(root_, prefix, all_key));
}

selector selector::both(const selector& a, const selector& b) {
  if (a.is_all()) return b;
  if (b.is_all()) return a;
  auto n = std::make_shared<selector_node>();
  n->kind = selector_node::type::conj;
  for (auto* s : {&a, &b}) {
    if (s->root_->kind == selector_node::type::conj)
      n->kids.insert(n->kids.end(), s->root_->kids.begin(), s->root_->kids.end());
    else
      n->kids.push_back(s->root_);
  }
  return selector(n);
}

selector selector::label_equals(std::string_view key, std::string_view value) {
  auto n = std::make_shared<selector_node>();
  n->kind = selector_node::type::eq;
  n->key = std::string(key);
  n->values.insert(std::string(value));
  return selector(n);
}

result<selector> parse_selector(std::string_view text) {
  parser p(text);
  auto n = p.run();
  if (!n) return n.error();
  return selector(*n);
}

}  // namespace netpol
CNF_END_NAMESPACE
