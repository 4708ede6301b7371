#!/bin/bash
# The lab's REHEARSAL TARGET binaries: the same Debian Kubernetes 1.20.2 tree as build-binaries.sh, linked again
# with another, clearly pre-release version stamp (e.g. 1.20.3-lab.0) so `kprov upgrade` has a "next patch" to
# go to on the lab. Nothing is recompiled: the stamp is a linker flag (-X), the Go build cache holds the packages.
# usage: relink-binaries.sh CACHE_DIR VERSION   -> CACHE_DIR/bin-VERSION/{kubeadm,...}  (no-op when already done)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
C=${1:?cache dir}
V=${2:?version}
case $V in *-lab.*) ;; *) die "a rehearsal version must carry a -lab.N pre-release label (got $V)";; esac
CMDS="kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy"
O=$C/bin-$V
have_all=1; for c in $CMDS; do [ -x "$O/$c" ] || have_all=0; done
if [ $have_all = 1 ]; then log "rehearsal binaries $V cached in $O"; exit 0; fi
T=$(ls -d "$C"/src/kubernetes-*/ 2>/dev/null | head -1 || true)
[ -n "$T" ] && [ -f "$T/.kprov-prepared" ] || die "no prepared source tree in $C/src: run build-binaries.sh first"
T=${T%/}
major=${V%%.*}; rest=${V#*.}; minor=${rest%%.*}
vf=$C/version-$V
# the archive's commit, kept: the binaries are that source, only the version string differs
commit=$(sed -n "s/^ *KUBE_GIT_COMMIT='\([0-9a-f]*\)'.*/\1/p" "$T/hack/lib/version.sh" | head -1)
printf "KUBE_GIT_COMMIT='%s'\nKUBE_GIT_TREE_STATE='archive'\nKUBE_GIT_VERSION='v%s'\nKUBE_GIT_MAJOR='%s'\nKUBE_GIT_MINOR='%s'\n" \
  "$commit" "$V" "$major" "$minor" > "$vf"
export PATH=/usr/lib/go-1.19/bin:$PATH GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 \
       HOME=${HOME:-/root} GOCACHE="$C/gocache" KUBE_GIT_VERSION_FILE=$vf
t0=$SECONDS
log "relinking $CMDS as v$V"
make -C "$T" WHAT="$(for c in $CMDS; do printf 'cmd/%s ' "$c"; done)" >&2
mkdir -p "$O"
for c in $CMDS; do install -m 755 "$T/_output/bin/$c" "$O/$c.new" && mv "$O/$c.new" "$O/$c"; done
got=$("$O/kubeadm" version -o short)
[ "$got" = "v$V" ] || die "relinked kubeadm reports $got, expected v$V"
log "relink took $((SECONDS-t0))s: kubeadm $got"
