#!/bin/sh
# Stand-in for docker-library/haproxy docker-entrypoint.sh.
set -e

# first arg is `-f` or `--some-option`
if [ "${1#-}" != "$1" ]; then
	set -- haproxy "$@"
fi

if [ "$1" = 'haproxy' ]; then
	shift # "haproxy"
	# if the user wants "haproxy", let's add a couple useful flags
	set -- haproxy -W -db "$@"
fi

exec "$@"
