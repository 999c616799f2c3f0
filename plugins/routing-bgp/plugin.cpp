// The bgp routing part as a cnf plugin: [routing] plugin = "bgp".
#include <cnf/plugin.hpp>
#include <cnf/plugins/bgp.hpp>

namespace {

cnf::bgp::routing_settings configure(cnf::settings& s) { return cnf::bgp::read_settings(s); }
cnf::bgp::routing create(const cnf::plugin_context& ctx, cnf::bgp::routing_settings s) { return cnf::bgp::routing(std::move(s), ctx.exec, ctx.log); }

}  // namespace

CNF_PLUGIN(routing, "bgp", "0.1.0", configure, create);
