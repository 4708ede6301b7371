#!/bin/bash
# Build one of the lab stand-ins (crictl/, dns/: a main.go each) inside the Kubernetes source tree that
# build-binaries.sh prepared, so they use its vendored libraries (grpc + cri-api, client-go, miekg/dns); static.
# usage: build-go-tool.sh CACHE_DIR SRC_SUBDIR OUT_NAME   -> CACHE_DIR/bin/OUT_NAME (rebuilt when main.go changes)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
C=${1:?cache dir}; SUB=${2:?source subdir}; NAME=${3:?output name}
SRC_GO=$HERE/$SUB/main.go
OUT=$C/bin/$NAME
if [ -x "$OUT" ] && [ "$OUT" -nt "$SRC_GO" ]; then log "$NAME cached in $OUT"; exit 0; fi
T=$(ls -d "$C"/src/kubernetes-*/ | head -1); T=${T%/}
[ -f "$T/.kprov-prepared" ] || die "run build-binaries.sh first"
# Kubernetes 1.20 builds in GOPATH mode (hack/lib/init.sh: GO111MODULE=off) with GOPATH=_output/local/go,
# where make left the k8s.io/kubernetes symlink and the build cache: reuse both.
G=$T/_output/local/go
[ -d "$G/src/k8s.io/kubernetes" ] || die "$G/src/k8s.io/kubernetes missing (make did not run?)"
mkdir -p "$T/cmd/kprov-$SUB"
cp "$SRC_GO" "$T/cmd/kprov-$SUB/main.go"
export PATH=/usr/lib/go-1.19/bin:$PATH GO111MODULE=off GOPATH=$G GOCACHE=$G/cache GOPROXY=off GOTOOLCHAIN=local \
       CGO_ENABLED=0 HOME=${HOME:-/root}
unset GOFLAGS
t0=$SECONDS
(cd "$G/src/k8s.io/kubernetes" && go build -tags selinux,notest -ldflags '-s -w' -o "$OUT.new" "./cmd/kprov-$SUB") >&2
mv "$OUT.new" "$OUT"
log "$NAME built in $((SECONDS - t0))s: $("$OUT" --version 2>&1 | head -1)"
