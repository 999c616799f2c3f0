// datastore.hpp alone: the concept, the wrapper and list_all's paging.
#include <cnf/datastore.hpp>

#include <catch2/catch.hpp>

namespace {
// Pages of two over five resources, to check any_datastore::list_all.
struct paging_store {
  cnf::result<cnf::resource> get(const cnf::resource_key& k) { return cnf::error(cnf::errc::not_found, k.to_string()); }
  cnf::resource_list list(const cnf::list_options& o) {
    std::size_t start = o.continue_token.empty() ? 0 : std::stoul(o.continue_token);
    cnf::resource_list l;
    l.revision = "9";
    for (std::size_t i = start; i < std::min<std::size_t>(start + 2, 5); ++i) l.items.push_back({o.kind, "", "r" + std::to_string(i)});
    if (start + 2 < 5) l.continue_token = std::to_string(start + 2);
    return l;
  }
  cnf::resource create(const cnf::resource& r) { return r; }
  cnf::resource update(const cnf::resource& r) { return r; }
  void remove(const cnf::resource_key&, std::string_view) {}
  cnf::watch_handle watch(const cnf::watch_options&, cnf::watch_callback) { return {}; }
  cnf::datastore_status status() { return {"paging", "", "9"}; }
};
struct cancel_counter : cnf::watch_handle::state {
  int* n;
  explicit cancel_counter(int* c) : n(c) {}
  void cancel() noexcept override { ++*n; }
};
}  // namespace

TEST_CASE("list_all follows continue tokens", "[unit][datastore]") {
  cnf::any_datastore ds = paging_store{};
  auto all = ds.list_all({.kind = "IPAMBlock", .limit = 2});
  REQUIRE(all);
  REQUIRE(all->items.size() == 5);
  CHECK(all->items[4].name == "r4");
  CHECK(all->revision == "9");
}

TEST_CASE("watch_handle cancels once, on destruction or cancel()", "[unit][datastore]") {
  int n = 0;
  {
    cnf::watch_handle h(std::make_shared<cancel_counter>(&n));
    CHECK(h.active());
  }
  CHECK(n == 1);
  cnf::watch_handle h(std::make_shared<cancel_counter>(&n));
  h.cancel();
  h.cancel();
  CHECK(n == 2);
  CHECK_FALSE(h.active());
}

TEST_CASE("resource keys print kind/namespace/name", "[unit][datastore]") {
  CHECK(cnf::resource_key{"WorkloadEndpoint", "default", "pod-a"}.to_string() == "WorkloadEndpoint/default/pod-a");
  CHECK(cnf::resource_key{"IPPool", "", "p"}.to_string() == "IPPool/p");
  CHECK(cnf::to_string(cnf::watch_event::type::resync_needed) == "resync-needed");
}
