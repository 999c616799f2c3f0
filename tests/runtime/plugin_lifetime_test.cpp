// Plugin lifetime and the build tag (issue 15, item 5): a library that passed the loader's
// checks stays mapped for the life of the process, whatever the host drops; the build tag
// tells apart builds whose std types differ (debug libstdc++) or whose runtime differs.
#include <cnf/loader.hpp>

#include <catch2/catch.hpp>
#include <dlfcn.h>

#include <string>

extern "C" const char* cnf_test_tag_debug_stdlib();   // built with _GLIBCXX_DEBUG
extern "C" const char* cnf_test_tag_static_runtime();  // built with CNF_STATIC_CXX_RUNTIME=1

namespace {
const std::filesystem::path lib_dir = CNF_TEST_BINARY_DIR "/tests/plugins/lib";

bool library_loaded(const std::filesystem::path& p) {
  void* h = ::dlopen(p.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (!h) return false;
  ::dlclose(h);
  return true;
}
}  // namespace

TEST_CASE("a plugin library stays loaded after every object and handle on it is gone", "[unit][loader]") {
  auto path = lib_dir / "cnf-datastore-settings.so";
  REQUIRE_FALSE(library_loaded(path));  // nothing in this process opened it yet
  {
    cnf::any_datastore ds;
    {
      cnf::plugin_loader loader({lib_dir});
      auto lp = loader.find(cnf::part::datastore, "settings");
      REQUIRE(lp);
      std::string text = "[datastore]\nplugin='settings'\n";
      auto made = cnf::plugin_loader::make<cnf::part::datastore>(*lp, {}, {text, "test.toml", "datastore"});
      REQUIRE(made);
      ds = std::move(*made);
    }
    REQUIRE(ds.status());
  }
  // The loader, the loaded_plugin (whose Boost.DLL handle closed the library) and the
  // object are gone: the library is still mapped, so code it left behind can still run.
  CHECK(library_loaded(path));
}

TEST_CASE("the build tag names debug libstdc++ and a static C++ runtime", "[unit][loader]") {
  const std::string plain = CNF_BUILD_TAG;
  const std::string debug = cnf_test_tag_debug_stdlib();
  const std::string static_rt = cnf_test_tag_static_runtime();
  INFO("plain: " << plain << "; debug: " << debug << "; static runtime: " << static_rt);
  CHECK(plain.find("+debug") == std::string::npos);
  CHECK(debug.find("+debug") != std::string::npos);
  CHECK(static_rt.find("+static-rt") != std::string::npos);
  CHECK(debug != plain);
  CHECK(static_rt != plain);
}
