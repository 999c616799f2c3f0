// The lab's own local datastore, for tests that write what `cnf apply` would refuse (a
// resource that does not parse, overlapping pools) straight into it, as a bad writer would.
// Link cnf_datastore_local. Include after lab_env.hpp and <catch2/catch.hpp>.
#pragma once
#include "lab_env.hpp"

#include <cnf/plugins/local.hpp>

namespace cnf_test {

/// The lab in `L.dir` (made by `cnf lab up` with the local datastore) opened as the agents
/// open it; fsync off, as the lab profile has it.
inline cnf::any_datastore lab_datastore(const lab_env& L) {
  cnf::local_datastore_options o;
  o.dir = (L.dir / "datastore").string();
  o.fsync = false;
  auto ds = cnf::local_datastore::open(std::move(o));
  REQUIRE(ds);
  return cnf::any_datastore(std::move(*ds));
}

}  // namespace cnf_test
