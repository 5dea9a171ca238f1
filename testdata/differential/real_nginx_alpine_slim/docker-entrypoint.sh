#!/bin/sh
# vim:sw=4:ts=4:et
# Stand-in for nginxinc/docker-nginx entrypoint/docker-entrypoint.sh.

set -e

if [ "$1" = "nginx" ] || [ "$1" = "nginx-debug" ]; then
    find "/docker-entrypoint.d/" -follow -type f -print | sort -V | while read -r f; do
        case "$f" in
            *.envsh) . "$f" ;;
            *.sh) "$f" ;;
        esac
    done
fi

exec "$@"
