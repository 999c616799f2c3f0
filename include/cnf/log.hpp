// cnf/log.hpp — the logger a host hands to every part.
//
// Parts never write to stdout (in CNI mode stdout carries only the result JSON). They log
// through the logger in their plugin_context:   ctx.log->info("claimed block " + cidr);
#pragma once
#include <cnf/config.hpp>

#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE

enum class log_level { error = 0, warn = 1, info = 2, debug = 3, trace = 4 };

inline constexpr std::string_view to_string(log_level l) noexcept {
  switch (l) {
    case log_level::error: return "error";
    case log_level::warn: return "warn";
    case log_level::info: return "info";
    case log_level::debug: return "debug";
    case log_level::trace: return "trace";
  }
  return "?";
}

inline bool parse_log_level(std::string_view s, log_level& out) noexcept {
  for (int i = 0; i <= 4; ++i)
    if (to_string(static_cast<log_level>(i)) == s) { out = static_cast<log_level>(i); return true; }
  return false;
}

class logger {
 public:
  virtual ~logger() = default;
  /// Writes one message; implementations must be thread-safe.
  virtual void write(log_level level, std::string_view message) noexcept = 0;
  virtual log_level threshold() const noexcept { return log_level::info; }

  bool enabled(log_level l) const noexcept { return l <= threshold(); }
  void error(std::string_view m) noexcept { if (enabled(log_level::error)) write(log_level::error, m); }
  void warn(std::string_view m) noexcept { if (enabled(log_level::warn)) write(log_level::warn, m); }
  void info(std::string_view m) noexcept { if (enabled(log_level::info)) write(log_level::info, m); }
  void debug(std::string_view m) noexcept { if (enabled(log_level::debug)) write(log_level::debug, m); }
  void trace(std::string_view m) noexcept { if (enabled(log_level::trace)) write(log_level::trace, m); }
};

/// Discards everything; the default when a host supplies none.
class null_logger final : public logger {
 public:
  void write(log_level, std::string_view) noexcept override {}
  log_level threshold() const noexcept override { return log_level::error; }
};

inline logger& default_logger() noexcept {
  static null_logger l;
  return l;
}

CNF_END_NAMESPACE
