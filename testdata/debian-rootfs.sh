#!/bin/sh
# Make a Debian bookworm minbase root filesystem tarball with debootstrap (about 35 s).
#   usage: testdata/debian-rootfs.sh OUT.tar     (as root; needs Debian's package servers)
# debootstrap uses its default mirror; set DEBOOTSTRAP_MIRROR to use another.
set -eu
out=${1:?usage: debian-rootfs.sh OUT.tar}
command -v debootstrap >/dev/null || { echo "debian-rootfs.sh: apt-get install debootstrap" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root" "$out.tmp"' EXIT
chmod 755 "$root"
debootstrap --variant=minbase bookworm "$root" ${DEBOOTSTRAP_MIRROR:-} >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Leave out what a container runtime provides, as Docker's official images do.
rm -rf "$root/dev/"* "$root/proc/"* "$root/sys/"* "$root/var/cache/apt/archives/"*.deb
# Nothing that depends on the day it ran, as in Debian's official images (debuerreotype
# builds them under a fixed SOURCE_DATE_EPOCH): /etc/shadow's "last change" day is fixed,
# so what a Dockerfile's useradd writes there is the same on any day.
sed -i -E 's/^([^:]*:[^:]*:)[0-9]+:/\119675:/' "$root/etc/shadow"
tar --sort=name --numeric-owner --xattrs -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
