#!/bin/sh
# Managed by kprov (cni: bridge): routes to the pod subnets of the other nodes.
#   (no argument)  add missing routes
#   --check        exit 1 when a route is missing or points elsewhere; change nothing
#   --remove       delete these routes (kprov reset)
set -e
mode=${1:-apply}
exit 0
