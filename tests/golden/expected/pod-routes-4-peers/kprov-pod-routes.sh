#!/bin/sh
# Managed by kprov (cni: bridge): routes to the pod subnets of the other nodes.
#   (no argument)  add missing routes
#   --check        exit 1 when a route is missing or points elsewhere; change nothing
#   --remove       delete these routes (kprov reset)
set -e
mode=${1:-apply}
# cp2
if [ "$mode" = --remove ]; then
  if ip route show exact 10.244.1.0/24 | grep -q .; then ip route del 10.244.1.0/24 && echo "removed 10.244.1.0/24"; fi
elif ! ip route show exact 10.244.1.0/24 | grep -q "via 10.215.0.12 "; then
  [ "$mode" = --check ] && exit 1
  ip route replace 10.244.1.0/24 via 10.215.0.12
fi
# cp3
if [ "$mode" = --remove ]; then
  if ip route show exact 10.244.2.0/24 | grep -q .; then ip route del 10.244.2.0/24 && echo "removed 10.244.2.0/24"; fi
elif ! ip route show exact 10.244.2.0/24 | grep -q "via 10.215.0.13 "; then
  [ "$mode" = --check ] && exit 1
  ip route replace 10.244.2.0/24 via 10.215.0.13
fi
# w1
if [ "$mode" = --remove ]; then
  if ip route show exact 10.244.3.0/24 | grep -q .; then ip route del 10.244.3.0/24 && echo "removed 10.244.3.0/24"; fi
elif ! ip route show exact 10.244.3.0/24 | grep -q "via 10.215.0.21 "; then
  [ "$mode" = --check ] && exit 1
  ip route replace 10.244.3.0/24 via 10.215.0.21
fi
# w2
if [ "$mode" = --remove ]; then
  if ip route show exact 10.244.4.0/24 | grep -q .; then ip route del 10.244.4.0/24 && echo "removed 10.244.4.0/24"; fi
elif ! ip route show exact 10.244.4.0/24 | grep -q "via 10.215.0.22 "; then
  [ "$mode" = --check ] && exit 1
  ip route replace 10.244.4.0/24 via 10.215.0.22
fi
exit 0
