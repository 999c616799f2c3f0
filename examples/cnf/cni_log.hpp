// The CNI mode's logger: stderr always, plus the profile's log file when it names one.
#pragma once
#include <cnf/log.hpp>

#include <fmt/format.h>

#include <sys/time.h>

#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

namespace cnf_app {

class cni_logger final : public cnf::logger {
 public:
  ~cni_logger() override {
    if (file_) std::fclose(file_);
  }
  void configure(cnf::log_level level, const std::string& file) {
    level_ = level;
    if (!file.empty()) {
      file_ = std::fopen(file.c_str(), "ae");
      if (!file_) write(cnf::log_level::warn, "cannot open log file " + file + ": " + std::strerror(errno));
    }
  }
  void set_prefix(std::string p) { prefix_ = std::move(p); }
  cnf::log_level threshold() const noexcept override { return level_; }
  void write(cnf::log_level l, std::string_view m) noexcept override {
    try {
      timeval tv{};
      ::gettimeofday(&tv, nullptr);
      std::tm tm{};
      ::gmtime_r(&tv.tv_sec, &tm);
      auto line = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {} cnf[{}] {}: {}\n", tm.tm_year + 1900, tm.tm_mon + 1,
                              tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tv.tv_usec / 1000, cnf::to_string(l), ::getpid(),
                              prefix_, m);
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
  cnf::log_level level_ = cnf::log_level::info;
  std::FILE* file_ = nullptr;
  std::string prefix_;
};

}  // namespace cnf_app
