#!/usr/bin/env bash
# The kind variant of up/down/status (CLUSTER=kind): `kind.sh up|down|status`.
#
# Images come from the host's docker, built by images.sh, and are copied into the node with
# `kind load` because the node cannot pull kubedbt/* images from any registry.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

cluster=kubedbt
node_image=${KIND_NODE_IMAGE:-kindest/node:$K8S_VERSION}
kubectl=${KUBECTL:-kubectl}

case ${1:-} in
  up)
    mkdir -p "$KUBEDBT_STATE"
    if ! kind get clusters | grep -qx "$cluster"; then
      kind create cluster --name "$cluster" --config "$cluster_dir/kind.yaml" \
        --image "$node_image" --kubeconfig "$admin_kubeconfig" --wait 180s >&2
    fi
    kind export kubeconfig --name "$cluster" --kubeconfig "$admin_kubeconfig" >&2
    images=$(docker images --format '{{.Repository}}:{{.Tag}}' --filter 'reference=kubedbt/*')
    for image in $images; do
      kind load docker-image --name "$cluster" "$image" >&2
    done
    echo "$admin_kubeconfig"
    ;;
  down)
    kind delete cluster --name "$cluster"
    rm -f "$admin_kubeconfig"
    ;;
  status)
    kind get clusters | grep -qx "$cluster" || die "kind cluster $cluster does not exist"
    "$kubectl" --kubeconfig "$admin_kubeconfig" get nodes -o wide
    "$kubectl" --kubeconfig "$admin_kubeconfig" wait --for=condition=Ready node --all --timeout=10s
    ;;
  *)
    die "usage: $0 up|down|status"
    ;;
esac
