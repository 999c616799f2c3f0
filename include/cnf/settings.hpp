// cnf/settings.hpp — typed, validated reading of one profile section (toml++).
//
// Settings cross the plugin boundary as the profile's TOML text; each plugin parses its
// own section with this reader, so every error carries file:line:column and the key
// path, and a key nobody asked for is reported with a did-you-mean suggestion.
//
//   cnf::settings& s = ...;                       // handed to a plugin's configure()
//   auto dir  = s.get<std::string>("dir", "/var/lib/cnf");
//   auto size = s.get<std::int64_t>("block_size", 26);
//   if (size < 20 || size > 32) s.fail("block_size", "must be between 20 and 32");
//   // the host calls s.finish() afterwards: unknown keys and every recorded error
#pragma once
#include <cnf/error.hpp>

#ifndef TOML_HEADER_ONLY
#define TOML_HEADER_ONLY 1
#endif
#include <toml++/toml.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE

/// One problem in a configuration file, printed as "file:line:col: key: message".
struct diagnostic {
  std::string file;
  unsigned line = 0;
  unsigned column = 0;
  std::string key;
  std::string message;

  std::string to_string() const {
    std::string s = file;
    if (line) s += ":" + std::to_string(line) + ":" + std::to_string(column);
    s += ": ";
    if (!key.empty()) s += key + ": ";
    return s + message;
  }
};

inline std::string join_diagnostics(const std::vector<diagnostic>& ds) {
  std::string s;
  for (auto& d : ds) {
    if (!s.empty()) s += '\n';
    s += d.to_string();
  }
  return s;
}

namespace detail {
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}
}  // namespace detail

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
inline std::optional<std::string> did_you_mean(std::string_view word, const std::set<std::string>& candidates) {
  std::optional<std::string> best;
  std::size_t best_d = 0;
  for (auto& c : candidates) {
    auto d = detail::edit_distance(word, c);
    if (!best || d < best_d) { best = c; best_d = d; }
  }
  if (best && best_d <= std::max<std::size_t>(2, word.size() / 3)) return best;
  return std::nullopt;
}

class settings {
 public:
  /// Reads `section` (a dotted path such as "ipam") from an already parsed document.
  /// `ignored` keys belong to the host (e.g. "plugin") and are neither read nor reported.
  settings(const toml::table* root, std::string file, std::string section, std::set<std::string> ignored = {"plugin"})
      : file_(std::move(file)), section_(std::move(section)), ignored_(std::move(ignored)) {
    if (root) {
      if (section_.empty()) {
        table_ = root;
      } else if (auto n = root->at_path(section_); n) {
        table_ = n.as_table();
        if (!table_) add(*n.node(), "", "expected a table");
      }
    }
  }

  /// Parses TOML text (a whole profile) and reads one section of it.
  static result<settings> parse(std::string_view text, std::string file, std::string section) {
    auto doc = std::make_shared<toml::table>();
    try {
      *doc = toml::parse(text, file);
    } catch (const toml::parse_error& e) {
      diagnostic d{file, static_cast<unsigned>(e.source().begin.line), static_cast<unsigned>(e.source().begin.column), "",
                   std::string(e.description())};
      return error(errc::invalid, d.to_string());
    }
    settings s(doc.get(), std::move(file), std::move(section));
    s.owned_ = std::move(doc);
    return s;
  }

  const std::string& file() const noexcept { return file_; }
  const std::string& section() const noexcept { return section_; }
  const toml::table* table() const noexcept { return table_; }

  /// A key's value, or `fallback` when absent; a value of the wrong type is recorded.
  template <class T>
  T get(std::string_view key, T fallback) {
    if (auto v = get_optional<T>(key)) return std::move(*v);
    return fallback;
  }
  std::string get(std::string_view key, const char* fallback) { return get<std::string>(key, std::string(fallback)); }

  template <class T>
  std::optional<T> get_optional(std::string_view key) {
    known_.insert(std::string(key));
    const toml::node* n = find(key);
    if (!n) return std::nullopt;
    if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      if (auto* s = n->as_string()) return std::vector<std::string>{s->get()};  // one string = list of one
      auto* arr = n->as_array();
      if (!arr) { add(*n, key, "expected a string or an array of strings"); return std::nullopt; }
      std::vector<std::string> out;
      for (auto& e : *arr) {
        if (auto* s = e.as_string()) out.push_back(s->get());
        else { add(e, key, "expected an array of strings"); return std::nullopt; }
      }
      return out;
    } else if constexpr (std::is_same_v<T, bool>) {
      if (auto* b = n->as_boolean()) return b->get();
      add(*n, key, "expected true or false");
      return std::nullopt;
    } else if constexpr (std::is_integral_v<T>) {
      auto* i = n->as_integer();
      if (!i) { add(*n, key, "expected an integer"); return std::nullopt; }
      std::int64_t v = i->get();
      bool below = std::is_signed_v<T> ? v < static_cast<std::int64_t>(std::numeric_limits<T>::min()) : v < 0;
      bool above = v > 0 && static_cast<std::uint64_t>(v) > static_cast<std::uint64_t>(std::numeric_limits<T>::max());
      if (below || above) {
        add(*n, key, "value " + std::to_string(v) + " is out of range");
        return std::nullopt;
      }
      return static_cast<T>(v);
    } else if constexpr (std::is_floating_point_v<T>) {
      if (auto* f = n->as_floating_point()) return static_cast<T>(f->get());
      if (auto* i = n->as_integer()) return static_cast<T>(i->get());
      add(*n, key, "expected a number");
      return std::nullopt;
    } else {
      static_assert(std::is_same_v<T, std::string>, "settings::get supports bool, integers, floating point, std::string and std::vector<std::string>");
      if (auto* s = n->as_string()) return s->get();
      add(*n, key, "expected a string");
      return std::nullopt;
    }
  }

  /// A key that must be present.
  template <class T>
  std::optional<T> require(std::string_view key) {
    auto v = get_optional<T>(key);
    if (!v && !find(key)) fail(key, "is required");
    return v;
  }

  /// The raw node of a key (for nested tables and arrays of tables), marking it known.
  const toml::node* node(std::string_view key) {
    known_.insert(std::string(key));
    return find(key);
  }

  bool has(std::string_view key) const { return find(key) != nullptr; }

  /// Records a problem with a key (at the key's position, or the section's if absent).
  void fail(std::string_view key, std::string message) {
    if (auto* n = find(key)) add(*n, key, std::move(message));
    else add_at(table_ ? table_->source() : toml::source_region{}, key, std::move(message));
  }
  /// Records a problem at a node inside this section (e.g. an element of an array).
  void fail_at(const toml::node& n, std::string_view key_path, std::string message) { add(n, key_path, std::move(message)); }

  /// Adds "unknown key" errors and returns every recorded problem as one error.
  result<void> finish() {
    if (table_) {
      for (auto& [k, v] : *table_) {
        std::string key(k.str());
        if (known_.count(key) || ignored_.count(key)) continue;
        std::string msg = "unknown key";
        if (auto m = did_you_mean(key, known_)) msg += "; did you mean '" + *m + "'?";
        add_at(k.source(), key, std::move(msg));
      }
    }
    if (diags_.empty()) return {};
    return error(errc::invalid, join_diagnostics(diags_));
  }

  const std::vector<diagnostic>& diagnostics() const noexcept { return diags_; }
  const std::set<std::string>& known_keys() const noexcept { return known_; }

 private:
  const toml::node* find(std::string_view key) const { return table_ ? table_->get(key) : nullptr; }
  std::string path(std::string_view key) const {
    if (section_.empty()) return std::string(key);
    return key.empty() ? section_ : section_ + "." + std::string(key);
  }
  void add(const toml::node& n, std::string_view key, std::string message) { add_at(n.source(), key, std::move(message)); }
  void add_at(const toml::source_region& src, std::string_view key, std::string message) {
    diags_.push_back({file_, static_cast<unsigned>(src.begin.line), static_cast<unsigned>(src.begin.column), path(key), std::move(message)});
  }

  std::shared_ptr<toml::table> owned_;
  const toml::table* table_ = nullptr;
  std::string file_;
  std::string section_;
  std::set<std::string> ignored_;
  std::set<std::string> known_;
  std::vector<diagnostic> diags_;
};

CNF_END_NAMESPACE
