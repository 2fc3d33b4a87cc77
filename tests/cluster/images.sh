#!/usr/bin/env bash
# Build the project's images and make them available to the cluster, which cannot pull.
#
#   kubedbt/base:bookworm   images/base/build.sh (debootstrap; also the smoke tests' image)
#   kubedbt/<name>:dev      every images/<name>/Dockerfile, built FROM the base through the
#                           build argument BASE_IMAGE, with the repository root as context
#
# Each image is then copied from docker into containerd's k8s.io namespace (CLUSTER=kind: loaded
# into the kind node), so pods run it with imagePullPolicy IfNotPresent. docker's build cache makes
# unchanged builds cheap, and an image already in containerd with the same docker image ID is not
# copied again. Needs the cluster up (containerd running), except with CLUSTER=kind.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

repo=$(cd "$cluster_dir/../.." && pwd)
base_image=kubedbt/base:bookworm
# The distribution's client matches the daemon images.sh starts; another docker CLI may sit first
# on PATH (this machine has a newer one in /usr/local/bin).
docker=${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}
export DOCKER=$docker
# BuildKit skips stages the target does not need, caches well and allows RUN --mount; the
# distribution's docker 20.10 still defaults to the legacy builder.
export DOCKER_BUILDKIT=1

ensure_dockerd() {
  if "$docker" info >/dev/null 2>&1; then
    return
  fi
  # --iptables=false: dockerd would otherwise set the FORWARD policy to DROP and cut pods off
  # from Services. Without its bridge or NAT, builds use the host network (--network host).
  # --containerd: share the cluster's containerd (namespace "moby") instead of starting a second
  # one, which dockerd 20.10 would also do on its own when that socket exists.
  start_daemon dockerd /usr/sbin/dockerd --iptables=false --ip-masq=false --bridge=none \
    --containerd "$CONTAINERD_SOCKET"
  wait_until "dockerd" 60 "$docker" info
}

# import_to_cluster IMAGE: copy IMAGE from docker into the cluster unless it is there already.
import_to_cluster() {
  local image=$1 id ref=docker.io/$1
  if [[ ${CLUSTER:-local} == kind ]]; then
    "$cluster_dir/kind.sh" load "$image"
    return
  fi
  id=$("$docker" image inspect -f '{{.Id}}' "$image")
  if ctr_k8s images ls "name==$ref" | grep -q "kubedbt.docker-id=$id"; then
    log "$image already in containerd"
    return
  fi
  log "importing $image into containerd"
  "$docker" save "$image" | ctr_k8s images import - >/dev/null
  ctr_k8s images label "$ref" "kubedbt.docker-id=$id" >/dev/null
}

if [[ ${CLUSTER:-local} != kind ]]; then
  [[ $(id -u) == 0 ]] || die "must run as root (starts dockerd, talks to containerd)"
  ctr --address "$CONTAINERD_SOCKET" version >/dev/null 2>&1 ||
    die "containerd is not running: run tests/cluster/up.sh first"
  "$cluster_dir/install-packages.sh"
  ensure_dockerd
else
  "$docker" info >/dev/null 2>&1 || die "docker does not answer: run make cluster-up CLUSTER=kind"
fi

"$repo/images/base/build.sh"
import_to_cluster "$base_image"

# The sidecar image carries the launcher binary (images/sidecar/Dockerfile copies it).
log "building images/launcher/kubedbt-launch"
"$repo/images/launcher/build.sh"

shopt -s nullglob
for dockerfile in "$repo"/images/*/Dockerfile; do
  name=$(basename "$(dirname "$dockerfile")")
  log "building kubedbt/$name:dev"
  "$docker" build --network host --build-arg "BASE_IMAGE=$base_image" \
    -f "$dockerfile" -t "kubedbt/$name:dev" "$repo" >&2
  import_to_cluster "kubedbt/$name:dev"
done
# Rebuilt images leave their predecessors untagged in docker; they are never used again.
"$docker" image prune --force >/dev/null
