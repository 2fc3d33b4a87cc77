#!/usr/bin/env bash
# Build a kind node image of $K8S_VERSION from this project's cached binaries, for machines where no
# kind node image can be pulled (kind.sh decides, and runs this with its PATH). Prints the image.
#
#   image=$(tests/cluster/kind-node-image.sh)
#
# `kind build node-image --type file TARBALL` takes a release-style tarball: kubernetes/version,
# kubernetes/server/bin/{kubeadm,kubelet,kubectl} and the image archives kube-apiserver.tar,
# kube-controller-manager.tar, kube-scheduler.tar and kube-proxy.tar. It then puts into the node
# every image kubeadm lists (etcd, CoreDNS, pause) and kind's add-ons (kindnetd, the local-path
# provisioner and its helper), pulling any that is not in those archives; so all of them are built
# here and saved into kube-apiserver.tar, its `repositories` entry first (kind reads the tags of
# the first metadata entry it meets). What differs from kindest/node, and why:
# - the base is kind's images/base files on kubedbt/base with Debian's systemd, containerd 1.6,
#   runc and CNI plugins (kind/base.Dockerfile), and a `ctr` that answers kind's `ctr info`;
# - etcd is the cluster's etcd 3.5 ($ETCD_VERSION), tagged also as the 3.6 kubeadm lists: kind.sh
#   tells kubeadm its real tag, so kubeadm gives it the flags 3.5 accepts;
# - kindnetd is a nested Go module the module proxy refuses, so the node has no kindnet: a ptp CNI
#   config is baked in (kind/ptp.conflist) and kind.sh disables kind's default CNI. Its tag points
#   at the pause image only to satisfy the build; nothing runs it.
# The image is labelled with what kind.sh must set (kubedbt.kind.etcd-tag, kubedbt.kind.cni) and
# saved under $KUBEDBT_CACHE/images, keyed by its inputs, so a fresh docker loads it in seconds.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

kind_dir=$cluster_dir/kind
docker=${DOCKER:-docker}
etcd_tag=${ETCD_VERSION#v}-0

# The key covers every input, so a version bump or an edit here builds a new image.
key=$(
  cat "$0" "$kind_dir"/{base.Dockerfile,component.Dockerfile,ptp.conflist,ctr} | sha256sum | cut -c1-12
)
key=$(printf '%s %s %s %s %s %s' "$key" "$K8S_VERSION" "$ETCD_VERSION" "$KIND_VERSION" \
  "$COREDNS_VERSION" "$LOCAL_PATH_VERSION" | sha256sum | cut -c1-12)
image=kubedbt/kind-node:$K8S_VERSION-$key
archive=$KUBEDBT_CACHE/images/kind-node-$K8S_VERSION-$key.tar

if "$docker" image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi
if [[ -s $archive ]]; then
  log "loading $image from $archive"
  "$docker" load -i "$archive" >&2
  echo "$image"
  exit 0
fi

{
  "$cluster_dir/build-binaries.sh" cluster kind-node
  "$cluster_dir/../../images/base/build.sh"
} >&2

work=$(mktemp -d)
built=()
cleanup() {
  rm -rf "$work"
  # The intermediate images live on in the node image's archive; docker needs none of them.
  ((${#built[@]} == 0)) || "$docker" rmi "${built[@]}" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- the base: kind's files from the kind module, built on kubedbt/base ---
kind_module=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" |
  sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[[ -d $kind_module/images/base/files ]] || die "kind $KIND_VERSION has no images/base/files"
mkdir -p "$work/base"
cp -r "$kind_module/images/base/files" "$work/base/files"
chmod -R u+w "$work/base/files" # the module cache is read-only
install -D -m 0755 "$kind_dir/ctr" "$work/base/files/usr/local/bin/ctr"
install -D -m 0644 "$kind_dir/ptp.conflist" "$work/base/files/etc/cni/net.d/10-kubedbt-ptp.conflist"
base=kubedbt/kind-base:$key
log "building $base (Debian's systemd, containerd, runc, CNI plugins; a few minutes cold)"
"$docker" build -q --force-rm --network host -t "$base" -f "$kind_dir/base.Dockerfile" "$work/base" >&2
built+=("$base")

# --- one image per binary, all on the base ---
component() { # TAG DIR BINARY: the base plus DIR/BINARY on PATH, tagged TAG
  local tag=$1 dir=$2 binary=$3 context=$work/component-$3
  mkdir -p "$context"
  cp "$dir/$binary" "$context/$binary"
  "$docker" build -q --force-rm -t "$tag" -f "$kind_dir/component.Dockerfile" \
    --build-arg "BASE=$base" --build-arg "BINARY=$binary" "$context" >/dev/null
  built+=("$tag")
}
for binary in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
  component "registry.k8s.io/$binary:$K8S_VERSION" "$K8S_BIN" "$binary"
done
component "registry.k8s.io/etcd:$etcd_tag" "$ETCD_BIN" etcd
# kubeadm's CoreDNS Deployment gives only args: the image's entrypoint is coredns itself.
component coredns-binary "$COREDNS_BIN" coredns
printf 'FROM coredns-binary\nENTRYPOINT ["/usr/local/bin/coredns"]\n' |
  "$docker" build -q --force-rm -t "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" - >/dev/null
built+=("registry.k8s.io/coredns/coredns:$COREDNS_VERSION")
component local-path-provisioner "$LOCAL_PATH_BIN" local-path-provisioner

# The tags kind's build asks for, read from kind itself and from kubeadm, so none is guessed.
kubeadm_images=$("$KUBEADM_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
kind_tag() { # the image kind's source names in CONSTANT
  grep -ho "$1 = \"[^\"]*\"" "$kind_module"/pkg/build/nodeimage/const_*.go | cut -d'"' -f2
}
kubeadm_etcd=$(grep /etcd: <<<"$kubeadm_images")
kubeadm_pause=$(grep /pause: <<<"$kubeadm_images")
sandbox=$(sed -n 's/.*sandbox_image = "\(.*\)"/\1/p' \
  "$kind_module/images/base/files/etc/containerd/config.toml")
kindnetd=$(kind_tag kindnetdImage)
provisioner=$(kind_tag storageProvisionerImage)
helper=$(kind_tag storageHelperImage)
tag_as() { # SOURCE TARGET...
  local source=$1 target
  shift
  for target in "$@"; do
    "$docker" tag "$source" "$target"
    built+=("$target")
  done
}
# kubeadm's etcd tag (3.6) on the 3.5 image; kind.sh has kubeadm use the real tag.
tag_as "registry.k8s.io/etcd:$etcd_tag" "$kubeadm_etcd"
tag_as local-path-provisioner "$provisioner"
# The helper runs sh scripts to make and remove volume directories: kubedbt/base has sh.
tag_as kubedbt/base:bookworm "$helper"

# pause: the same static build as the local cluster's (pause-image.sh), as a docker image.
pause_tags=("$SANDBOX_IMAGE" "$sandbox" "$kubeadm_pause" "$kindnetd")
"$cluster_dir/pause-image.sh" --archive "$work/pause.tar" "${pause_tags[@]}"
"$docker" load -i "$work/pause.tar" >&2
built+=("${pause_tags[@]}")

# --- the release-style tarball ---
bin=$work/release/kubernetes/server/bin
mkdir -p "$bin"
echo "$K8S_VERSION" >"$work/release/kubernetes/version"
cp "$KUBEADM_BIN/kubeadm" "$K8S_BIN/kubelet" "$K8S_BIN/kubectl" "$bin/"
extras=(
  "registry.k8s.io/etcd:$etcd_tag" "$kubeadm_etcd"
  "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$provisioner" "$helper" "${pause_tags[@]}"
)
save_first_repositories() { # ARCHIVE IMAGE...: docker save with `repositories` as the first entry
  local archive=$1 unpacked=$work/unpacked
  shift
  rm -rf "$unpacked" && mkdir "$unpacked"
  "$docker" save "$@" | tar -C "$unpacked" -xf -
  # docker writes Docker Hub names short (kindest/kindnetd); kind looks for them in full.
  sed -i 's#"kindest/#"docker.io/kindest/#g' "$unpacked/repositories" "$unpacked/manifest.json"
  (cd "$unpacked" && tar -cf "$archive" repositories manifest.json \
    $(find . -mindepth 1 -maxdepth 1 ! -name repositories ! -name manifest.json -printf '%P\n'))
}
save_first_repositories "$bin/kube-apiserver.tar" "registry.k8s.io/kube-apiserver:$K8S_VERSION" \
  "${extras[@]}"
for binary in kube-controller-manager kube-scheduler kube-proxy; do
  save_first_repositories "$bin/$binary.tar" "registry.k8s.io/$binary:$K8S_VERSION"
done
tar -C "$work/release" -czf "$work/kubernetes-server.tar.gz" kubernetes

log "kind build node-image $image"
kind build node-image --type file "$work/kubernetes-server.tar.gz" --base-image "$base" \
  --image "$image.tmp" >&2
printf 'FROM %s\nLABEL kubedbt.kind.etcd-tag=%s kubedbt.kind.cni=ptp\n' "$image.tmp" "$etcd_tag" |
  "$docker" build -q --force-rm -t "$image" - >/dev/null
"$docker" rmi "$image.tmp" >/dev/null
mkdir -p "$KUBEDBT_CACHE/images"
rm -f "$KUBEDBT_CACHE/images/"kind-node-*.tar # earlier keys are never used again
"$docker" save -o "$archive.tmp" "$image" && mv "$archive.tmp" "$archive"
log "built $image, saved to $archive"
echo "$image"
