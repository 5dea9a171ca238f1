"""Layers as an export writes them: one call per image (or per cache export) that reads
each layer's row and blob rows once and returns, per layer, its descriptor, its blob or
the way to stream its tar, and its diff_id.

A stored blob is used only once it hashes to its digest (catalogue REL-5): a corrupt
one is dropped, said so, and the layer compressed again from its directory.  Blobs
are made lazily, once per layer and compression, and remembered (``layer_blobs``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import DigestMismatch, StoreError
from builder.store.blobs import LayerBlobRecord
from builder.store.images import ImageStore
from builder.store.layers import LayerRecord, LayerStore

if TYPE_CHECKING:  # made only when something is exported: ``exportview``
    from builder.store.exportview import Descriptor, ExportLayer, ExportOptions, ImageExport

class ExportStore(ImageStore, LayerStore):
    """The export views of images and layer chains."""

    def export_image(self, image_id: str, options: ExportOptions) -> ImageExport:
        """Everything an image export needs: its config and its layers, base first."""
        from builder.store.exportview import ImageExport

        config = self.read_blob(image_id)
        top = self.image_top_chain(image_id)
        return ImageExport(image_id, config, self.export_chains([top], options)[top])

    def export_chains(self, tops: Iterable[str | None],
                      options: ExportOptions) -> dict[str | None, list[ExportLayer]]:
        """The layers of each chain, base first; a layer shared by several chains is
        read and prepared once."""
        records: dict[str, LayerRecord] = {}
        chains: dict[str | None, list[LayerRecord]] = {}
        for top in dict.fromkeys(tops):
            chains[top] = self._walk(top, records)
        blobs = self.layer_blobs_of(r.diff_id for r in records.values())
        done: dict[str, ExportLayer] = {}
        for chain in chains.values():
            for depth, record in enumerate(chain):
                if record.chain_id not in done:
                    done[record.chain_id] = self._export_layer(
                        chain[:depth + 1], blobs[record.diff_id], options)
        return {top: [done[r.chain_id] for r in chain] for top, chain in chains.items()}

    def _walk(self, top: str | None, known: dict[str, LayerRecord]) -> list[LayerRecord]:
        """``chain(top)``, reading only the rows not in ``known`` (which it extends)."""
        chain: list[LayerRecord] = []
        while top is not None:
            record = known.get(top)
            if record is None:
                record = known[top] = self.layer(top)
            chain.append(record)
            top = record.parent
        chain.reverse()
        return chain

    def _export_layer(self, chain: list[LayerRecord], stored: list[LayerBlobRecord],
                      options: ExportOptions) -> ExportLayer:
        """The last layer of ``chain``: a stored blob (the wanted compression first),
        else one made now."""
        from builder.store.exportview import Descriptor

        record = chain[-1]
        every = {b.compression: b for b in stored}
        blobs = {kind: b for kind, b in every.items()
                 if not (options.compressed and kind == "none")}
        corrupt: list[str] = []
        for candidate in sorted(blobs.values(), key=lambda b: b.compression != options.compression):
            if not options.verify or self.verify_blob(candidate.digest):
                return self._view(chain, Descriptor(candidate.media_type, candidate.digest,
                                                    candidate.size),
                                  self.blob_path(candidate.digest))
            sys.stderr.write(f"pybuild: warning: blob {candidate.digest} (layer "
                             f"{record.chain_id}) is corrupt in the store; dropped, making "
                             "it again from the layer\n")
            self.drop_blob(candidate.digest)
            corrupt.append(candidate.digest)
        compression = options.compression
        try:
            if compression == "none" and options.compressed:
                compression = "gzip"
            plain = every.get("none") if options.compressed and not corrupt else None
            if plain is not None and self.verify_blob(plain.digest):
                # An imported layer: its own tar is the layer; a tar written again from
                # the directory would have another diff_id.
                return self._made(chain, compression, self.blob_path(plain.digest))
            return self._made(chain, compression)
        except StoreError as err:
            if not corrupt:
                raise
            raise DigestMismatch(f"blob {corrupt[0]} (layer {record.chain_id}) is corrupt in "
                                 "the store and cannot be made again from the layer's "
                                 f"directory ({err}): load, import or pull the image "
                                 "again") from None

    def _view(self, chain: list[LayerRecord], descriptor: Descriptor,
              blob: Path | None) -> ExportLayer:
        from builder.store.exportview import ExportLayer

        record = chain[-1]
        return ExportLayer(descriptor, record.chain_id, record.diff_id, blob,
                           self.layer_dir(record.chain_id),
                           tuple(self.layer_dir(r.chain_id) for r in reversed(chain[:-1])),
                           record.epoch)

    def _made(self, chain: list[LayerRecord], compression: str,
              source: Path | None = None) -> ExportLayer:
        """Compress the layer from its directory, or from ``source``, its stored tar."""
        from builder.store.exportview import MEDIA_LAYER, Descriptor

        record = chain[-1]
        if source is None:
            self.unpack_records(chain)
        if compression == "none":
            return self._view(chain, Descriptor(MEDIA_LAYER["none"], record.diff_id,
                                                record.size), None)
        from builder.layers.compress import compress_layer, compress_tar

        lowers = [self.layer_dir(r.chain_id) for r in reversed(chain[:-1])]
        work = self.tmp_dir("compress")
        try:
            path = work.path / "blob"
            with open(path, "wb") as out:
                if source is not None:
                    with open(source, "rb") as src:
                        blob = compress_tar(src, out, compression)  # type: ignore[arg-type]
                else:
                    blob = compress_layer(self.layer_dir(record.chain_id), out,
                                          compression,  # type: ignore[arg-type]
                                          lowers=lowers, source_date_epoch=record.epoch)
            if blob.diff_id != record.diff_id:
                raise StoreError(f"layer {record.chain_id}: contents changed on disk "
                                 f"(diff_id {blob.diff_id}, recorded {record.diff_id})")
            with open(path, "rb") as src:
                self.put_blob_stream(src, expected=blob.digest)
        finally:
            work.release()
        self.record_layer_blob(LayerBlobRecord(record.diff_id, compression, blob.digest,
                                               blob.size, blob.media_type))
        return self._view(chain, Descriptor(blob.media_type, blob.digest, blob.size),
                          self.blob_path(blob.digest))
