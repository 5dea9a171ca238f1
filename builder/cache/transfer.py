"""Cache export and import as an OCI image layout (``--cache-to``/``--cache-from type=local``).

The layout holds one manifest whose config blob (media type
``application/vnd.pybuild.cache.config.v1+json``) lists the cache entries —
key, parent key, slot, the recorded inputs, created time, changes, and the
layer chain as (diff_id, blob digest) pairs — and whose layers are the layer
blobs.  Importing is lazy: the config is read at start, a layer blob only when
an entry's key matches, verified against its digest before it is applied.
The same artifact goes to a registry (``registry/cache.py``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from builder.cache.records import CacheEntry, CacheStore
from builder.errors import StoreError
from builder.image.archive import LayerOut, layer_for_export
from builder.image.config import MEDIA_INDEX, MEDIA_MANIFEST, go_json
from builder.store.store import LayerBlobRecord, Store, chain_id_of, check_digest

MEDIA_CACHE_CONFIG = "application/vnd.pybuild.cache.config.v1+json"


@dataclass
class ImportedCache:
    """Entries read from one ``--cache-from`` source, with blobs fetched on demand.

    ``fetch``, when set, brings a blob into the given store (a registry cache)
    and returns its path; otherwise blobs are read from the layout at ``root``.
    """

    root: Path
    entries: dict[str, dict] = field(default_factory=dict)
    fetch: Callable[[Store, str], Path] | None = None

    def blob(self, digest: str, store: Store | None = None) -> Path:
        if self.fetch is not None and store is not None:
            return self.fetch(store, check_digest(digest))
        return self.root / "blobs" / "sha256" / check_digest(digest).split(":", 1)[1]


@dataclass
class CacheDocument:
    """The cache as one artifact: its config (the entry list) and the layers it needs."""

    config: bytes
    layers: dict[str, LayerOut]

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
    entries, layers = [], {}
    for key in dict.fromkeys(keys):
        entry = cache.lookup(key)
        if entry is None:
            continue
        chain = []
        for record in store.chain(entry.chain_id):
            out = layer_for_export(store, record.chain_id, compression,
                                   verify=not for_registry, compressed=for_registry)
            chain.append([record.diff_id, out.descriptor.digest, out.descriptor.media_type])
            layers[out.descriptor.digest] = out
        entries.append({"key": entry.key, "parent": entry.parent, "slot": entry.slot,
                        "inputs": entry.inputs, "created": entry.created,
                        "changes": entry.changes, "layers": chain})
    return CacheDocument(go_json({"entries": entries}), layers)


def entries_of(config: bytes, where: str) -> dict[str, dict]:
    """The entries of a cache config blob, by key."""
    try:
        doc = json.loads(config)
        return {entry["key"]: entry for entry in doc.get("entries", [])}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StoreError(f"cache {where}: unreadable entry list") from None


def export_cache(store: Store, cache: CacheStore, keys: list[str], dest: str,
                 compression: str = "gzip") -> int:
    """Write the entries for ``keys`` (and their layers) to an OCI layout at ``dest``."""
    root = Path(dest)
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    document = cache_document(store, cache, keys, compression)
    for digest, out in document.layers.items():
        target = root / "blobs" / "sha256" / digest.split(":", 1)[1]
        if not target.exists():
            source = out.blob
            if source is None:  # an uncompressed layer streamed from its dir
                from builder.layers.tar_write import write_layer_tar

                with open(target, "wb") as sink:
                    write_layer_tar(store.layer_dir(out.chain_id), sink,
                                    **store.layer_tar_options(out.chain_id))
            else:
                shutil.copyfile(source, target)
    _put(root, document.config)
    manifest = document.manifest()
    manifest_digest = _put(root, manifest)
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_bytes(go_json({
        "schemaVersion": 2, "mediaType": MEDIA_INDEX,
        "manifests": [{"mediaType": MEDIA_MANIFEST, "digest": manifest_digest,
                       "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": "cache"}}]}))
    return len(entries_of(document.config, dest))


def _put(root: Path, data: bytes) -> str:
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
    return digest


def _read_verified(path: Path, digest: str) -> bytes:
    import hashlib

    try:
        data = path.read_bytes()
    except OSError as err:
        raise StoreError(f"cache {path.parent.parent.parent}: {err.strerror}: {path.name}") \
            from None
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise StoreError(f"cache blob {digest} in {path.parent} does not match its digest")
    return data


def open_cache(src: str) -> ImportedCache:
    """Read a ``--cache-from`` layout's entry list (blobs stay where they are)."""
    root = Path(src)
    imported = ImportedCache(root)
    try:
        index = json.loads((root / "index.json").read_bytes())
    except FileNotFoundError:
        return imported  # a cache that was never exported yet: nothing to reuse
    except (OSError, ValueError) as err:
        raise StoreError(f"cache {src}: unreadable index.json: {err}") from None
    for descriptor in index.get("manifests", []):
        manifest = json.loads(_read_verified(imported.blob(descriptor["digest"]),
                                             descriptor["digest"]))
        config = manifest.get("config", {})
        if config.get("mediaType") != MEDIA_CACHE_CONFIG:
            continue
        imported.entries.update(entries_of(
            _read_verified(imported.blob(config["digest"]), config["digest"]), src))
    return imported


def materialize(store: Store, cache: CacheStore, imported: ImportedCache,
                key: str) -> CacheEntry | None:
    """Bring an imported entry's layers into the store and record it locally."""
    raw = imported.entries.get(key)
    if raw is None:
        return None
    parent: str | None = None
    for diff_id, digest, media_type in raw["layers"]:
        chain_id = chain_id_of(parent, diff_id)
        if not store.has_layer(chain_id):
            source = imported.blob(digest, store)
            if source != store.blob_path(digest):
                with open(source, "rb") as src:
                    store.put_blob_stream(src, expected=digest)
            made, _ = store.apply_blob(store.blob_path(digest), parent, digest,
                                       diff_id=diff_id)
            if made != chain_id:
                raise StoreError(f"cache layer {digest}: content gives {made}, "
                                 f"the cache says {chain_id}")
            compression = media_type.rsplit("+", 1)[1] if "+" in media_type else "none"
            store.record_layer_blob(LayerBlobRecord(
                diff_id, compression, digest, store.blob_path(digest).stat().st_size,
                media_type))
        parent = chain_id
    entry = CacheEntry(key=raw["key"], parent=raw["parent"], slot=raw["slot"],
                       inputs=[tuple(i) for i in raw["inputs"]], chain_id=parent,
                       created=raw["created"], changes=raw["changes"])
    cache.record(entry)
    return entry
