"""``pybuild import``: a root filesystem tarball as a one-layer image (like ``docker import``)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO

from builder import limits
from builder.errors import LayerError, StoreError
from builder.image import config as image_config
from builder.image.archive import MEDIA_LAYER
from builder.store.store import LayerBlobRecord, Store

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"))


class _HashingReader(io.RawIOBase):
    """Hashes what passes through, so apply and diff_id need one read."""

    def __init__(self, source: BinaryIO, max_size: int | None = None, what: str = ""):
        self.source = source
        self.hasher = hashlib.sha256()
        self.size = 0
        self.max_size = max_size
        self.what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        data = self.source.read(len(buffer))
        self.hasher.update(data)
        self.size += len(data)
        if self.max_size is not None and self.size > self.max_size:
            # X01: a gzip/zstd bomb stops here, before it fills the disk.
            raise LayerError(f"decompresses to more than {self.max_size} bytes, over "
                             f"{limits.get().max_layer_ratio} times its compressed size (raise "
                             f"it with {limits.env_name('max_layer_ratio')})", layer=self.what)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def max_layer_bytes(compressed_size: int) -> int:
    """How many uncompressed bytes a layer blob of ``compressed_size`` may expand to."""
    current = limits.get()
    return max(compressed_size * current.max_layer_ratio, current.max_layer_ratio_floor)


def extract_blob(raw: BinaryIO, diff_dir: Path, layer_name: str,
                 compressed_size: int) -> tuple[str, int]:
    """Apply a (compressed) layer stream into ``diff_dir``; returns (diff_id, tar size).

    Registers nothing: the caller commits the directory once it trusts the result.
    """
    from builder.layers.apply import apply_layer_tar
    from builder.layers.compress import open_decompressed

    reader = _HashingReader(open_decompressed(raw), max_layer_bytes(compressed_size),
                            layer_name)
    buffered = io.BufferedReader(reader, 1 << 20)
    apply_layer_tar(buffered, diff_dir, layer=layer_name)
    reader.drain()
    buffered.read()
    return "sha256:" + reader.hasher.hexdigest(), reader.size


def apply_blob(store: Store, blob: Path, parent: str | None, layer_name: str,
               diff_id: str | None = None) -> tuple[str, int]:
    """Extract a (compressed) layer blob as a new store layer; returns (chain_id, size).

    With ``diff_id`` (from an image config), a layer whose content hashes to
    anything else is refused before it is registered (M09).
    """
    work = store.tmp_dir("apply")
    try:
        (work.path / "diff").mkdir()
        with open(blob, "rb") as raw:
            actual, size = extract_blob(raw, work.path / "diff", layer_name,
                                        os.fstat(raw.fileno()).st_size)
        if diff_id is not None and actual != diff_id:
            raise StoreError(f"{layer_name}: content has diff_id {actual}, the image config "
                             f"says {diff_id}")
        return store.commit_layer(parent, work, actual, size), size
    except BaseException:
        work.release()
        raise


def import_tarball(store: Store, tarball: str, name: str | None, *, platform: str,
                   message: str = "") -> str:
    """Import a rootfs tarball (plain, gzip or zstd) as a one-layer image; return its ID."""
    try:
        source = open(tarball, "rb") if tarball != "-" else None  # noqa: SIM115
    except OSError as err:
        raise StoreError(f"{tarball}: {err.strerror}") from None
    import sys

    with source or sys.stdin.buffer as src:
        digest, size = store.put_blob_stream(src)
    blob = store.blob_path(digest)
    with open(blob, "rb") as head:
        magic = head.read(4)
    compression = next((kind for prefix, kind in _MAGIC if magic.startswith(prefix)), "none")
    chain_id, _ = apply_blob(store, blob, None, f"{tarball} ({digest})")
    diff_id = store.layer(chain_id).diff_id
    if compression == "none" and digest != diff_id:
        compression = "other"  # bzip2/xz: not a layer media type; regenerate on export
    if compression != "other":
        store.record_layer_blob(LayerBlobRecord(diff_id, compression, digest, size,
                                                MEDIA_LAYER[compression]))
    os_name, _, arch = platform.partition("/")
    arch, _, variant = arch.partition("/")
    image = image_config.new_image(os_name, arch, variant)
    # SOURCE_DATE_EPOCH makes imports reproducible too (docker import always uses now).
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    created = image_config.rfc3339(int(epoch) if epoch.isdigit() else None)
    image["created"] = created
    image["rootfs"]["diff_ids"] = [diff_id]
    image["history"] = [{"created": created, "created_by": "pybuild import",
                         "comment": message or f"Imported from {Path(tarball).name}"}]
    image_id = store.put_image(image_config.marshal(image), chain_id)
    if name:
        store.tag(name, image_id)
    return image_id
