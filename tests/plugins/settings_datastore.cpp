// A datastore whose status() reports the settings it was configured with.
#include <archetypes.hpp>
namespace {
struct config {
  std::string dir;
  std::int64_t size = 0;
  std::vector<std::string> endpoints;
};
config configure(cnf::settings& s) {
  config c;
  c.dir = s.get<std::string>("dir", "/var/lib/cnf");
  c.size = s.get<std::int64_t>("size", 26);
  if (c.size < 20 || c.size > 32) s.fail("size", "must be between 20 and 32");
  c.endpoints = s.get<std::vector<std::string>>("endpoints", {});
  return c;
}
struct store : cnf_test::datastore_archetype {
  config c;
  cnf::datastore_status status() {
    std::string eps;
    for (auto& e : c.endpoints) eps += e + ",";
    return {"settings", c.dir + "|" + std::to_string(c.size) + "|" + eps, "0"};
  }
};
store create(const cnf::plugin_context&, config c) { store s; s.c = std::move(c); return s; }
}  // namespace
CNF_PLUGIN(datastore, "settings", "0.0.1", configure, create);
