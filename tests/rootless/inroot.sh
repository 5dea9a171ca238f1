#!/bin/sh
# Run CMD as root of a user namespace on a root of its own, as in a rootless container:
# the caller runs this under `unshare --map-auto --map-root-user --mount --fork`.  The
# new root is a tmpfs the namespace owns (so are / and /tmp, which pybuild's store-path
# check then trusts), with the host's /usr, /etc, /var/cache, /dev, /sys, /proc and each
# PATH given (the checkout, the venv) bound in at the same place.
#   usage: inroot.sh NEWROOT PATH[:PATH...] CMD...
set -eu
PATH=$PATH:/usr/sbin:/sbin  # pivot_root
nr=$1 binds=$2; shift 2
mount -t tmpfs -o mode=0755 pybuild-rootless-root "$nr"
for d in usr etc var/cache proc dev sys tmp run root .old; do mkdir -p "$nr/$d"; done
chmod 1777 "$nr/tmp"
for l in bin sbin lib lib64; do if [ -e "/$l" ]; then ln -s "usr/$l" "$nr/$l"; fi; done
for d in /usr /etc /var/cache /dev /sys /proc; do mount --rbind "$d" "$nr$d"; done
old_ifs=$IFS; IFS=:
for d in $binds; do mkdir -p "$nr$d"; mount --rbind "$d" "$nr$d"; done
IFS=$old_ifs
cd "$nr"
pivot_root . .old
umount -l /.old
rmdir /.old
cd /
exec "$@"
