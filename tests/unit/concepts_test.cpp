// The part concepts: archetypes model them; a type missing one operation does not.
#include <cnf/cnf.hpp>

#include <archetypes.hpp>
#include <catch2/catch.hpp>

using namespace cnf_test;

static_assert(cnf::check_datastore<datastore_archetype>());
static_assert(cnf::check_ipam<ipam_archetype>());
static_assert(cnf::check_routing<routing_archetype>());
static_assert(cnf::check_encapsulation<encapsulation_archetype>());
static_assert(cnf::check_policy<policy_archetype>());

namespace {
struct ipam_without_gc {
  std::vector<cnf::assigned_address> assign(const cnf::assign_request&) { return {}; }
  void release_handle(std::string_view) {}
  void release_addresses(std::span<const cnf::ip_address>) {}
  cnf::ipam_usage usage() { return {}; }
  std::vector<cnf::allocation> allocations() { return {}; }
};
struct datastore_with_wrong_return {
  int get(const cnf::resource_key&) { return 0; }  // must return resource or result<resource>
  cnf::resource_list list(const cnf::list_options&) { return {}; }
  cnf::resource create(const cnf::resource& r) { return r; }
  cnf::resource update(const cnf::resource& r) { return r; }
  void remove(const cnf::resource_key&, std::string_view) {}
  cnf::watch_handle watch(const cnf::watch_options&, cnf::watch_callback) { return {}; }
  cnf::datastore_status status() { return {}; }
};
struct throwing_ipam : ipam_archetype {
  std::vector<cnf::assigned_address> assign(const cnf::assign_request&) { throw std::runtime_error("boom"); }
  cnf::result<void> release_handle(std::string_view h) { return cnf::error(cnf::errc::not_found, std::string(h)); }
};
}  // namespace

static_assert(!cnf::ipam<ipam_without_gc>);
static_assert(!cnf::datastore<datastore_with_wrong_return>);
static_assert(!cnf::routing<ipam_archetype>);
static_assert(!cnf::policy<routing_archetype>);
// The wrappers model their concepts too, so generic code takes either.
static_assert(cnf::datastore<cnf::any_datastore> && cnf::ipam<cnf::any_ipam> && cnf::routing<cnf::any_routing> &&
              cnf::encapsulation<cnf::any_encapsulation> && cnf::policy<cnf::any_policy>);
// An any_ wrapper only accepts types that model its concept.
static_assert(std::is_constructible_v<cnf::any_ipam, ipam_archetype>);
static_assert(!std::is_constructible_v<cnf::any_ipam, ipam_without_gc>);
static_assert(!std::is_constructible_v<cnf::any_datastore, ipam_archetype>);

TEST_CASE("type erasure turns exceptions and plain returns into results", "[unit][concepts]") {
  cnf::any_ipam ipam = throwing_ipam{};
  auto a = ipam.assign({});
  REQUIRE_FALSE(a);
  CHECK(a.error().code == cnf::errc::internal);
  CHECK_THAT(a.error().message, Catch::Contains("boom"));
  auto r = ipam.release_handle("h1");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cnf::errc::not_found);
  CHECK(ipam.release_addresses({}));
  cnf::any_ipam plain = ipam_archetype{};
  auto ok = plain.assign({});
  REQUIRE(ok);
  CHECK(ok->front().address.to_string() == "10.0.0.1/32");
}

TEST_CASE("any_ wrappers share their object and run generic code", "[unit][concepts]") {
  cnf::any_datastore a = datastore_archetype{};
  cnf::any_datastore b = a;
  CHECK(a.interface() == b.interface());
  auto generic = []<cnf::datastore D>(D& d) { return cnf::detail::call<cnf::resource>([&] { return d.create({"Node", "", "n1"}); }); };
  datastore_archetype raw;
  CHECK(generic(raw)->revision == "1");
  CHECK(generic(a)->revision == "1");
  struct null_sink final : cnf::routing_sink {
    void route_learned(const cnf::learned_route&) noexcept override {}
    void route_withdrawn(const cnf::ip_prefix&) noexcept override {}
    void peer_changed(const cnf::peer_status&) noexcept override {}
    void peer_removed(std::string_view) noexcept override {}
  } sink;
  cnf::any_routing r = routing_archetype{};
  CHECK(r.start({}, sink));
  CHECK(r.status()->plugin == "archetype");
  cnf::any_encapsulation e = encapsulation_archetype{};
  CHECK(e.setup({})->device == "tun0");
  cnf::any_policy p = policy_archetype{};
  CHECK(p.sync({}, {}));
}
