#!/usr/bin/env bash
# Stand-in for docker-library/postgres docker-ensure-initdb.sh.
set -Eeuo pipefail
exec docker-entrypoint.sh "$@"
