#!/usr/bin/env bash
# Build the pod sandbox ("pause") image from source and import it into containerd.
#
# Every pod needs the sandbox image, and no registry can be reached here. pause.c ships in the
# kubernetes module (build-binaries.sh keeps a copy beside the binaries); compiled static it is the
# only file of a FROM-scratch image. The image is written as a `docker save` style archive by hand,
# so the cluster does not need dockerd. containerd keeps it across down.sh/up.sh.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

# `pause-image.sh --archive FILE TAG...` writes the archive, with those tags, to FILE instead (the
# kind node image is built from docker images: kind-node-image.sh).
archive=
tags=("$SANDBOX_IMAGE")
if [[ ${1:-} == --archive ]]; then
  archive=$2
  tags=("${@:3}")
elif [[ -n $(ctr_k8s images ls -q "name==$SANDBOX_IMAGE") ]]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir "$work/rootfs"
gcc -Os -Wall -Werror -static -DVERSION="v${SANDBOX_IMAGE##*:}-kubedbt" \
  -o "$work/rootfs/pause" "$K8S_BIN/pause.c"
strip "$work/rootfs/pause"
tar --numeric-owner --owner=0 --group=0 -C "$work/rootfs" -cf "$work/layer.tar" pause

layer_digest=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
# Same entrypoint and user as the upstream image.
cat >"$work/config.json" <<EOF
{"architecture":"amd64","os":"linux",
 "config":{"Entrypoint":["/pause"],"User":"65535:65535"},
 "rootfs":{"type":"layers","diff_ids":["sha256:$layer_digest"]}}
EOF
config_digest=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/$config_digest.json"
repo_tags=$(printf '"%s",' "${tags[@]}")
cat >"$work/manifest.json" <<EOF
[{"Config":"$config_digest.json","RepoTags":[${repo_tags%,}],"Layers":["layer.tar"]}]
EOF

if [[ -n $archive ]]; then
  tar -C "$work" -cf "$archive" manifest.json "$config_digest.json" layer.tar
  exit 0
fi
tar -C "$work" -cf - manifest.json "$config_digest.json" layer.tar | ctr_k8s images import - >&2
log "imported $SANDBOX_IMAGE"
