"""Breakout oracle and hostile-input builders for the security catalogue tests.

Importable as ``security.oracle`` (pytest puts ``tests/`` on ``sys.path``), so the
layer tests and every ``tests/security`` module share one implementation.

The oracle ports go-archive's ``testBreakout`` idea (catalogue sections 0.8 and
4): a ``victim/`` directory beside the extraction root (or build context), a
prefix sibling ``dest-evil/`` and unique paths under ``/tmp`` are recorded
before a hostile input is processed and must be identical afterwards, whatever
pybuild did (succeed confined, or refuse).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

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
    """``dest`` to write into, two levels down, with bait beside and above it.

    Layout under ``top``: ``a/b/dest`` (the extraction root, or a build
    context), ``a/b/victim/hello``, ``a/b/dest-evil/secret`` (a sibling sharing
    the prefix), ``a/b/outside/perm400``, ``a/b/flag``; everything but
    ``dest`` is compared before and after, so ``../pwned`` and ``../../pwned``
    show up too.  ``host_dir`` (``/tmp/pybuild-host-<uuid>``, holding
    ``hostfile`` and ``whitedout``) must not change and ``absent``
    (``/tmp/breakout-<uuid>``) must never appear.
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
        assert not os.path.lexists(self.absent)

    def cleanup(self) -> None:
        shutil.rmtree(self.host_dir, ignore_errors=True)
        if os.path.islink(self.absent):
            os.unlink(self.absent)
        shutil.rmtree(self.absent, ignore_errors=True)


def docker_archive(layers: list[bytes], tag: str, config: dict | None = None) -> bytes:
    """A ``docker save``-style archive of one linux/amd64 image made of ``layers``
    (uncompressed layer tars, lowest first), for ``pybuild load``; ``config`` is
    the image's container config (default: just PATH)."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    container_config = config if config is not None else {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    config_blob = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config_blob).hexdigest() + ".json"
    names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    out = TarMaker(tarfile.USTAR_FORMAT)
    for name, data in [(config_name, config_blob), *zip(names, layers, strict=True),
                       ("manifest.json", manifest)]:
        out.add(name, content=data)
    return out.data()


def build(root: Path, context: Path | str, dockerfile: str, out: Path | None = None, *args: str,
          check: bool = True, driver: str | None = None, timeout: float = 300,
          stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Build ``dockerfile`` (text, written beside the store so it is not part of
    the context) with the real CLI; with ``out``, export the root filesystem there.
    ``timeout`` turns a hang (a FIFO read, a runaway expansion) into a failure."""
    df = Path(root).parent / f"Dockerfile.{uuid.uuid4().hex[:8]}"
    df.write_text(dockerfile)
    try:
        pre = ["--storage-driver", driver] if driver else []
        extra = ["-o", f"type=local,dest={out}"] if out is not None else []
        argv = [sys.executable, "-m", "builder", "--root", str(root), *pre, "build",
                "--progress", "plain", "-f", str(df), *extra, *args, str(context)]
        result = subprocess.run(argv, capture_output=True, timeout=timeout, input=stdin)
    finally:
        df.unlink()
    if check and result.returncode != 0:
        raise AssertionError(f"pybuild build failed ({result.returncode}):\n{dockerfile}\n"
                             f"{result.stderr.decode(errors='replace')}")
    return result


BAIT = {b"hello", b"secret", b"ro", b"flag", b"host"}


def leaked(out: Path) -> list[str]:
    """Regular files under ``out`` whose content is a sandbox bait file's: host
    content that reached an image."""
    found = []
    for dirpath, _dirs, files in os.walk(out):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_size <= 6:
                with open(path, "rb") as f:
                    if f.read() in BAIT:
                        found.append(os.path.relpath(path, out))
    return found


def one_line_error(result) -> str:
    """The error a failed CLI run printed: non-zero exit, no traceback, one line."""
    assert result.returncode != 0
    err = result.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(("error", "pybuild:"))]
    assert lines, err
    return lines[-1]


def apply(sb: Sandbox, data: bytes, mode: str = "merged", **kw):
    """Apply a layer tar into ``sb.dest`` with the real extractor."""
    from builder.layers import apply_layer_tar

    return apply_layer_tar(io.BytesIO(data), sb.dest, layer="sha256:hostile", mode=mode, **kw)


def refuse(sb: Sandbox, data: bytes, mode: str = "merged", match: str | None = None, **kw):
    """Apply, expecting a LayerError naming the layer and nothing left behind."""
    import pytest

    from builder.errors import LayerError

    with pytest.raises(LayerError, match=match) as info:
        apply(sb, data, mode, **kw)
    assert "sha256:hostile" in str(info.value)
    assert not sb.dest.exists(), "a refused layer must leave nothing behind"
    return info.value


def lower(sb: Sandbox, maker: TarMaker) -> None:
    """Apply a first, benign layer (the 'lower' content) in merged mode."""
    apply(sb, maker.data())


def static_binary(source: str, directory: Path, name: str) -> Path:
    """``source`` (C) compiled with ``gcc -static`` into ``directory/name``: a probe a
    busybox image can run.  Without gcc the test skips (fails under CI)."""
    import pytest

    gcc = shutil.which("gcc")
    if gcc is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run this test, but gcc is missing", pytrace=False)
        pytest.skip(f"gcc is needed to build the static probe {name}")
    (directory / f"{name}.c").write_text(source)
    binary = directory / name
    result = subprocess.run([gcc, "-static", "-O1", "-o", str(binary),
                             str(directory / f"{name}.c")], capture_output=True, timeout=120)
    if result.returncode != 0:
        message = f"gcc -static failed: {result.stderr.decode(errors='replace')[-300:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    """A plain tar at ``path`` holding ``members`` (name -> content), in order."""
    out = TarMaker(tarfile.USTAR_FORMAT)
    for name, data in members.items():
        out.add(name, content=data)
    path.write_bytes(out.data())
    return path
