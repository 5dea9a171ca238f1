"""Fixtures for the layer tests: a tar builder, a breakout oracle, tree snapshots.

The oracle ports go-archive's ``testBreakout`` idea (catalogue section 0.8):
a ``victim/`` directory beside the extraction root and unique paths under
``/tmp`` are recorded before a hostile layer is applied and must be identical
afterwards, whatever the apply did (succeed confined, or refuse).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import uuid
from pathlib import Path

import pytest

MTIME = 1_600_000_000


class TarMaker:
    """Builds layer tars entry by entry, hostile ones included."""

    def __init__(self, fmt: int = tarfile.PAX_FORMAT) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.TarFile(fileobj=self.buf, mode="w", format=fmt, encoding="utf-8",
                                   errors="surrogateescape")

    def add(self, name: str, kind: str = "file", content: bytes = b"", *, mode: int | None = None,
            uid: int = 0, gid: int = 0, target: str = "", major: int = 0, minor: int = 0,
            mtime: float = MTIME, pax: dict[str, str] | None = None) -> TarMaker:
        info = tarfile.TarInfo(name)
        info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                     "link": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
                     "fifo": tarfile.FIFOTYPE}[kind]
        info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
        info.uid, info.gid, info.mtime = uid, gid, mtime
        info.linkname = target
        info.devmajor, info.devminor = major, minor
        if pax:
            info.pax_headers = dict(pax)
        if kind == "file":
            info.size = len(content)
            self.tar.addfile(info, io.BytesIO(content))
        else:
            self.tar.addfile(info)
        return self

    def data(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


@pytest.fixture
def tar() -> type[TarMaker]:
    return TarMaker


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def snapshot(top: str, skip: str | None = None) -> dict[str, tuple]:
    """(type, mode, uid, gid, size, mtime_ns, nlink, ino, content/target) of a
    tree, leaving out the relative path ``skip`` and what is below it."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if skip is not None and (rel == skip or rel.startswith(skip + os.sep)):
                continue
            st = os.lstat(path)
            extra = ""
            if stat.S_ISREG(st.st_mode):
                extra = _digest(path)
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            row = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_gid, st.st_size,
                   st.st_mtime_ns, st.st_nlink, st.st_ino, extra)
            if skip is not None and rel == os.path.dirname(skip):
                row = row[:4]  # dest's parent: dest itself may be removed
            out[rel] = row
        dirnames[:] = [d for d in dirnames
                       if skip is None or os.path.normpath(os.path.join(rel_dir, d)) != skip]
    return out


class Sandbox:
    """``dest`` to apply into, two levels down, with bait beside and above it.

    Layout under ``top``: ``a/b/dest`` (the root), ``a/b/victim/hello``,
    ``a/b/dest-evil/secret`` (a sibling sharing the prefix), ``a/b/outside/
    perm400``, ``a/b/flag``; everything but ``dest`` is compared before and
    after, so ``../pwned`` and ``../../pwned`` show up too.
    """

    def __init__(self, top: Path) -> None:
        self.top = top
        base = top / "a" / "b"
        base.mkdir(parents=True)
        self.base = base
        self.dest = base / "dest"
        self.dest.mkdir()
        (base / "victim").mkdir()
        (base / "victim" / "hello").write_text("hello")
        (base / "dest-evil").mkdir()
        (base / "dest-evil" / "secret").write_text("secret")
        (base / "outside").mkdir()
        (base / "outside" / "perm400").write_text("ro")
        os.chmod(base / "outside" / "perm400", 0o400)
        (base / "flag").write_text("flag")
        token = uuid.uuid4().hex
        # Names an escaping write would create or change on the host itself.
        self.host_dir = Path(f"/tmp/pybuild-host-{token}")
        self.host_dir.mkdir()
        (self.host_dir / "hostfile").write_text("host")
        (self.host_dir / "whitedout").write_text("host")
        self.absent = Path(f"/tmp/breakout-{token}")
        self.skip = os.path.join("a", "b", "dest")
        self.before = snapshot(str(top), skip=self.skip)
        self.host_before = snapshot(str(self.host_dir))

    def assert_no_breakout(self) -> None:
        assert snapshot(str(self.top), skip=self.skip) == self.before
        assert snapshot(str(self.host_dir)) == self.host_before
        assert not self.absent.exists()

    def cleanup(self) -> None:
        shutil.rmtree(self.host_dir, ignore_errors=True)
        shutil.rmtree(self.absent, ignore_errors=True)


@pytest.fixture
def sandbox(tmp_path: Path):
    sb = Sandbox(tmp_path)
    try:
        yield sb
        sb.assert_no_breakout()
    finally:
        sb.cleanup()


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
