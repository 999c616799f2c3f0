// Parts linked into the cnf program itself (CMake option CNF_CNI_BUILTIN_PLUGINS): the
// local datastore, host-local and calico-ipam, built from the same static libraries as
// their plugins, behind the same plugin descriptor (settings, validation, factory).
//
// Why: a container runtime starts one cnf process per CNI call. Loading the two plugins
// a call needs (dlopen, symbol relocation, page faults) and the shared C++ runtime they
// require cost about 2.5 ms of each call on the reference machine (tests/bench/cni); with
// the parts built in and the C++ runtime linked statically, cnf starts like a C program.
//
// A plugin of the same name still wins when its conventional file
// (cnf-<part>-<name>.so) lies in a directory of the search path other than cnf's own
// plugin directory: the profile's plugin_path or $CNF_PLUGIN_PATH. Everything else (other
// names, other parts) is loaded from the plugin directory as before.
#include "app.hpp"

#if CNF_CNI_BUILTIN
#include <cnf/cni/fail_fast.hpp>
#include <cnf/plugin.hpp>
#if CNF_BUILTIN_LOCAL
#include <cnf/plugins/local.hpp>
#endif
#if CNF_BUILTIN_HOST_LOCAL
#include <cnf/plugins/host-local.hpp>
#endif
#if CNF_BUILTIN_CALICO_IPAM
#include <cnf/plugins/calico_ipam.hpp>
#endif
#endif

#include <system_error>

namespace cnf_app {
namespace {

#if CNF_CNI_BUILTIN
// configure/create as in each plugin's plugin.cpp.
#if CNF_BUILTIN_LOCAL
cnf::local_datastore_options local_configure(cnf::settings& s) { return cnf::configure_local_datastore(s); }
cnf::result<cnf::local_datastore> local_create(const cnf::plugin_context& ctx, cnf::local_datastore_options o) {
  o.exec = ctx.exec;
  o.log = ctx.log;
  return cnf::local_datastore::open(std::move(o));
}
#endif
#if CNF_BUILTIN_HOST_LOCAL
cnf::host_local::config host_local_configure(cnf::settings& s) { return cnf::host_local::read_config(s); }
cnf::result<cnf::host_local_ipam> host_local_create(const cnf::plugin_context& ctx, cnf::host_local::config c) {
  if (!ctx.datastore)
    return cnf::error(cnf::errc::invalid, "host-local: the host gave no datastore; host-local keeps its allocations there");
  return cnf::host_local_ipam(ctx.datastore, std::move(c), ctx.node_name, ctx.log);
}
#endif
#if CNF_BUILTIN_CALICO_IPAM
cnf::calico_ipam::options calico_configure(cnf::settings& s) { return cnf::calico_ipam::configure(s); }
cnf::result<cnf::calico_ipam::ipam> calico_create(const cnf::plugin_context& ctx, cnf::calico_ipam::options o) {
  if (!ctx.datastore)
    return cnf::error(cnf::errc::invalid,
                      "calico-ipam keeps its state in the datastore, but the host gave it none (check the profile's [datastore] section)");
  return cnf::calico_ipam::ipam(ctx.datastore, ctx.node_name, std::move(o), ctx.log);
}
#endif

#define CNF_APP_BUILTIN(PART, NAME, CONFIGURE, CREATE)                                                          \
  cnf::plugin_descriptor {                                                                                      \
    cnf::plugin_magic, cnf::abi_version, static_cast<std::uint32_t>(cnf::part::PART), NAME, "0.1.0 (built in)", \
        CNF_BUILD_TAG, "", &cnf::detail::validate_thunk<CONFIGURE>,                                             \
        &cnf::detail::factory_thunk<cnf::part::PART, CONFIGURE, CREATE>                                        \
  }

const cnf::plugin_descriptor builtins[] = {
#if CNF_BUILTIN_LOCAL
    CNF_APP_BUILTIN(datastore, "local", local_configure, local_create),
#endif
#if CNF_BUILTIN_HOST_LOCAL
    CNF_APP_BUILTIN(ipam, "host-local", host_local_configure, host_local_create),
#endif
#if CNF_BUILTIN_CALICO_IPAM
    CNF_APP_BUILTIN(ipam, "calico-ipam", calico_configure, calico_create),
#endif
};
#undef CNF_APP_BUILTIN
#endif

/// The built-in plugin for this part and name, unless a plugin file of that name
/// overrides it from the profile's plugin_path or $CNF_PLUGIN_PATH.
std::optional<cnf::loaded_plugin> builtin_for(cnf::part p, const std::string& name, const cnf::plugin_loader& loader) {
#if CNF_CNI_BUILTIN
  for (const auto& d : builtins) {
    if (d.part != static_cast<std::uint32_t>(p) || name != d.name) continue;
    const auto own = install_plugin_dir();
    const std::string file = "cnf-" + std::string(cnf::to_string(p)) + "-" + name + ".so";
    for (const auto& dir : loader.search_path()) {
      std::error_code ec;
      if (dir.lexically_normal() == own) continue;
      if (std::filesystem::exists(dir / file, ec)) return std::nullopt;
    }
    cnf::loaded_plugin lp;
    lp.info = {p, d.name, d.version, d.abi_version, d.build_tag, d.description, {}};
    lp.descriptor = &d;
    return lp;
  }
#else
  (void)p;
  (void)name;
  (void)loader;
#endif
  return std::nullopt;
}

}  // namespace

std::vector<std::string> builtin_plugin_names() {
  std::vector<std::string> out;
#if CNF_CNI_BUILTIN
  for (const auto& d : builtins) out.push_back(std::string(cnf::to_string(static_cast<cnf::part>(d.part))) + "/" + d.name);
#endif
  return out;
}

// One composition function (cnf::compose); the program only adds its built-in parts and,
// for the CNI plugin, the fail-fast datastore.
cnf::result<cnf::composition> compose_parts(const cnf::profile& prof, const cnf::plugin_loader& loader, const std::set<cnf::part>& which,
                                            cnf::plugin_context ctx, bool fail_fast) {
  cnf::compose_hooks hooks;
  hooks.resolve = [&](cnf::part p, const std::string& name) { return builtin_for(p, name, loader); };
  if (fail_fast) hooks.wrap_datastore = [](cnf::any_datastore d) { return cnf::cni::fail_fast_datastore(std::move(d)); };
  return cnf::compose(prof, loader, which, std::move(ctx), hooks);
}

}  // namespace cnf_app
