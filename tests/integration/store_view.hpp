// What a CNI test reads back from the datastore: the IPAM's allocations and the
// WorkloadEndpoint records, through the same plugins the cnf binary loads (from the build's
// plugin directory), with the profile the test gave cnf. Catch2 assertions: a profile or
// store that cannot be read fails the test case.
#pragma once

#include <cnf/datastore.hpp>
#include <cnf/loader.hpp>
#include <cnf/profile.hpp>

#include <boost/json.hpp>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

namespace cnf_test {

struct store_view {
  std::vector<cnf::allocation> allocations;
  std::vector<boost::json::object> endpoints;  ///< WorkloadEndpoint specs, plus "_name"/"_ns"

  std::set<std::string> addresses() const {
    std::set<std::string> s;
    for (auto& a : allocations) s.insert(a.address.to_string());
    return s;
  }
  bool empty() const { return allocations.empty() && endpoints.empty(); }
  std::string describe() const {
    std::string s = std::to_string(allocations.size()) + " allocation(s):";
    for (auto& a : allocations) s += " " + a.address.to_string() + "(" + a.handle + ")";
    s += "; " + std::to_string(endpoints.size()) + " endpoint(s):";
    for (auto& e : endpoints) s += " " + boost::json::serialize(e);
    return s;
  }
};

inline store_view read_store(const std::string& profile_path) {
  auto p = cnf::load_profile(profile_path);
  INFO((p ? std::string() : p.error().message));
  REQUIRE(p);
  cnf::plugin_loader loader({std::filesystem::path(CNF_TEST_PLUGIN_DIR)});
  cnf::plugin_context ctx;
  ctx.node_name = p->node_name();
  auto c = cnf::compose(*p, loader, {cnf::part::datastore, cnf::part::ipam}, ctx);
  INFO((c ? std::string() : c.error().message));
  REQUIRE(c);
  store_view v;
  auto a = c->ipam.allocations();
  INFO((a ? std::string() : a.error().message));
  REQUIRE(a);
  v.allocations = std::move(*a);
  auto w = c->datastore.list_all({.kind = std::string(cnf::kinds::workload_endpoint)});
  INFO((w ? std::string() : w.error().message));
  REQUIRE(w);
  for (auto& r : w->items) {
    boost::json::object spec = boost::json::parse(r.spec).as_object();
    spec["_name"] = r.name;
    spec["_ns"] = r.ns;
    v.endpoints.push_back(std::move(spec));
  }
  return v;
}

}  // namespace cnf_test
