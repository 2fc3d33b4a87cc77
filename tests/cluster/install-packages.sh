#!/usr/bin/env bash
# Install the Debian packages the local cluster runs on. Idempotent: does nothing when all are there.
set -euo pipefail

packages=(
  containerd runc containernetworking-plugins iptables conntrack ipset ethtool socat
  docker.io debootstrap openssl ca-certificates gcc libc6-dev procps psmisc iproute2 kmod
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "[install-packages] installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Package scripts must not start daemons: the cluster scripts start containerd and dockerd
# themselves with the configuration they need.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
