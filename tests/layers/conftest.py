"""Fixtures for the layer tests: a tar builder and tree manifests.

Hostile layers (catalogue rows T and W) are tested in tests/security/, whose
``security.oracle`` module also provides the ``TarMaker`` used here.
"""

from __future__ import annotations

import hashlib
import os
import stat

import pytest
from security.oracle import TarMaker


@pytest.fixture
def tar() -> type[TarMaker]:
    return TarMaker


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tree_manifest(top: str) -> dict[str, tuple]:
    """What a layer must preserve: type, mode, owner, content or target or device,
    allowlisted xattrs, mtime seconds for non-dirs, and hardlink groups."""
    from builder.layers.whiteout import read_xattrs

    groups: dict[tuple[int, int], list[str]] = {}
    rows: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            detail: object = None
            if stat.S_ISREG(st.st_mode):
                detail = _digest(path)
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                detail = st.st_rdev
            mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns // 1_000_000_000
            xattrs = read_xattrs(os.fsencode(path))
            rows[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail, mtime,
                         tuple(sorted(xattrs.items())))
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
    for names in groups.values():
        for rel in names:
            rows[rel] = (*rows[rel], tuple(sorted(names)))
    return rows


@pytest.fixture
def manifest():
    return tree_manifest
