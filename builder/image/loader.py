"""``pybuild load``: images from a docker-archive or an OCI layout (tar or directory).

Every blob is copied into the store and verified against its digest before it is
used; a docker-archive layer (named by path, not digest) is verified against the
config's diff_id after it is applied.  A refused archive leaves no image, tag or
layer behind (half-applied layers live in tmp/ and are swept).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from builder import limits
from builder.errors import StoreError
from builder.store.store import LayerBlobRecord, Store, chain_id_of, check_digest

_MAX_JSON = 16 << 20  # manifests and configs are small; refuse anything huge


class _Archive:
    """Read members of a tar archive or files of a directory by name."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.tar = None if self.path.is_dir() else tarfile.open(path)  # noqa: SIM115

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()

    def exists(self, name: str) -> bool:
        if self.tar is None:
            return (self.path / name).is_file()
        try:
            self.tar.getmember(name)
        except KeyError:
            return False
        return True

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        if ".." in Path(name).parts or name.startswith("/"):
            raise StoreError(f"{self.path}: refusing member name {name!r}")
        if self.tar is None:
            with open(self.path / name, "rb") as f:
                yield f
            return
        try:
            member = self.tar.extractfile(name)
        except KeyError:
            member = None
        if member is None:
            raise StoreError(f"{self.path}: {name} is missing from the archive")
        with member:
            yield member  # type: ignore[misc]

    def json(self, name: str) -> object:
        with self.open(name) as f:
            data = f.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise StoreError(f"{self.path}: {name} is too large")
        try:
            return json.loads(data)
        except ValueError as err:
            raise StoreError(f"{self.path}: {name} is not valid JSON: {err}") from None


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
    index = archive.json("index.json")
    loaded = []
    for descriptor in index.get("manifests", []):  # type: ignore[union-attr]
        manifest = _verified_json(store, archive, descriptor["digest"])
        if manifest.get("mediaType", "").endswith("index.v1+json") or "manifests" in manifest:
            raise StoreError(f"{archive.path}: multi-platform indexes are not loaded yet "
                             "(issue 7 adds platform selection)")
        annotations = descriptor.get("annotations") or {}
        name = annotations.get("io.containerd.image.name") or ""
        layers = [(layer["digest"], None) for layer in manifest["layers"]]
        image_id = _load_image(store, archive, manifest["config"]["digest"], layers)
        loaded.append((image_id, [_familiar(name)] if name else []))
    return loaded


def _load_docker(store: Store, archive: _Archive) -> list[tuple[str, list[str]]]:
    loaded = []
    for entry in archive.json("manifest.json"):  # type: ignore[union-attr]
        config_name = entry["Config"]
        with archive.open(config_name) as f:
            config_digest, _ = store.put_blob_stream(f)
        layers = [(None, name) for name in entry["Layers"]]
        image_id = _load_image(store, archive, config_digest, layers)
        loaded.append((image_id, list(entry.get("RepoTags") or [])))
    return loaded


def _verified_json(store: Store, archive: _Archive, digest: str) -> dict:
    with archive.open(_blob_name(digest)) as f:
        store.put_blob_stream(f, expected=digest)
    return json.loads(store.read_blob(digest))


def _load_image(store: Store, archive: _Archive, config_digest: str,
                layers: list[tuple[str | None, str | None]]) -> str:
    with archive.open(_blob_name(config_digest)) if archive.exists(
            _blob_name(config_digest)) else _nothing() as f:
        if f is not None:
            store.put_blob_stream(f, expected=config_digest)
    config = json.loads(store.read_blob(config_digest))
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(layers):
        raise StoreError(f"image {config_digest}: config names {len(diff_ids)} layers, "
                         f"the manifest {len(layers)}")
    max_layers = limits.get().max_layers
    if len(layers) > max_layers:  # X08: refuse before extracting anything
        raise StoreError(f"image {config_digest}: {len(layers)} layers, more than the limit "
                         f"of {max_layers} (raise it with {limits.env_name('max_layers')})")
    parent: str | None = None
    for diff_id, (digest, member) in zip(diff_ids, layers, strict=True):
        chain_id = chain_id_of(parent, check_digest(diff_id))
        if not store.has_layer(chain_id):
            with archive.open(member or _blob_name(digest)) as f:  # type: ignore[arg-type]
                blob_digest, size = store.put_blob_stream(f, expected=digest)
            made, _ = store.apply_blob(store.blob_path(blob_digest), parent, blob_digest,
                                       diff_id=check_digest(diff_id))
            if made != chain_id:
                raise StoreError(f"image {config_digest}: layer {blob_digest} has diff_id "
                                 f"other than the config's {diff_id}")
            with open(store.blob_path(blob_digest), "rb") as head:
                magic = head.read(4)
            compression = ("gzip" if magic.startswith(b"\x1f\x8b") else
                           "zstd" if magic == b"\x28\xb5\x2f\xfd" else "none")
            store.record_layer_blob(LayerBlobRecord(
                diff_id, compression, blob_digest, size,
                "application/vnd.oci.image.layer.v1.tar"
                + {"gzip": "+gzip", "zstd": "+zstd", "none": ""}[compression]))
        parent = chain_id
    return store.put_image(store.read_blob(config_digest), parent)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _familiar(name: str) -> str:
    """``docker.io/library/app:1`` -> ``app:1``, as docker shows names."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name
