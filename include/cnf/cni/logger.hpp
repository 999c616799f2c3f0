// A CNI call's logger: stderr always, plus the profile's log file when it names one.
#pragma once
#include <cnf/log.hpp>

#include <fmt/format.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

CNF_BEGIN_NAMESPACE
namespace cni {

class call_logger final : public cnf::logger {
 public:
  ~call_logger() override {
    if (file_) std::fclose(file_);
  }
  /// May be called again (the agent does when its profile changes): the previous log
  /// file is closed.
  void configure(cnf::log_level level, const std::string& file) {
    std::FILE* f = file.empty() ? nullptr : std::fopen(file.c_str(), "ae");
    const int err = errno;
    {
      std::lock_guard lk(mu_);
      level_ = level;
      if (file_) std::fclose(file_);
      file_ = f;
    }
    if (!file.empty() && !f) write(cnf::log_level::warn, "cannot open log file " + file + ": " + std::strerror(err));
  }
  void set_prefix(std::string p) { prefix_ = std::move(p); }
  cnf::log_level threshold() const noexcept override { return level_.load(std::memory_order_relaxed); }
  void write(cnf::log_level l, std::string_view m) noexcept override {
    try {
      // UTC fields by calendar arithmetic: glibc's gmtime_r reads and parses
      // /etc/localtime on its first call, a cost every CNI call would pay.
      namespace chr = std::chrono;
      const auto now = chr::floor<chr::milliseconds>(chr::system_clock::now());
      const auto day = chr::floor<chr::days>(now);
      const chr::year_month_day ymd{day};
      const chr::hh_mm_ss hms{now - day};
      auto line = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {} cnf[{}] {}: {}\n", static_cast<int>(ymd.year()),
                              static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()), hms.hours().count(),
                              hms.minutes().count(), hms.seconds().count(), hms.subseconds().count(), cnf::to_string(l),
                              ::getpid(), prefix_, m);
      std::lock_guard lk(mu_);
      std::fputs(line.c_str(), stderr);
      if (file_) {
        std::fputs(line.c_str(), file_);
        std::fflush(file_);
      }
    } catch (...) {
    }
  }

 private:
  std::mutex mu_;
  std::atomic<cnf::log_level> level_{cnf::log_level::info};
  std::FILE* file_ = nullptr;
  std::string prefix_;
};

}  // namespace cni
CNF_END_NAMESPACE
