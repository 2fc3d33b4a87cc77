#!/usr/bin/env bash
# Build kubedbt-launch, the static PID 1 that kubedbt injects into the dbt container (see the
# package comment in main.go). The sidecar image carries the binary, so build it before that image.
#
#   images/launcher/build.sh [OUT]    OUT defaults to images/launcher/kubedbt-launch
#
# CGO_ENABLED=0 makes it static, so it runs on whatever base the user's dbt image has; -trimpath
# and -s -w keep the build machine's paths and the debug info out of it, and -buildvcs=false the
# commit, so the binary (and the image layer holding it) only changes when its source does.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/kubedbt-launch}
[[ $out == /* ]] || out=$PWD/$out
go=$(command -v go || echo /usr/local/go/bin/go)

cd "$here"
CGO_ENABLED=0 GOFLAGS='-trimpath -buildvcs=false' "$go" build -ldflags='-s -w' -o "$out" .
