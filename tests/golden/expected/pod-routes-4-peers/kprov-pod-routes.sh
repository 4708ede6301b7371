#!/bin/sh
# Managed by kprov (cni: bridge): routes to the pod subnets of the other nodes.
#   (no argument)  add missing routes
#   --check        exit 1 when a route is missing or points elsewhere; change nothing
#   --remove       delete these routes (kprov reset)
# Subnets and addresses come from the cluster (validated as networks/addresses by kprov) and are
# still quoted: they are data, never code.
set -e
mode=${1:-apply}
route() {
  if [ "$mode" = --remove ]; then
    if ip route show exact "$1" | grep -q .; then ip route del "$1" && echo "removed $1"; fi
  elif ! ip route show exact "$1" | grep -qF "via $2 "; then
    [ "$mode" = --check ] && exit 1
    ip route replace "$1" via "$2"
  fi
}
# cp2
route 10.244.1.0/24 10.215.0.12
# cp3
route 10.244.2.0/24 10.215.0.13
# w1
route 10.244.3.0/24 10.215.0.21
# w2
route 10.244.4.0/24 10.215.0.22
exit 0
