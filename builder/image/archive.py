"""Write images as an OCI image layout (tar or directory) with a Docker manifest.json.

One format serves every consumer: ``index.json`` + ``blobs/`` make it an OCI
layout (skopeo, umoci, podman), and ``manifest.json`` makes the same archive
loadable by ``docker load`` (as ``docker save`` itself writes since Docker 25).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO, cast

from builder.errors import DigestMismatch, StoreError, UsageError
from builder.image.config import MEDIA_INDEX, MEDIA_MANIFEST, go_json
from builder.image.manifest import ImageAnnotations, image_index, manifest_of
from builder.layers.safeout import OutputDir, components
from builder.platforms import Platform
from builder.store.exportview import MEDIA_LAYER, Descriptor, ExportOptions
from builder.store.faults import point
from builder.store.images import IndexMember
from builder.store.store import Store, normalize_tag

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from builder.image.provenance import Attestation

# The attestation manifest of one platform's image, given its manifest digest (None: none).
Attest = Callable[[IndexMember, str], "Attestation | None"]

_EPOCH = 0  # archive member mtimes: fixed, so the same images give the same archive

class _Sink:
    """Where archive members go: a tar stream or a directory."""

    def __init__(self, dest: str, as_dir: bool, label: str):
        self.as_dir = as_dir
        self.seen: set[str] = set()
        if as_dir:
            # The dir's contents are not trusted (catalogue point 7): every
            # member goes through OutputDir, never through a planted symlink.
            self.root = OutputDir(dest, label)
            try:
                os.close(self.root.dir_fd(components("blobs/sha256")))
            except BaseException:
                self.root.close()
                raise
            self.tar = None
        else:
            # The sink outlives this call; close() closes the file.
            self.file: BinaryIO = _open_output(dest)
            self.tar = tarfile.open(fileobj=self.file, mode="w|",  # noqa: SIM115
                                    format=tarfile.PAX_FORMAT)

    def add(self, name: str, size: int, write: Callable[[BinaryIO], object]) -> None:
        if name in self.seen:
            return
        self.seen.add(name)
        if self.tar is None:
            def checked(out: BinaryIO) -> None:
                counted = _CountingWriter(out)
                write(cast(BinaryIO, counted))
                _check_member(name, counted)  # before the rename: no bad blob appears
            self.root.write(name, checked)
            return
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, _EPOCH, 0o644
        self.tar.addfile(info)  # header only; the body is streamed below
        point("export:layer")
        # tarfile's own stream (its buffer), typed by typeshed as a bare write protocol.
        written = _CountingWriter(self.tar.fileobj)  # type: ignore[arg-type]
        write(cast(BinaryIO, written))
        if written.count != size:
            raise StoreError(f"archive member {name}: wrote {written.count} bytes, "
                             f"expected {size}")
        _check_member(name, written)
        blocks, remainder = divmod(size, tarfile.BLOCKSIZE)
        if remainder:
            self.tar.fileobj.write(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))
            blocks += 1
        self.tar.offset += blocks * tarfile.BLOCKSIZE

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add(name, len(data), lambda out: out.write(data))

    def close(self) -> None:
        if self.tar is None:
            self.root.close()
        else:
            self.tar.close()
            self.file.close()


def _open_output(dest: str) -> BinaryIO:
    """The archive's file (stdout for ``-``); the sink closes it."""
    if dest == "-":
        return os.fdopen(os.dup(1), "wb")
    try:
        return open(dest, "wb")
    except OSError as err:  # a missing dir, a path the user may not write: one line
        raise UsageError(f"{dest}: cannot write the archive: {err.strerror or err}") from None


class _CountingWriter(io.RawIOBase):
    def __init__(self, target: BinaryIO):
        self.target = target
        self.hasher = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        size = memoryview(data).nbytes
        self.target.write(data)
        self.hasher.update(data)
        self.count += size
        return size


def _check_member(name: str, written: _CountingWriter) -> None:
    """A blob member must hash to its name: whatever fed it (a stored blob, a layer dir
    streamed as a tar) is verified as it goes out, so no archive carries bad data."""
    if name.startswith("blobs/sha256/"):
        digest = "sha256:" + written.hasher.hexdigest()
        if digest != "sha256:" + name.rsplit("/", 1)[1]:
            raise DigestMismatch(f"blob sha256:{name.rsplit('/', 1)[1]}: the store gave "
                                 f"content {digest} (corrupt in the store)")


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _write_image(sink: _Sink, store: Store, image_id: str, compression: str,
                 annotations: ImageAnnotations | None) -> tuple[Descriptor, list[str]]:
    """An image's layers, config and manifest into ``sink``: (its manifest's
    descriptor, its layers' member names)."""
    export = store.export_image(image_id, ExportOptions(compression))
    config, layers = export.config, export.layers
    for layer in layers:
        sink.add(_blob_name(layer.descriptor.digest), layer.descriptor.size, layer.write)
    sink.add_bytes(_blob_name(image_id), config)
    manifest = manifest_of(export, annotations)
    digest = store.put_blob(manifest)
    sink.add_bytes(_blob_name(digest), manifest)
    return (Descriptor(MEDIA_MANIFEST, digest, len(manifest)),
            [_blob_name(layer.descriptor.digest) for layer in layers])


def _named_entries(descriptor: Descriptor, tags: list[str],
                   annotations: ImageAnnotations | None) -> list[dict[str, object]]:
    """index.json's entries for one descriptor: one per name (containerd's and the
    OCI's name annotations), or one unnamed."""
    entries = []
    for tag in tags or [""]:
        entry = descriptor.to_json()
        named = dict(annotations.descriptor) if annotations else {}
        if tag:
            named.update({"io.containerd.image.name": _full_name(tag),
                          "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[1]})
        if named:
            entry["annotations"] = dict(sorted(named.items()))
        entries.append(entry)
    return entries


@contextlib.contextmanager
def _archive(dest: str, as_dir: bool, label: str, compression: str) -> Iterator[_Sink]:
    """The sink of one archive; on an error, a half archive file is removed, so it
    cannot look like a good one."""
    if compression not in MEDIA_LAYER:
        raise UsageError(f"unknown compression {compression!r}: use gzip, zstd or none")
    sink = _Sink(dest, as_dir, label)
    try:
        sink.add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        yield sink
    except BaseException:
        sink.close()
        if not as_dir and dest != "-":
            with contextlib.suppress(OSError):
                os.unlink(dest)
        raise
    sink.close()


def write_layout(store: Store, images: Iterable[tuple[str, list[str]]], dest: str, *,
                 compression: str = "none", as_dir: bool = False,
                 label: str = "output",
                 annotations: ImageAnnotations | None = None) -> list[Descriptor]:
    """Write ``(image_id, tags)`` pairs to ``dest``; returns each image's manifest descriptor.

    ``label`` names the export in errors about the destination (``-o type=oci``);
    ``annotations`` (``--annotation``) go into each manifest and its index.json entry.
    """
    index: list[dict[str, object]] = []
    docker_manifest: list[dict[str, object]] = []
    results: list[Descriptor] = []
    with _archive(dest, as_dir, label, compression) as sink:
        for image_id, tags in images:
            descriptor, layers = _write_image(sink, store, image_id, compression, annotations)
            results.append(descriptor)
            tags = [normalize_tag(t) for t in tags]
            index += _named_entries(descriptor, tags, annotations)
            docker_manifest.append({"Config": _blob_name(image_id),
                                    "RepoTags": list(tags) or None, "Layers": layers})
        sink.add_bytes("index.json", go_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX,
                                              "manifests": index}))
        sink.add_bytes("manifest.json", go_json(docker_manifest))
    return results


def write_index_layout(store: Store, members: list[IndexMember], tags: list[str], dest: str,
                       *, compression: str, as_dir: bool, label: str,
                       annotations: ImageAnnotations | None = None,
                       attest: Attest | None = None) -> Descriptor:
    """Images built for several platforms as BuildKit's OCI exporter writes them:
    index.json names one image index, which lists each platform's manifest with its
    platform, then their attestation manifests (``attest``).  No manifest.json:
    ``docker load`` takes one platform (``save --platform``).  Returns the image
    index's descriptor."""
    with _archive(dest, as_dir, label, compression) as sink:
        listed, attested = [], []
        for member in members:
            descriptor, _ = _write_image(sink, store, member.image_id, compression,
                                         annotations)
            listed.append((descriptor, Platform.parse(member.platform)))
            made = attest(member, descriptor.digest) if attest is not None else None
            if made is not None:
                for blob in made.blobs():
                    sink.add_bytes(_blob_name(store.put_blob(blob)), blob)
                attested.append(made.descriptor)
        body = image_index(listed, attested)
        digest = store.put_blob(body)
        sink.add_bytes(_blob_name(digest), body)
        descriptor = Descriptor(MEDIA_INDEX, digest, len(body))
        entries = _named_entries(descriptor, [normalize_tag(t) for t in tags], annotations)
        sink.add_bytes("index.json", go_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX,
                                              "manifests": entries}))
    return descriptor


def _full_name(tag: str) -> str:
    """Docker's full form of a familiar name: ``app:1`` -> ``docker.io/library/app:1``."""
    first = tag.split("/", 1)[0]
    if "/" in tag and ("." in first or ":" in first or first == "localhost"):
        return tag
    if "/" not in tag:
        return f"docker.io/library/{tag}"
    return f"docker.io/{tag}"
