"""``pybuild load``: images from a docker-archive or an OCI layout (tar or directory).

Every blob is copied into the store and verified against its digest before it is
used; a docker-archive layer (named by path, not digest) is verified against the
config's diff_id after it is applied.  A layout directory is as untrusted as a
tar: files beneath it only, regular files only, bounded reads, strict JSON.
Every blob an image needs is in the store before its first layer is applied, so
a refused blob leaves no image, tag or layer behind (half-applied layers live in
tmp/ and are swept).
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from builder import limits
from builder.errors import StoreError
from builder.store.store import LayerBlobRecord, Store, chain_id_of, check_digest
from builder.untrusted import UntrustedDir, check_room, need, need_digest, parse_json, shown

_MAX_JSON = 16 << 20  # manifests and configs are small; refuse anything huge


class _Archive:
    """Read members of a tar archive, or files beneath a directory, by name.

    A directory is untrusted as a tar is: its files are opened beneath it without
    following any symlink, must be regular files, and are read up to their size
    (``builder/untrusted.py``), so a FIFO or a link to ``/dev/zero`` is refused.
    """

    def __init__(self, path: str):
        self.path = Path(path)
        self.dir = UntrustedDir(path) if self.path.is_dir() else None
        self.tar = None if self.dir else tarfile.open(path)  # noqa: SIM115

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

    def read(self, name: str, size: int | None = None) -> bytes:
        with self.open(name, size) as f:
            data = f.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise StoreError(f"{self.path}: {shown(name)} is too large")
        return data

    def json(self, name: str) -> Any:
        return parse_json(self.read(name), f"{self.path}: {shown(name)}")


def _check_size(path: Path, name: str, actual: int, declared: int | None) -> None:
    if declared is not None and actual != declared:
        raise StoreError(f"{path}: {shown(name)} has {actual} bytes, its descriptor says "
                         f"{declared}")


@dataclass(frozen=True)
class _LayerRef:
    """Where a layer's blob is: by digest (OCI, with its descriptor's size) or by name."""

    member: str
    digest: str | None = None
    size: int | None = None


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + check_digest(digest).split(":", 1)[1]


def load_archive(store: Store, path: str) -> list[tuple[str, list[str]]]:
    """Load every image in the archive; returns (image ID, tags) pairs."""
    try:
        archive = _Archive(path)
    except (OSError, tarfile.TarError) as err:
        raise StoreError(f"{path}: not a readable archive: {err}") from None
    try:
        if archive.exists("index.json"):
            return _load_oci(store, archive)
        if archive.exists("manifest.json"):
            return _load_docker(store, archive)
        raise StoreError(f"{path}: neither an OCI layout (index.json) nor a docker-archive "
                         "(manifest.json)")
    finally:
        archive.close()


def _load_oci(store: Store, archive: _Archive) -> list[tuple[str, list[str]]]:
    where = f"{archive.path}: index.json"
    index = need(archive.json("index.json"), dict, where)
    loaded = []
    for descriptor in need(index.get("manifests"), list, f"{where}: manifests"):
        descriptor = need(descriptor, dict, f"{where}: manifests")
        digest = need_digest(descriptor.get("digest"), f"{where}: manifest digest")
        what = f"{archive.path}: manifest {digest}"
        manifest = need(_verified_json(archive, digest, what), dict, what)
        media_type = manifest.get("mediaType")
        if (isinstance(media_type, str) and media_type.endswith("index.v1+json")) \
                or "manifests" in manifest:
            raise StoreError(f"{archive.path}: multi-platform indexes are not loaded yet "
                             "(issue 7 adds platform selection)")
        annotations = need(descriptor.get("annotations") or {}, dict, f"{where}: annotations")
        name = need(annotations.get("io.containerd.image.name") or "", str,
                    f"{where}: image name")
        layers = [_oci_layer(layer, what)
                  for layer in need(manifest.get("layers"), list, f"{what}: layers")]
        config = need(manifest.get("config"), dict, f"{what}: config")
        config_digest = need_digest(config.get("digest"), f"{what}: config digest")
        config_data = _verified(archive, config_digest, f"{what}: config")
        image_id = _load_image(store, archive, config_data, layers)
        loaded.append((image_id, [_familiar(name)] if name else []))
    return loaded


def _oci_layer(layer: Any, what: str) -> _LayerRef:
    layer = need(layer, dict, f"{what}: layer")
    digest = need_digest(layer.get("digest"), f"{what}: layer digest")
    size = need(layer.get("size"), int, f"{what}: layer size")
    if size < 0:
        raise StoreError(f"{what}: layer {digest} has a negative size")
    return _LayerRef(_blob_name(digest), digest, size)


def _load_docker(store: Store, archive: _Archive) -> list[tuple[str, list[str]]]:
    where = f"{archive.path}: manifest.json"
    loaded = []
    for entry in need(archive.json("manifest.json"), list, where):
        entry = need(entry, dict, where)
        config_data = archive.read(need(entry.get("Config"), str, f"{where}: Config"))
        layers = [_LayerRef(need(name, str, f"{where}: Layers"))
                  for name in need(entry.get("Layers"), list, f"{where}: Layers")]
        tags = [need(tag, str, f"{where}: RepoTags")
                for tag in need(entry.get("RepoTags") or [], list, f"{where}: RepoTags")]
        image_id = _load_image(store, archive, config_data, layers)
        loaded.append((image_id, tags))
    return loaded


def _verified(archive: _Archive, digest: str, what: str) -> bytes:
    """A small blob of the layout, bounded and checked against its digest."""
    data = archive.read(_blob_name(digest))
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise StoreError(f"{what}: blob {digest} does not match its digest")
    return data


def _verified_json(archive: _Archive, digest: str, what: str) -> Any:
    return parse_json(_verified(archive, digest, what), what)


def _diff_ids(config_data: bytes, what: str) -> list[str]:
    config = need(parse_json(config_data, what), dict, what)
    rootfs = need(config.get("rootfs"), dict, f"{what}: rootfs")
    return [need_digest(d, f"{what}: diff_id")
            for d in need(rootfs.get("diff_ids"), list, f"{what}: rootfs.diff_ids")]


def _load_image(store: Store, archive: _Archive, config_data: bytes,
                layers: list[_LayerRef]) -> str:
    config_digest = "sha256:" + hashlib.sha256(config_data).hexdigest()
    diff_ids = _diff_ids(config_data, f"image {config_digest}")
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
    # Every missing layer's blob is read (bounded, verified) before any layer is
    # applied: a refused blob leaves no layer behind, and the blobs this load added
    # are removed again.
    missing = [i for i, chain in enumerate(chain_ids) if not store.has_layer(chain)]
    blobs = _put_blobs(store, archive, [layers[i] for i in missing])
    for i, (blob_digest, size) in zip(missing, blobs, strict=True):
        _apply(store, config_digest, diff_ids[i], chain_ids[i],
               chain_ids[i - 1] if i else None, blob_digest, size)
    return store.put_image(config_data, chain_ids[-1] if chain_ids else None)


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
