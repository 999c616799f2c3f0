#!/usr/bin/env bash
# Installs everything cnf needs to build, test and benchmark, from Debian 12's archive.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then echo "install-deps.sh: run as root (apt-get)" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
pkgs=(
  build-essential g++ cmake ninja-build pkg-config git
  libboost1.81-dev libboost-json1.81-dev libfmt-dev libtomlplusplus-dev catch2 libcli11-dev
  libmnl-dev libssl-dev libyaml-cpp-dev musl-tools
  iproute2 iputils-ping procps util-linux
  containernetworking-plugins etcd-server etcd-client curl openssl python3
  containerd runc busybox-static
  bird2 gobgpd iperf3 tcpdump
  iptables ipset nftables libnftables-dev
  clang llvm libclang-rt-dev libbpf-dev bpftool
)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# bird2 and gobgpd are the BGP peers of the interop tests and benchmarks; iperf3 and tcpdump
# measure and watch pod traffic in the lab; iptables, ipset, nftables and libnftables are
# the policy plugins' backends; clang, llvm, libbpf and bpftool build and load eBPF programs,
# and clang with libclang-rt (libFuzzer) builds the fuzz targets.
# Debian's bird2 and gobgpd packages start system daemons: when this script installed them,
# leave none running or enabled (tests start their own, inside namespaces).
# musl-tools builds cnf-shim against musl (examples/cnf-shim/CMakeLists.txt says why).
# containerd and runc are for tests/integration/containerd_test.cpp, which starts its own
# containerd inside namespaces. Debian's package enables (and, under systemd, starts) a
# system containerd: when this script installed it, leave none running or enabled.
for svc in containerd bird2:bird gobgpd; do
  pkg=${svc%%:*} unit=${svc##*:}
  printf '%s\n' "${missing[@]}" | grep -qx "$pkg" || continue
  if [ -d /run/systemd/system ]; then
    systemctl disable --now "$unit.service" 2>/dev/null || true
  else
    rm -f "/etc/systemd/system/multi-user.target.wants/$unit.service"
  fi
done
