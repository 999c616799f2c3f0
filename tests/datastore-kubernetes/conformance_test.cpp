// The shared datastore conformance suite (tests/datastore/conformance.hpp) run against the
// kubernetes datastore and a STAND-IN API server (standin_apiserver.py; no kube-apiserver
// can run on this machine, so this shows conformance to the stand-in's model of the API,
// not to a real cluster). Each fresh store is its own stand-in process.
#include "../datastore/conformance.hpp"
#include "standin.hpp"

#include <cnf/plugins/kubernetes.hpp>

#include <catch2/catch.hpp>

#include <list>
#include <memory>

namespace {

struct servers {
  std::list<k8s_test::standin> running;
  std::vector<std::pair<const void*, k8s_test::standin*>> owner;  // store interface -> its server

  cnf::any_datastore open(k8s_test::standin& s) {
    cnf::any_datastore ds(cnf::kubernetes::datastore::open(s.options()).value());
    owner.emplace_back(ds.interface().get(), &s);
    return ds;
  }
  k8s_test::standin& of(const cnf::any_datastore& ds) {
    for (auto& [p, s] : owner)
      if (p == ds.interface().get()) return *s;
    throw std::runtime_error("conformance: a store this test did not make");
  }
};

}  // namespace

TEST_CASE("kubernetes: shared datastore conformance suite (stand-in API server)", "[kubernetes][conformance]") {
  auto srv = std::make_shared<servers>();
  cnf_test::datastore_backend b;
  b.name = "kubernetes (stand-in API server)";
  b.make_fresh = [srv] { return srv->open(srv->running.emplace_back()); };
  b.open_peer = [srv](const cnf::any_datastore& ds) { return srv->open(srv->of(ds)); };
  // The stand-in forgets its whole event history on demand (etcd compaction behind a real
  // API server): a watch from an older revision then gets 410 Gone.
  b.forget_history = [srv](const cnf::any_datastore& ds, const std::string&) { srv->of(ds).command("compact"); };
  cnf_test::datastore_conformance(b);
}
