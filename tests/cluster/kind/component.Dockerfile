# One control-plane or add-on image of a kind node built here (tests/cluster/kind-node-image.sh):
# the node's base (iptables, nft and conntrack, which kube-proxy needs) plus one static binary.
ARG BASE
FROM ${BASE}
ARG BINARY
COPY ${BINARY} /usr/local/bin/${BINARY}
