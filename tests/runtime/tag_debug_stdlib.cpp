// Compiled with _GLIBCXX_DEBUG (see CMakeLists.txt): only a C string leaves this file.
#include <cnf/config.hpp>

extern "C" const char* cnf_test_tag_debug_stdlib() { return CNF_BUILD_TAG; }
