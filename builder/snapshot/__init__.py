"""Snapshots: a writable view over a chain of store layers, and its commit.

``prepare(store, parent_chain, driver=...)`` gives an active snapshot.  The
mount itself is made by whoever uses the snapshot, inside a private mount
namespace (``snapshot.mount``), so the kernel removes it when that process
exits.  ``commit(snapshot)`` turns the change into a store layer and returns
its chain ID; a step that changed nothing gets the empty layer, as in BuildKit.

Drivers (the contract is ``base.ActiveSnapshot``/``base.Driver``; every caller,
the RUN sandbox and ``-o type=local|tar`` included, goes through it with the
build's ``--storage-driver``):

    overlay  lower layers + a fresh upper dir; commit renames the upper dir
    vfs      a full copy of the parent tree, bind-mounted; commit diffs the trees
    fuse-overlayfs  overlay's layout, mounted by the fuse-overlayfs daemon (rootless on
             kernels before 5.11: snapshot/fuse.py)
    auto     overlay if a probe mount works under this store, else vfs
    default  overlay as root; rootless, the first that mounts of overlay, fuse-overlayfs
             and vfs, probed once, recorded in the store and kept (docs/rootless.md)

Imports builder.errors, builder.syscalls, builder.layers and builder.store.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from builder import syscalls
from builder.errors import PybuildError
from builder.snapshot.base import DRIVERS, ActiveSnapshot, Commit, Driver
from builder.snapshot.overlay import OverlayDriver
from builder.snapshot.overlay import options as overlay_options
from builder.snapshot.vfs import VfsDriver
from builder.snapshot.writeback import EarlyWriteback
from builder.store.store import Store
from builder.userns import rootless

# Callers see the contract only (ActiveSnapshot); the drivers' classes stay inside.
__all__ = ["DRIVERS", "ActiveSnapshot", "Commit", "Driver", "EarlyWriteback", "commit",
           "open_driver", "overlay_works", "prepare"]

_probed: dict[str, bool] = {}
FUSE = "fuse-overlayfs"


def open_driver(store: Store, name: str = "overlay") -> Driver:
    """The snapshot driver ``name`` ("overlay", "vfs", "auto" or "default") for ``store``."""
    if name == "default":
        name = default_driver(store)
    if name == "auto":
        name = "overlay" if overlay_works(store) else "vfs"
    if name == "overlay":
        return OverlayDriver(store)
    if name == FUSE:
        from builder.snapshot.fuse import FuseDriver  # rootless on an older kernel only

        return FuseDriver(store)
    if name == "vfs":
        return VfsDriver(store)
    raise PybuildError(f"unknown storage driver {name!r}: want overlay, fuse-overlayfs, vfs "
                       "or auto")


def default_driver(store: Store) -> str:
    """overlay as root; rootless, what the store recorded when a build first probed it
    (kernel overlayfs in a user namespace needs Linux 5.11: else fuse-overlayfs, else
    vfs), so that every build of a store uses one driver and no build probes again."""
    if not rootless():
        return "overlay"
    recorded = store.recorded_snapshotter()
    if recorded in DRIVERS:
        return recorded
    chosen = "overlay" if overlay_works(store) else FUSE if fuse_works(store) else "vfs"
    store.record_snapshotter(chosen)
    return chosen


def prepare(store: Store, parent: str | None, driver: str = "overlay") -> ActiveSnapshot:
    """A new active snapshot on top of ``parent`` (a chain ID, or None for scratch)."""
    return open_driver(store, driver).prepare(parent)


def commit(snapshot: ActiveSnapshot, *, source_date_epoch: int | None = None) -> Commit:
    """Commit ``snapshot``, whichever driver made it; no change: the empty layer."""
    return snapshot.commit(source_date_epoch=source_date_epoch)


def overlay_works(store: Store) -> bool:
    """Whether an overlay can be mounted with its upper dir in this store's tmp/.

    Probed once per store root per process, in a throw-away child with its own
    mount namespace, so the probe mount never reaches the host.
    """
    key = str(store.root)
    if key not in _probed:
        _probed[key] = _probe(store)
    return _probed[key]


def fuse_works(store: Store) -> bool:
    """Whether fuse-overlayfs mounts with its upper dir in this store's tmp/."""
    from builder.snapshot.fuse import FuseDriver

    snapshot = FuseDriver(store).prepare(None)
    try:
        merged = snapshot.work.path / "merged"
        merged.mkdir()
        return _mounts_in_a_child(lambda: snapshot.mount(str(merged)))
    finally:
        snapshot.release()


def _probe(store: Store) -> bool:
    work = store.tmp_dir("probe")
    try:
        for sub in ("lower", "upper", "work", "merged"):
            (work.path / sub).mkdir()
        given = overlay_options(lowers=str(work.path / "lower"), upper=str(work.path / "upper"),
                                work=str(work.path / "work"))
        return _mounts_in_a_child(lambda: syscalls.mount(
            "overlay", str(work.path / "merged"), "overlay", 0, given))
    finally:
        work.release()


def _mounts_in_a_child(mount: Callable[[], None]) -> bool:
    """Whether ``mount`` succeeds in a throw-away child with a mount namespace of its
    own, so that the probe mount never reaches the host."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()  # like every child of a build: off the invoker's terminal
            syscalls.set_parent_death_signal(signal.SIGKILL)
            syscalls.unshare(syscalls.CLONE_NEWNS)
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            mount()
            code = 0
        except BaseException:  # any failure means "it does not mount here"
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
