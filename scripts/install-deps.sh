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
)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# musl-tools builds cnf-shim against musl (examples/cnf-shim/CMakeLists.txt says why).
# containerd and runc are for tests/integration/containerd_test.cpp, which starts its own
# containerd inside namespaces. Debian's package enables (and, under systemd, starts) a
# system containerd: when this script installed it, leave none running or enabled.
if printf '%s\n' "${missing[@]}" | grep -qx containerd; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now containerd.service
  else
    rm -f /etc/systemd/system/multi-user.target.wants/containerd.service
  fi
fi
