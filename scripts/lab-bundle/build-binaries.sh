#!/bin/bash
# Build the 7 Kubernetes 1.20.2 binaries (static, CGO off) from Debian bookworm's `kubernetes` source package.
# usage: build-binaries.sh CACHE_DIR    -> CACHE_DIR/bin/{kubeadm,...}  (no-op when already built)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
C=${1:?cache dir}
CMDS="kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy"
mkdir -p "$C/bin" "$C/src"
have_all=1; for c in $CMDS; do [ -x "$C/bin/$c" ] || have_all=0; done
if [ $have_all = 1 ]; then log "kubernetes binaries cached in $C/bin"; exit 0; fi

ensure_packages golang-1.19-go golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev \
  dpkg-dev rsync make gcc libc6-dev
MIRROR=$(debian_mirror) || die "cannot find the Debian mirror in /etc/apt (sources.list.d/*.sources or sources.list)"
private_apt_setup "$C/apt-src" "deb-src $MIRROR bookworm main"
T=$(ls -d "$C"/src/kubernetes-*/ 2>/dev/null | head -1 || true)
if [ -z "$T" ] || [ ! -f "$T/.kprov-prepared" ]; then
  rm -rf "$C"/src/kubernetes* 
  (cd "$C/src" && papt_get source kubernetes/bookworm >&2) || die "apt-get source kubernetes failed"
  T=$(ls -d "$C"/src/kubernetes-*/ | head -1)
  # The vendored reflect2 1.0.1 / json-iterator 1.1.10 SIGSEGV under Go 1.19: use Debian's 1.0.2 / 1.1.12.
  for p in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    rm -rf "$T/vendor/$p"; cp -rL "/usr/share/gocode/src/$p" "$T/vendor/$p"
    find "$T/vendor/$p" -name '*_test.go' -delete
  done
  touch "$T/.kprov-prepared"
fi
T=${T%/}
log "building $CMDS from $T (several minutes)"
export PATH=/usr/lib/go-1.19/bin:$PATH GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 \
       HOME=${HOME:-/root} GOCACHE="$C/gocache"
t0=$SECONDS
# make, not go build: it generates the OpenAPI code and stamps gitVersion (needs rsync).
make -C "$T" WHAT="$(for c in $CMDS; do printf 'cmd/%s ' "$c"; done)" >&2
log "make took $((SECONDS-t0))s"
for c in $CMDS; do install -m 755 "$T/_output/bin/$c" "$C/bin/$c.new" && mv "$C/bin/$c.new" "$C/bin/$c"; done
v=$("$C/bin/kubeadm" version -o short)
[ "$v" = v1.20.2 ] || die "built kubeadm reports $v, expected v1.20.2"
log "kubeadm $v built"
