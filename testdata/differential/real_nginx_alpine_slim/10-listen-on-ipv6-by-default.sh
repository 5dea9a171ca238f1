#!/bin/sh
# vim:sw=4:ts=4:et
# Stand-in for nginxinc/docker-nginx entrypoint/10-listen-on-ipv6-by-default.sh.

set -e

ME=$(basename "$0")
echo "$ME: nothing to do"
