"""Whiteout names, overlay xattrs and the xattr policy, for both directions.

Two encodings of "this path was deleted" meet here:

* OCI layer tars (image-spec ``layer.md``): an empty regular file ``.wh.<name>``
  deletes ``<name>`` from lower layers; ``.wh..wh..opq`` inside a directory
  hides every lower child of that directory.
* Overlay format, as a layer directory in the store and as an overlay upper
  dir: a deletion is a 0:0 character device, an opaque directory carries
  ``trusted.overlay.opaque=y`` (``user.overlay.opaque=y`` for rootless mounts
  with ``userxattr``).

Every other module asks this one, so the names are spelled once.
"""

from __future__ import annotations

import errno
import os
import stat

WHITEOUT_PREFIX = b".wh."
# AUFS reserved ``.wh..wh.`` for its own metadata; only the opaque marker is
# meaningful in OCI layers, the rest (``.wh..wh.plnk`` ...) is refused.
WHITEOUT_META_PREFIX = WHITEOUT_PREFIX + WHITEOUT_PREFIX
WHITEOUT_OPAQUE = WHITEOUT_META_PREFIX + b".opq"

OPAQUE_XATTR_ROOT = "trusted.overlay.opaque"
OPAQUE_XATTR_ROOTLESS = "user.overlay.opaque"
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")

# Overlay features that make an upper dir not a plain change set: a redirected
# directory has no content of its own, a metacopy file has no data.  pybuild
# mounts with redirect_dir=off,metacopy=off; meeting one is a bug upstream.
_UNSUPPORTED_OVERLAY_XATTRS = ("overlay.redirect", "overlay.metacopy")

CAPABILITY_XATTR = "security.capability"
PAX_XATTR_PREFIX = "SCHILY.xattr."


def opaque_xattr(rootless: bool) -> str:
    """The one private xattr that marks an opaque dir for this mount mode (W11)."""
    return OPAQUE_XATTR_ROOTLESS if rootless else OPAQUE_XATTR_ROOT


def is_whiteout_name(name: bytes) -> bool:
    """True for any name an OCI consumer would treat as a whiteout."""
    return name.startswith(WHITEOUT_PREFIX)


def whiteout_name(name: bytes) -> bytes:
    """The tar basename that deletes ``name``."""
    return WHITEOUT_PREFIX + name


def whiteout_target(base: bytes) -> bytes | None:
    """The name deleted by the tar entry ``base``; None if the name is not a
    plain whiteout (the opaque marker, another meta name, or no whiteout)."""
    if not base.startswith(WHITEOUT_PREFIX) or base.startswith(WHITEOUT_META_PREFIX):
        return None
    return base[len(WHITEOUT_PREFIX):]


def is_overlay_whiteout(st: os.stat_result) -> bool:
    """A 0:0 character device: overlay's deletion marker."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def exportable_xattr(key: str) -> bool:
    """The xattr allowlist, shared by tar writing, applying and diffing.

    Kept: ``security.capability`` (file capabilities: ping, newuidmap) and
    ``user.*`` (what c/storage carries).  Dropped: every ``*.overlay.*`` key
    (overlay-private state must never travel: T20, W11), ``security.selinux``
    (host policy labels), ``trusted.*`` and ``system.*`` (POSIX ACLs are not
    part of OCI layers as BuildKit writes them).
    """
    if key == CAPABILITY_XATTR:
        return True
    return key.startswith("user.") and not key.startswith("user.overlay.")


def check_overlay_xattrs(keys: list[str]) -> str | None:
    """Name of an overlay xattr that makes the entry unexportable, if any."""
    for key in keys:
        if key.startswith(OVERLAY_XATTR_PREFIXES) and key.endswith(_UNSUPPORTED_OVERLAY_XATTRS):
            return key
    return None


def read_xattrs(path: bytes | int, keys: list[str] | None = None) -> dict[str, bytes]:
    """The allowlisted xattrs of ``path`` (never followed) or of an open fd."""
    follow = not isinstance(path, bytes)
    if keys is None:
        keys = _listxattr(path, follow)
    out: dict[str, bytes] = {}
    for key in sorted(keys):
        if exportable_xattr(key):
            try:
                out[key] = os.getxattr(path, key, follow_symlinks=follow)
            except OSError as err:
                if err.errno not in _NO_XATTR:
                    raise
    return out


def list_xattrs(path: bytes | int) -> list[str]:
    """All xattr names of ``path`` (never followed) or an fd; [] if unsupported."""
    return _listxattr(path, not isinstance(path, bytes))


def has_opaque(path: bytes | int, rootless: bool, keys: list[str] | None = None) -> bool:
    """Whether ``path`` (never followed) or an fd is an opaque dir; ``keys``, if
    the caller already listed the xattrs, saves a system call."""
    if keys is not None and opaque_xattr(rootless) not in keys:
        return False
    follow = not isinstance(path, bytes)
    try:
        return os.getxattr(path, opaque_xattr(rootless), follow_symlinks=follow) == b"y"
    except OSError as err:
        if err.errno in _NO_XATTR:
            return False
        raise


def _listxattr(path: bytes | int, follow: bool) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=follow)
    except OSError as err:
        if err.errno in _NO_XATTR:
            return []
        raise


# ENODATA: no such attribute; ENOTSUP: the fs (or, for user.* on a symlink or
# device, the kernel) has none to give.
_NO_XATTR = {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP}
