#include "cli/tool.hpp"

#include <cmath>
#include <fstream>
#include <sstream>

namespace cnf_app::tool {

cnf::result<opened> open_datastore(const std::string& profile_path) {
  auto p = cnf::load_profile(profile_path);
  if (!p) return p.error();
  cnf::plugin_loader loader(plugin_search_path(&*p));
  cnf::plugin_context ctx;
  ctx.node_name = p->node_name();
  auto c = compose_parts(*p, loader, {cnf::part::datastore}, ctx);
  if (!c) return c.error();
  if (!c->datastore) return cnf::error(cnf::errc::invalid, p->file + ": no [datastore] section; the tool reads IPAM state from the datastore");
  opened o;
  o.ds = c->datastore;
  o.ipam_plugin = p->ipam ? p->ipam->plugin : std::string();
  o.prof = std::move(*p);
  return o;
}

int fail(std::string_view what, const std::string& message) {
  fmt::print(stderr, "cnf {}: {}\n", what, message);
  return 1;
}

table::table(std::vector<std::string> headers, std::vector<bool> right) : head_(std::move(headers)), right_(std::move(right)) {
  right_.resize(head_.size(), false);
}

void table::add(std::vector<std::string> row) {
  row.resize(head_.size());
  rows_.push_back(std::move(row));
}

std::string table::render() const {
  std::vector<std::size_t> w(head_.size());
  for (std::size_t i = 0; i < head_.size(); ++i) {
    w[i] = head_[i].size();
    for (auto& r : rows_) w[i] = std::max(w[i], r[i].size());
  }
  std::string rule = "+";
  for (auto n : w) rule += std::string(n + 2, '-') + "+";
  rule += "\n";
  std::string out = rule + "|";
  for (std::size_t i = 0; i < head_.size(); ++i) {
    std::size_t pad = w[i] - head_[i].size();
    out += " " + std::string(pad / 2, ' ') + head_[i] + std::string(pad - pad / 2, ' ') + " |";
  }
  out += "\n" + rule;
  for (auto& r : rows_) {
    out += "|";
    for (std::size_t i = 0; i < r.size(); ++i)
      out += right_[i] ? fmt::format(" {:>{}} |", r[i], w[i]) : fmt::format(" {:<{}} |", r[i], w[i]);
    out += "\n";
  }
  if (!rows_.empty()) out += rule;
  return out;
}

std::string with_percent(std::uint64_t n, std::uint64_t total) {
  double pct = total ? 100.0 * static_cast<double>(n) / static_cast<double>(total) : 0.0;
  return fmt::format("{} ({:.0f}%)", n, std::floor(pct + 0.5));
}

std::optional<std::string> read_text_file(const std::string& path, std::string* err) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    if (err) *err = path + ": cannot open for reading";
    return std::nullopt;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) {
    if (err) *err = path + ": read error";
    return std::nullopt;
  }
  return ss.str();
}

}  // namespace cnf_app::tool
