#include "app.hpp"

#include <cstdio>

namespace cnf_app {
int run_cni(int, char**) {
  std::fputs("{\"cniVersion\":\"1.1.0\",\"code\":4,\"msg\":\"CNI mode not implemented yet\"}\n", stdout);
  return 1;
}
}  // namespace cnf_app
