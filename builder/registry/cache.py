"""``--cache-to/--cache-from type=registry``: the build cache as an OCI artifact in a registry.

The artifact is the one ``cache/transfer`` writes to a directory: a manifest
with ``artifactType`` and config media type
``application/vnd.pybuild.cache.config.v1+json`` (the entry list), whose layers
are the layer blobs.  Reading is lazy: the entry list is fetched at the start
of a build, a layer blob only when an entry's key matches, straight into the
store's verified ingest.
"""

from __future__ import annotations

from pathlib import Path

from builder.cache.records import CacheStore
from builder.cache.transfer import (
    MEDIA_CACHE_CONFIG,
    ImportedCache,
    cache_document,
    entries_of,
)
from builder.errors import RegistryError
from builder.registry.client import OCI_MANIFEST
from builder.registry.progress import TransferProgress
from builder.registry.pull import open_repository
from builder.registry.push import push_blobs
from builder.registry.reference import parse_reference
from builder.store.store import Store


def push_cache(store: Store, cache: CacheStore, keys: list[str], ref_text: str, *,
               compression: str = "gzip", insecure: tuple[str, ...] = ()) -> int:
    """Push the entries for ``keys`` and their layers as the cache artifact at ``ref``."""
    ref = parse_reference(ref_text)
    document = cache_document(store, cache, keys, compression, for_registry=True)
    config_digest = store.put_blob(document.config)
    blobs = [(digest, out.descriptor.size, out.blob) for digest, out in document.layers.items()]
    blobs.append((config_digest, len(document.config), store.blob_path(config_digest)))
    repo = open_repository(ref, push=True, insecure=insecure)
    try:
        push_blobs(store, repo, blobs, TransferProgress("quiet", verb="push"))
        repo.put_manifest(ref.tag or "latest", document.manifest(), OCI_MANIFEST)
    finally:
        repo.transport.close()
    return len(entries_of(document.config, ref_text))


def open_registry_cache(ref_text: str, *,
                        insecure: tuple[str, ...] = ()) -> ImportedCache:
    """Read the cache artifact's entry list; layer blobs are fetched when a key matches.

    A cache that does not exist yet is empty (the first CI run has nothing to
    reuse), as with a local cache directory.
    """
    ref = parse_reference(ref_text)
    repo = open_repository(ref, insecure=insecure)
    try:
        manifest = repo.get_manifest(ref.digest or ref.tag or "latest")
    except RegistryError as err:
        if "not found" in str(err):
            return ImportedCache(Path(ref_text))
        raise
    config = manifest.doc.get("config") or {}
    if manifest.is_index or config.get("mediaType") != MEDIA_CACHE_CONFIG:
        raise RegistryError(f"{ref.familiar()}: not a pybuild cache (config type "
                            f"{config.get('mediaType')!r})")
    entries = entries_of(repo.fetch_document(str(config.get("digest"))), ref_text)
    sizes = {layer.get("digest"): layer.get("size") for layer in manifest.doc.get("layers", [])
             if isinstance(layer, dict)}

    def fetch(store: Store, digest: str) -> Path:
        size = sizes.get(digest)
        repo.fetch_blob(store, digest, size if isinstance(size, int) else None)
        return store.blob_path(digest)

    return ImportedCache(Path(ref_text), entries, fetch)
