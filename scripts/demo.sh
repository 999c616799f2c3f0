#!/usr/bin/env bash
# The demo: install what is needed, build, install cnf to ./_install, then a cluster in a
# box with the installed binary:
#   cnf lab up      four nodes (k8s-m, k8s-w1, k8s-w2, k8s-w0), each a network namespace
#                   with its own `cnf agent`, joined by a fabric behind a router namespace,
#                   one shared datastore, two pods per node added through the real CNI binary
#   cnf lab status  nodes, agents, pods and their addresses
#   cnf lab ping    every ordered pod pair, real ICMP from inside each pod, in parallel
#   cnf lab down    nothing left: namespaces, processes, files
# Everything happens in namespaces the lab makes; the host's network is not touched.
# Runs as root (no sudo needed).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/install-deps.sh"
build=${CNF_BUILD_DIR:-$here/build}
prefix=$here/_install
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCNF_BUILD_TESTS=OFF > /dev/null
cmake --build "$build" -j2
cmake --install "$build" --prefix "$prefix" > /dev/null
cnf=$prefix/bin/cnf

# The lab's state in a directory of its own (its path gives the lab's id and namespace names).
export CNF_LAB_DIR
CNF_LAB_DIR=$(mktemp -d /tmp/cnf-demo.XXXXXX)
trap '"$cnf" lab down > /dev/null 2>&1 || true; rm -rf "$CNF_LAB_DIR"' EXIT

# The classic Calico lab's four nodes, on one subnet: the direct (host-gw) routing plugin
# routes between nodes of one subnet; across subnets is the encapsulation plugins' job.
echo "== cnf lab up --subnets 1"
"$cnf" lab up --subnets 1
echo "== cnf lab status"
"$cnf" lab status
echo "== cnf lab exec k8s-m -- ip route   (the node's routes; protocol 80 = cnf)"
"$cnf" lab exec k8s-m -- ip route
if "$cnf" plugins 2> /dev/null | grep -Eq '^routing +direct '; then
  echo "== cnf lab ping"
  "$cnf" lab ping
else
  echo "== cnf lab ping --same-node   (this build has no routing plugin \"direct\": pods reach only their own node's)"
  "$cnf" lab ping --same-node
fi
echo "== cnf lab down"
"$cnf" lab down
trap - EXIT
rm -rf "$CNF_LAB_DIR"
echo "demo complete"
