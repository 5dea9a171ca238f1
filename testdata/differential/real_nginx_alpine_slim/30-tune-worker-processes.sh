#!/bin/sh
# vim:sw=4:ts=4:et
# Stand-in for nginxinc/docker-nginx entrypoint/30-tune-worker-processes.sh.

set -e

ME=$(basename "$0")
echo "$ME: nothing to do"
