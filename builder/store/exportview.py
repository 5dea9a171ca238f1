"""What an export hands out: descriptors, the export view of a layer and of an image, and
the options of one export (``export.ExportStore`` makes them).  Apart from the store's
export code so that opening a store, as every command does, creates none of these
classes (a cached rebuild never exports).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO

import msgspec

MEDIA_LAYER = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


class Descriptor(msgspec.Struct, frozen=True):
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class ExportLayer(msgspec.Struct, frozen=True):
    """One layer as it goes out: a stored blob, or (uncompressed, no blob) its tar
    streamed from its directory over its lower dirs."""

    descriptor: Descriptor
    chain_id: str
    diff_id: str
    blob: Path | None
    directory: Path
    lowers: tuple[Path, ...]   # topmost first, as write_layer_tar wants them
    epoch: int | None          # the SOURCE_DATE_EPOCH its diff_id was computed with

    def write(self, out: BinaryIO) -> None:
        if self.blob is not None:
            with open(self.blob, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            return
        from builder.layers.tar_write import write_layer_tar

        write_layer_tar(self.directory, out, lowers=list(self.lowers),
                        source_date_epoch=self.epoch)


class ImageExport(msgspec.Struct, frozen=True):
    image_id: str
    config: bytes
    layers: list[ExportLayer]


class ExportOptions(msgspec.Struct, frozen=True):
    compression: str = "none"
    verify: bool = True        # hash a stored blob before use (a push skips it: the
                               # registry checks every blob it receives)
    compressed: bool = False   # never an uncompressed blob (registries)
