"""Snapshots: a writable view over a chain of store layers, and its commit.

``prepare(store, parent_chain)`` gives an active ``Snapshot`` (lower layer dirs,
a fresh empty upper dir, a work dir).  The mount itself is made by whoever uses
the snapshot, inside a private mount namespace (``Snapshot.mount``), so the
kernel removes it when that process exits.  ``Snapshot.commit()`` turns the upper
dir into a store layer by renaming it (no copy) and returns its chain ID, or
the parent's chain ID when the step changed nothing.

Imports builder.errors, builder.syscalls, builder.layers and builder.store.
"""

from builder.snapshot.overlay import Commit, Snapshot, commit, prepare

__all__ = ["Commit", "Snapshot", "commit", "prepare"]
