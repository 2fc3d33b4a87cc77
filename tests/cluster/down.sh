#!/usr/bin/env bash
# Stop the local cluster and remove what it left on the host, so that up.sh starts from scratch.
#
# Kept: the binary cache ($KUBEDBT_CACHE) and images (containerd's and dockerd's stores), which are
# slow to rebuild. Removed: every process started by up.sh or images.sh, pod containers and their
# mounts, network namespaces, iptables rules, the CNI bridge and $KUBEDBT_STATE.
# CLUSTER=kind: delete the kind cluster instead.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

# The Airflow deployment first (tests/airflow): its state lives in $KUBEDBT_STATE, and its namespace
# goes while the cluster still answers. Silent when there is none.
"$cluster_dir/../airflow/airflow.sh" down

if [[ ${CLUSTER:-local} == kind ]]; then
  exec "$cluster_dir/kind.sh" down
fi

# The kubelet goes first so that it does not restart the containers removed below; dockerd
# (images.sh) runs on the cluster's containerd, so it goes before that.
stop_daemon kubelet
stop_daemon kube-proxy
stop_daemon registry
stop_daemon dockerd

# Pod containers. Without the kubelet there is no CRI client to tear sandboxes down, so the tasks
# are killed and the containers deleted directly; the network and mounts are cleaned after.
if daemon_running containerd; then
  for task in $(ctr_k8s tasks ls -q); do
    # --force kills the task and waits for it before deleting.
    ctr_k8s tasks delete --force "$task" >/dev/null 2>&1 || log "could not delete task $task"
  done
  for container in $(ctr_k8s containers ls -q); do
    ctr_k8s containers delete "$container" >/dev/null 2>&1 ||
      log "could not delete container $container"
  done
fi
for c in kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do
  stop_daemon "$c"
done

# Mounts, innermost first: volumes under the kubelet's root, sandbox /dev/shm and network
# namespaces made by containerd's CRI plugin.
mountpoints=$(awk '{ print $5 }' /proc/self/mountinfo |
  grep -E "^($KUBEDBT_STATE/|/run/containerd/io.containerd.grpc.v1.cri/|/run/netns/cni-)" |
  sort -r || true)
for m in $mountpoints; do
  umount "$m" 2>/dev/null || umount -l "$m" || true
done
rm -f /run/netns/cni-*

# iptables: the kubelet and kube-proxy name their chains KUBE-*, the CNI plugins (masquerade per
# pod, host ports) CNI-*, and this cluster is their only user on the host. Restoring a saved table
# without those lines removes exactly their rules and chains.
for family in iptables ip6tables; do
  for table in filter nat mangle; do
    if "$family-save" -t "$table" | grep -qE -- '(KUBE|CNI)-'; then
      "$family-save" -t "$table" | grep -vE -- '(KUBE|CNI)-' | "$family-restore"
    fi
  done
done
ip link delete "$CNI_BRIDGE" 2>/dev/null || true
rm -f "$CNI_CONFIG"

# The pods' cgroups (cgroup v1: one tree per controller), deepest first; rmdir removes only empty
# ones, and all are empty once the tasks are gone.
find /sys/fs/cgroup/*/kubepods* -depth -type d -exec rmdir {} + 2>/dev/null || true
# The kubelet's links to container logs, which pointed into the state removed below.
find /var/log/containers -maxdepth 1 -lname "$KUBEDBT_STATE/*" -delete 2>/dev/null || true

[[ $KUBEDBT_STATE == /*/* ]] || die "refusing to remove KUBEDBT_STATE=$KUBEDBT_STATE"
rm -rf "$KUBEDBT_STATE"
log "cluster removed (binaries in $KUBEDBT_CACHE and images kept)"
