// host-local IPAM behaviour on cnf::memory_datastore (threads share one in-process store).
// Built twice: with parallel_writes off (the setting meant for in-memory stores) and on.
#include <cnf/memory_datastore.hpp>

namespace {
cnf::any_datastore new_store() { return cnf::memory_datastore(); }
}  // namespace

#ifdef HL_PARALLEL
#define HL_BACKEND "memory (parallel writes)"
#else
#define HL_BACKEND "memory"
#define HL_EXTRA_TOML "parallel_writes = false\n"
#endif
#include "ipam_cases.hpp"
