#!/bin/sh
# kprov lab bundle: minimal crictl stand-in (cri-tools is not packaged in Debian bookworm/backports/trixie/sid).
# Covers only what kubeadm 1.20 calls: `-r EP info` (runtime up?), `-r EP inspecti IMG`
# (image present?), `-r EP pull IMG`, `-r EP pods -q`. Backed by containerd's ctr in namespace k8s.io.
while [ $# -gt 0 ]; do
  case "$1" in
    -r|--runtime-endpoint|-i|--image-endpoint) shift 2 ;;
    --runtime-endpoint=*|--image-endpoint=*) shift ;;
    *) break ;;
  esac
done
cmd=$1; [ $# -gt 0 ] && shift
case "$cmd" in
  info|version) exec ctr version ;;
  inspecti) [ -n "$(ctr -n k8s.io images ls -q "name==$1")" ] || { echo "no such image $1" >&2; exit 1; } ;;
  pull) [ -n "$(ctr -n k8s.io images ls -q "name==$1")" ] || { echo "offline lab: image $1 not imported" >&2; exit 1; } ;;
  pods) ctr -n k8s.io containers ls -q ;;  # approximation (containers, not sandboxes); used by kubeadm reset only
  stopp|rmp) for id in "$@"; do ctr -n k8s.io tasks kill -s KILL "$id" 2>/dev/null; ctr -n k8s.io containers rm "$id" 2>/dev/null; done; exit 0 ;;
  *) echo "crictl shim: unsupported command $cmd" >&2; exit 1 ;;
esac
