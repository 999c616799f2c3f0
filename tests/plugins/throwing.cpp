#include <archetypes.hpp>
#include <stdexcept>
namespace {
struct config { bool throw_in_configure = false; };
config configure(cnf::settings& s) {
  config c{s.get<bool>("throw_in_configure", false)};
  if (c.throw_in_configure) throw std::runtime_error("configure blew up");
  return c;
}
cnf_test::ipam_archetype create(const cnf::plugin_context&, config) { throw std::runtime_error("factory blew up"); }
}  // namespace
CNF_PLUGIN(ipam, "throwing", "0.0.1", configure, create);
