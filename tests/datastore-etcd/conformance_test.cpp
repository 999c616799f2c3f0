// The shared datastore conformance suite (tests/datastore/conformance.hpp) against a real
// etcd: each section gets a fresh key prefix on one etcd server; the peer is a second
// client (its own connection pool) on the same prefix; forgetting history is etcd's
// compaction.
#include "../datastore/conformance.hpp"
#include "etcd_test_util.hpp"

#include <atomic>

TEST_CASE("etcd: datastore conformance", "[etcd][conformance]") {
  static cnf_test::etcd_server etcd;  // one server for every section (sections re-enter this test case)
  static std::atomic<int> prefixes{0};
  static std::string current_prefix;

  auto open = [](const std::string& prefix) {
    auto c = cnf_test::config_for(etcd.endpoint());
    c.prefix = prefix;
    auto ds = cnf::etcd_datastore::open(c);
    if (!ds) throw cnf::error_exception(ds.error());
    return cnf::any_datastore(std::move(*ds));
  };

  cnf_test::datastore_backend b;
  b.name = "etcd";
  b.make_fresh = [&] {
    current_prefix = "/cnf-conformance-" + std::to_string(++prefixes);
    return open(current_prefix);
  };
  b.open_peer = [&](const cnf::any_datastore&) { return open(current_prefix); };
  b.forget_history = [&](const cnf::any_datastore&, const std::string& revision) { etcd.compact(std::stoll(revision)); };
  cnf_test::datastore_conformance(b);
}
