// host-local IPAM behaviour on cnf::memory_datastore (threads share one in-process store).
// Built twice: with parallel_writes unset (off over a memory_datastore) and forced on.
#include <cnf/memory_datastore.hpp>

namespace {
cnf::any_datastore new_store() { return cnf::memory_datastore(); }
}  // namespace

#ifdef HL_PARALLEL
#define HL_BACKEND "memory (parallel writes)"
#define HL_EXTRA_TOML "parallel_writes = true\n"
#define HL_EXPECT_PARALLEL true
#else
#define HL_BACKEND "memory"
#define HL_EXPECT_PARALLEL false
#endif
#include "ipam_cases.hpp"
