"""The snapshot driver contract (builder/snapshot/base.py), one suite for every driver,
as containers/storage runs ``drivers/graphtest`` against each backend:

prepare -> mount (rw, or read-only for a view) -> commit -> an immutable layer; no
change commits the empty layer; deletions are whiteouts and a re-made directory
hides what was below; a used-up snapshot refuses a second commit or a mount; and
``-o type=local|tar`` read through the build's driver (under vfs, no overlay is
ever mounted, so they work where overlay is refused).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from snapshot_steps import look, step

from builder import interrupt, syscalls
from builder.errors import StoreError
from builder.layers.empty import EMPTY_DIFF_ID
from builder.layers.tar_write import write_layer_tar
from builder.run.child import in_mount_namespace
from builder.snapshot import DRIVERS, ActiveSnapshot, commit, prepare
from builder.store import Store

pytestmark = [pytest.mark.root, pytest.mark.overlay]


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _base(root: str) -> None:
    os.makedirs(os.path.join(root, "etc/app"))
    for rel in ("etc/keep", "etc/gone", "etc/app/one", "etc/app/two"):
        Path(root, rel).write_text(rel)


def _listing(root: str) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            out[rel] = "dir" if os.path.isdir(path) else Path(path).read_text()
    return out


def _tar_names(store: Store, chain: str) -> list[str]:
    """The names in the layer tar of ``chain``'s top layer (against its parents)."""
    record = store.layer(chain)
    buf = io.BytesIO()
    write_layer_tar(store.layer_dir(chain), buf, lowers=store.lower_dirs(record.parent))
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        return [member.name.rstrip("/") for member in tar.getmembers()]


def _layer_state(path: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(path)), p.lstat().st_ino, p.lstat().st_mtime_ns)
                  for p in path.rglob("*"))


def _add_new(root: str) -> None:
    Path(root, "etc/new").write_text("new")


def test_prepare_mount_commit(store: Store, driver: str) -> None:
    base = step(store, driver, None, _base)
    assert store.layer(base.chain_id).parent is None
    top = step(store, driver, base.chain_id, _add_new)
    assert store.layer(top.chain_id).parent == base.chain_id
    assert top.changes.added == ["/etc/new"]
    seen = look(store, driver, top.chain_id, _listing)
    assert isinstance(seen, dict) and seen["etc/new"] == "new" and seen["etc/keep"] == "etc/keep"
    assert list((store.root / "tmp").iterdir()) == []


def test_no_change_is_the_empty_layer(store: Store, driver: str) -> None:
    base = step(store, driver, None, _base)
    same = step(store, driver, base.chain_id, lambda root: None)
    assert same.chain_id != base.chain_id
    assert store.layer(same.chain_id).diff_id == EMPTY_DIFF_ID
    assert _tar_names(store, same.chain_id) == []


def test_deletion_is_a_whiteout(store: Store, driver: str) -> None:
    base = step(store, driver, None, _base)
    top = step(store, driver, base.chain_id, lambda root: os.unlink(os.path.join(root,
                                                                               "etc/gone")))
    assert top.changes.deleted == ["/etc/gone"]
    assert _tar_names(store, top.chain_id) == ["etc", "etc/.wh.gone"]
    seen = look(store, driver, top.chain_id, _listing)
    assert isinstance(seen, dict) and "etc/gone" not in seen and "etc/keep" in seen


def _remake(root: str) -> None:
    shutil.rmtree(os.path.join(root, "etc/app"))
    os.mkdir(os.path.join(root, "etc/app"))
    Path(root, "etc/app/fresh").write_text("fresh")


def test_remade_directory_hides_the_lower_one(store: Store, driver: str) -> None:
    """An opaque directory: the layer hides every lower child, in any consumer."""
    base = step(store, driver, None, _base)
    top = step(store, driver, base.chain_id, _remake)
    names = _tar_names(store, top.chain_id)
    assert "etc/app/fresh" in names
    assert "etc/app/.wh..wh..opq" in names or {"etc/app/.wh.one", "etc/app/.wh.two"} <= set(names)
    seen = look(store, driver, top.chain_id, _listing)
    assert isinstance(seen, dict)
    assert [rel for rel in seen if rel.startswith("etc/app/")] == ["etc/app/fresh"]


def test_a_used_snapshot_is_gone_and_its_layer_immutable(store: Store, driver: str) -> None:
    base = step(store, driver, None, _base)
    layer_dir = store.layer_dir(base.chain_id)
    before = _layer_state(layer_dir)
    snapshot = prepare(store, base.chain_id, driver)
    in_mount_namespace(_mount_and_change, snapshot)
    done = commit(snapshot, source_date_epoch=0)
    with pytest.raises(StoreError, match="already committed or released"):
        commit(snapshot, source_date_epoch=0)
    with pytest.raises(StoreError, match="already committed or released"):
        snapshot.mount("/nonexistent")
    snapshot.release()   # safe after a commit, and twice
    snapshot.release()
    # What the step on top did never reached the layer below it.
    assert _layer_state(layer_dir) == before
    assert (layer_dir / "etc/keep").read_text() == "etc/keep"
    assert store.layer(done.chain_id).parent == base.chain_id
    released = prepare(store, base.chain_id, driver)
    released.release()
    with pytest.raises(StoreError, match="already committed or released"):
        commit(released)


def _mount_and_change(snapshot: ActiveSnapshot) -> None:
    merged = str(snapshot.work.path / "merged")
    os.makedirs(merged, exist_ok=True)
    snapshot.mount(merged)
    Path(merged, "etc/keep").write_text("changed")
    os.unlink(os.path.join(merged, "etc/gone"))
    os.chmod(os.path.join(merged, "etc"), 0o700)


def _try_write(root: str) -> int:
    try:
        Path(root, "etc/keep").write_text("x")
    except OSError as err:
        return err.errno or 0
    return 0


def test_read_only_view(store: Store, driver: str) -> None:
    """The view outputs and ``RUN --mount=from=`` read: the chain, and no writes."""
    base = step(store, driver, None, _base)
    assert look(store, driver, base.chain_id, _try_write) == errno.EROFS
    assert look(store, driver, base.chain_id, _listing) == {
        "etc": "dir", "etc/app": "dir", "etc/keep": "etc/keep", "etc/gone": "etc/gone",
        "etc/app/one": "etc/app/one", "etc/app/two": "etc/app/two"}
    assert list((store.root / "tmp").iterdir()) == []


# -- outputs through the driver ---------------------------------------------------------

@pytest.fixture
def no_overlay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Refuse every overlay mount in this process and its forks (EPERM, as a kernel
    without overlay or a store on a refusing filesystem would), and log the tries."""
    log = tmp_path / "overlay-tries"
    real_mount, real_fsopen = syscalls.mount, syscalls.fsopen

    def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        if fstype == "overlay":
            with open(log, "a") as out:
                out.write(f"{target}\n")
            raise PermissionError(errno.EPERM, "overlay refused by the test", target)
        real_mount(source, target, fstype, flags, data)

    def fsopen(fstype: str) -> int:
        if fstype == "overlay":
            raise PermissionError(errno.EPERM, "overlay refused by the test")
        return real_fsopen(fstype)

    monkeypatch.setattr(syscalls, "mount", mount)
    monkeypatch.setattr(syscalls, "fsopen", fsopen)
    yield log


def test_outputs_use_the_build_driver(store: Store, tmp_path: Path, no_overlay: Path) -> None:
    from builder.engine.outputs import export_rootfs

    base = step(store, "vfs", None, _base)
    top = step(store, "vfs", base.chain_id, _remake).chain_id
    export_rootfs(store, top, str(tmp_path / "dir"), as_tar=False, driver="vfs")
    assert _listing(str(tmp_path / "dir"))["etc/app/fresh"] == "fresh"
    assert not (tmp_path / "dir/etc/app/one").exists()
    export_rootfs(store, top, str(tmp_path / "fs.tar"), as_tar=True, driver="vfs")
    with tarfile.open(tmp_path / "fs.tar") as tar:
        names = {name.removeprefix("./") for name in tar.getnames()}
    assert {"etc/app/fresh", "etc/keep"} <= names and "etc/app/one" not in names
    assert not no_overlay.exists(), "vfs output mounted an overlay"
    # The check itself works: the overlay driver does try, and is refused.
    with pytest.raises(Exception, match="overlay"):
        export_rootfs(store, top, str(tmp_path / "ovl"), as_tar=False, driver="overlay")
    assert no_overlay.exists()


_REFUSE_OVERLAY = """
import errno, runpy, sys
from builder import interrupt, syscalls
real_mount, real_fsopen = syscalls.mount, syscalls.fsopen
def mount(source, target, fstype, flags=0, data=None):
    if fstype == "overlay":
        raise PermissionError(errno.EPERM, "overlay refused by the test", target)
    return real_mount(source, target, fstype, flags, data)
def fsopen(fstype):
    if fstype == "overlay":
        raise PermissionError(errno.EPERM, "overlay refused by the test")
    return real_fsopen(fstype)
syscalls.mount, syscalls.fsopen = mount, fsopen
sys.argv = ["pybuild", *sys.argv[1:]]
runpy.run_module("builder", run_name="__main__", alter_sys=True)
"""


def test_cli_outputs_under_vfs_mount_no_overlay(tmp_path: Path, busybox_tar: Path) -> None:
    """``--storage-driver vfs -o type=local|tar`` in a pybuild where every overlay
    mount fails: the build, its RUN and both outputs still work."""
    root, ctx = tmp_path / "store", tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN mkdir /made && echo hi > /made/f "
                                    "&& rm /bin/true\n")

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-c", _REFUSE_OVERLAY, "--root", str(root),
                               *args], capture_output=True, timeout=600)

    assert cli("import", str(busybox_tar), "busybox").returncode == 0
    out, tar_out = tmp_path / "out", tmp_path / "fs.tar"
    result = cli("--storage-driver", "vfs", "-o", f"type=local,dest={out}",
                 "-o", f"type=tar,dest={tar_out}", str(ctx))
    assert result.returncode == 0, result.stderr.decode()
    assert (out / "made/f").read_text() == "hi\n" and not (out / "bin/true").exists()
    with tarfile.open(tar_out) as tar:
        names = {name.removeprefix("./") for name in tar.getnames()}
    assert "made/f" in names and "bin/true" not in names
    # The same build under overlay fails: the hook does refuse overlay.
    refused = cli("--storage-driver", "overlay", "--no-cache", str(ctx))
    assert refused.returncode != 0 and b"overlay" in refused.stderr


def test_a_layer_whose_writeback_fails_is_never_recorded(store: Store, driver: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit syncs the layer's filesystem itself (overlay mounts are volatile): a
    write-back error (a full or failing disk) fails the commit before the layer's row."""
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(syscalls, "syncfs", failing)
    with pytest.raises(StoreError, match="cannot write the layer to disk: Input/output error"):
        step(store, driver, None, _base)
    assert store.db.execute("SELECT COUNT(*) FROM layers").fetchone()[0] == 0


def test_a_stop_does_not_wait_for_the_disk(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during a commit whose write-back is slow (gigabytes of dirty pages on a
    slow disk) stops the build at once; the sync goes on by itself."""
    disk = threading.Event()
    monkeypatch.setattr(syscalls, "syncfs", lambda fd: disk.wait(30))
    stop = threading.Timer(0.5, interrupt.request)
    stop.start()
    started = time.monotonic()
    try:
        with pytest.raises(interrupt.Stopped):
            step(store, "overlay", None, _base)
    finally:
        interrupt.clear()
        disk.set()
    assert time.monotonic() - started < 5
    assert store.db.execute("SELECT COUNT(*) FROM layers").fetchone()[0] == 0


def _overlay_options(root: str) -> list[str]:
    with open("/proc/self/mountinfo") as mounts:
        return [line.split(" - ", 1)[1] for line in mounts if f" {root} " in line]


def _mounted_options(snapshot: ActiveSnapshot, readonly: bool) -> list[str]:
    merged = str(snapshot.work.path / "merged")
    os.makedirs(merged, exist_ok=True)
    snapshot.mount(merged, readonly=readonly)
    return _overlay_options(merged)


def test_writable_overlay_mounts_are_volatile(store: Store) -> None:
    """volatile: the kernel does not sync the whole filesystem when a step's overlay goes
    (the commit does, beside its walk); a read-only view needs no such flag."""
    base = step(store, "overlay", None, _base)
    options = {}
    for readonly in (False, True):
        snapshot = prepare(store, base.chain_id, "overlay")
        try:
            options[readonly] = in_mount_namespace(_mounted_options, snapshot, readonly)
        finally:
            snapshot.release()
    # Kernels since 6.x show it as fsync=volatile, older ones as volatile.
    assert len(options[False]) == 1 and "volatile" in options[False][0]
    assert len(options[True]) == 1 and "volatile" not in options[True][0]
