#!/usr/bin/env bash
# Stand-in for docker-library/postgres docker-entrypoint.sh (the real one is ~350 lines).
set -Eeo pipefail
exec "$@"
