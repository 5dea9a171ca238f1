"""The overlay snapshot driver: lower layers + a fresh upper dir, committed by rename."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from builder import syscalls
from builder.errors import SandboxError
from builder.store.store import Store, TmpDir

if TYPE_CHECKING:
    from builder.layers.changes import LayerChanges

# index/redirect_dir/metacopy off: with any of them on, the upper dir is no longer a
# self-contained change set (moby overlay2 check.go, buildkit#2480, catalogue W10).
_OPTIONS = "index=off,redirect_dir=off,metacopy=off"
# The whole option string must fit in one page (the kernel copies it with copy_mount_options).
_PAGE = 4096


@dataclass
class Snapshot:
    store: Store
    parent: str | None
    work: TmpDir
    extra_lowers: list[Path] = field(default_factory=list)

    @property
    def upper(self) -> Path:
        return self.work.path / "diff"

    @property
    def lowers(self) -> list[Path]:
        """Lower dirs, topmost first (extra lowers, e.g. the init layer, on top)."""
        return [*self.extra_lowers, *self.store.lower_dirs(self.parent)]

    def mount_options(self, *, readonly: bool = False) -> tuple[str, str]:
        """(directory to chdir into, overlay option string) for this snapshot.

        Lower dirs are named by their short links under ``l/`` relative to that
        directory, as Docker's overlay2 does, so that 120+ layers fit in a page.
        """
        links = self.store.short_links(self.parent)
        extra = [str(p) for p in self.extra_lowers]
        if not links and not extra:
            extra = [str(self.empty_lower())]
        lower = ":".join([*extra, *links])
        if readonly:
            if len(links) + len(extra) < 2:
                lower += ":" + str(self.empty_lower())  # read-only overlay needs two lowers
            options = f"lowerdir={lower},{_OPTIONS}"
        else:
            options = (f"lowerdir={lower},upperdir={self.upper},"
                       f"workdir={self.work.path / 'ovl-work'},{_OPTIONS}")
        if len(options) >= _PAGE:
            raise SandboxError(f"overlay: {len(self.store.chain(self.parent))} layers do not fit "
                               "the kernel's one-page mount option limit")
        return str(self.store.root / "l"), options

    def empty_lower(self) -> Path:
        empty = self.work.path / "empty"
        empty.mkdir(exist_ok=True)
        return empty

    def mount(self, target: str, *, readonly: bool = False) -> None:
        """Mount the overlay at ``target``.  Call only in a private mount namespace."""
        cwd, options = self.mount_options(readonly=readonly)
        saved = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(cwd)
            syscalls.mount("overlay", target, "overlay",
                           syscalls.MS_RDONLY if readonly else 0, options)
        except OSError as err:
            raise SandboxError(f"cannot mount overlay at {target}: {err.strerror} "
                               f"(options {options})") from None
        finally:
            os.fchdir(saved)
            os.close(saved)

    def release(self) -> None:
        self.work.release()


def prepare(store: Store, parent: str | None) -> Snapshot:
    """A new active snapshot on top of ``parent`` (a chain ID, or None for scratch)."""
    work = store.tmp_dir("snap")
    (work.path / "diff").mkdir()
    (work.path / "ovl-work").mkdir()
    return Snapshot(store, parent, work)


@dataclass
class Commit:
    """The result of committing a snapshot: the new top of the chain and what changed."""

    chain_id: str | None        # the new layer's chain ID; the parent's when nothing changed
    layer: bool                 # whether a layer was made
    changes: LayerChanges


def commit(snapshot: Snapshot, *, source_date_epoch: int | None = None) -> Commit:
    """Turn the snapshot's upper dir into a store layer by rename; no change, no layer."""
    from builder.layers.changes import layer_changes
    from builder.layers.tar_write import layer_diff_id

    lowers = snapshot.store.lower_dirs(snapshot.parent)
    changes = layer_changes(snapshot.upper, lowers=lowers)
    if not (changes.added or changes.modified or changes.deleted):
        snapshot.release()
        return Commit(snapshot.parent, False, changes)
    diff_id, size = layer_diff_id(snapshot.upper, source_date_epoch=source_date_epoch,
                                  lowers=lowers)
    chain_id = snapshot.store.commit_layer(snapshot.parent, snapshot.work, diff_id, size,
                                           source_date_epoch)
    return Commit(chain_id, True, changes)
