#!/usr/bin/env bash
# The kind variant of up/down/status (CLUSTER=kind): `kind.sh up|down|status|load IMAGE...`.
#
# up: a one-node kind cluster named kubedbt, laid out like the local cluster for everything that uses
# it: the admin kubeconfig at $admin_kubeconfig, kubectl, helm, kwok and kind under $KUBEDBT_STATE/bin,
# and an empty image registry on the node at localhost:$REGISTRY_PORT (the pull-error tests). It
# needs only docker; it starts dockerd when none answers, and then stops it again on `down`.
#
# The node image is found, not configured: $KIND_NODE_IMAGE if set; else kindest/node:$K8S_VERSION
# when docker has it or can pull it; else, where no registry answers, one built from this project's
# cached binaries (kind-node-image.sh, about 10 min cold, seconds from its cache). That image has no
# kindnet (see there): kind.sh reads its labels and disables kind's CNI and points kubeadm at its etcd.
#
# Restricted hosts, the one workaround: kind runs its nodes (and the node image build) with
# `docker run --privileged`, and `docker exec --privileged` into them. On hosts whose capability
# bounding set lacks a capability --privileged asks for (seen: CAP_SYS_RESOURCE on some VMs) that
# fails with "unable to apply caps". kind.sh tries one `docker run --privileged` first; only when it
# fails does kind run with kind/docker first on its PATH, which grants every capability the host has
# instead (see that file). The real docker, its daemon and its other users are left as they are.
#
# down: deletes the cluster, the `kind` network when no other container uses it, and the images
# this project put in docker for it (the node image stays in $KUBEDBT_CACHE/images, as binaries do).
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

cluster=kubedbt
node=$cluster-control-plane
kind_state=$KUBEDBT_STATE/kind
# The distribution's docker client (images.sh says why), and kind with it.
docker=${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}
export DOCKER=$docker
export PATH=$KIND_BIN:$PATH

# After detect_restricted: kind's own `docker` calls go through kind/docker when the host needs it.
# kind.sh and the scripts it runs call the real docker by its path ($docker), never through PATH.
use_restricted_docker() {
  if [[ -s $kind_state/drop-caps ]]; then
    KUBEDBT_DROP_CAPS=$(<"$kind_state/drop-caps")
    export PATH=$cluster_dir/kind:$PATH KUBEDBT_REAL_DOCKER=$docker KUBEDBT_DROP_CAPS
  fi
}

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$cluster"; }

ensure_dockerd() {
  "$docker" info >/dev/null 2>&1 && return
  [[ $(id -u) == 0 ]] || die "docker does not answer, and starting dockerd needs root"
  "$cluster_dir/install-packages.sh"
  # Its own containerd (none of the local cluster's), and no iptables rules: dockerd would set
  # FORWARD to DROP, which outlives it and would cut a later local cluster's pods off. kind's
  # network needs none here: nodes reach this host directly, and published ports use docker-proxy.
  start_daemon dockerd /usr/sbin/dockerd --iptables=false --ip-masq=false
  wait_until dockerd 60 "$docker" info
}

# The capabilities --privileged asks for that this host cannot grant, as docker names them.
missing_caps() {
  local names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE
    SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
    SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
    WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)
  local bounding i
  bounding=$((16#$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)))
  for i in "${!names[@]}"; do
    ((bounding >> i & 1)) || printf '%s ' "${names[$i]}"
  done
}

# Decide once per cluster whether kind needs kind/docker (see the header), with IMAGE as the test.
detect_restricted() {
  local image=$1 error
  mkdir -p "$kind_state"
  if error=$("$docker" run --rm --privileged --entrypoint true "$image" 2>&1); then
    : >"$kind_state/drop-caps"
    return
  fi
  grep -q "apply caps" <<<"$error" || die "docker run --privileged failed: $error"
  missing_caps >"$kind_state/drop-caps"
  log "docker run --privileged fails here (the host cannot grant: $(<"$kind_state/drop-caps"));" \
    "kind runs through tests/cluster/kind/docker"
}

node_image() {
  if [[ -n ${KIND_NODE_IMAGE:-} ]]; then
    echo "$KIND_NODE_IMAGE"
    return
  fi
  local upstream=kindest/node:$K8S_VERSION
  if "$docker" image inspect "$upstream" >/dev/null 2>&1 ||
    timeout 300 "$docker" pull "$upstream" >&2; then
    echo "$upstream"
    return
  fi
  log "no registry answered for $upstream: building a node image from the cached binaries"
  # The build runs kind too, so it needs the restricted-host check first, on the base image.
  "$cluster_dir/../../images/base/build.sh" >&2
  detect_restricted kubedbt/base:bookworm
  use_restricted_docker
  "$cluster_dir/kind-node-image.sh"
}

# kind's configuration. One node is enough: the tests exercise Jobs, logs, RBAC and Services, not
# scheduling. Laid out like the local cluster where tests look: the benchmark's audit log at
# $log_dir/audit.log, and $shared_dir at the same path on the node. A node image built here says in
# its labels what more it needs (no kindnet; its etcd's tag).
kind_config() {
  local image=$1 etcd_tag cni
  etcd_tag=$("$docker" image inspect -f '{{index .Config.Labels "kubedbt.kind.etcd-tag"}}' "$image")
  cni=$("$docker" image inspect -f '{{index .Config.Labels "kubedbt.kind.cni"}}' "$image")
  cat <<CONFIG
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: $cluster
nodes:
  - role: control-plane
    extraMounts:
      - {hostPath: "$config_dir", containerPath: "$config_dir", readOnly: true}
      - {hostPath: "$log_dir", containerPath: "$log_dir"}
      - {hostPath: "$shared_dir", containerPath: "$shared_dir"}
kubeadmConfigPatches:
  - |
    kind: ClusterConfiguration
    apiServer:
      extraArgs:
        audit-policy-file: "$config_dir/audit-policy.yaml"
        audit-log-path: "$log_dir/audit.log"
        audit-log-maxsize: "200"
        audit-log-maxbackup: "1"
      extraVolumes:
        - {name: kubedbt-config, hostPath: "$config_dir", mountPath: "$config_dir", readOnly: true}
        - {name: kubedbt-logs, hostPath: "$log_dir", mountPath: "$log_dir"}
CONFIG
  if [[ -n $etcd_tag ]]; then
    printf '    etcd:\n      local:\n        imageTag: "%s"\n' "$etcd_tag"
  fi
  if [[ $cni == ptp ]]; then
    printf 'networking:\n  disableDefaultCNI: true\n'
  fi
}

start_registry() {
  "$docker" exec "$node" test -x /usr/local/bin/kubedbt-registry ||
    "$docker" cp "$REGISTRY_BIN/registry" "$node:/usr/local/bin/kubedbt-registry"
  "$docker" exec "$node" pgrep -f kubedbt-registry >/dev/null ||
    "$docker" exec -d "$node" /usr/local/bin/kubedbt-registry -port "$REGISTRY_PORT"
}

case ${1:-} in
  up)
    daemon_running kube-apiserver && die "the local cluster is up: make cluster-down first"
    mkdir -p "$kind_state" "$KUBEDBT_STATE/bin" "$config_dir" "$log_dir" "$shared_dir"
    cp "$cluster_dir/audit-policy.yaml" "$config_dir/audit-policy.yaml"
    ensure_dockerd >&2
    "$cluster_dir/build-binaries.sh" cluster kind >&2
    if ! cluster_exists; then
      image=$(node_image)
      [[ -f $kind_state/drop-caps ]] || detect_restricted "$image"
      use_restricted_docker
      kind_config "$image" >"$kind_state/kind.yaml"
      log "kind create cluster --image $image"
      kind create cluster --name "$cluster" --config "$kind_state/kind.yaml" --image "$image" \
        --kubeconfig "$admin_kubeconfig" --wait 180s >&2
    fi
    use_restricted_docker
    kind export kubeconfig --name "$cluster" --kubeconfig "$admin_kubeconfig" >&2
    start_registry
    ln -sfn "$K8S_BIN/kubectl" "$KUBEDBT_STATE/bin/kubectl"
    ln -sfn "$HELM_BIN/helm" "$KUBEDBT_STATE/bin/helm"
    ln -sfn "$KWOK_BIN/kwok" "$KUBEDBT_STATE/bin/kwok"
    ln -sfn "$KIND_BIN/kind" "$KUBEDBT_STATE/bin/kind"
    wait_until "ServiceAccount default/default" 60 kc -n default get serviceaccount default
    log "kind cluster ready. To use it from a shell:"
    log "  export PATH=$KUBEDBT_STATE/bin:\$PATH KUBECONFIG=$admin_kubeconfig"
    echo "$admin_kubeconfig"
    ;;
  load)
    shift
    use_restricted_docker
    for image in "$@"; do
      kind load docker-image --name "$cluster" "$image" >&2
    done
    ;;
  down)
    if "$docker" info >/dev/null 2>&1; then
      use_restricted_docker
      ! cluster_exists || kind delete cluster --name "$cluster"
      if [[ -z $("$docker" network inspect kind -f '{{range .Containers}}x{{end}}' 2>/dev/null) ]]; then
        "$docker" network rm kind >/dev/null 2>&1 || true
      fi
      # The project's images: its own and the node image built here (kept in the cache).
      images=$("$docker" images --format '{{.Repository}}:{{.Tag}}' |
        grep -E '^kubedbt/' || true)
      [[ -z $images ]] || "$docker" rmi $images >/dev/null
    fi
    if daemon_running dockerd; then # ours: started by up, so it goes, with its default bridge
      stop_daemon dockerd
      ip link delete docker0 2>/dev/null || true
    fi
    [[ $KUBEDBT_STATE == /*/* ]] || die "refusing to remove KUBEDBT_STATE=$KUBEDBT_STATE"
    rm -rf "$KUBEDBT_STATE"
    log "kind cluster removed (binaries and the node image in $KUBEDBT_CACHE kept)"
    ;;
  status)
    cluster_exists || die "kind cluster $cluster does not exist"
    kc get nodes -o wide
    kc wait --for=condition=Ready node --all --timeout=10s
    ;;
  *)
    die "usage: $0 up|down|status|load IMAGE..."
    ;;
esac
