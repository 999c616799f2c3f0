#!/usr/bin/env bash
# Package-consumer test: install cnf to a temp prefix, build the out-of-tree example
# plugin against it with find_package(cnf), and check the installed `cnf plugins` lists
# it; then build it for another ABI number and check it is refused with both numbers.
set -euo pipefail
build_dir=$1 src_dir=$2
work=$(mktemp -d /tmp/cnf-package.XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build_dir" --prefix "$prefix" > "$work/install.log"
test -x "$prefix/bin/cnf"
test -x "$prefix/bin/cnf-shim"
# The installed thin plugin finds the installed cnf next to it (VERSION is cnf's answer).
ver=$(echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION "$prefix/bin/cnf-shim")
echo "$ver" | grep -q '"supportedVersions":\["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"\]' \
  || { echo "FAIL: installed cnf-shim did not reach cnf: $ver"; exit 1; }
test -f "$prefix/lib/cmake/cnf/cnfConfig.cmake"
test -f "$prefix/lib/cmake/cnf/cnfConfigVersion.cmake"
test -f "$prefix/include/cnf/cnf.hpp"
test -f "$prefix/lib/libcnf_runtime.a"
grep -q "cnf::runtime" "$prefix/lib/cmake/cnf/cnfTargets.cmake" || { echo "FAIL: cnf::runtime is not exported"; exit 1; }

build() {  # $1 = build dir, $2... = extra cmake args
  local b=$1; shift
  cmake -S "$src_dir/examples/out-of-tree-plugin" -B "$b" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" > "$b.log" 2>&1 || { cat "$b.log"; exit 1; }
  cmake --build "$b" >> "$b.log" 2>&1 || { cat "$b.log"; exit 1; }
}
# The framework's ABI number, and another one a plugin must be refused for.
abi=$(sed -n 's/^#define CNF_ABI_VERSION \([0-9][0-9]*\)$/\1/p' "$src_dir/include/cnf/config.hpp")
test -n "$abi" || { echo "FAIL: no CNF_ABI_VERSION in include/cnf/config.hpp"; exit 1; }
other=$((abi + 1))
build "$work/good"
cp "$work/good/cnf-ipam-fixed.so" "$prefix/lib/cnf/plugins/"
out=$("$prefix/bin/cnf" plugins 2>&1)
echo "$out"
echo "$out" | grep -E "^ipam +fixed +1.0.0 +$abi +$prefix/lib/cnf/plugins/cnf-ipam-fixed.so" > /dev/null \
  || { echo "FAIL: the out-of-tree plugin is not listed"; exit 1; }
echo "$out" | grep -E "^datastore +local " > /dev/null || { echo "FAIL: built-in plugins not listed"; exit 1; }

# A profile using it checks clean with the installed cnf.
cat > "$work/profile.toml" <<TOML
[datastore]
plugin = "local"
dir = "$work/state"
[ipam]
plugin = "fixed"
addresses = ["10.9.0.10/24"]
TOML
"$prefix/bin/cnf" profile check "$work/profile.toml"

build "$work/abi$other" -DCMAKE_CXX_FLAGS=-DCNF_ABI_VERSION=$other
rm "$prefix/lib/cnf/plugins/cnf-ipam-fixed.so"
cp "$work/abi$other/cnf-ipam-fixed.so" "$prefix/lib/cnf/plugins/"
out=$("$prefix/bin/cnf" plugins 2>&1)
echo "$out"
echo "$out" | grep -F "refused: plugin $prefix/lib/cnf/plugins/cnf-ipam-fixed.so: built for cnf ABI version $other, but this cnf uses ABI version $abi" > /dev/null \
  || { echo "FAIL: the ABI-$other plugin was not refused with both numbers"; exit 1; }
if "$prefix/bin/cnf" profile check "$work/profile.toml" > "$work/check.out" 2>&1; then
  echo "FAIL: profile check passed with a wrong-ABI plugin"; exit 1
fi
grep -F "ABI version $other" "$work/check.out" > /dev/null

# Another distribution's CNI plugin: the framework's CNI engine (cnf::cni) with no hooks,
# built against the installed package, answers VERSION and runs STATUS over a profile.
test -f "$prefix/lib/libcnf_cni.a"
mkdir -p "$work/cni-src"
cat > "$work/cni-src/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.22)
project(other_cni CXX)
find_package(cnf REQUIRED)
add_executable(other-cni main.cpp)
target_link_libraries(other-cni PRIVATE cnf::cni)
CMAKE
cat > "$work/cni-src/main.cpp" <<'CPP'
#include <cnf/cni/engine.hpp>
int main(int, char** argv) { return cnf::cni::run_plugin_main(argv); }
CPP
cmake -S "$work/cni-src" -B "$work/cni" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" > "$work/cni.log" 2>&1 \
  && cmake --build "$work/cni" >> "$work/cni.log" 2>&1 || { cat "$work/cni.log"; echo "FAIL: cnf::cni does not build out of tree"; exit 1; }
ver=$(echo '{"cniVersion":"1.1.0","name":"n","type":"other-cni"}' | CNI_COMMAND=VERSION "$work/cni/other-cni")
echo "$ver" | grep -q '"supportedVersions":\[' || { echo "FAIL: other-cni VERSION: $ver"; exit 1; }
cp "$work/good/cnf-ipam-fixed.so" "$prefix/lib/cnf/plugins/cnf-ipam-fixed.so"
# The example IPAM reports no pools, so STATUS answers 50 naming it: the engine composed the
# profile's datastore and the out-of-tree IPAM from the installed plugin directory.
status=$(echo "{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"type\":\"other-cni\",\"profile\":\"$work/profile.toml\"}" \
  | CNI_COMMAND=STATUS CNF_PLUGIN_PATH="$prefix/lib/cnf/plugins" "$work/cni/other-cni" 2>/dev/null) \
  && { echo "FAIL: other-cni STATUS passed with an IPAM that has no pool: $status"; exit 1; }
echo "$status" | grep -q '"code":50,"msg":"ipam fixed: no address pool is configured"' \
  || { echo "FAIL: other-cni STATUS: $status"; exit 1; }
# And a profile it cannot serve gets the CNI error for a bad config (7), naming the field.
bad=$(echo '{"cniVersion":"1.1.0","name":"n","type":"other-cni","vethPrefix":"toolong"}' \
  | CNI_COMMAND=STATUS "$work/cni/other-cni") && { echo "FAIL: other-cni accepted vethPrefix toolong"; exit 1; }
echo "$bad" | grep -q '"code":7' && echo "$bad" | grep -q 'vethPrefix' || { echo "FAIL: other-cni bad config: $bad"; exit 1; }
echo "package consumer: OK"
