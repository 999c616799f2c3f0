#include <archetypes.hpp>
#ifndef ARCHETYPE_NAME
#define ARCHETYPE_NAME "archetype"
#endif
namespace {
struct config {};
config configure(cnf::settings&) { return {}; }
cnf_test::ipam_archetype create(const cnf::plugin_context&, config) { return {}; }
}  // namespace
CNF_PLUGIN(ipam, ARCHETYPE_NAME, "1.2.3", configure, create);
