// The direct (host-gw) routing part as a cnf plugin: [routing] plugin = "direct".
#include <cnf/plugin.hpp>
#include <cnf/plugins/direct.hpp>

namespace {

struct config {};
config configure(cnf::settings&) { return {}; }
cnf::direct::routing create(const cnf::plugin_context&, config) { return {}; }

}  // namespace

CNF_PLUGIN(routing, "direct", "0.1.0", configure, create);
