#!/usr/bin/env bash
# The whole test suite: install what is needed, build warning-free (-Werror), run every
# test (unit, integration in network namespaces, etcd, package), then build the unit
# tests again under ASan+UBSan and run them. Needs root (namespaces, netlink).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/install-deps.sh"
jobs=${CNF_JOBS:-2}
build=${CNF_BUILD_DIR:-$here/build-test}
asan=${CNF_ASAN_DIR:-$here/build-asan}

echo "== build (RelWithDebInfo, -Werror)"
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCNF_WERROR=ON > /dev/null
cmake --build "$build" -j"$jobs"

echo "== tests"
# Two at a time: tests that must not share the machine say so (RUN_SERIAL, RESOURCE_LOCK).
(cd "$build" && ctest --output-on-failure --timeout 900 -j"$jobs")

echo "== unit tests under ASan+UBSan"
cmake -S "$here" -B "$asan" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCNF_WERROR=ON -DCNF_SANITIZE=ON > /dev/null
# Only what the unit-labelled tests need: their executables and the plugins they load.
targets=$(cd "$asan" && ctest -N -L unit | sed -n 's/^ *Test *#[0-9]*: \(.*\)$/\1/p' | grep -v '^compile_fail_\|^static_composition' || true)
known=$(cd "$asan" && ninja -t targets all | cut -d: -f1)
build_targets=$(for t in $targets; do grep -qx "$t" <<< "$known" && echo "$t"; done)
cmake --build "$asan" -j"$jobs" --target cnf-all-plugins $build_targets
(cd "$asan" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -L unit -E '^(compile_fail_|static_composition)')

echo "== fuzzing (clang, libFuzzer; each target for a bounded time from its seed corpus)"
fuzz=${CNF_FUZZ_DIR:-$here/build-fuzz}
CC=clang CXX=clang++ cmake -S "$here" -B "$fuzz" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCNF_FUZZ=ON > /dev/null
fuzz_targets=$(cd "$fuzz" && ctest -N -L fuzz | sed -n 's/^ *Test *#[0-9]*: \(.*\)$/\1/p')
cmake --build "$fuzz" -j"$jobs" --target $fuzz_targets
(cd "$fuzz" && ctest --output-on-failure -L fuzz)
echo "== all tests passed"
