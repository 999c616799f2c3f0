// "fixed": an IPAM that hands out addresses from a list in the profile, one per handle,
// keeping who holds what in the node's datastore (create() makes two holders impossible).
//
//   [ipam]
//   plugin = "fixed"
//   addresses = ["10.9.0.10/24", "10.9.0.11/24"]
#include <cnf/cnf.hpp>

namespace {

struct fixed_config {
  std::vector<cnf::ip_prefix> addresses;
};

fixed_config configure(cnf::settings& s) {
  fixed_config c;
  for (auto& a : s.get<std::vector<std::string>>("addresses", {})) {
    auto p = cnf::ip_prefix::parse(a, true);
    if (!p) s.fail("addresses", p.error().message);
    else c.addresses.push_back(*p);
  }
  if (c.addresses.empty()) s.fail("addresses", "needs at least one address");
  return c;
}

class fixed_ipam {
 public:
  fixed_ipam(cnf::any_datastore ds, fixed_config c) : ds_(std::move(ds)), c_(std::move(c)) {}

  cnf::result<std::vector<cnf::assigned_address>> assign(const cnf::assign_request& r) {
    for (auto& a : c_.addresses) {
      cnf::resource claim{"FixedClaim", "", a.address().to_string(), {{"handle", r.handle}}};
      auto made = ds_.create(claim);
      if (made) return std::vector<cnf::assigned_address>{{a, std::nullopt, "fixed"}};
      if (made.error().code != cnf::errc::already_exists) return made.error();
    }
    return cnf::error(cnf::errc::exhausted, "fixed: all " + std::to_string(c_.addresses.size()) + " addresses are taken");
  }
  cnf::result<void> release_handle(std::string_view h) {
    auto all = ds_.list_all({.kind = "FixedClaim"});
    if (!all) return all.error();
    for (auto& r : all->items)
      if (r.labels["handle"] == h) (void)ds_.remove(r.key(), r.revision);
    return {};
  }
  cnf::result<void> release_addresses(std::span<const cnf::ip_address> as) {
    for (auto& a : as) (void)ds_.remove({"FixedClaim", "", a.to_string()}, "");
    return {};
  }
  cnf::ipam_usage usage() { return {}; }
  std::vector<cnf::allocation> allocations() { return {}; }
  cnf::gc_report gc(std::string_view, const std::set<std::string>&) { return {}; }

 private:
  cnf::any_datastore ds_;
  fixed_config c_;
};

cnf::result<fixed_ipam> create(const cnf::plugin_context& ctx, fixed_config c) {
  if (!ctx.datastore) return cnf::error(cnf::errc::invalid, "fixed: needs a datastore");
  return fixed_ipam(ctx.datastore, std::move(c));
}

}  // namespace

CNF_PLUGIN(ipam, "fixed", "1.0.0", configure, create);
