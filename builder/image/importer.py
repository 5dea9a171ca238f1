"""``pybuild import``: a root filesystem tarball as a one-layer image (like ``docker import``)."""

from __future__ import annotations

import os
from pathlib import Path

from builder.errors import StoreError
from builder.image import config as image_config
from builder.platforms import Platform
from builder.store.exportview import MEDIA_LAYER
from builder.store.store import LayerBlobRecord, Store

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"))


def import_tarball(store: Store, tarball: str, name: str | None, *,
                   platform: Platform | None = None, message: str = "") -> str:
    """Import a rootfs tarball (plain, gzip or zstd) as a one-layer image; return its ID.

    ``platform`` is what the config records (default: this host's, as ``docker import``)."""
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
    chain_id, _ = store.apply_blob(blob, None, f"{tarball} ({digest})")
    diff_id = store.layer(chain_id).diff_id
    if compression == "none" and digest != diff_id:
        compression = "other"  # bzip2/xz: not a layer media type; regenerate on export
    if compression != "other":
        store.record_layer_blob(LayerBlobRecord(diff_id, compression, digest, size,
                                                MEDIA_LAYER[compression]))
    platform = platform or Platform.host()
    image = image_config.new_image(platform.os, platform.architecture, platform.variant)
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
