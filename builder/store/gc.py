"""Space accounting (``pybuild df``) and garbage collection (``pybuild prune``).

What is live: every tagged image; every image and layer chain that a cache entry
names (unless the cache is pruned too); and every layer below a live one.  Everything
else — untagged images, their layers, blobs nothing names — is reclaimable.
Run prune when no build is running on the same store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from builder.store.store import Store, remove_tree


@dataclass
class Usage:
    images: int
    tagged: int
    layers: int
    layers_bytes: int
    reclaimable_layers: int
    reclaimable_bytes: int
    blobs_bytes: int
    cache_entries: int
    cache_mounts_bytes: int


def _tree_size(path: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                continue
    return total


def _cache_chains(store: Store) -> list[str]:
    exists = store.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'cache_entries'")
    if exists.fetchone() is None:
        return []
    return [row[0] for row in store.db.execute(
        "SELECT DISTINCT chain_id FROM cache_entries WHERE chain_id IS NOT NULL")]


def _live(store: Store, *, keep_cache: bool) -> tuple[set[str], set[str]]:
    """(live image IDs, live chain IDs)."""
    tagged = {image_id for _name, image_id in store.tags()}
    tops = [top for image_id, top, _ in store.images() if image_id in tagged and top]
    if keep_cache:
        tops += _cache_chains(store)
    chains: set[str] = set()
    for top in tops:
        current: str | None = top
        while current is not None and current not in chains:
            chains.add(current)
            current = store.layer(current).parent
    return tagged, chains


def usage(store: Store) -> Usage:
    _, live = _live(store, keep_cache=True)
    rows = list(store.db.execute("SELECT chain_id, size FROM layers"))
    dead = [(chain, size) for chain, size in rows if chain not in live]
    blobs = store.root / "blobs" / "sha256"
    return Usage(
        images=len(store.images()), tagged=len({i for _, i in store.tags()}),
        layers=len(rows), layers_bytes=sum(size for _, size in rows),
        reclaimable_layers=len(dead), reclaimable_bytes=sum(size for _, size in dead),
        blobs_bytes=sum(p.stat().st_size for p in blobs.iterdir()) if blobs.exists() else 0,
        cache_entries=len(_cache_chains(store)),
        cache_mounts_bytes=_tree_size(store.root / "cache-mounts"))


def prune(store: Store, *, cache: bool = False) -> tuple[int, int, int]:
    """Remove what nothing live needs; returns (images, layers, blobs) removed.

    ``cache=True`` also drops the build cache and RUN cache mounts.
    """
    store.db  # noqa: B018 - open (and sweep) first
    with store._store_lock():
        if cache:
            if _cache_chains(store) or store.db.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = 'cache_entries'").fetchone():
                with store.transaction() as db:
                    db.execute("DELETE FROM cache_entries")
            if (store.root / "cache-mounts").exists():
                remove_tree(store.root / "cache-mounts")
        tagged, live = _live(store, keep_cache=not cache)
        dead_images = [(image_id, top) for image_id, top, _ in store.images()
                       if image_id not in tagged]
        dead_layers = [row for row in store.db.execute("SELECT chain_id, diff_id, short "
                                                       "FROM layers")
                       if row[0] not in live]
        dead_packed = [row[0] for row in store.db.execute("SELECT chain_id FROM packed_layers")
                       if row[0] not in live]
        with store.transaction() as db:
            db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i, _ in dead_images])
            db.executemany("DELETE FROM layers WHERE chain_id = ?",
                           [(row[0],) for row in dead_layers])
            db.executemany("DELETE FROM packed_layers WHERE chain_id = ?",
                           [(chain,) for chain in dead_packed])
        for chain_id, _diff_id, short in dead_layers:
            (store.root / "l" / short).unlink(missing_ok=True)
            remove_tree(store.layer_dir(chain_id).parent)
        live_diff_ids = {row[0] for row in store.db.execute(
            "SELECT diff_id FROM layers UNION SELECT diff_id FROM packed_layers")}
        with store.transaction() as db:
            db.execute("DELETE FROM layer_blobs WHERE diff_id NOT IN (SELECT diff_id FROM "
                       "layers UNION SELECT diff_id FROM packed_layers)")
        keep = {image_id.split(":", 1)[1] for image_id, _, _ in store.images()}
        keep |= {row[0].split(":", 1)[1] for row in
                 store.db.execute("SELECT digest FROM layer_blobs")}
        keep |= {d.split(":", 1)[1] for d in live_diff_ids}
        removed_blobs = 0
        for blob in (store.root / "blobs" / "sha256").iterdir():
            if blob.name not in keep:
                blob.unlink()
                removed_blobs += 1
        removed_blobs += _drop_partial_downloads(store)
    return len(dead_images), len(dead_layers) + len(dead_packed), removed_blobs


def _drop_partial_downloads(store: Store) -> int:
    """Interrupted pulls' partial blobs (kept for resuming) that no pull is writing now."""
    import fcntl

    removed = 0
    for partial in (store.root / "ingest").glob("*.partial"):
        fd = os.open(partial, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a pull is writing it
        else:
            partial.unlink(missing_ok=True)
            removed += 1
        finally:
            os.close(fd)
    return removed
