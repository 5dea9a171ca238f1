#!/bin/sh
# Make a minimal busybox root filesystem tarball from the host's static busybox
# (Debian package busybox-static), for `pybuild import`.  No registry needed.
#   usage: testdata/busybox-rootfs.sh OUT.tar
# The tarball is reproducible: fixed owners and mtimes, sorted entries.
set -eu
out=${1:?usage: busybox-rootfs.sh OUT.tar}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "busybox-rootfs.sh: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }
"$busybox" --list >/dev/null 2>&1 || { echo "busybox-rootfs.sh: $busybox is not busybox" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 755 "$root"
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/root" \
         "$root/tmp" "$root/var/tmp" "$root/home" "$root/dev" "$root/proc" "$root/sys"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"
cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
"$busybox" --list-full | while read -r applet; do
    case "$applet" in bin/busybox) continue ;; esac
    dir=$(dirname "$applet")
    mkdir -p "$root/$dir"
    [ -e "$root/$applet" ] || ln "$root/bin/busybox" "$root/$applet" 2>/dev/null || true
done
cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$root/etc/group" <<'G'
root:x:0:
daemon:x:1:
users:x:100:
nogroup:x:65534:
G
echo "pybuild-busybox" > "$root/etc/hostname"
tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
    -C "$root" -cf "$out" .
