// cnf/plugin.hpp — writing a plugin: one descriptor, one configure step, one factory.
//
// A plugin library exports exactly one descriptor (the C symbol `cnf_plugin`): part,
// name, version, cnf ABI number, build tag and two entry points. The host reads the
// descriptor and refuses a wrong part, ABI or build before calling anything. Nothing
// throws across the boundary: both entry points catch everything.
//
//   struct my_config { std::string dir; };
//   my_config configure(cnf::settings& s) { return {s.get<std::string>("dir", "/var/lib/x")}; }
//   my_ipam create(const cnf::plugin_context& ctx, my_config c) { return my_ipam(ctx.datastore, c); }
//   CNF_PLUGIN(ipam, "my-ipam", "1.0.0", configure, create)
//
// `configure` reads and validates the plugin's profile section (no side effects: the
// host also calls it for `cnf profile check`); `create` builds the part and may return
// T or cnf::result<T>. T must model the part's concept (a static_assert says what is
// missing). Build the library with cnf_add_plugin() from cnf's CMake package.
#pragma once
#include <cnf/config.hpp>
#include <cnf/datastore.hpp>
#include <cnf/encap.hpp>
#include <cnf/executor.hpp>
#include <cnf/ipam.hpp>
#include <cnf/log.hpp>
#include <cnf/policy.hpp>
#include <cnf/routing.hpp>
#include <cnf/settings.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE

enum class part : std::uint32_t { datastore = 1, ipam = 2, routing = 3, encapsulation = 4, policy = 5 };

inline constexpr std::string_view to_string(part p) noexcept {
  switch (p) {
    case part::datastore: return "datastore";
    case part::ipam: return "ipam";
    case part::routing: return "routing";
    case part::encapsulation: return "encapsulation";
    case part::policy: return "policy";
  }
  return "unknown";
}

inline bool parse_part(std::string_view s, part& out) noexcept {
  for (auto p : {part::datastore, part::ipam, part::routing, part::encapsulation, part::policy})
    if (to_string(p) == s) { out = p; return true; }
  return false;
}

/// What the host gives every part it builds.
struct plugin_context {
  std::string node_name;
  logger* log = &default_logger();
  executor* exec = nullptr;  ///< null in short-lived hosts (the CNI plugin)
  any_datastore datastore;   ///< for parts that keep state (empty when building a datastore)
};

/// A plugin's profile section, as the profile's whole TOML text plus where to look.
struct plugin_config {
  std::string_view text;
  std::string_view file;
  std::string_view section;
};

struct factory_output {
  std::shared_ptr<void> object;  ///< shared_ptr<detail::<part>_iface>, type-erased
  cnf::error err;
  bool ok = false;
};

using factory_fn = void (*)(const plugin_context&, const plugin_config&, factory_output&) noexcept;
using validate_fn = void (*)(const plugin_config&, factory_output&) noexcept;

inline constexpr std::uint32_t plugin_magic = 0x434e4650;  // "CNFP"
inline constexpr std::uint32_t abi_version = CNF_ABI_VERSION;

/// The exported descriptor. `magic` and `abi_version` stay the first two fields in every
/// ABI so that any host can read them from any plugin.
struct plugin_descriptor {
  std::uint32_t magic;
  std::uint32_t abi_version;
  std::uint32_t part;
  const char* name;
  const char* version;
  const char* build_tag;
  const char* description;
  validate_fn validate;
  factory_fn factory;
};

/// Maps a part to its interface, model and wrapper.
template <part P> struct part_traits;
template <> struct part_traits<part::datastore> {
  using iface = detail::datastore_iface;
  template <class T> using model = detail::datastore_model<T>;
  using any = any_datastore;
  template <class T> static consteval bool check() { return check_datastore<T>(); }
};
template <> struct part_traits<part::ipam> {
  using iface = detail::ipam_iface;
  template <class T> using model = detail::ipam_model<T>;
  using any = any_ipam;
  template <class T> static consteval bool check() { return check_ipam<T>(); }
};
template <> struct part_traits<part::routing> {
  using iface = detail::routing_iface;
  template <class T> using model = detail::routing_model<T>;
  using any = any_routing;
  template <class T> static consteval bool check() { return check_routing<T>(); }
};
template <> struct part_traits<part::encapsulation> {
  using iface = detail::encap_iface;
  template <class T> using model = detail::encap_model<T>;
  using any = any_encapsulation;
  template <class T> static consteval bool check() { return check_encapsulation<T>(); }
};
template <> struct part_traits<part::policy> {
  using iface = detail::policy_iface;
  template <class T> using model = detail::policy_model<T>;
  using any = any_policy;
  template <class T> static consteval bool check() { return check_policy<T>(); }
};

namespace detail {
template <class T> struct unwrap_result { using type = T; };
template <class T> struct unwrap_result<result<T>> { using type = T; };

template <auto Configure>
auto run_configure(const plugin_config& cfg, factory_output& out) {
  using config_t = std::remove_cvref_t<decltype(Configure(std::declval<settings&>()))>;
  auto s = settings::parse(cfg.text, std::string(cfg.file), std::string(cfg.section));
  std::optional<config_t> c;
  if (!s) { out.err = s.error(); return c; }
  config_t value = Configure(*s);
  if (auto f = s->finish(); !f) { out.err = f.error(); return c; }
  c.emplace(std::move(value));
  return c;
}

template <auto Configure>
void validate_thunk(const plugin_config& cfg, factory_output& out) noexcept {
  auto r = call<void>([&] { out.ok = run_configure<Configure>(cfg, out).has_value(); });
  if (!r) { out.err = r.error(); out.ok = false; }
}

template <part P, auto Configure, auto Create>
void factory_thunk(const plugin_context& ctx, const plugin_config& cfg, factory_output& out) noexcept {
  auto r = call<void>([&] {
    auto c = run_configure<Configure>(cfg, out);
    if (!c) return;
    auto made = Create(ctx, std::move(*c));
    using made_t = std::remove_cvref_t<decltype(made)>;
    using T = typename unwrap_result<made_t>::type;
    static_assert(part_traits<P>::template check<T>(), "the type a plugin's create() returns must model its part");
    using model_t = typename part_traits<P>::template model<T>;
    std::shared_ptr<typename part_traits<P>::iface> obj;
    if constexpr (std::is_same_v<made_t, result<T>>) {
      if (!made) { out.err = made.error(); return; }
      obj = std::make_shared<model_t>(std::move(made).value());
    } else {
      obj = std::make_shared<model_t>(std::move(made));
    }
    out.object = std::move(obj);
    out.ok = true;
  });
  if (!r) { out.err = r.error(); out.ok = false; }
}
}  // namespace detail

CNF_END_NAMESPACE

/// Declares this library's plugin. PART is one of datastore, ipam, routing,
/// encapsulation, policy; NAME and VERSION are string literals.
#define CNF_PLUGIN(PART, NAME, VERSION, CONFIGURE, CREATE)                                                \
  extern "C" CNF_EXPORT const ::cnf::plugin_descriptor cnf_plugin = {                                     \
      ::cnf::plugin_magic,                                                                                \
      ::cnf::abi_version,                                                                                 \
      static_cast<std::uint32_t>(::cnf::part::PART),                                                      \
      NAME,                                                                                               \
      VERSION,                                                                                            \
      CNF_BUILD_TAG,                                                                                      \
      "",                                                                                                 \
      &::cnf::detail::validate_thunk<CONFIGURE>,                                                          \
      &::cnf::detail::factory_thunk<::cnf::part::PART, CONFIGURE, CREATE>,                                \
  }
