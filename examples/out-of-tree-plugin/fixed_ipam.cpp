// "fixed": an IPAM that hands out addresses from a list in the profile, one per handle,
// keeping who holds what in the node's datastore (create() makes two holders impossible).
//
//   [ipam]
//   plugin = "fixed"
//   addresses = ["10.9.0.10/24", "10.9.0.11/24"]
#include <cnf/cnf.hpp>

#include <algorithm>

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
  fixed_ipam(cnf::any_datastore ds, fixed_config c, std::string node) : ds_(std::move(ds)), c_(std::move(c)), node_(std::move(node)) {}

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
  cnf::result<std::vector<cnf::ip_address>> addresses_of(std::string_view h) {
    auto all = ds_.list_all({.kind = "FixedClaim"});
    if (!all) return all.error();
    std::vector<cnf::ip_address> out;
    for (auto& r : all->items)
      if (r.labels["handle"] == h)
        if (auto a = cnf::ip_address::parse(r.name)) out.push_back(*a);
    return out;
  }
  // The node's tunnel address: one of the list, held under the node's tunnel handle.
  cnf::result<cnf::assigned_address> assign_tunnel_address(cnf::tunnel_kind k, cnf::ip_family f) {
    const auto h = cnf::tunnel_handle(k, node_);
    auto held = addresses_of(h);
    if (!held) return held.error();
    for (auto& a : c_.addresses)
      if (a.family() == f && std::find(held->begin(), held->end(), a.address()) != held->end()) return cnf::assigned_address{a, std::nullopt, "fixed"};
    cnf::assign_request r;
    r.handle = h;
    auto got = assign(r);
    if (!got) return got.error();
    return got->front();
  }
  cnf::result<void> release_tunnel_address(cnf::tunnel_kind k) { return release_handle(cnf::tunnel_handle(k, node_)); }

 private:
  cnf::any_datastore ds_;
  fixed_config c_;
  std::string node_;
};

cnf::result<fixed_ipam> create(const cnf::plugin_context& ctx, fixed_config c) {
  if (!ctx.datastore) return cnf::error(cnf::errc::invalid, "fixed: needs a datastore");
  return fixed_ipam(ctx.datastore, std::move(c), ctx.node_name);
}

}  // namespace

CNF_PLUGIN(ipam, "fixed", "1.0.0", configure, create);
