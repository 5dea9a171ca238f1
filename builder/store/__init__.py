"""The local store: content-addressed blobs, layer directories and metadata.

Owns everything under the store root (``/var/lib/pybuild`` as root,
``~/.local/share/pybuild`` otherwise, or ``--root``/``PYBUILD_ROOT``):

    pybuild.db              SQLite (WAL): layers (and packed_layers: pulled, not yet
                            extracted), images, tags, blob map, cache, build records
    blobs/sha256/<hex>      write-once blobs (configs, compressed layers), verified on read
    layers/<chain-hex>/diff layer contents in overlay format, shared, never copied
    l/<short>               short symlinks to layer diffs, for overlay's one-page option limit
    tmp/<name>/             work in progress, owned by a live process via flock; swept otherwise
    blobs/.incoming-<pid>-* a blob being written; swept once its process is gone
    ingest/<hex>.partial    a blob being downloaded (resumable)
    cache-mounts/<id-hash>/ RUN --mount=type=cache dirs, with the uid/mode the mount asked

The root is 0700 and everything the store makes is its owner's only (``perms``:
dirs 0700, files 0600, blobs 0400, whatever the umask); a layer's ``diff/`` tree
and a cache mount's own dir keep their modes inside 0700 parents.

Modules: ``store`` (the ``Store`` class, one base class per part: ``database`` the
connection, transactions and the store lock; ``blobs``; ``layers``; ``images``;
``export`` what an export needs, in one call), ``schema`` (every table, defined once,
and the numbered migrations), ``records`` (the cache's and explain's rows), ``names``,
``tmpdir`` (flock-owned work dirs), ``threads`` (a thread's guarded view), ``ingest``
(resumable downloads), ``perms``.  ``gc`` (df/prune), ``doctor`` (checks and repairs)
and ``remove`` (rmi) work through these APIs; no module outside this package runs SQL
on the store's tables.  ``faults`` holds the crash points that fault-injection tests
arm with PYBUILD_FAULT_POINT (docs/reliability.md).

``replays`` keeps the records of fully cached builds, which ``pybuild`` reads before
anything else is loaded: so this ``__init__`` loads ``store`` only when ``Store`` or
``default_root`` is first asked for.

Imports only builder.errors, builder.syscalls, builder.layers and the standard library.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms)
if TYPE_CHECKING:
    from builder.store.store import Store, default_root

__all__ = ["Store", "default_root"]


def __getattr__(name: str) -> object:
    """``Store`` and ``default_root``, imported on first use (PEP 562)."""
    if name not in __all__:
        raise AttributeError(f"module 'builder.store' has no attribute {name!r}")
    from builder.store import store

    return store.Store if name == "Store" else store.default_root
