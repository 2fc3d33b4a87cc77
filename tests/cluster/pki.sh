#!/usr/bin/env bash
# Create the cluster's certificates and kubeconfigs with openssl, once.
#
# One CA signs everything: the apiserver serving certificate and a client certificate per identity.
# Kubernetes takes the user from the CN and the groups from O, which is what RBAC and the Node
# authorizer match on. Existing files are kept, so re-running costs nothing; down.sh removes them.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

client_ext='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'

# issue NAME CN ORG EXTENSIONS: a key and a CA-signed certificate in $pki_dir/NAME.{key,crt}.
issue() {
  local name=$1 cn=$2 org=$3 ext=$4
  [[ -s $pki_dir/$name.crt ]] && return
  openssl genrsa -out "$pki_dir/$name.key" 2048 2>/dev/null
  openssl req -new -key "$pki_dir/$name.key" -subj "/CN=$cn${org:+/O=$org}" |
    openssl x509 -req -days 365 -set_serial "0x$(openssl rand -hex 16)" \
      -CA "$pki_dir/ca.crt" -CAkey "$pki_dir/ca.key" \
      -extfile <(printf '%s\n' "$ext") -out "$pki_dir/$name.crt" 2>/dev/null
}

# kubeconfig FILE CERT_NAME: credentials embedded, so the file can be copied anywhere.
kubeconfig() {
  local file=$1 name=$2
  [[ -s $file ]] && return
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubedbt
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 "$pki_dir/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$pki_dir/$name.crt")
    client-key-data: $(base64 -w0 "$pki_dir/$name.key")
contexts:
- name: kubedbt
  context: {cluster: kubedbt, user: $name}
current-context: kubedbt
EOF
  chmod 600 "$file"
}

mkdir -p "$pki_dir" "$KUBEDBT_STATE/kubeconfig"
chmod 700 "$pki_dir"

if [[ ! -s $pki_dir/ca.crt ]]; then
  openssl genrsa -out "$pki_dir/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$pki_dir/ca.key" -days 3650 -subj "/CN=kubedbt-ca" \
    -addext 'basicConstraints=critical,CA:TRUE' \
    -addext 'keyUsage=critical,digitalSignature,keyCertSign,cRLSign' -out "$pki_dir/ca.crt"
fi

# Pods reach the apiserver as kubernetes.default.svc / 10.96.0.1, host processes as 127.0.0.1,
# and anything else on the network through the node IP: all must be in the serving certificate.
issue apiserver kube-apiserver "" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,\
DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$NODE_NAME,\
IP:127.0.0.1,IP:$KUBERNETES_SERVICE_IP,IP:$(node_ip)"

issue admin kubedbt-admin system:masters "$client_ext"
issue kube-controller-manager system:kube-controller-manager "" "$client_ext"
issue kube-scheduler system:kube-scheduler "" "$client_ext"
issue kube-proxy system:kube-proxy "" "$client_ext"
issue kubelet "system:node:$NODE_NAME" system:nodes "$client_ext"
# The apiserver's identity towards kubelets (logs, exec); up.sh grants it system:kubelet-api-admin.
issue apiserver-kubelet-client kube-apiserver-kubelet-client "" "$client_ext"

# Service-account tokens are signed by the apiserver and checked with the public half.
if [[ ! -s $pki_dir/sa.key ]]; then
  openssl genrsa -out "$pki_dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki_dir/sa.key" -pubout -out "$pki_dir/sa.pub" 2>/dev/null
fi

kubeconfig "$admin_kubeconfig" admin
for name in kube-controller-manager kube-scheduler kube-proxy kubelet; do
  kubeconfig "$KUBEDBT_STATE/kubeconfig/$name.kubeconfig" "$name"
done
log "certificates in $pki_dir"
