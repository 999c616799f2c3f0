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
build "$work/good"
cp "$work/good/cnf-ipam-fixed.so" "$prefix/lib/cnf/plugins/"
out=$("$prefix/bin/cnf" plugins 2>&1)
echo "$out"
echo "$out" | grep -E "^ipam +fixed +1.0.0 +1 +$prefix/lib/cnf/plugins/cnf-ipam-fixed.so" > /dev/null \
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

build "$work/abi2" -DCMAKE_CXX_FLAGS=-DCNF_ABI_VERSION=2
rm "$prefix/lib/cnf/plugins/cnf-ipam-fixed.so"
cp "$work/abi2/cnf-ipam-fixed.so" "$prefix/lib/cnf/plugins/"
out=$("$prefix/bin/cnf" plugins 2>&1)
echo "$out"
echo "$out" | grep -F "refused: plugin $prefix/lib/cnf/plugins/cnf-ipam-fixed.so: built for cnf ABI version 2, but this cnf uses ABI version 1" > /dev/null \
  || { echo "FAIL: the ABI-2 plugin was not refused with both numbers"; exit 1; }
if "$prefix/bin/cnf" profile check "$work/profile.toml" > "$work/check.out" 2>&1; then
  echo "FAIL: profile check passed with a wrong-ABI plugin"; exit 1
fi
grep -F "ABI version 2" "$work/check.out" > /dev/null
echo "package consumer: OK"
