"""``--cache-from``: reading a cache someone else exported, which is untrusted input.

The artifact (``cache/transfer.py`` writes it) is an OCI manifest whose config
lists the entries and whose layers are the layer blobs.  The entry list is
read at the start of a build, bounded and strictly typed; an entry is used
only when a step's key matches, and only if:

- its parent key is this build's key for the step before (the engine passes
  it), so the chain it extends is this build's and cannot be swapped for
  another image's;
- its layer list is its parent's chain (as this store has it) plus the one
  layer the step made — ``layers: []`` cannot drop the base layers (an entry
  with no layer of its own is an older pybuild's, from before a step that
  changed nothing got the empty layer: skipped, the step runs);
- that new layer's blob is one of this source's blobs, read from the source
  (a regular file beneath the layout dir, or the registry), verified against
  its digest, with a media type that names the compression of its bytes, and
  decompresses to the diff_id the entry claims.  A chain that already exists
  here (another image's, maybe private) is reused only once the source's own
  blob proved that diff_id: naming a diff_id is not owning its content.

A refused entry is skipped with a one-line warning and the step runs; a layout
that cannot be read at all (index, manifest, entry list) is a one-line error.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

import msgspec

from builder import limits
from builder.cache.keys import PLANNED, Inputs
from builder.cache.records import CacheEntry, CacheStore
from builder.errors import LayerError, RegistryError, StoreError
from builder.layers.summary import LARGEST_KEPT, ChangedFile, ChangeKind, ChangeSummary
from builder.store.store import LayerBlobRecord, Store, chain_id_of, check_digest
from builder.untrusted import (
    MAX_DOCUMENT,
    Budget,
    UntrustedDir,
    check_room,
    need,
    need_digest,
    parse_json,
    shown,
)

MEDIA_CACHE_CONFIG = "application/vnd.pybuild.cache.config.v1+json"
MAX_ENTRY_LIST = 16 << 20  # the entry list of a big mode=max cache; a manifest stays 4 MiB
_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
COMPRESSION_OF = {
    _OCI_LAYER: "none", _OCI_LAYER + "+gzip": "gzip", _OCI_LAYER + "+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
}
MEDIA_OF = {"none": _OCI_LAYER, "gzip": _OCI_LAYER + "+gzip", "zstd": _OCI_LAYER + "+zstd"}
_CREATED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
_PARENT = re.compile(r"^(scratch|image sha256:[0-9a-f]{64}|sha256:[0-9a-f]{64})$")
_COUNTS = ("added", "modified", "deleted", "bytes")
_SHOWN_SKIPS = 5


class ImportedLayer(msgspec.Struct, frozen=True):
    diff_id: str
    digest: str
    media_type: str


class ImportedEntry(msgspec.Struct, frozen=True):
    """One entry of an imported entry list, every field checked for type and form."""

    key: str
    parent: str
    slot: str
    inputs: list[tuple[str, str]]
    created: str
    layer: bool
    changes: ChangeSummary
    layers: list[ImportedLayer]

    @staticmethod
    def parse(raw: Any, what: str) -> ImportedEntry:
        raw = need(raw, dict, what)
        key = need_digest(raw.get("key"), f"{what}: key")
        what = f"{what} {key[:19]}"
        parent = need(raw.get("parent"), str, f"{what}: parent")
        slot = need(raw.get("slot"), str, f"{what}: slot")
        created = need(raw.get("created"), str, f"{what}: created")
        if not _PARENT.match(parent) or not _CREATED.match(created) \
                or not (slot.isprintable() and 0 < len(slot) <= 512):
            raise StoreError(f"{what}: parent, slot or created is malformed "
                             f"('{shown(parent, 30)}', '{shown(slot, 30)}', "
                             f"'{shown(created, 30)}')")
        inputs = [_pair(pair, f"{what}: inputs") for pair in
                  need(raw.get("inputs"), list, f"{what}: inputs")]
        changes = need(raw.get("changes"), dict, f"{what}: changes")
        counts = [_count(changes.get(name, 0), f"{what}: changes.{name}") for name in _COUNTS]
        largest = tuple(_changed_file(item, f"{what}: changes.largest") for item in
                        need(changes.get("largest", []), list, f"{what}: changes.largest"))
        if len(largest) > LARGEST_KEPT:
            raise StoreError(f"{what}: changes.largest lists more than {LARGEST_KEPT} files")
        layers = [_layer(item, f"{what}: layers") for item in
                  need(raw.get("layers"), list, f"{what}: layers")]
        if len(layers) > limits.get().max_layers:
            raise StoreError(f"{what}: {len(layers)} layers, more than the limit")
        summary = ChangeSummary(counts[0], counts[1], counts[2], counts[3], largest)
        return ImportedEntry(key, parent, slot, inputs, created,
                             need(changes.get("layer", False), bool, f"{what}: changes.layer"),
                             summary, layers)


def _changed_file(value: Any, what: str) -> ChangedFile:
    item = need(value, dict, what)
    path, size = need(item.get("path"), str, what), _count(item.get("size"), what)
    kind = need(item.get("kind"), str, what)
    if kind not in {k.value for k in ChangeKind} or not path.startswith("/") \
            or len(path) > 4096:
        raise StoreError(f"{what}: a file entry is malformed ('{shown(path, 30)}', "
                         f"'{shown(kind, 12)}')")
    return ChangedFile(path, size, ChangeKind(kind))


def _pair(value: Any, what: str) -> tuple[str, str]:
    pair = need(value, list, what)
    if len(pair) != 2:
        raise StoreError(f"{what}: an input is not a [name, value] pair")
    return need(pair[0], str, what), need(pair[1], str, what)


def _count(value: Any, what: str) -> int:
    number: int = need(value, int, what)
    if not 0 <= number < 1 << 63:  # SQLite's integers; renderers divide and format it
        raise StoreError(f"{what}: out of range")
    return number


def _layer(value: Any, what: str) -> ImportedLayer:
    triple = need(value, list, what)
    if len(triple) != 3:
        raise StoreError(f"{what}: a layer is not [diff_id, digest, media type]")
    diff_id, digest, media_type = (need(v, str, what) for v in triple)
    if media_type not in COMPRESSION_OF:
        raise StoreError(f"{what}: unsupported layer media type {shown(media_type)!r}")
    return ImportedLayer(need_digest(diff_id, what), need_digest(digest, what), media_type)


class BlobSource(Protocol):
    """Where an imported cache's blobs come from: a layout directory or a registry."""

    def bring(self, store: Store, digest: str, size: int) -> None:
        """Put the source's blob into the store, verified; read from the source even
        when the store has it already (the source must prove it holds the bytes)."""


def _warn(message: str) -> None:
    sys.stderr.write(f"pybuild: warning: {message}\n")


class ImportedCache(msgspec.Struct):
    """Entries read from one ``--cache-from`` source; blobs are read when a key matches."""

    what: str
    source: BlobSource | None = None
    entries: dict[str, ImportedEntry] = msgspec.field(default_factory=dict)
    blobs: dict[str, tuple[int, str]] = msgspec.field(default_factory=dict)  # digest: size, type
    warn: Callable[[str], None] = _warn

    def add_manifest(self, manifest: Any, what: str) -> str | None:
        """Note the manifest's layer blobs; the config digest if it is a pybuild cache."""
        manifest = need(manifest, dict, what)
        config = need(manifest.get("config"), dict, f"{what}: config")
        if config.get("mediaType") != MEDIA_CACHE_CONFIG:
            return None
        for layer in need(manifest.get("layers"), list, f"{what}: layers"):
            layer = need(layer, dict, f"{what}: layer")
            size = _count(layer.get("size"), f"{what}: layer size")
            self.blobs[need_digest(layer.get("digest"), f"{what}: layer digest")] = \
                (size, need(layer.get("mediaType"), str, f"{what}: layer mediaType"))
        return need_digest(config.get("digest"), f"{what}: config digest")

    def add_entries(self, data: bytes, what: str) -> None:
        """Parse an entry list; a malformed entry is skipped with a warning."""
        doc = need(parse_json(data, what), dict, what)
        skipped = []
        for i, raw in enumerate(need(doc.get("entries"), list, f"{what}: entries")):
            try:
                entry = ImportedEntry.parse(raw, f"entry {i}")
            except StoreError as err:
                skipped.append(str(err))
                continue
            self.entries[entry.key] = entry
        for message in skipped[:_SHOWN_SKIPS]:
            self.warn(f"cache {self.what}: {shown(message, 400)}; skipped")
        if len(skipped) > _SHOWN_SKIPS:
            self.warn(f"cache {self.what}: {len(skipped) - _SHOWN_SKIPS} more malformed "
                      "entries skipped")


def open_cache(src: str) -> ImportedCache:
    """Read a ``--cache-from type=local`` layout's entry list (blobs stay where they are)."""
    imported = ImportedCache(src)
    if not os.path.lexists(src):
        return imported  # a cache that was never exported yet: nothing to reuse
    layout = UntrustedDir(src, f"cache {src}")
    if not layout.exists("index.json"):
        layout.close()
        return imported
    imported.source = LayoutSource(layout)
    budget = Budget()
    where = f"cache {src}: index.json"
    index_data = layout.read("index.json", MAX_DOCUMENT)
    budget.charge(len(index_data), where)
    index = need(parse_json(index_data, where), dict, where)
    descriptors = need(index.get("manifests"), list, f"{where} manifests")
    budget.manifests(len(descriptors), where)
    digests = [need_digest(need(d, dict, f"{where} manifests").get("digest"), where)
               for d in descriptors]
    # Each distinct manifest and entry list is read, hashed and parsed once (D).
    configs: dict[str, None] = {}
    for digest in dict.fromkeys(digests):
        what = f"cache {src}: manifest {digest}"
        config = imported.add_manifest(
            parse_json(_read_verified(layout, digest, MAX_DOCUMENT, budget), what), what)
        if config is not None:
            configs[config] = None
    for config in configs:
        imported.add_entries(_read_verified(layout, config, MAX_ENTRY_LIST, budget),
                             f"cache {src}: entry list {config}")
    return imported


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + check_digest(digest).split(":", 1)[1]


def _read_verified(layout: UntrustedDir, digest: str, limit: int, budget: Budget) -> bytes:
    data = layout.read(_blob_name(digest), limit)
    budget.charge(len(data), f"{layout.what}: blob {digest}")
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise StoreError(f"{layout.what}: blob {digest} does not match its digest")
    return data


def hash_stream(src: io.RawIOBase | BinaryIO, digest: str, size: int, what: str) -> None:
    """Read ``src`` (at most ``size`` + 1 bytes) and check it is exactly the blob ``digest``."""
    hasher, seen = hashlib.sha256(), 0
    while seen <= size and (chunk := src.read(min(1 << 20, size + 1 - seen))):
        hasher.update(chunk)
        seen += len(chunk)
    if seen != size or "sha256:" + hasher.hexdigest() != digest:
        raise StoreError(f"{what}: blob {digest} does not match its digest")


class LayoutSource:
    """Blobs of a cache layout directory, opened beneath it as regular files only."""

    def __init__(self, layout: UntrustedDir):
        self.layout = layout

    def bring(self, store: Store, digest: str, size: int) -> None:
        with self.layout.open(_blob_name(digest)) as blob:
            if blob.size != size:
                raise StoreError(f"{self.layout.what}: blob {digest} has {blob.size} bytes, "
                                 f"the manifest says {size}")
            if store.has_blob(digest):
                hash_stream(blob, digest, size, self.layout.what)
                return
            check_room(store.root, size, f"{self.layout.what}: blob {digest}")
            store.put_blob_stream(blob, expected=digest)  # type: ignore[arg-type]


def peek(imported: ImportedCache, key: str, parent: str) -> CacheEntry | None:
    """``explain --plan``: the entry the build would try for ``key``, its layer neither
    fetched nor checked (the build may still refuse it: then it runs the step)."""
    entry = imported.entries.get(key)
    if entry is None or imported.source is None or entry.parent != parent:
        return None
    return CacheEntry(key=entry.key, parent=entry.parent, slot=entry.slot,
                      inputs=list(entry.inputs), chain_id=PLANNED + key,
                      created=entry.created, changes=entry.changes)


def materialize(store: Store, cache: CacheStore, imported: ImportedCache,
                key: str, parent: str, slot: str, inputs: Inputs) -> CacheEntry | None:
    """Bring an imported entry's layer into the store and record the entry locally;
    None (with a warning for a refused entry) when there is nothing usable.

    ``parent`` is this build's key for the step before (its base image's for the
    first step): the entry must name it as its parent.  The local record takes this
    build's ``slot`` and recorded ``inputs`` (the key matched, so they are the inputs
    the entry was made from), never the entry's own: they would become the baseline
    that later misses are explained against, and the source is untrusted.
    """
    entry = imported.entries.pop(key, None)  # one try per key: a refusal is said once
    if entry is None or imported.source is None:
        return None
    try:
        if entry.parent != parent:
            raise StoreError("its parent is not this build's step before it")
        chain_id = _take(store, cache, imported.source, imported.blobs, entry)
    except (StoreError, LayerError, RegistryError) as err:
        imported.warn(f"cache {imported.what}: entry {key}: {shown(str(err), 400)}; "
                      "skipped, the step runs")
        return None
    local = CacheEntry(key=entry.key, parent=entry.parent, slot=slot, inputs=list(inputs),
                       chain_id=chain_id, created=entry.created, changes=entry.changes)
    cache.record(local)
    return local


def _take(store: Store, cache: CacheStore, source: BlobSource,
          blobs: dict[str, tuple[int, str]], entry: ImportedEntry) -> str:
    """The entry's chain, once every rule in the module docstring holds."""
    parent = _parent_chain(store, cache, entry.parent)
    have = [record.diff_id for record in store.chain(parent)]
    claimed = [layer.diff_id for layer in entry.layers]
    if claimed[:len(have)] != have or len(claimed) - len(have) not in (0, 1):
        raise StoreError(f"its {len(claimed)} layers do not extend the {len(have)} of the "
                         "step before it by at most one")
    if entry.layer != (len(claimed) > len(have)):
        raise StoreError("its 'layer' flag contradicts its layer list")
    if not entry.layer:
        raise StoreError("it records no layer for the step (an older pybuild's export; "
                         "a step that changes nothing now makes the empty layer)")
    return _take_layer(store, source, blobs, entry.layers[-1], parent)


def _parent_chain(store: Store, cache: CacheStore, parent: str) -> str | None:
    """The chain this store has for the parent key (the base image's, or the step's)."""
    if parent == "scratch":
        return None
    if parent.startswith("image "):
        return store.image_top_chain(parent.removeprefix("image "))
    local = cache.lookup(parent)
    if local is None:
        raise StoreError("the step before it is not cached here")
    return local.chain_id


def _take_layer(store: Store, source: BlobSource, blobs: dict[str, tuple[int, str]],
                layer: ImportedLayer, parent: str | None) -> str:
    """Bring the step's layer from the source's verified blob; its chain ID."""
    from builder.layers.blob import blob_diff_id

    if layer.digest not in blobs:
        raise StoreError(f"layer blob {layer.digest} is not one of the source's blobs")
    size, listed = blobs[layer.digest]
    compression = COMPRESSION_OF[layer.media_type]
    if COMPRESSION_OF.get(listed) != compression:
        raise StoreError(f"layer blob {layer.digest}: the manifest says "
                         f"{shown(listed)!r}, the entry {layer.media_type}")
    had = store.has_blob(layer.digest)
    source.bring(store, layer.digest, size)
    chain_id = chain_id_of(parent, layer.diff_id)
    blob = store.blob_path(layer.digest)
    try:
        if store.has_layer(chain_id):  # here already: used once the blob proves it
            with open(blob, "rb") as raw:
                actual, _ = blob_diff_id(raw, layer.digest, size, expect=compression)
            _same(actual, layer)
        else:
            work, actual, tar_size = store.extract(blob, layer.digest, expect=compression)
            try:
                _same(actual, layer)
                store.commit_layer(parent, work, actual, tar_size)
            except BaseException:
                work.release()
                raise
    except (StoreError, LayerError):
        if not had:
            store.drop_blob(layer.digest)
        raise
    if compression not in {b.compression for b in store.layer_blobs(layer.diff_id)}:
        # The type written later (exports) follows from the bytes, not from the source.
        store.record_layer_blob(LayerBlobRecord(layer.diff_id, compression, layer.digest,
                                                size, MEDIA_OF[compression]))
    return chain_id


def _same(actual: str, layer: ImportedLayer) -> None:
    if actual != layer.diff_id:
        raise StoreError(f"layer blob {layer.digest} has diff_id {actual}, the entry "
                         f"says {layer.diff_id}")
