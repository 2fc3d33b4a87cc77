#!/usr/bin/env bash
# Make this host a node: kernel settings, pod network, containerd, kubelet and kube-proxy.
#
# Expects the control plane to be up (start-control-plane.sh). containerd keeps its images in its
# default root (/var/lib/containerd) rather than in $KUBEDBT_STATE, so images imported once survive
# down.sh; everything else it is told about lives in $KUBEDBT_STATE.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

mkdir -p "$KUBEDBT_STATE/cni" "$KUBEDBT_STATE/pod-logs"

# Pods are routed through the host, and kube-proxy's rules must see traffic between pods on the
# same bridge (a pod calling a Service whose endpoint sits on this node).
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
# dockerd sets the FORWARD policy to DROP when allowed to manage iptables, which silently cuts pods
# off from Services. images.sh starts dockerd with --iptables=false; this repairs an earlier one.
if iptables -S FORWARD | grep -qx -- '-P FORWARD DROP'; then
  log "iptables FORWARD policy was DROP (dockerd?); setting ACCEPT"
  iptables -P FORWARD ACCEPT
fi

# One bridge for all pods; host-local hands out this node's subnet and keeps its leases in state.
write_config "$CNI_CONFIG" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kubedbt",
  "plugins": [
    {
      "type": "bridge", "bridge": "$CNI_BRIDGE",
      "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$KUBEDBT_STATE/cni",
        "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# SystemdCgroup=false: there is no systemd here; kubelet is told cgroupfs to match.
# restrict_oom_score_adj: root on this VM lacks CAP_SYS_RESOURCE, so the negative OOM scores the
# kubelet asks for (pause containers, Guaranteed pods) cannot be set and runc would fail to start
# every pod sandbox; clamping them at containerd's own score (0) is what rootless setups do too.
write_config "$config_dir/containerd.toml" containerd <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "$CONTAINERD_SOCKET"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$(dirname "$CNI_CONFIG")"
EOF
start_daemon containerd /usr/bin/containerd --config "$config_dir/containerd.toml"
wait_until "containerd" 30 ctr --address "$CONTAINERD_SOCKET" version
"$cluster_dir/pause-image.sh"

# Images cannot be pulled again once deleted, so image garbage collection and disk-pressure
# eviction are pushed out of reach; the test cluster would rather fill the disk than lose them.
write_config "$config_dir/kubelet.yaml" kubelet <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_SOCKET
cgroupDriver: cgroupfs
failSwapOn: false
oomScoreAdj: 0 # the default -999 needs CAP_SYS_RESOURCE, which root lacks here
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki_dir/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
podLogsDir: $KUBEDBT_STATE/pod-logs
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMaximumGCAge: 0s
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
  imagefs.inodesFree: 1%
EOF
start_daemon kubelet "$K8S_BIN/kubelet" \
  --config "$config_dir/kubelet.yaml" \
  --kubeconfig "$KUBEDBT_STATE/kubeconfig/kubelet.kubeconfig" \
  --root-dir "$KUBEDBT_STATE/kubelet" \
  --hostname-override "$NODE_NAME" --node-ip "$(node_ip)"

# maxPerCore 0 leaves the host's conntrack table size alone instead of resizing it; oomScoreAdj
# as for the kubelet.
write_config "$config_dir/kube-proxy.yaml" kube-proxy <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBEDBT_STATE/kubeconfig/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
conntrack: {maxPerCore: 0}
oomScoreAdj: 0
nodePortAddresses: [primary]
EOF
start_daemon kube-proxy "$K8S_BIN/kube-proxy" --config "$config_dir/kube-proxy.yaml"
start_daemon registry "$REGISTRY_BIN/registry" -port "$REGISTRY_PORT"
