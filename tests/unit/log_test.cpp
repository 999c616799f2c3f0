#include <cnf/log.hpp>
#include <cnf/executor.hpp>

#include <catch2/catch.hpp>

#include <vector>

TEST_CASE("loggers filter by level", "[unit][log]") {
  struct capture : cnf::logger {
    std::vector<std::string> lines;
    void write(cnf::log_level l, std::string_view m) noexcept override { lines.push_back(std::string(cnf::to_string(l)) + ":" + std::string(m)); }
    cnf::log_level threshold() const noexcept override { return cnf::log_level::info; }
  } c;
  c.debug("hidden");
  c.info("shown");
  c.error("bad");
  REQUIRE(c.lines.size() == 2);
  CHECK(c.lines[0] == "info:shown");
  cnf::log_level l{};
  CHECK(cnf::parse_log_level("trace", l));
  CHECK(l == cnf::log_level::trace);
  CHECK_FALSE(cnf::parse_log_level("verbose", l));
}

TEST_CASE("an executor is a small interface hosts implement", "[unit][executor]") {
  struct inline_executor : cnf::executor {
    int posted = 0;
    void post(std::function<void()> f) override { ++posted; f(); }
    timer_id post_after(std::chrono::milliseconds, std::function<void()> f) override {
      post(std::move(f));
      return 0;  // ran already: nothing to cancel
    }
    bool cancel(timer_id) override { return false; }
  } ex;
  int ran = 0;
  CHECK(ex.post_after(std::chrono::milliseconds(5), [&] { ++ran; }) == 0);
  CHECK(ran == 1);
  CHECK_FALSE(ex.cancel(0));
  CHECK(ex.posted == 1);
}
