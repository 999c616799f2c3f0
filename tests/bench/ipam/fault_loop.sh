#!/bin/sh
# Issue 19, item 5, benchmark form: etcd SIGKILLed during 16 concurrent processes' ADDs
# (4 each), then every pod DELeted until its DEL succeeds, ROUNDS times (default 10); each
# round prints its ADDs, DEL retries, addresses still in use and `ipam check` problems.
# The pass/fail form (2 rounds) is the ipam_etcd_fault_loop test.
#   tests/bench/ipam/fault_loop.sh [BUILD_DIR] [ROUNDS]
set -eu
build=${1:-build}
rounds=${2:-10}
bin="$build/tests/ipam-recovery/ipam_etcd_fault_loop"
[ -x "$bin" ] || { echo "build it first: ninja -C $build ipam_etcd_fault_loop cnf-ipam-calico-ipam cnf-datastore-etcd" >&2; exit 2; }
start=$(date +%s)
CNF_FAULT_ROUNDS=$rounds "$bin" 2>&1 | grep -E "^(round|[0-9]+ rounds|skipped)|FAILED|All tests passed|test cases"
echo "wall time: $(( $(date +%s) - start )) s"
