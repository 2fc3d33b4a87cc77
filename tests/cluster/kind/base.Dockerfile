# The base of a kind node image built here, for machines where none can be pulled
# (tests/cluster/kind-node-image.sh). It is kind's own images/base (sigs.k8s.io/kind) remade on
# kubedbt/base with Debian's packages: the build context carries kind's files/ tree, copied from the
# kind module in the Go module cache, plus this folder's few additions.
ARG BASE=kubedbt/base:bookworm
FROM ${BASE}
COPY files/ /
RUN chmod 0755 /usr/local/bin/* /kind/bin/* \
    && DEBIAN_FRONTEND=noninteractive apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       -o Dpkg::Options::=--force-confold \
       systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod libseccomp2 \
       pigz bash ca-certificates curl jq procps containerd runc containernetworking-plugins \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
    && find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete \
    && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
       /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
       /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \
    && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \
    && ln -sf /usr/lib/systemd/systemd /sbin/init \
    && ln -sf /usr/bin/containerd /usr/local/bin/containerd \
    && mkdir -p /opt/cni /etc/kubernetes/manifests \
    && ln -sfn /usr/lib/cni /opt/cni/bin \
    && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \
    && systemctl mask systemd-binfmt.service \
    && /usr/bin/ctr oci spec \
       | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
       | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
