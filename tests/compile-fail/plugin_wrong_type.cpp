// Must NOT compile: a plugin whose create() returns a type that is not a datastore.
#include <cnf/plugin.hpp>
namespace {
struct config {};
config configure(cnf::settings&) { return {}; }
struct not_a_store { int get(const cnf::resource_key&) { return 0; } };
not_a_store create(const cnf::plugin_context&, config) { return {}; }
}  // namespace
CNF_PLUGIN(datastore, "broken", "0", configure, create);
