"""Security round 2, point 2: the store is its owner's only (docs/security.md, "S").

Real attacks by real other users after a real build: ``nobody`` (via setpriv)
tries to read the database (build args), the blobs (image configs name the
build args), the layers and a cache mount, and to run a setuid-root program a
build left in that cache mount; host uid 1000 tries to write into the cache
mount a build made with ``uid=1000``.  Each build runs under umask 022 and
under umask 000.  An old store (0755/0644 modes) is fixed when it is opened
and by ``pybuild doctor [--repair]``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.overlay]

NOBODY = 65534
HOST_USER = 1000
DOCKERFILE = """\
FROM busybox
ARG TOKEN
RUN --mount=type=cache,id=perm-suid,target=/cache --mount=type=bind,source=tool,target=/tool \
    cp /tool /cache/suid && chmod 4755 /cache/suid && echo "$TOKEN" > /cache/token \
    && echo "layer-$TOKEN" > /layer-secret
RUN --mount=type=cache,id=perm-1000,target=/c1000,uid=1000,gid=1000,mode=0750 \
    stat -c '%u %g %a' /c1000 > /c1000-stat && echo from-build > /c1000/data
"""


@dataclass
class Built:
    root: Path        # the store
    base: Path        # a 0755 dir holding it, so the store is the only barrier
    token: str        # the build arg's value
    umask: int

    @property
    def suid_cache(self) -> Path:
        return self._cache_dir("suid")

    @property
    def user_cache(self) -> Path:
        return self._cache_dir("data")

    def _cache_dir(self, member: str) -> Path:
        found = [d for d in (self.root / "cache-mounts").iterdir() if (d / member).exists()]
        assert len(found) == 1, found
        return found[0]


def cli(root: Path, *args: str, umask: int = 0o022, check: bool = True,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """The real CLI under ``umask``."""
    argv = ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh",
            sys.executable, "-m", "builder", "--root", str(root), *args]
    result = subprocess.run(argv, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stderr.decode(errors='replace')}")
    return result


def as_user(uid: int, *argv: str) -> subprocess.CompletedProcess:
    """Run ``argv`` as another real user: uid and gid ``uid``, no supplementary groups.

    setpriv keeps root's capabilities until its own execve, so it execs a shell
    (whose execve drops them) and the shell execs ``argv``: every path lookup of
    the attack is the other user's, with no capability left."""
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed"
    no_caps = 'grep -q "^CapEff:[[:space:]]*0*$" /proc/self/status || exit 99; exec "$@"'
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "--", "/bin/sh", "-c", no_caps, "sh", *argv],
                          capture_output=True, timeout=60)


def denied(result: subprocess.CompletedProcess) -> bool:
    return result.returncode != 0 and b"Permission denied" in result.stderr


def assert_denied(uid: int, *argv: str) -> None:
    result = as_user(uid, *argv)
    assert denied(result), (f"uid {uid} ran {' '.join(argv)}: exit {result.returncode}, "
                            f"stdout {result.stdout[:200]!r}, stderr {result.stderr[:200]!r}")


def _world_dir(prefix: str) -> Path:
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(base, 0o755)  # other users reach it: only the store's own modes protect it
    return base


def _build(root: Path, base: Path, token: str, umask: int, *extra: str) -> None:
    context = base / "ctx"
    context.mkdir(exist_ok=True)
    # A setuid copy of this Python gives its caller euid 0: a real local-root tool.
    shutil.copy(os.path.realpath(sys.executable), context / "tool")
    dockerfile = base / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    cli(root, "build", "--progress", "plain", "-f", str(dockerfile), "--build-arg",
        f"TOKEN={token}", "-t", "perms", *extra, str(context), umask=umask)


@pytest.fixture(scope="module", params=[0o022, 0o000], ids=["umask022", "umask000"])
def built(request: pytest.FixtureRequest, busybox_tar: Path) -> Iterator[Built]:
    base = _world_dir("pybuild-perms-")
    try:
        # "parents" does not exist yet: pybuild makes it (0755, not 0777 under umask 000).
        root = base / "parents" / "store"
        umask = request.param
        cli(root, "import", str(busybox_tar), "busybox", umask=umask)
        token = f"tok-{uuid.uuid4().hex}"
        _build(root, base, token, umask, "-o", f"type=local,dest={base / 'out'}")
        yield Built(root, base, token, umask)
    finally:
        shutil.rmtree(base)


def test_other_user_reads_no_build_arg_blob_or_layer(built: Built) -> None:
    root, token = built.root, built.token.encode()
    # What there is to steal: the build arg is in the image config's history (the
    # database keeps its digest, the context's file list, the build records).
    configs = [p for p in (root / "blobs" / "sha256").iterdir() if token in p.read_bytes()]
    assert configs
    layer = next(root.glob("layers/*/diff/layer-secret"))
    assert_denied(NOBODY, "cat", str(root / "pybuild.db"))
    assert_denied(NOBODY, "ls", str(root))
    assert_denied(NOBODY, "ls", str(root / "blobs" / "sha256"))
    assert_denied(NOBODY, "cat", str(configs[0]))
    assert_denied(NOBODY, "ls", str(root / "layers"))
    assert_denied(NOBODY, "ls", str(root / "l"))
    assert_denied(NOBODY, "cat", str(layer))
    assert_denied(NOBODY, "ls", str(root / "cache-mounts"))
    assert_denied(NOBODY, "cat", str(built.suid_cache / "token"))


def test_other_user_cannot_read_the_wal(built: Built) -> None:
    """SQLite gives -wal and -shm the database file's mode: they are made (here by a
    reader holding the database open, under the build's umask) 0600 too."""
    old = os.umask(built.umask)
    try:
        db = sqlite3.connect(built.root / "pybuild.db")
        try:
            db.execute("SELECT count(*) FROM layers").fetchone()
            wal = built.root / "pybuild.db-wal"
            assert wal.exists()
            for path in (wal, built.root / "pybuild.db-shm"):
                assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
                assert_denied(NOBODY, "cat", str(path))
        finally:
            db.close()
    finally:
        os.umask(old)


def test_other_user_cannot_run_the_setuid_tool_left_in_a_cache_mount(built: Built) -> None:
    tool = built.suid_cache / "suid"
    info = tool.stat()
    assert info.st_uid == 0 and info.st_mode & stat.S_ISUID  # the build left it setuid root
    # Control: where another user can reach it, it gives them euid 0.
    reachable = built.base / "reachable"
    reachable.mkdir(mode=0o755, exist_ok=True)
    os.chmod(reachable, 0o755)
    shutil.copy2(tool, reachable / "suid")
    probe = ("-I", "-c", "import os; print(os.geteuid())")
    control = as_user(NOBODY, str(reachable / "suid"), *probe)
    assert control.stdout.strip() == b"0", control
    assert_denied(NOBODY, str(tool), *probe)


def test_host_uid_1000_cannot_write_the_cache_mount_chowned_to_it(built: Built) -> None:
    cache = built.user_cache
    # The step saw what it asked for: the mount's own dir is uid 1000, mode 0750.
    assert (built.base / "out" / "c1000-stat").read_text().split() == ["1000", "1000", "750"]
    info = cache.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (HOST_USER, 0o750)
    assert_denied(HOST_USER, "sh", "-c", f"echo poison > {cache}/planted")
    assert_denied(HOST_USER, "cat", str(cache / "data"))
    assert not (cache / "planted").exists()


def test_modes_are_private_whatever_the_umask(built: Built) -> None:
    root = built.root
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(root.parent.stat().st_mode) == 0o755  # made by pybuild
    loose = [f"{path}: {mode:04o}" for path, mode in _store_modes(root) if mode & 0o077]
    assert loose == []
    blobs = {stat.S_IMODE(p.stat().st_mode) for p in (root / "blobs" / "sha256").iterdir()}
    assert blobs == {0o400}
    dirs = {stat.S_IMODE(os.stat(root / d).st_mode) for d in
            ("blobs", "blobs/sha256", "layers", "l", "tmp", "cache-mounts")}
    assert dirs == {0o700}


def _store_modes(root: Path) -> Iterator[tuple[Path, int]]:
    """Everything the store itself made: not a layer's image tree, not a cache
    mount's own dir (both keep the modes they were given), not l/'s links."""
    for directory, dirs, files in os.walk(root):
        here = Path(directory)
        rel = here.relative_to(root).parts
        if rel[:1] == ("layers",) and len(rel) == 2:
            dirs[:] = []  # layers/<chain>/diff is the image's root dir
        if rel == ("cache-mounts",):
            dirs[:] = []
        yield here, stat.S_IMODE(here.stat().st_mode)
        for name in files:
            path = here / name
            if not path.is_symlink():
                yield path, stat.S_IMODE(path.lstat().st_mode)


# -- an old store ------------------------------------------------------------------------
OLD_DIRS = ("blobs", "blobs/sha256", "layers", "l", "tmp", "cache-mounts")


@pytest.fixture
def old_store(busybox_tar: Path) -> Iterator[Built]:
    """A store with the modes pybuild used to give: 0755 dirs, a 0644 database,
    0444 blobs (here made by a build, then loosened as an old version left them)."""
    base = _world_dir("pybuild-oldperms-")
    try:
        root = base / "store"
        cli(root, "import", str(busybox_tar), "busybox")
        token = f"tok-{uuid.uuid4().hex}"
        _build(root, base, token, 0o022)
        _loosen(root)
        # Control: as it was, another user reads the database and the build arg.
        stolen = as_user(NOBODY, "cat", str(root / "pybuild.db"))
        assert stolen.returncode == 0 and stolen.stdout.startswith(b"SQLite format 3")
        config = as_user(NOBODY, "sh", "-c", f"cat {root}/blobs/sha256/*")
        assert config.returncode == 0 and token.encode() in config.stdout
        yield Built(root, base, token, 0o022)
    finally:
        shutil.rmtree(base)


def _loosen(root: Path) -> None:
    os.chmod(root, 0o755)
    os.chmod(root / "pybuild.db", 0o644)
    for name in OLD_DIRS:
        os.chmod(root / name, 0o755)
    for blob in (root / "blobs" / "sha256").iterdir():
        os.chmod(blob, 0o444)
    for lock in (root / "cache-mounts").glob("*.lock"):
        os.chmod(lock, 0o644)


def _top_is_private(root: Path) -> None:
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "pybuild.db").stat().st_mode) == 0o600
    for name in OLD_DIRS:
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o700, name


def test_old_store_is_fixed_when_opened(old_store: Built) -> None:
    root = old_store.root
    _build(root, old_store.base, old_store.token, 0o022)  # the cached rebuild
    _top_is_private(root)
    assert_denied(NOBODY, "cat", str(root / "pybuild.db"))
    assert_denied(HOST_USER, "sh", "-c", f"echo poison > {old_store.user_cache}/planted")


def test_old_store_is_reported_and_repaired_by_doctor(old_store: Built) -> None:
    root = old_store.root
    checked = cli(root, "doctor", check=False)
    out = checked.stdout.decode()
    # The open fixes the root and its top-level entries; the rest waits for --repair.
    assert checked.returncode == 1, out
    assert f"perms: {root}: mode 0755 lets other users in" in out and "[repaired]" in out, out
    assert f"perms: {root / 'blobs' / 'sha256'}: " in out, out
    assert "run 'pybuild doctor --repair'" in out, out
    _top_is_private(root)
    assert_denied(NOBODY, "cat", str(root / "pybuild.db"))
    assert {stat.S_IMODE(p.stat().st_mode) for p in (root / "blobs/sha256").iterdir()} == {0o444}
    repaired = cli(root, "doctor", "--repair", check=False)
    assert repaired.returncode == 0, repaired.stdout.decode()
    assert f"perms: {root / 'blobs' / 'sha256'}: " in repaired.stdout.decode()
    assert {stat.S_IMODE(p.stat().st_mode) for p in (root / "blobs/sha256").iterdir()} == {0o400}
    lock_modes = {stat.S_IMODE(p.stat().st_mode) for p in (root / "cache-mounts").glob("*.lock")}
    assert lock_modes == {0o600}
    again = cli(root, "doctor", check=False)
    assert again.returncode == 0 and b"store ok" in again.stdout, again.stdout


def test_a_store_another_user_owns_is_refused(old_store: Built) -> None:
    """Host uid 1000 owning the root could change everything root's builds read."""
    root = old_store.root
    os.chown(root, HOST_USER, HOST_USER)
    try:
        result = cli(root, "history", "perms", check=False)
        err = result.stderr.decode()
        assert result.returncode != 0 and "Traceback" not in err, err
        assert f"store {root} is owned by uid {HOST_USER}" in err, err
        checked = cli(root, "doctor", check=False)
        assert checked.returncode == 1
        assert f"perms: {root}: is owned by uid {HOST_USER}" in checked.stdout.decode()
    finally:
        os.chown(root, 0, 0)


def test_downloads_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """A pull's partial download and the blob it becomes (registry/client.py uses
    Ingest): ingest/ 0700, the blob 0400 like every other."""
    import hashlib

    from builder.store.ingest import Ingest
    from builder.store.store import Store

    data = b"layer bytes " * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    old = os.umask(0)
    try:
        store = Store(tmp_path / "store")
        with Ingest(store, digest, len(data)) as ingest:
            assert stat.S_IMODE(ingest.path.stat().st_mode) == 0o600
            ingest.write(data)
            blob = ingest.commit()
        store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "store" / "ingest").stat().st_mode) == 0o700
    assert stat.S_IMODE(blob.stat().st_mode) == 0o400
