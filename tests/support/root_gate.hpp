// The Catch2 listener of the root-only test programs. Before the first test it prints
// "skipped: needs root (<what>)" and exits 77 (CTest's SKIP_RETURN_CODE) unless the
// process runs as root, and it ignores SIGPIPE, so a child that exits before reading
// what the test writes to its stdin does not kill the test. Use once per program, at
// namespace scope: CNF_TEST_ROOT_GATE("network namespaces");
#pragma once
#include "process.hpp"

#include <catch2/catch.hpp>

#include <csignal>

#define CNF_TEST_ROOT_GATE(what)                                           \
  namespace {                                                              \
  struct cnf_test_root_gate : Catch::TestEventListenerBase {               \
    using TestEventListenerBase::TestEventListenerBase;                    \
    void testRunStarting(Catch::TestRunInfo const& info) override {        \
      cnf_test::exit_77_unless_root(what);                                 \
      ::signal(SIGPIPE, SIG_IGN);                                          \
      TestEventListenerBase::testRunStarting(info);                        \
    }                                                                      \
  };                                                                       \
  }                                                                        \
  CATCH_REGISTER_LISTENER(cnf_test_root_gate)                              \
  static_assert(true, "a use ends with ';'")
