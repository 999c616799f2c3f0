// cnf/loader.hpp — finding and loading plugins (host side; plugins never include this).
//
//   cnf::plugin_loader loader({"/opt/cnf/plugins"});         // search path, in order
//   auto ipam = loader.make<cnf::part::ipam>("host-local", ctx, {text, file, "ipam"});
//   if (!ipam) std::cerr << ipam.error().message;           // e.g. plugin not found: ...
//
// A plugin is found by the name in its descriptor. The loader first tries the
// conventional file name cnf-<part>-<name>.so in each directory, then scans the
// directories. It checks magic, ABI number, build tag and part before calling anything.
// A library that passed the checks is never unloaded while the process lives (objects,
// watch handles and posted closures it made may outlive every handle on it).
#pragma once
#include <cnf/plugin.hpp>

#include <boost/dll/shared_library.hpp>

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE

struct plugin_info {
  part kind = part::datastore;
  std::string name;
  std::string version;
  std::uint32_t abi = 0;
  std::string build_tag;
  std::string description;
  std::filesystem::path path;
};

/// A library whose descriptor passed every check.
struct loaded_plugin {
  plugin_info info;
  std::shared_ptr<boost::dll::shared_library> library;
  const plugin_descriptor* descriptor = nullptr;
};

class plugin_loader {
 public:
  explicit plugin_loader(std::vector<std::filesystem::path> search_path) : path_(std::move(search_path)) {}

  const std::vector<std::filesystem::path>& search_path() const noexcept { return path_; }

  /// Opens one file and checks its descriptor (magic, ABI, build tag). `expected_part`
  /// and `expected_name`, when given, are checked too.
  static result<loaded_plugin> open(const std::filesystem::path& file, std::optional<part> expected_part = std::nullopt,
                                    std::string_view expected_name = {}) {
    auto lib = std::make_shared<boost::dll::shared_library>();
    boost::dll::fs::error_code ec;
    lib->load(file, boost::dll::load_mode::rtld_lazy | boost::dll::load_mode::rtld_local, ec);
    if (ec) {
      const char* why = ::dlerror();
      return error(errc::invalid, "plugin " + file.string() + ": cannot load: " + (why ? std::string(why) : ec.message()));
    }
    if (!lib->has("cnf_plugin"))
      return error(errc::invalid, "plugin " + file.string() + ": no cnf_plugin descriptor (not a cnf plugin, or built without CNF_PLUGIN)");
    const auto* raw = &lib->get<const std::uint32_t>("cnf_plugin");
    if (raw[0] != plugin_magic)
      return error(errc::invalid, "plugin " + file.string() + ": cnf_plugin is not a cnf plugin descriptor (bad magic)");
    if (raw[1] != abi_version)
      return error(errc::invalid, "plugin " + file.string() + ": built for cnf ABI version " + std::to_string(raw[1]) +
                                      ", but this cnf uses ABI version " + std::to_string(abi_version) +
                                      "; rebuild the plugin against this cnf");
    const auto* d = reinterpret_cast<const plugin_descriptor*>(raw);
    std::string tag = d->build_tag ? d->build_tag : "";
    if (tag != CNF_BUILD_TAG)
      return error(errc::invalid, "plugin " + file.string() + ": built as '" + tag + "', but this cnf is built as '" +
                                      std::string(CNF_BUILD_TAG) + "'; rebuild the plugin with the same compiler and options");
    if (d->part < 1 || d->part > 5 || !d->name || !d->factory || !d->validate)
      return error(errc::invalid, "plugin " + file.string() + ": malformed descriptor");
    // From here on the plugin's code may run (validate, factory): pin the library for the
    // life of the process. Objects, watch handles and closures it made may outlive every
    // reference the host holds (a closure posted on the executor, a watch callback in
    // flight), and a library that is unmapped under them crashes the host. Promoting the
    // loaded object to RTLD_NODELETE keeps it mapped after every dlclose.
    if (!::dlopen(file.c_str(), RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE)) {
      const char* why = ::dlerror();
      return error(errc::internal, "plugin " + file.string() + ": cannot pin the library: " + (why ? why : "dlopen failed"));
    }
    loaded_plugin lp;
    lp.info = {static_cast<part>(d->part), d->name, d->version ? d->version : "", raw[1], tag,
               d->description ? d->description : "", file};
    lp.library = std::move(lib);
    lp.descriptor = d;
    if (expected_part && lp.info.kind != *expected_part)
      return error(errc::invalid, "plugin " + file.string() + ": is a " + std::string(to_string(lp.info.kind)) +
                                      " plugin, but a " + std::string(to_string(*expected_part)) + " plugin was asked for");
    if (!expected_name.empty() && lp.info.name != expected_name)
      return error(errc::invalid, "plugin " + file.string() + ": is named '" + lp.info.name + "', not '" +
                                      std::string(expected_name) + "'");
    return lp;
  }

  /// Every cnf plugin on the search path; files that fail a check go to `problems`.
  std::vector<plugin_info> discover(std::vector<cnf::error>* problems = nullptr) const {
    std::vector<plugin_info> out;
    for (auto& f : candidate_files()) {
      auto lp = open(f);
      if (lp) out.push_back(lp->info);
      else if (problems) problems->push_back(lp.error());
    }
    return out;
  }

  /// Finds the plugin of this part and name.
  result<loaded_plugin> find(part p, std::string_view name) const {
    std::vector<cnf::error> refused;
    for (auto& dir : path_) {
      auto f = dir / ("cnf-" + std::string(to_string(p)) + "-" + std::string(name) + ".so");
      std::error_code ec;
      if (!std::filesystem::exists(f, ec)) continue;
      auto lp = open(f, p, name);
      if (lp) return lp;
      refused.push_back(lp.error());
    }
    for (auto& f : candidate_files()) {
      auto lp = open(f);
      if (!lp) continue;
      if (lp->info.name != name) continue;
      if (lp->info.kind == p) return lp;
      refused.push_back(error(errc::invalid, "plugin " + f.string() + ": is a " + std::string(to_string(lp->info.kind)) +
                                                 " plugin, but a " + std::string(to_string(p)) + " plugin was asked for"));
    }
    if (!refused.empty()) return refused.front();
    std::string searched;
    for (auto& d : path_) searched += (searched.empty() ? "" : ", ") + d.string();
    return error(errc::not_found, "plugin not found: " + std::string(name) + " (" + std::string(to_string(p)) +
                                      "; searched: " + (searched.empty() ? "nothing" : searched) + ")");
  }

  /// Builds a part from a loaded plugin; the result keeps the library loaded.
  template <part P>
  static result<typename part_traits<P>::any> make(const loaded_plugin& lp, const plugin_context& ctx, const plugin_config& cfg) {
    using iface = typename part_traits<P>::iface;
    if (lp.info.kind != P) return error(errc::invalid, "plugin " + lp.info.path.string() + ": wrong part");
    factory_output out;
    lp.descriptor->factory(ctx, cfg, out);
    if (!out.ok || !out.object) {
      if (out.err.message.empty()) out.err = error(errc::internal, "plugin " + lp.info.name + ": factory made nothing");
      return out.err;
    }
    auto* raw = static_cast<iface*>(out.object.get());
    auto lib = lp.library;
    // The object dies first (its code lives in the library), then the library reference.
    std::shared_ptr<iface> held(raw, [obj = std::move(out.object), lib = std::move(lib)](iface*) mutable {
      obj.reset();
      lib.reset();
    });
    return typename part_traits<P>::any(std::move(held));
  }

  template <part P>
  result<typename part_traits<P>::any> make(std::string_view name, const plugin_context& ctx, const plugin_config& cfg) const {
    auto lp = find(P, name);
    if (!lp) return lp.error();
    return make<P>(*lp, ctx, cfg);
  }

  /// Runs a plugin's configure step only (no side effects), e.g. for `cnf profile check`.
  static result<void> validate(const loaded_plugin& lp, const plugin_config& cfg) {
    factory_output out;
    lp.descriptor->validate(cfg, out);
    if (out.ok) return {};
    return out.err;
  }

  /// The default search path: `profile_path` entries, then $CNF_PLUGIN_PATH (colon
  /// separated), then `install_dir`.
  static std::vector<std::filesystem::path> default_search_path(const std::vector<std::filesystem::path>& profile_path,
                                                                const std::filesystem::path& install_dir) {
    std::vector<std::filesystem::path> p = profile_path;
    if (const char* env = std::getenv("CNF_PLUGIN_PATH"); env && *env) {
      std::string_view s(env);
      while (!s.empty()) {
        auto c = s.find(':');
        auto part = s.substr(0, c);
        if (!part.empty()) p.emplace_back(std::string(part));
        if (c == std::string_view::npos) break;
        s.remove_prefix(c + 1);
      }
    }
    if (!install_dir.empty()) p.push_back(install_dir);
    return p;
  }

 private:
  std::vector<std::filesystem::path> candidate_files() const {
    std::vector<std::filesystem::path> out;
    for (auto& dir : path_) {
      std::error_code ec;
      std::vector<std::filesystem::path> here;
      for (auto it = std::filesystem::directory_iterator(dir, ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        if (it->path().extension() == ".so") here.push_back(it->path());
      }
      std::sort(here.begin(), here.end());
      out.insert(out.end(), here.begin(), here.end());
    }
    return out;
  }

  std::vector<std::filesystem::path> path_;
};

CNF_END_NAMESPACE
