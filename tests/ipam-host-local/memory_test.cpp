// host-local IPAM behaviour on cnf::memory_datastore (threads share one in-process store).
#include <cnf/memory_datastore.hpp>

namespace {
cnf::any_datastore new_store() { return cnf::memory_datastore(); }
}  // namespace

#define HL_BACKEND "memory"
#include "ipam_cases.hpp"
