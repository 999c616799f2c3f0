#!/usr/bin/env bash
# The demo: install what is needed, build, install cnf to ./_install, then on a node
# namespace with three pod namespaces run real CNI ADDs through the installed binary
# (embedded datastore + host-local IPAM), show the results and pings, DEL, clean up.
# Everything happens in namespaces this script makes; the host is not touched.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/install-deps.sh"
build=${CNF_BUILD_DIR:-$here/build}
prefix=$here/_install
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCNF_BUILD_TESTS=OFF > /dev/null
cmake --build "$build" -j2
cmake --install "$build" --prefix "$prefix" > /dev/null
cnf=$prefix/bin/cnf

tag=cnfdemo$$
node=$tag-node up=$tag-up
work=$(mktemp -d /tmp/cnf-demo.XXXXXX)
pods=(web-0 web-1 db-0)
cleanup() {
  for p in "${pods[@]}"; do ip netns del "$tag-$p" 2>/dev/null || true; done
  ip netns del "$node" 2>/dev/null || true
  ip netns del "$up" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The profile: examples/profiles/minimal.toml with its state in a temp dir.
sed -e "s|^dir = .*|dir = \"$work/state\"|" -e 's|^# name = .*|name = "demo-node"|' \
  "$here/examples/profiles/minimal.toml" > "$work/profile.toml"
echo "== cnf profile check"
"$cnf" profile check "$work/profile.toml"

# A node namespace with an uplink (a node has a default route; proxy ARP needs one).
ip netns add "$node"; ip netns add "$up"
ip -n "$node" link add uplink type veth peer name downlink netns "$up"
ip -n "$node" addr add 192.0.2.1/24 dev uplink
ip -n "$up" addr add 192.0.2.2/24 dev downlink
ip -n "$node" link set lo up; ip -n "$node" link set uplink up; ip -n "$up" link set downlink up
ip -n "$node" route add default via 192.0.2.2
ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1

conf='{"cniVersion":"1.1.0","name":"demo-net","type":"cnf","profile":"'$work/profile.toml'"}'
cni() {  # cni COMMAND POD
  ip netns exec "$node" env CNI_COMMAND="$1" CNI_CONTAINERID="ctr-$2" CNI_NETNS="/var/run/netns/$tag-$2" \
    CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=$2" \
    "$cnf" <<< "$conf"
}
declare -A ip
for p in "${pods[@]}"; do
  ip netns add "$tag-$p"
  echo "== CNI ADD default/$p"
  out=$(cni ADD "$p" 2>/dev/null)
  echo "$out"
  ip[$p]=$(sed -E 's/.*"address":"([0-9.]+)\/32".*/\1/' <<< "$out")
done
echo "== node routes (protocol 80 = cnf)"
ip -n "$node" route show proto 80
echo "== pings"
for pair in "web-0 web-1" "web-1 db-0" "db-0 web-0"; do
  set -- $pair
  ip netns exec "$tag-$1" ping -c1 -W2 "${ip[$2]}" > /dev/null && echo "$1 -> $2 (${ip[$2]}): ok" || { echo "$1 -> $2: FAILED"; exit 1; }
done
for p in "${pods[@]}"; do
  ip netns exec "$tag-$p" ping -c1 -W2 192.0.2.1 > /dev/null && echo "$p -> node (192.0.2.1): ok" || { echo "$p -> node: FAILED"; exit 1; }
done
echo "== CNI DEL"
for p in "${pods[@]}"; do cni DEL "$p" 2>/dev/null && echo "DEL default/$p: ok"; done
left=$(ip -n "$node" -o link show | grep -c cali || true)
echo "host veths left on the node: $left"
echo "demo complete"
