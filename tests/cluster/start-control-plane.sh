#!/usr/bin/env bash
# Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler as host processes.
#
# Each step waits for the previous component to be healthy, so a failure points at one log file.
# Components that are already running are left alone, which makes re-running after a crash safe.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

# etcd reads every ETCD_* environment variable as a flag; versions.sh exports ETCD_VERSION.
unset ETCD_VERSION
# etcd listens on loopback only and without TLS: only the apiserver on this host talks to it.
# The cluster is disposable, so fsync is traded for speed on the VM's disk.
start_daemon etcd "$ETCD_BIN/etcd" \
  --name kubedbt --data-dir "$KUBEDBT_STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster kubedbt=http://127.0.0.1:2380 \
  --listen-metrics-urls http://127.0.0.1:2381 --unsafe-no-fsync
wait_until "etcd health" 60 curl -fsS http://127.0.0.1:2379/health

# The benchmark's audit log (audit-policy.yaml says what it holds).
mkdir -p "$config_dir" "$log_dir"
cp "$cluster_dir/audit-policy.yaml" "$config_dir/audit-policy.yaml"
start_daemon kube-apiserver "$K8S_BIN/kube-apiserver" \
  --audit-policy-file "$config_dir/audit-policy.yaml" \
  --audit-log-path "$log_dir/audit.log" --audit-log-maxsize 200 --audit-log-maxbackup 1 \
  --etcd-servers http://127.0.0.1:2379 \
  --advertise-address "$(node_ip)" --bind-address 0.0.0.0 --secure-port 6443 \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --client-ca-file "$pki_dir/ca.crt" \
  --tls-cert-file "$pki_dir/apiserver.crt" --tls-private-key-file "$pki_dir/apiserver.key" \
  --kubelet-client-certificate "$pki_dir/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki_dir/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP,Hostname \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki_dir/sa.pub" \
  --service-account-signing-key-file "$pki_dir/sa.key" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --allow-privileged=true
# The node name resolves to 127.0.0.1 on this VM, hence InternalIP first above.
wait_until "kube-apiserver /readyz" 120 kc get --raw /readyz

# Logs and exec go from the apiserver to the kubelet, which asks RBAC whether that identity may.
kc create clusterrolebinding kubedbt:apiserver-kubelet-client \
  --clusterrole system:kubelet-api-admin --user kube-apiserver-kubelet-client \
  --dry-run=client -o yaml | kc apply -f - >/dev/null

start_daemon kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$KUBEDBT_STATE/kubeconfig/kube-controller-manager.kubeconfig" \
  --use-service-account-credentials --leader-elect=false \
  --service-account-private-key-file "$pki_dir/sa.key" --root-ca-file "$pki_dir/ca.crt" \
  --cluster-signing-cert-file "$pki_dir/ca.crt" --cluster-signing-key-file "$pki_dir/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --bind-address 127.0.0.1 \
  --kube-api-qps 100 --kube-api-burst 200
start_daemon kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$KUBEDBT_STATE/kubeconfig/kube-scheduler.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1
wait_until "kube-controller-manager /healthz" 60 curl -fksS https://127.0.0.1:10257/healthz
wait_until "kube-scheduler /healthz" 60 curl -fksS https://127.0.0.1:10259/healthz
