# Shared helpers and layout of the local cluster; sourced by the scripts in this folder.
#
# The cluster is a set of host processes started with setsid so they outlive the script that
# started them. Each one is tracked by a pid file under $KUBEDBT_STATE/pids that also records the
# binary, so a stale pid file left by a reboot is never mistaken for a live component.
# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this file
cluster_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/versions.sh
source "$cluster_dir/versions.sh"

# Network layout. The service range must not overlap the node network or the pod range.
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1 # the first service IP: the `kubernetes` Service in `default`
CLUSTER_CIDR=10.244.0.0/16      # what kube-proxy treats as pod traffic
POD_SUBNET=10.244.0.0/24        # this node's share, handed out by host-local IPAM
CNI_BRIDGE=kubedbt0
CNI_CONFIG=/etc/cni/net.d/10-kubedbt.conflist
CONTAINERD_SOCKET=/run/containerd/containerd.sock
# The sandbox image is built locally from pause.c (nothing can be pulled). It keeps the tag the
# kubelet and containerd expect for this Kubernetes minor, so no other component needs telling.
SANDBOX_IMAGE=registry.k8s.io/pause:3.10.1
APISERVER_URL=https://127.0.0.1:6443

NODE_IFACE=${NODE_IFACE:-eth0}
NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}

pki_dir=$KUBEDBT_STATE/pki
config_dir=$KUBEDBT_STATE/config
pid_dir=$KUBEDBT_STATE/pids
log_dir=$KUBEDBT_STATE/logs
# A directory this machine and the node both see at this same path: on the local cluster the node
# is this machine; kind mounts it into its node. Tests put hostPath volumes here.
shared_dir=$KUBEDBT_STATE/shared
admin_kubeconfig=$KUBEDBT_STATE/admin.kubeconfig

# The host daemons in start order; down.sh stops them in reverse.
components=(
  etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy registry
)
# An empty image registry on the node (plain HTTP: containerd's CRI trusts localhost without TLS).
# Pulling any image from it fails the way a tag that does not exist fails; tests of pull errors
# use it.
REGISTRY_PORT=5901

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

node_ip() {
  local ip
  ip=$(ip -4 -o addr show dev "$NODE_IFACE" | awk '{ split($4, a, "/"); print a[1]; exit }')
  [[ -n $ip ]] || die "no IPv4 address on $NODE_IFACE (set NODE_IFACE)"
  echo "$ip"
}

# The cached kubectl, never the one on PATH (this machine has an unrelated older one there).
kc() { "$K8S_BIN/kubectl" --kubeconfig "$admin_kubeconfig" "$@"; }

# wait_until DESCRIPTION SECONDS COMMAND...: retry COMMAND once a second until it succeeds.
wait_until() {
  local what=$1 timeout=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 1
  done
}

# daemon_running NAME: the pid file names a live process running the binary it was started from.
daemon_running() {
  local pid bin
  [[ -s $pid_dir/$1.pid ]] || return 1
  read -r pid bin <"$pid_dir/$1.pid"
  [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$bin" ]]
}

daemon_pid() {
  local pid _
  read -r pid _ <"$pid_dir/$1.pid"
  echo "$pid"
}

# start_daemon NAME BINARY ARGS...: start unless already running; output goes to logs/NAME.log.
start_daemon() {
  local name=$1 bin
  bin=$(readlink -f "$2")
  shift 2
  if daemon_running "$name"; then
    log "$name already running (pid $(daemon_pid "$name"))"
    return
  fi
  mkdir -p "$pid_dir" "$log_dir"
  # setsid gives the daemon its own session, so it survives this script and the caller's shell.
  # It execs in place (this background child is not a process group leader), so $! is the daemon.
  setsid "$bin" "$@" >>"$log_dir/$name.log" 2>&1 </dev/null &
  echo "$! $bin" >"$pid_dir/$name.pid"
  sleep 0.2
  daemon_running "$name" || die "$name exited at once; see $log_dir/$name.log:
$(tail -n 20 "$log_dir/$name.log")"
  log "started $name (pid $!), log in $log_dir/$name.log"
}

# stop_daemon NAME: SIGTERM, up to 30s for the process to exit, then SIGKILL.
stop_daemon() {
  local name=$1 pid
  if daemon_running "$name"; then
    pid=$(daemon_pid "$name")
    kill -TERM "$pid" 2>/dev/null || true
    # daemon_running rather than kill -0: an exited daemon stays a zombie until init reaps it.
    for _ in {1..150}; do
      daemon_running "$name" || break
      sleep 0.2
    done
    if daemon_running "$name"; then
      kill -KILL "$pid" 2>/dev/null || true
      log "$name (pid $pid) ignored SIGTERM for 30s; killed"
    fi
    log "stopped $name"
  fi
  rm -f "$pid_dir/$name.pid"
}

# write_config PATH [COMPONENT] < CONTENT: replace PATH only when the content differs, and then stop
# COMPONENT if it runs so that the caller's start_daemon restarts it with the new file. Rewriting
# an unchanged file is not harmless: kube-proxy exits when its configuration file is touched.
write_config() {
  local path=$1 component=${2:-} tmp
  mkdir -p "$(dirname "$path")"
  tmp=$(mktemp "$path.XXXXXX")
  cat >"$tmp"
  if cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    return
  fi
  mv "$tmp" "$path"
  if [[ -n $component ]] && daemon_running "$component"; then
    log "$path changed; restarting $component"
    stop_daemon "$component"
  fi
}

# Whether the cluster answers and its node is Ready; quiet, for scripts to branch on.
cluster_healthy() {
  local c
  for c in "${components[@]}"; do
    daemon_running "$c" || return 1
  done
  [[ $(kc get --raw /readyz 2>/dev/null) == ok ]] || return 1
  [[ $(kc get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

ctr_k8s() { ctr --address "$CONTAINERD_SOCKET" --namespace k8s.io "$@"; }
