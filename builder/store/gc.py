"""Space accounting (``pybuild df``) and garbage collection (``pybuild prune``).

What is live: every tagged image (and every platform's image of a name built for
several); every image and layer chain that a cache entry
names (unless the cache is pruned too); and every layer below a live one.  Everything
else — untagged images, their layers, blobs nothing names — is reclaimable.
Run prune when no build is running on the same store.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from builder.store import records
from builder.store.store import Store, remove_tree


class Usage(msgspec.Struct):
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
    return list({chain for chain in records.cache_chains(store).values() if chain is not None})


def _live(store: Store, *, keep_cache: bool) -> tuple[set[str], set[str]]:
    """(live image IDs, live chain IDs)."""
    tagged = {image_id for _name, image_id in store.tags()} | store.index_members()
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
    rows = [(r.chain_id, r.size) for r in store.all_layers() if not r.packed]
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

    ``cache=True`` also drops the build cache and RUN cache mounts.  What pybuild
    remembers of build contexts (file digests by stat, directory summaries) is dropped
    for paths that are gone; all of it with ``cache``.
    """
    store.db  # noqa: B018 - open (and sweep) first
    with store.store_lock():
        if cache:
            records.drop_cache_rows(store)
            if (store.root / "cache-mounts").exists():
                remove_tree(store.root / "cache-mounts")
        tagged, live = _live(store, keep_cache=not cache)
        dead_images = [image_id for image_id, _top, _ in store.images() if image_id not in tagged]
        dead_layers = [r for r in store.all_layers() if r.chain_id not in live]
        store.remove_images(dead_images)
        store.remove_layers(dead_layers)
        kept = store.all_layers()
        store.forget_unused_layer_blobs()
        keep = {image_id.split(":", 1)[1] for image_id, _, _ in store.images()}
        keep |= {b.digest.split(":", 1)[1] for b in store.all_layer_blobs()}
        keep |= {r.diff_id.split(":", 1)[1] for r in kept}
        removed_blobs = 0
        for blob in (store.root / "blobs" / "sha256").iterdir():
            if blob.name not in keep:
                blob.unlink()
                removed_blobs += 1
        removed_blobs += _drop_partial_downloads(store)
        records.forget_context_paths(store, everything=cache)
    return len(dead_images), len(dead_layers), removed_blobs


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
