"""Helpers for the snapshot tests: run a step on a snapshot, look at a chain.

Not a conftest.py: test modules elsewhere do ``from conftest import ...``, and a
second conftest module would shadow theirs when the whole suite runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from builder.run.child import in_mount_namespace
from builder.snapshot import ActiveSnapshot, Commit, commit, prepare
from builder.store import Store

EPOCH = 1_600_000_000   # clamps every mtime, so two runs of a step give one tar


def _mount_and_do(snapshot: ActiveSnapshot, action: Callable[[str], None],
                  readonly: bool) -> None:
    merged = str(snapshot.work.path / "merged")
    os.makedirs(merged, exist_ok=True)
    snapshot.mount(merged, readonly=readonly)
    action(merged)


def step(store: Store, driver: str, parent: str | None,
         action: Callable[[str], None]) -> Commit:
    """Prepare, run ``action(merged_root)`` in a private mount namespace, commit."""
    snapshot = prepare(store, parent, driver)
    try:
        in_mount_namespace(_mount_and_do, snapshot, action, False)
        return commit(snapshot, source_date_epoch=EPOCH)
    except BaseException:
        snapshot.release()
        raise


def look(store: Store, driver: str, parent: str | None,
         action: Callable[[str], object]) -> object:
    """``action(root)`` on a read-only mount of ``parent``'s chain; returns its result."""
    snapshot = prepare(store, parent, driver)
    try:
        return in_mount_namespace(_look, snapshot, action)
    finally:
        snapshot.release()


def _look(snapshot: ActiveSnapshot, action: Callable[[str], object]) -> object:
    merged = str(snapshot.work.path / "merged")
    os.makedirs(merged, exist_ok=True)
    snapshot.mount(merged, readonly=True)
    return action(merged)
