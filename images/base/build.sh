#!/usr/bin/env bash
# Build the docker image kubedbt/base:bookworm: Debian bookworm (minbase), python3, venv and pip.
#
# No registry is reachable, so the base image cannot come from `FROM debian`; debootstrap builds
# the root filesystem from the Debian mirror instead and `docker import` turns it into an image.
# The rootfs tarball is cached in $KUBEDBT_CACHE under a key made of this script and the host's CA
# bundle, so it is built once; the image carries the key as a label, so an unchanged image is not
# imported again. The image is also the plain test image of the cluster smoke tests (sh, python3).
#
# The host's CA bundle replaces the image's: outgoing TLS here (pip, dbt adapters) goes through
# certificates only the host trusts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/versions.sh
source "$here/../../tests/cluster/versions.sh"

image=kubedbt/base:bookworm
docker=${DOCKER:-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca_bundle=/etc/ssl/certs/ca-certificates.crt
log() { printf '[base-image] %s\n' "$*" >&2; }

key=$(cat "$0" "$ca_bundle" | sha256sum | cut -c1-16)
built_key=$("$docker" image inspect -f '{{index .Config.Labels "kubedbt.base.key"}}' "$image" \
  2>/dev/null || true)
if [[ $built_key == "$key" ]]; then
  log "$image is up to date ($key)"
  exit 0
fi

tarball=$KUBEDBT_CACHE/images/base-bookworm-$key.tar
if [[ ! -s $tarball ]]; then
  mkdir -p "$KUBEDBT_CACHE/images"
  work=$(mktemp -d "$KUBEDBT_CACHE/images/rootfs.XXXXXX")
  # debootstrap mounts /proc and /sys inside the target; never let rm follow them.
  cleanup() {
    grep -o " $work/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r umount -l || true
    rm -rf --one-file-system "$work"
  }
  trap cleanup EXIT
  log "debootstrap bookworm from $mirror (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  cp "$ca_bundle" "$work/rootfs$ca_bundle"
  # Downloaded packages and apt lists are only weight in an image.
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar --numeric-owner -C "$work/rootfs" --exclude='./dev/*' --exclude='./proc/*' \
    --exclude='./sys/*' -cf "$tarball.tmp" .
  # Tarballs of earlier versions of this script are never used again.
  rm -f "$KUBEDBT_CACHE/images/"base-bookworm-*.tar
  mv "$tarball.tmp" "$tarball"
fi

log "importing $image from $tarball"
"$docker" import \
  --change "LABEL kubedbt.base.key=$key" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "ENV SSL_CERT_FILE=$ca_bundle PIP_CERT=$ca_bundle REQUESTS_CA_BUNDLE=$ca_bundle" \
  --change 'CMD ["/bin/sh"]' \
  "$tarball" "$image" >/dev/null
