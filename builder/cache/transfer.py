"""Cache export and import as an OCI image layout (``--cache-to``/``--cache-from type=local``).

The layout holds one manifest whose config blob (media type
``application/vnd.pybuild.cache.config.v1+json``) lists the cache entries —
key, parent key, slot, the recorded inputs, created time, changes, and the
layer chain as (diff_id, blob digest) pairs — and whose layers are the layer
blobs.  The same artifact goes to a registry (``registry/cache.py``).  Reading
one back is ``cache/importer.py``: an imported cache is untrusted input.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import msgspec

from builder.cache.importer import (  # noqa: F401 - the import side, re-exported
    MEDIA_CACHE_CONFIG,
    ImportedCache,
    materialize,
    open_cache,
)
from builder.cache.records import CacheStore
from builder.errors import StoreError
from builder.image.config import MEDIA_INDEX, MEDIA_MANIFEST, go_json
from builder.store.exportview import ExportLayer, ExportOptions
from builder.store.store import Store

if TYPE_CHECKING:
    from builder.layers.safeout import OutputDir


class CacheDocument(msgspec.Struct):
    """The cache as one artifact: its config (the entry list) and the layers it needs."""

    config: bytes
    layers: dict[str, ExportLayer]

    def manifest(self) -> bytes:
        return go_json({
            "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
            "artifactType": MEDIA_CACHE_CONFIG,
            "config": {"mediaType": MEDIA_CACHE_CONFIG, "digest": self.config_digest,
                       "size": len(self.config)},
            "layers": [out.descriptor.to_json() for out in self.layers.values()]})

    @property
    def config_digest(self) -> str:
        import hashlib

        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def cache_document(store: Store, cache: CacheStore, keys: list[str],
                   compression: str = "gzip", *, for_registry: bool = False) -> CacheDocument:
    """The entries for ``keys`` with their layer chains, as the cache artifact's config.

    ``for_registry``: compressed blobs only, not re-hashed (the registry checks them).
    """
    found = [entry for entry in map(cache.lookup, dict.fromkeys(keys)) if entry is not None]
    # One call for every chain: a layer shared by several entries is read once.
    chains = store.export_chains([entry.chain_id for entry in found], ExportOptions(
        compression, verify=not for_registry, compressed=for_registry))
    entries: list[dict[str, object]] = []
    layers = {}
    for entry in found:
        chain = []
        for out in chains[entry.chain_id]:
            chain.append([out.diff_id, out.descriptor.digest, out.descriptor.media_type])
            layers[out.descriptor.digest] = out
        entries.append({"key": entry.key, "parent": entry.parent, "slot": entry.slot,
                        "inputs": entry.inputs, "created": entry.created,
                        "changes": {**entry.changes.to_record(), "layer": True},
                        "layers": chain})
    return CacheDocument(go_json({"entries": entries}), layers)


def entries_of(config: bytes, where: str) -> dict[str, dict[str, object]]:
    """The entries of a cache config blob, by key."""
    try:
        doc = json.loads(config)
        return {entry["key"]: entry for entry in doc.get("entries", [])}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StoreError(f"cache {where}: unreadable entry list") from None


def export_cache(store: Store, cache: CacheStore, keys: list[str], dest: str,
                 compression: str = "gzip") -> int:
    """Write the entries for ``keys`` (and their layers) to an OCI layout at ``dest``.

    ``dest`` may hold an earlier export (its blobs are reused) or things planted
    there: every write goes through ``OutputDir``, never through a symlink.
    """
    from builder.layers.safeout import OutputDir, components

    document = cache_document(store, cache, keys, compression)
    with OutputDir(dest, "--cache-to") as root:
        os.close(root.dir_fd(components("blobs/sha256")))
        for digest, out in document.layers.items():
            name = "blobs/sha256/" + digest.split(":", 1)[1]
            if not root.has_blob(name, digest, out.descriptor.size):
                root.write(name, out.write)
        _put(root, document.config)
        manifest = document.manifest()
        manifest_digest = _put(root, manifest)
        root.write_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        root.write_bytes("index.json", go_json({
            "schemaVersion": 2, "mediaType": MEDIA_INDEX,
            "manifests": [{"mediaType": MEDIA_MANIFEST, "digest": manifest_digest,
                           "size": len(manifest),
                           "annotations": {"org.opencontainers.image.ref.name": "cache"}}]}))
    return len(entries_of(document.config, dest))


def _put(root: OutputDir, data: bytes) -> str:
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    root.write_bytes("blobs/sha256/" + digest.split(":", 1)[1], data)
    return digest
