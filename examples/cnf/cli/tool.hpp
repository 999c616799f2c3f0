// Shared by the calicoctl-shaped commands (cmd_ipam.cpp, cmd_resources.cpp): the datastore
// the profile names, calicoctl's boxed tables, small text helpers.
#pragma once
#include "app.hpp"

#include <cnf/datastore.hpp>

#include <fmt/format.h>

#include <optional>
#include <string>
#include <vector>

namespace cnf_app::tool {

/// The profile's datastore (and the name of its IPAM plugin), or a message for stderr.
struct opened {
  cnf::profile prof;
  cnf::any_datastore ds;
  std::string ipam_plugin;  ///< "" when the profile has no [ipam] section
};
cnf::result<opened> open_datastore(const std::string& profile_path);

/// Prints `e` on stderr as "cnf <what>: <message>" and returns 1 (the exit code).
int fail(std::string_view what, const std::string& message);

/// calicoctl's table: +---+ borders, centred headers, cells left-aligned except those
/// marked in `right` (numbers).
class table {
 public:
  explicit table(std::vector<std::string> headers, std::vector<bool> right = {});
  void add(std::vector<std::string> row);
  std::string render() const;

 private:
  std::vector<std::string> head_;
  std::vector<bool> right_;
  std::vector<std::vector<std::string>> rows_;
};

/// "5 (8%)" as calicoctl prints counts with their share of a total.
std::string with_percent(std::uint64_t n, std::uint64_t total);

std::optional<std::string> read_text_file(const std::string& path, std::string* err);

}  // namespace cnf_app::tool
