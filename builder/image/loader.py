"""``pybuild load``: images from a docker-archive or an OCI layout (tar or directory).

Every blob is copied into the store and verified against its digest before it is
used; a docker-archive layer (named by path, not digest) is verified against the
config's diff_id after it is applied.  A layout directory is as untrusted as a
tar: files beneath it only, regular files only, bounded reads, strict JSON.
Every blob an image needs is in the store before its first layer is applied, so
a refused blob leaves no image, tag or layer behind (half-applied layers live in
tmp/ and are swept).  A layer whose chain the store already has (maybe a private
image's) is reused only after the archive's own blob was read and proved its
digest and diff_id: naming a diff_id is not owning its content.  Each distinct
manifest and config is read and parsed once, all before the first image is
stored, within the source's caps (``limits.max_manifests``, ``max_parsed_bytes``).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

import msgspec

from builder import limits
from builder.errors import StoreError
from builder.store.store import LayerBlobRecord, Store, chain_id_of, check_digest
from builder.untrusted import (
    Budget,
    UntrustedDir,
    check_room,
    need,
    need_digest,
    parse_json,
    shown,
)

_MAX_JSON = 16 << 20  # manifests and configs are small; refuse anything huge


class _Archive:
    """Read members of a tar archive, or files beneath a directory, by name.

    A directory is untrusted as a tar is: its files are opened beneath it without
    following any symlink, must be regular files, and are read up to their size
    (``builder/untrusted.py``), so a FIFO or a link to ``/dev/zero`` is refused.
    """

    def __init__(self, path: str, shown_as: str | None = None):
        self.path = Path(shown_as or path)  # for messages: "stdin" for a spooled stream
        self.dir = UntrustedDir(path) if Path(path).is_dir() else None
        self.tar = None if self.dir else tarfile.open(path)  # noqa: SIM115
        # Each distinct document is read and parsed once, within one budget (D):
        # an index naming one manifest 48 000 times costs one read.
        self.budget = Budget()
        self.documents: dict[str, bytes] = {}
        self.diff_ids: dict[str, list[str]] = {}

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
        if self.dir is not None:
            self.dir.close()

    def exists(self, name: str) -> bool:
        if self.dir is not None:
            return self.dir.exists(name)
        assert self.tar is not None
        try:
            self.tar.getmember(name)
        except KeyError:
            return False
        return True

    @contextmanager
    def open(self, name: str, size: int | None = None) -> Iterator[BinaryIO]:
        """A member's contents; a directory's file must have ``size`` (a descriptor's),
        so that nothing bigger than declared is ever copied."""
        if ".." in Path(name).parts or name.startswith("/"):
            raise StoreError(f"{self.path}: refusing member name {shown(name)!r}")
        if self.dir is not None:
            with self.dir.open(name) as f:
                _check_size(self.path, name, f.size, size)
                yield cast(BinaryIO, f)
            return
        assert self.tar is not None
        try:
            info = self.tar.getmember(name)
            member = self.tar.extractfile(info)
        except KeyError:
            member = None
        if member is None:
            raise StoreError(f"{self.path}: {shown(name)} is missing from the archive")
        # No size check here: the tar bounds the member, and a wrong one fails its
        # digest (the message users know: "expected sha256:...").
        with member:
            yield member  # type: ignore[misc]

    def size(self, name: str) -> int:
        """A member's size (the ratio cap of its decompression is measured from it)."""
        if self.dir is not None:
            with self.dir.open(name) as f:
                return f.size
        assert self.tar is not None
        return self.tar.getmember(name).size

    def read(self, name: str, size: int | None = None) -> bytes:
        if name in self.documents:
            return self.documents[name]
        with self.open(name, size) as f:
            data = f.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise StoreError(f"{self.path}: {shown(name)} is too large")
        self.budget.charge(len(data), f"{self.path}: {shown(name)}")
        self.documents[name] = data
        return data

    def json(self, name: str) -> Any:
        return parse_json(self.read(name), f"{self.path}: {shown(name)}")


def _check_size(path: Path, name: str, actual: int, declared: int | None) -> None:
    if declared is not None and actual != declared:
        raise StoreError(f"{path}: {shown(name)} has {actual} bytes, its descriptor says "
                         f"{declared}")


class _LayerRef(msgspec.Struct, frozen=True):
    """Where a layer's blob is: by digest (OCI, with its descriptor's size) or by name."""

    member: str
    digest: str | None = None
    size: int | None = None


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + check_digest(digest).split(":", 1)[1]


def load_archive(store: Store, path: str,
                 shown_as: str | None = None) -> list[tuple[str, list[str]]]:
    """Load every image in the archive; returns (image ID, tags) pairs.  Messages
    name it ``shown_as`` if given (a spooled stdin)."""
    try:
        archive = _Archive(path, shown_as)
    except (OSError, tarfile.TarError) as err:
        # tarfile lists each method it tried on lines of their own: one line here.
        why = err.strerror if isinstance(err, OSError) and err.strerror else \
            "not a tar archive (plain, gzip, bzip2 or xz) nor a directory"
        raise StoreError(f"{shown_as or path}: not a readable archive: {why}") from None
    try:
        if archive.exists("index.json"):
            return _load_oci(store, archive)
        if archive.exists("manifest.json"):
            return _load_docker(store, archive)
        raise StoreError(f"{archive.path}: neither an OCI layout (index.json) nor a docker-archive "
                         "(manifest.json)")
    finally:
        archive.close()


def load_layout_image(store: Store, path: str, *, tag: str = "", digest: str = "") -> str:
    """One image of an OCI layout directory (``--build-context NAME=oci-layout://DIR``),
    by ``digest``, else by ``tag`` as buildx's ``resolveDigest`` finds it (the
    ``io.containerd.image.name``, then the ``org.opencontainers.image.ref.name``
    annotation, else the layout's only manifest); loaded as ``pybuild load`` loads,
    untagged.  Returns the image ID."""
    try:
        archive = _Archive(path)
    except (OSError, tarfile.TarError) as err:
        raise StoreError(f"{path}: not a readable OCI layout: {err}") from None
    try:
        if not digest:
            where = f"{archive.path}: index.json"
            index = need(archive.json("index.json"), dict, where)
            found = need(index.get("manifests"), list, f"{where}: manifests")
            archive.budget.manifests(len(found), where)
            descriptors = [need(d, dict, f"{where}: manifests") for d in found]
            picked = _by_tag(descriptors, tag, where) or (
                descriptors[0] if len(descriptors) == 1 else None)
            if picked is None:
                raise StoreError(f"{where}: no manifest named {shown(tag)!r} and not exactly "
                                 "one manifest: failed to resolve digest")
            digest = need_digest(picked.get("digest"), f"{where}: manifest digest")
        return _load_image(store, archive, *_read_manifest(archive, check_digest(digest)))
    finally:
        archive.close()


def _by_tag(descriptors: list[dict[str, Any]], tag: str, where: str) -> dict[str, Any] | None:
    for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
        for descriptor in descriptors:
            annotations = need(descriptor.get("annotations") or {}, dict, f"{where}: annotations")
            if annotations.get(key) == tag:
                return descriptor
    return None


def _load_oci(store: Store, archive: _Archive) -> list[tuple[str, list[str]]]:
    where = f"{archive.path}: index.json"
    index = need(archive.json("index.json"), dict, where)
    descriptors = need(index.get("manifests"), list, f"{where}: manifests")
    archive.budget.manifests(len(descriptors), where)
    # Every document is read and parsed (each distinct one once) before the first
    # image is stored, so a cap hit or a malformed config leaves no image behind.
    plans: dict[str, tuple[bytes, list[_LayerRef]]] = {}
    named = []
    for descriptor in descriptors:
        descriptor = need(descriptor, dict, f"{where}: manifests")
        digest = need_digest(descriptor.get("digest"), f"{where}: manifest digest")
        annotations = need(descriptor.get("annotations") or {}, dict, f"{where}: annotations")
        name = need(annotations.get("io.containerd.image.name") or "", str,
                    f"{where}: image name")
        if digest not in plans:
            plans[digest] = _read_manifest(archive, digest)
        named.append((digest, [_familiar(name)] if name else []))
    images = {digest: _load_image(store, archive, *plan) for digest, plan in plans.items()}
    loaded: dict[str, list[str]] = {}
    for digest, tags in named:
        _note(loaded, images[digest], tags)
    return list(loaded.items())


def _note(loaded: dict[str, list[str]], image_id: str, tags: list[str]) -> None:
    """Record an image's tags; an image listed twice is reported once."""
    known = loaded.setdefault(image_id, [])
    known.extend(tag for tag in tags if tag not in known)


def _read_manifest(archive: _Archive, digest: str) -> tuple[bytes, list[_LayerRef]]:
    """An image's config and layers, every document of it read and checked."""
    what = f"{archive.path}: manifest {digest}"
    manifest = need(_verified_json(archive, digest, what), dict, what)
    media_type = manifest.get("mediaType")
    if (isinstance(media_type, str) and media_type.endswith("index.v1+json")) \
            or "manifests" in manifest:
        raise StoreError(f"{archive.path}: multi-platform indexes are not loaded yet "
                         "(issue 7 adds platform selection)")
    layers = [_oci_layer(layer, what)
              for layer in need(manifest.get("layers"), list, f"{what}: layers")]
    config = need(manifest.get("config"), dict, f"{what}: config")
    config_digest = need_digest(config.get("digest"), f"{what}: config digest")
    config_data = _verified(archive, config_digest, f"{what}: config")
    _diff_ids(archive, config_data, config_digest)
    return config_data, layers


def _oci_layer(layer: Any, what: str) -> _LayerRef:
    layer = need(layer, dict, f"{what}: layer")
    digest = need_digest(layer.get("digest"), f"{what}: layer digest")
    size = need(layer.get("size"), int, f"{what}: layer size")
    if size < 0:
        raise StoreError(f"{what}: layer {digest} has a negative size")
    return _LayerRef(_blob_name(digest), digest, size)


def _load_docker(store: Store, archive: _Archive) -> list[tuple[str, list[str]]]:
    where = f"{archive.path}: manifest.json"
    entries = need(archive.json("manifest.json"), list, where)
    archive.budget.manifests(len(entries), where)
    plans: dict[tuple[str, tuple[str, ...]], bytes] = {}  # a repeated entry: read once
    named = []
    for entry in entries:
        entry = need(entry, dict, where)
        config_name = need(entry.get("Config"), str, f"{where}: Config")
        names = tuple(need(name, str, f"{where}: Layers")
                      for name in need(entry.get("Layers"), list, f"{where}: Layers"))
        tags = [need(tag, str, f"{where}: RepoTags")
                for tag in need(entry.get("RepoTags") or [], list, f"{where}: RepoTags")]
        if (config_name, names) not in plans:
            config_data = archive.read(config_name)
            _diff_ids(archive, config_data, "sha256:" + hashlib.sha256(config_data).hexdigest())
            plans[config_name, names] = config_data
        named.append(((config_name, names), tags))
    images = {key: _load_image(store, archive, config_data, [_LayerRef(n) for n in key[1]])
              for key, config_data in plans.items()}
    loaded: dict[str, list[str]] = {}
    for key, tags in named:
        _note(loaded, images[key], tags)
    return list(loaded.items())


def _verified(archive: _Archive, digest: str, what: str) -> bytes:
    """A small blob of the layout, bounded and checked against its digest."""
    data = archive.read(_blob_name(digest))
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise StoreError(f"{what}: blob {digest} does not match its digest")
    return data


def _verified_json(archive: _Archive, digest: str, what: str) -> Any:
    return parse_json(_verified(archive, digest, what), what)


def _diff_ids(archive: _Archive, config_data: bytes, config_digest: str) -> list[str]:
    if config_digest in archive.diff_ids:  # a config shared by many entries: parsed once
        return archive.diff_ids[config_digest]
    what = f"image {config_digest}"
    config = need(parse_json(config_data, what), dict, what)
    rootfs = need(config.get("rootfs"), dict, f"{what}: rootfs")
    diff_ids = [need_digest(d, f"{what}: diff_id")
                for d in need(rootfs.get("diff_ids"), list, f"{what}: rootfs.diff_ids")]
    archive.diff_ids[config_digest] = diff_ids
    return diff_ids


def _load_image(store: Store, archive: _Archive, config_data: bytes,
                layers: list[_LayerRef]) -> str:
    config_digest = "sha256:" + hashlib.sha256(config_data).hexdigest()
    diff_ids = _diff_ids(archive, config_data, config_digest)
    if len(diff_ids) != len(layers):
        raise StoreError(f"image {config_digest}: config names {len(diff_ids)} layers, "
                         f"the manifest {len(layers)}")
    max_layers = limits.get().max_layers
    if len(layers) > max_layers:  # X08: refuse before extracting anything
        raise StoreError(f"image {config_digest}: {len(layers)} layers, more than the limit "
                         f"of {max_layers} (raise it with {limits.env_name('max_layers')})")
    chain_ids, parent = [], None
    for diff_id in diff_ids:
        parent = chain_id_of(parent, diff_id)
        chain_ids.append(parent)
    # A layer this store has already (maybe a private image's) is reused only once
    # the archive's own blob proved its diff_id: naming a diff_id is not owning it
    # (C).  Proven first, so a refusal leaves nothing behind.
    missing = []
    for i, chain in enumerate(chain_ids):
        if store.has_layer(chain):
            _prove(archive, layers[i], diff_ids[i], f"image {config_digest}: layer {i + 1}")
        else:
            missing.append(i)
    # Every missing layer's blob is read (bounded, verified) before any layer is
    # applied: a refused blob leaves no layer behind, and the blobs this load added
    # are removed again.
    blobs = _put_blobs(store, archive, [layers[i] for i in missing])
    for i, (blob_digest, size) in zip(missing, blobs, strict=True):
        _apply(store, config_digest, diff_ids[i], chain_ids[i],
               chain_ids[i - 1] if i else None, blob_digest, size)
    return store.put_image(config_data, chain_ids[-1] if chain_ids else None)


def _prove(archive: _Archive, layer: _LayerRef, diff_id: str, what: str) -> None:
    """Read the archive's blob for a layer whose chain is here: it must hash to its
    digest (OCI) and decompress to ``diff_id``.  Nothing is stored."""
    from builder.layers.blob import blob_diff_id

    with archive.open(layer.member, layer.size) as f:
        size = archive.size(layer.member) if layer.size is None else layer.size
        reader = _Hashing(f)
        actual, _ = blob_diff_id(cast(BinaryIO, reader), what, size)
        reader.drain()  # bytes past the compressed stream's end count for the digest
    if layer.digest is not None and reader.digest() != layer.digest:
        raise StoreError(f"{archive.path}: {what}: blob {layer.digest} does not match its "
                         "digest")
    if actual != diff_id:
        raise StoreError(f"{archive.path}: {what}: {shown(layer.member)} has diff_id "
                         f"{actual}, the config says {diff_id}; refused")


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it (a blob's digest while it is
    decompressed for its diff_id)."""

    def __init__(self, src: BinaryIO):
        self.src = src
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.src.read(len(buffer))
        self.hasher.update(data)
        buffer[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.readinto(bytearray(1 << 20)):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


def _put_blobs(store: Store, archive: _Archive,
               layers: list[_LayerRef]) -> list[tuple[str, int]]:
    added: list[str] = []
    out = []
    try:
        for layer in layers:
            had = layer.digest is not None and store.has_blob(layer.digest)
            with archive.open(layer.member, layer.size) as f:
                if layer.size is not None:
                    check_room(store.root, layer.size, f"{archive.path}: {layer.member}")
                digest, size = store.put_blob_stream(f, expected=layer.digest)
            if layer.digest is not None and not had:
                added.append(digest)
            out.append((digest, size))
    except BaseException:
        for digest in added:
            store.blob_path(digest).unlink(missing_ok=True)
        raise
    return out


def _apply(store: Store, config_digest: str, diff_id: str, chain_id: str,
           parent: str | None, blob_digest: str, size: int) -> None:
    from builder.layers.compress import MEDIA_TYPES, sniff_compression

    made, _ = store.apply_blob(store.blob_path(blob_digest), parent, blob_digest,
                               diff_id=diff_id)
    if made != chain_id:
        raise StoreError(f"image {config_digest}: layer {blob_digest} has diff_id "
                         f"other than the config's {diff_id}")
    with open(store.blob_path(blob_digest), "rb") as head:
        compression = sniff_compression(head.read(6))
    if compression not in MEDIA_TYPES:  # bzip2/xz: applied, but never exported as is
        return
    store.record_layer_blob(LayerBlobRecord(diff_id, compression, blob_digest, size,
                                            MEDIA_TYPES[compression]))


def _familiar(name: str) -> str:
    """``docker.io/library/app:1`` -> ``app:1``, as docker shows names."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name
