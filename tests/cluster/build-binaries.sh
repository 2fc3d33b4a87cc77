#!/usr/bin/env bash
# Build the local cluster's binaries from the Go module proxy, once per version.
#
# No release binaries can be downloaded here, so Kubernetes, etcd, helm and kwok are compiled from
# their modules. k8s.io/kubernetes replaces its staging modules with local paths, which makes a
# plain `go install` impossible: a throwaway wrapper module requires it and points every staging
# module at its published v0.Y.Z release instead. Results are cached outside the repository under
# $KUBEDBT_CACHE/bin/<component>-<version>/ so a second run costs nothing.
#
#   build-binaries.sh [cluster|kind|kind-node|minio]...
#
# With no argument it builds `cluster`, what up.sh needs; `kind` is kind itself, `kind-node` what a
# kind node image built here needs besides (kubeadm, CoreDNS, the local-path provisioner). `minio`
# is the S3 server of the artifact upload tests: it is no part of the cluster, so only
# tests/objectstore.py asks for it, on first use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/versions.sh
source "$here/versions.sh"

log() { printf '[build-binaries] %s\n' "$*" >&2; }

export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
export GOCACHE=${GOCACHE:-$KUBEDBT_CACHE/go-build}

# k8s_build OUT PACKAGE...: build Kubernetes commands of $K8S_VERSION into OUT (see the header).
k8s_build() {
  local out=$1 work minor staging_version gomod
  shift
  work=$(mktemp -d)
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  staging_version=v0.${K8S_VERSION#v1.}
  log "building kubernetes $K8S_VERSION (staging $staging_version): ${*##*/}"
  (
    cd "$work"
    go mod init kubedbt.local/k8s-wrapper >/dev/null 2>&1
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo "replace ("
      # Generated from kubernetes' own go.mod so the list can never fall behind a version bump.
      sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$gomod"
      echo ")"
    } >>go.mod
    printf 'package main\nimport _ "k8s.io/kubernetes/cmd/kubelet/app"\nfunc main() {}\n' >tools.go
    go mod tidy >/dev/null
    local date ld pkg
    date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    ld="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    mkdir -p "$out.tmp"
    go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$out.tmp/" "$@"
  )
  rm -rf "$work"
}

build_kubernetes() {
  local out=$K8S_BIN
  if [[ -x $out/kubelet && -x $out/kubectl && -x $out/kube-apiserver ]]; then
    log "kubernetes $K8S_VERSION cached in $out"
    return
  fi
  k8s_build "$out" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kubectl
  # The pause container's source ships in the module; keep it beside the binaries.
  cp "$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c" "$out.tmp/"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_etcd() {
  if [[ -x $ETCD_BIN/etcd ]]; then
    log "etcd $ETCD_VERSION cached"
    return
  fi
  local work
  work=$(mktemp -d)
  log "building etcd $ETCD_VERSION"
  (
    cd "$work"
    go mod init kubedbt.local/etcd-wrapper >/dev/null 2>&1
    printf 'package main\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\nfunc main() {}\n' >tools.go
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
    go mod tidy >/dev/null
    mkdir -p "$ETCD_BIN.tmp"
    go build -trimpath -ldflags "-s -w" -o "$ETCD_BIN.tmp/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$ETCD_BIN" && mv "$ETCD_BIN.tmp" "$ETCD_BIN"
  rm -rf "$work"
}

go_install() { # name module@version dir
  local name=$1 target=$2 dir=$3
  if [[ -x $dir/$name ]]; then
    log "$name cached"
    return
  fi
  log "installing $target"
  mkdir -p "$dir"
  GOBIN=$dir go install -trimpath -ldflags "${4:-}" "$target"
}

build_cluster() {
  build_kubernetes
  build_etcd
  go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$HELM_BIN" \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "$KWOK_BIN" "-s -w"
  go_install registry "github.com/google/go-containerregistry/cmd/registry@$REGISTRY_VERSION" \
    "$REGISTRY_BIN" "-s -w"
}

build_kind() {
  go_install kind "sigs.k8s.io/kind@$KIND_VERSION" "$KIND_BIN" "-s -w"
}

# What a kind node image built here needs beyond build_cluster (kind-node-image.sh).
build_kind_node() {
  build_kind
  if [[ ! -x $KUBEADM_BIN/kubeadm ]]; then
    k8s_build "$KUBEADM_BIN" k8s.io/kubernetes/cmd/kubeadm
    rm -rf "$KUBEADM_BIN" && mv "$KUBEADM_BIN.tmp" "$KUBEADM_BIN"
  fi
  go_install coredns "github.com/coredns/coredns@$COREDNS_VERSION" "$COREDNS_BIN" "-s -w"
  go_install local-path-provisioner \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION" "$LOCAL_PATH_BIN" "-s -w"
}

build_minio() {
  go_install minio "github.com/minio/minio@$MINIO_VERSION" "$MINIO_BIN" "-s -w"
}

targets=("$@")
((${#targets[@]})) || targets=(cluster)
for target in "${targets[@]}"; do
  case $target in
    cluster | kind | kind-node | minio) ;;
    *)
      log "unknown target '$target' (known: cluster, kind, kind-node, minio)"
      exit 2
      ;;
  esac
done

mkdir -p "$KUBEDBT_CACHE/bin"
# Two callers at once (say up.sh beside a background build) would compile everything twice and
# race on the same output directories; the second one waits here and then finds the cache.
exec 9>"$KUBEDBT_CACHE/build.lock"
flock 9
for target in "${targets[@]}"; do
  "build_${target//-/_}"
done
log "binaries ready under $KUBEDBT_CACHE/bin"
