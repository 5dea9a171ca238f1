"""``--cache-to/--cache-from type=registry``: the build cache as an OCI artifact in a registry.

The artifact is the one ``cache/transfer`` writes to a directory: a manifest
with ``artifactType`` and config media type
``application/vnd.pybuild.cache.config.v1+json`` (the entry list), whose layers
are the layer blobs.  Reading is lazy: the entry list is fetched at the start
of a build, a layer blob only when an entry's key matches, straight into the
store's verified ingest; the rules for what an imported entry may use are
``cache/importer.py``'s.
"""

from __future__ import annotations

from builder.cache.importer import MAX_ENTRY_LIST, ImportedCache, hash_stream
from builder.cache.records import CacheStore
from builder.cache.transfer import cache_document, entries_of
from builder.errors import RegistryError
from builder.layers.compress import ChunkReader
from builder.registry.client import OCI_MANIFEST, Repository
from builder.registry.progress import TransferProgress
from builder.registry.pull import open_repository
from builder.registry.push import push_blobs
from builder.registry.reference import parse_reference
from builder.store.store import Store
from builder.untrusted import check_room, shown


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
    reuse), as with a local cache directory.  Everything else the registry sends
    is untrusted as a local layout is (``cache/importer.py``).
    """
    ref = parse_reference(ref_text)
    repo = open_repository(ref, insecure=insecure)
    imported = ImportedCache(ref_text)
    try:
        manifest = repo.get_manifest(ref.digest or ref.tag or "latest")
    except RegistryError as err:
        if "not found" in str(err):
            return imported
        raise
    what = f"cache {ref_text}: manifest {manifest.digest}"
    config = None if manifest.is_index else imported.add_manifest(manifest.doc, what)
    if config is None:
        raise RegistryError(f"{ref.familiar()}: not a pybuild cache (config type "
                            f"{shown(str((manifest.doc.get('config') or {}).get('mediaType')))!r})")
    imported.add_entries(repo.fetch_document(config, MAX_ENTRY_LIST),
                         f"cache {ref_text}: entry list {config}")
    imported.source = RegistrySource(repo)
    return imported


class RegistrySource:
    """Blobs of a registry cache, fetched into the store's verified ingest."""

    def __init__(self, repo: Repository):
        self.repo = repo

    def bring(self, store: Store, digest: str, size: int) -> None:
        what = self.repo.what(digest)
        if not store.has_blob(digest):
            check_room(store.root, size, what)
            self.repo.fetch_blob(store, digest, size)
            return
        # The store has these bytes, maybe from another image: the registry must still
        # show it holds them, or naming a digest would be enough to get a private layer.
        response = self.repo.transport.request(
            "GET", f"/v2/{self.repo.name}/blobs/{digest}", scope=self.repo.scope, what=what)
        try:
            hash_stream(ChunkReader(response.chunks()), digest, size, what)
        finally:
            response.close()
