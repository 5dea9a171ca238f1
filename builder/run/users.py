"""The step's user: USER ``name|uid[:group|gid]`` resolved against the image's own
passwd and group files, read as bounded text inside the image's root (never NSS,
never after a chroot into image content: catalogue R14, R15)."""

from __future__ import annotations

import os
import stat

import msgspec

from builder import limits
from builder.errors import BuildError
from builder.rootpath import resolve_in_root


class Identity(msgspec.Struct):
    uid: int = 0
    gid: int = 0
    groups: list[int] = msgspec.field(default_factory=list)


# -- reading the image's files with chroot semantics ----------------------
def _read_table(root: str, path: str) -> list[list[str]]:
    """The image's passwd/group file as rows, read as text and bounded (R15).

    O_NOFOLLOW + fstat: a FIFO, a device (``/etc/passwd -> /dev/zero``) or a
    link swapped in after resolving is never read; a huge file is an error,
    not a memory bomb (CVE-2024-9676).
    """
    host_path = resolve_in_root(root, path)
    if host_path is None:
        return []
    try:
        # O_NOCTTY: the setup child leads a session of its own with no terminal;
        # an image's /etc/passwd that is a tty node must not become its terminal.
        fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                     | os.O_NOCTTY)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as table:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        max_bytes = limits.get().max_passwd_bytes
        data = table.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BuildError(f"{path} in the image is larger than {max_bytes} bytes (raise it "
                         f"with {limits.env_name('max_passwd_bytes')})")
    return [line.split(":") for line in data.decode("utf-8", "replace").split("\n")
            if line.strip() and not line.startswith("#")]


def resolve_user(root: str, user: str) -> Identity:
    """Resolve USER ``name|uid[:group|gid]`` against the image's passwd and group files.

    Only text is read (never NSS), as Docker and BuildKit do.
    """
    if not user:
        user = "0"
    name, _, group = user.partition(":")
    passwd = _read_table(root, "/etc/passwd")
    groups = _read_table(root, "/etc/group")
    entry = next((e for e in passwd if len(e) >= 4 and name in (e[0], e[2])), None)
    if entry is not None and (entry[0] == name or name.isdigit()):
        uid, gid, username = int(entry[2]), int(entry[3]), entry[0]
    elif name.isdigit():
        uid, gid, username = int(name), 0, None
    else:
        raise BuildError(f"unable to find user {name}: no matching entries in passwd file")
    if group:
        match = next((g for g in groups if len(g) >= 3 and group in (g[0], g[2])), None)
        if match is not None and (match[0] == group or group.isdigit()):
            gid = int(match[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise BuildError(f"unable to find group {group}: no matching entries in group file")
    extra: list[int] = []
    if username is not None and not group:
        extra = [int(g[2]) for g in groups
                 if len(g) >= 4 and username in g[3].split(",") and g[2].isdigit()]
    for value in (uid, gid, *extra):
        if not 0 <= value < 2**32 - 1:
            raise BuildError(f"user {user}: id {value} out of range")
    # Supplementary groups: only memberships listed in /etc/group (BuildKit adds no
    # implicit primary group).
    return Identity(uid, gid, sorted(set(extra)))
