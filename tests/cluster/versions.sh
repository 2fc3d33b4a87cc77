# Versions and paths of the local cluster, sourced by every script in this folder.
# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this file
# Bumping a version here rebuilds that component on the next `make cluster-up`; the old cache stays.
K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.5.35}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
# go-containerregistry's registry: an empty registry on the node, for tests of pull errors.
REGISTRY_VERSION=${REGISTRY_VERSION:-v0.22.1}
# MinIO, an S3 server for the artifact upload tests (tests/objectstore.py). Not part of the cluster:
# built on first use only. MinIO publishes no module tags, so this is the pseudo-version of a commit.
MINIO_VERSION=${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}

# kind (CLUSTER=kind, tests/cluster/kind.sh). Where no kind node image can be pulled one is built
# (kind-node-image.sh) with kubeadm and these: CoreDNS at the version kubeadm deploys for
# K8S_VERSION, and the local-path provisioner behind kind's default StorageClass.
KIND_VERSION=${KIND_VERSION:-v0.33.0}
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.1}
LOCAL_PATH_VERSION=${LOCAL_PATH_VERSION:-v0.0.30}

# Built binaries live outside the repository, keyed by version, so clean clones reuse them.
KUBEDBT_CACHE=${KUBEDBT_CACHE:-/var/cache/kubedbt}
K8S_BIN=$KUBEDBT_CACHE/bin/kubernetes-$K8S_VERSION
ETCD_BIN=$KUBEDBT_CACHE/bin/etcd-$ETCD_VERSION
HELM_BIN=$KUBEDBT_CACHE/bin/helm-$HELM_VERSION
KWOK_BIN=$KUBEDBT_CACHE/bin/kwok-$KWOK_VERSION
REGISTRY_BIN=$KUBEDBT_CACHE/bin/registry-$REGISTRY_VERSION
MINIO_BIN=$KUBEDBT_CACHE/bin/minio-$MINIO_VERSION
KIND_BIN=$KUBEDBT_CACHE/bin/kind-$KIND_VERSION
KUBEADM_BIN=$KUBEDBT_CACHE/bin/kubeadm-$K8S_VERSION
COREDNS_BIN=$KUBEDBT_CACHE/bin/coredns-$COREDNS_VERSION
LOCAL_PATH_BIN=$KUBEDBT_CACHE/bin/local-path-provisioner-$LOCAL_PATH_VERSION

# Runtime state of the cluster: certificates, etcd data, logs, pids. The admin kubeconfig is at
# $KUBEDBT_STATE/admin.kubeconfig (documented in the README).
KUBEDBT_STATE=${KUBEDBT_STATE:-/var/lib/kubedbt-cluster}
export KUBEDBT_CACHE KUBEDBT_STATE K8S_VERSION ETCD_VERSION HELM_VERSION KWOK_VERSION REGISTRY_VERSION
export MINIO_VERSION KIND_VERSION COREDNS_VERSION LOCAL_PATH_VERSION
