#!/usr/bin/env bash
# Bring up the local Kubernetes cluster and print the path of its admin kubeconfig on stdout.
#
#   KUBECONFIG=$(tests/cluster/up.sh)
#
# Default: a single-node cluster of host processes (etcd, control plane, containerd, kubelet,
# kube-proxy) built from source, state in $KUBEDBT_STATE. Idempotent: a healthy cluster returns at
# once, a partly running one has only its missing pieces started.
# CLUSTER=kind: a kind cluster (kind.sh) instead, for machines that have docker and kind.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

if [[ ${CLUSTER:-local} == kind ]]; then
  exec "$cluster_dir/kind.sh" up
fi

print_hints() {
  mkdir -p "$KUBEDBT_STATE/bin"
  ln -sfn "$K8S_BIN/kubectl" "$KUBEDBT_STATE/bin/kubectl"
  ln -sfn "$HELM_BIN/helm" "$KUBEDBT_STATE/bin/helm"
  ln -sfn "$KWOK_BIN/kwok" "$KUBEDBT_STATE/bin/kwok"
  log "cluster ready. To use it from a shell:"
  log "  export PATH=$KUBEDBT_STATE/bin:\$PATH KUBECONFIG=$admin_kubeconfig"
  echo "$admin_kubeconfig"
}

if [[ -s $admin_kubeconfig ]] && cluster_healthy; then
  print_hints
  exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root (it starts containerd, kubelet and edits iptables)"
# stdout is reserved for the kubeconfig path, so the steps' chatter goes to stderr.
{
  "$cluster_dir/install-packages.sh"
  "$cluster_dir/build-binaries.sh"
  "$cluster_dir/pki.sh"
  "$cluster_dir/start-control-plane.sh"
  "$cluster_dir/start-node.sh"
} >&2

node_ready() {
  [[ $(kc get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
wait_until "node $NODE_NAME Ready" 180 node_ready
wait_until "kube-proxy rules for the kubernetes Service" 60 \
  bash -c "iptables -t nat -S KUBE-SERVICES | grep -q $KUBERNETES_SERVICE_IP/32"
# Pods are refused until their namespace's default ServiceAccount exists.
wait_until "ServiceAccount default/default" 60 kc -n default get serviceaccount default
print_hints
