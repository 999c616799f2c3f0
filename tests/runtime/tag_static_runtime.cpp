// Compiled with CNF_STATIC_CXX_RUNTIME=1, as code linked with -static-libstdc++ is.
#include <cnf/config.hpp>

extern "C" const char* cnf_test_tag_static_runtime() { return CNF_BUILD_TAG; }
