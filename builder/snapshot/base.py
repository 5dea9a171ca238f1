"""The snapshot driver contract: what the engine, the RUN sandbox and the
outputs rely on (BuildKit's ``snapshot/snapshotter.go`` lifecycle).

    prepare(parent) -> active snapshot -> mount (rw, or read-only) -> commit -> layer

A driver makes active snapshots over a chain of store layers.  An active
snapshot is mounted by whoever uses it, inside a private mount namespace, so
the kernel drops the mount when that process exits; it is then committed
(turned into a store layer) or released.  A read-only mount is the view of a
committed chain (``-o type=local|tar``, ``RUN --mount=from=``).  Once committed
or released a snapshot is used up: a second commit or a mount is an error, and
the committed layer is immutable (no later snapshot changes it).  Whatever the
driver, a commit hands the store a layer dir in overlay format, and the same
change gives the same layer tar and diff_id.  A step that changed nothing still
makes a layer, the empty one (an empty dir, diff_id of the empty tar), as
BuildKit does (``builder/layers/empty.py``).  Every driver passes one contract
suite, tests/snapshot/test_contract.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import msgspec

from builder import limits
from builder.errors import BuildError, StoreError
from builder.snapshot.writeback import Writeback

if TYPE_CHECKING:
    from builder.layers.changes import LayerChanges
    from builder.layers.summary import ChangeSummary
    from builder.store.store import Store, TmpDir

DRIVERS = ("overlay", "vfs", "fuse-overlayfs")


class Commit(msgspec.Struct):
    """The result of committing a snapshot: the new top of the chain and what changed."""

    chain_id: str               # the new layer's chain ID (the empty layer's if no change)
    changes: LayerChanges       # every path (tests and the differ); steps keep ``summary``

    @property
    def summary(self) -> ChangeSummary:
        """What the step's record, its cache entry and explain keep."""
        return self.changes.summary()


class ActiveSnapshot(Protocol):
    """A writable view over ``parent``'s chain, living in ``work`` (store tmp/)."""

    store: Store
    parent: str | None
    work: TmpDir
    # Read-only dirs laid over the chain while mounted (the RUN init layer);
    # their entries must never reach the committed layer.
    extra_lowers: list[Path]

    @property
    def upper(self) -> Path:
        """The layer dir (overlay format) a commit renames into the store."""
        ...

    def mount(self, target: str, *, readonly: bool = False) -> None:
        """Mount the view at ``target``; only in a private mount namespace."""
        ...

    # Has an upper dir that may be written directly once unmounted (offline_upper).
    has_offline_upper: ClassVar[bool]

    def offline_upper(self, target: str) -> str | None:
        """Unmount the writable mount at ``target`` (made by ``mount`` in this process's
        mount namespace) and give the upper dir, which may then be written directly as
        the layer; None, the mount kept: this driver has no such dir, or it is busy."""
        ...

    def commit(self, *, source_date_epoch: int | None = None) -> Commit:
        """Store the change as a layer (no change: the empty layer); the snapshot is used up."""
        ...

    def release(self) -> None:
        """Drop the snapshot's work dir; safe to call after a commit."""
        ...


class SnapshotBase(msgspec.Struct):
    """The state both drivers' snapshots share, and the used-up guard."""

    store: Store
    parent: str | None
    work: TmpDir
    extra_lowers: list[Path] = msgspec.field(default_factory=list)
    used: bool = False     # committed or released: nothing is left to mount or commit

    @property
    def upper(self) -> Path:
        """The layer dir (overlay format) a commit renames into the store."""
        return self.work.path / "diff"

    def check_active(self, action: str) -> None:
        if self.used:
            raise StoreError(f"cannot {action} a snapshot that was already committed or "
                             "released")

    # No upper dir to write behind the mount's back (the vfs driver's tree is written
    # through its mount anyway); overlay's says otherwise.
    has_offline_upper: ClassVar[bool] = False

    def offline_upper(self, target: str) -> str | None:
        return None

    def release(self) -> None:
        """Drop the snapshot's work dir; safe to call after a commit, and twice."""
        self.used = True
        self.work.release()


class Driver(Protocol):
    name: str
    store: Store

    def prepare(self, parent: str | None) -> ActiveSnapshot:
        """A new active snapshot on top of ``parent`` (a chain ID, or None for scratch);
        extracts the chain's packed (pulled) layers first."""
        ...


def commit_upper(snapshot: SnapshotBase, *, source_date_epoch: int | None,
                 before_store: Callable[[], None] | None = None) -> Commit:
    """The commit both drivers share: the snapshot's overlay-format ``upper`` dir
    becomes a store layer by rename; no change gives the empty layer, as BuildKit's
    (an empty dir: it stays in the overlay lower list, a harmless empty lower, and
    counts toward the layer limit as it does in the image).  ``before_store`` runs
    once the diff_id is known and before the store lock is taken."""
    from builder.layers.changes import LayerChanges
    from builder.layers.tar_write import layer_diff_id

    snapshot.check_active("commit")
    snapshot.used = True
    lowers = snapshot.store.lower_dirs(snapshot.parent)
    # One walk gives both the diff_id and the explain summary (100k small files:
    # the walk is most of a commit's cost).
    changes = LayerChanges()
    writeback = Writeback(snapshot.upper)
    diff_id, size = layer_diff_id(snapshot.upper, source_date_epoch=source_date_epoch,
                                  lowers=lowers, changes=changes)
    writeback.wait()
    max_layers = limits.get().max_layers
    if len(lowers) + 1 > max_layers:  # X08: overlay stacks at most 500 lower dirs
        snapshot.release()
        raise BuildError(f"the image would have {len(lowers) + 1} layers, more than the limit "
                         f"of {max_layers} (raise it with {limits.env_name('max_layers')}, "
                         "or squash steps)")
    if before_store is not None:
        before_store()
    chain_id = snapshot.store.commit_layer(snapshot.parent, snapshot.work, diff_id, size,
                                           source_date_epoch)
    return Commit(chain_id, changes)
