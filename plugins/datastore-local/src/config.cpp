#include <cnf/plugins/local.hpp>
#include <cnf/settings.hpp>

CNF_BEGIN_NAMESPACE

namespace {
constexpr std::int64_t min_segment = 4096;
}

local_datastore_options configure_local_datastore(settings& s) {
  local_datastore_options o;
  o.dir = s.get<std::string>("dir", o.dir);
  if (o.dir.empty() || o.dir.front() != '/') s.fail("dir", "must be an absolute path (got '" + o.dir + "')");
  o.fsync = s.get<bool>("fsync", o.fsync);
  auto seg = s.get<std::int64_t>("log_segment_bytes", static_cast<std::int64_t>(o.log_segment_bytes));
  if (seg < min_segment) s.fail("log_segment_bytes", "must be at least " + std::to_string(min_segment));
  else o.log_segment_bytes = static_cast<std::uint64_t>(seg);
  auto kept = s.get<std::int64_t>("log_segments_kept", o.log_segments_kept);
  if (kept < 1 || kept > 1000000) s.fail("log_segments_kept", "must be between 1 and 1000000");
  else o.log_segments_kept = static_cast<std::uint32_t>(kept);
  auto spare = s.get<std::int64_t>("spare_files", o.spare_files);
  if (spare < 0 || spare > 4096) s.fail("spare_files", "must be between 0 and 4096");
  else o.spare_files = static_cast<std::uint32_t>(spare);
  return o;
}

result<void> check_local_datastore_options(const local_datastore_options& o) {
  if (o.dir.empty() || o.dir.front() != '/')
    return error(errc::invalid, "local datastore: dir must be an absolute path (got '" + o.dir + "')");
  if (o.log_segment_bytes < static_cast<std::uint64_t>(min_segment))
    return error(errc::invalid, "local datastore: log_segment_bytes must be at least " + std::to_string(min_segment));
  if (o.log_segments_kept < 1) return error(errc::invalid, "local datastore: log_segments_kept must be at least 1");
  if (o.spare_files > 4096) return error(errc::invalid, "local datastore: spare_files must be at most 4096");
  return {};
}

CNF_END_NAMESPACE
