"""Layer directories (``layers/<chain-hex>/diff``, named by ``l/<short>`` links) and
their rows: ``layers`` once extracted, ``packed_layers`` while a pulled layer is only
its verified blob.  Committing is a rename under the store lock, never a copy;
``unpack`` extracts packed layers when a snapshot or an export needs their files."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from builder.errors import LayerError, StoreError
from builder.store.blobs import BlobStore, fsync_dir
from builder.store.faults import point
from builder.store.names import chain_id_of, check_digest
from builder.store.tmpdir import TmpDir, remove_tree

if TYPE_CHECKING:
    from concurrent.futures import Future

_Extracted = tuple[TmpDir, str, int]  # work dir holding diff/, diff_id, tar size


class LayerRecord(msgspec.Struct, frozen=True):
    chain_id: str
    diff_id: str
    parent: str | None
    size: int
    short: str           # its l/ link; "" while packed
    packed: bool = False  # pulled as a verified blob, not yet extracted (see unpack)
    epoch: int | None = None  # the SOURCE_DATE_EPOCH its diff_id was computed with


class TarOptions(msgspec.Struct, frozen=True):
    """What ``write_layer_tar`` needs besides the layer dir to give its diff_id again."""

    lowers: list[Path]              # the dirs below it, topmost first
    source_date_epoch: int | None


def _extracted(row: tuple[str, str, str | None, int, str, int | None]) -> LayerRecord:
    """A ``layers`` row: chain_id, diff_id, parent, size, short, epoch."""
    chain_id, diff_id, parent, size, short, epoch = row
    return LayerRecord(chain_id, diff_id, parent, size, short, epoch=epoch)


def _packed(row: tuple[str, str, str | None, int]) -> LayerRecord:
    """A ``packed_layers`` row: chain_id, diff_id, parent, size."""
    chain_id, diff_id, parent, size = row
    return LayerRecord(chain_id, diff_id, parent, size, short="", packed=True)


class LayerStore(BlobStore):
    """Layer rows and directories."""

    def layer(self, chain_id: str) -> LayerRecord:
        row = self.db.execute(
            "SELECT chain_id, diff_id, parent, size, short, epoch FROM layers "
            "WHERE chain_id = ?", (chain_id,)).fetchone()
        if row is not None:
            return _extracted(row)
        row = self.db.execute(
            "SELECT chain_id, diff_id, parent, size FROM packed_layers WHERE chain_id = ?",
            (chain_id,)).fetchone()
        if row is None:
            raise StoreError(f"layer {chain_id} is not in the store")
        return _packed(row)

    def has_layer(self, chain_id: str) -> bool:
        """Whether the layer is in the store, extracted or still packed."""
        return self._is_unpacked(chain_id) or self.db.execute(
            "SELECT 1 FROM packed_layers WHERE chain_id = ?", (chain_id,)).fetchone() is not None

    def _is_unpacked(self, chain_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM layers WHERE chain_id = ?",
                               (chain_id,)).fetchone() is not None

    def layer_dir(self, chain_id: str) -> Path:
        return self.root / "layers" / check_digest(chain_id).split(":", 1)[1] / "diff"

    def chain(self, top: str | None) -> list[LayerRecord]:
        """The layers of a chain, base first; each row read once."""
        records: list[LayerRecord] = []
        while top is not None:
            record = self.layer(top)
            records.append(record)
            top = record.parent
        records.reverse()
        return records

    def _unpacked_chain(self, top: str | None) -> list[LayerRecord]:
        records = self.chain(top)
        for record in records:
            if record.packed:  # a caller that needs files calls unpack() first
                raise StoreError(f"layer {record.chain_id} is not unpacked yet")
        return records

    def lower_dirs(self, top: str | None) -> list[Path]:
        """Layer dirs of a chain, topmost first, as overlay's lowerdir wants them."""
        return [self.layer_dir(r.chain_id) for r in reversed(self._unpacked_chain(top))]

    def short_links(self, top: str | None) -> list[str]:
        """Short link names under ``l/`` for a chain, topmost first."""
        return [r.short for r in reversed(self._unpacked_chain(top))]

    def layer_tar_options(self, chain_id: str) -> TarOptions:
        """The arguments that make ``write_layer_tar`` reproduce this layer's diff_id."""
        row = self.db.execute("SELECT parent, epoch FROM layers WHERE chain_id = ?",
                              (chain_id,)).fetchone()
        if row is None:
            raise StoreError(f"layer {chain_id} is not in the store")
        return TarOptions(self.lower_dirs(row[0]), row[1])

    def commit_layer(self, parent: str | None, work: TmpDir, diff_id: str, size: int,
                     epoch: int | None = None) -> str:
        """Move ``work.path/diff`` into the store as the layer on top of ``parent``.

        A rename, never a copy.  If the same layer already exists, ours is dropped.
        ``epoch`` is the SOURCE_DATE_EPOCH the diff_id was computed with.
        """
        chain_id = chain_id_of(parent, diff_id)
        with self.store_lock():
            point("layer:locked")
            if self._is_unpacked(chain_id):
                work.release()
                return chain_id
            for leftover in work.path.iterdir():
                if leftover.name != "diff":
                    remove_tree(leftover)
            final = self.root / "layers" / chain_id.split(":", 1)[1]
            os.rename(work.path, final)
            work.detach()
            short = os.urandom(5).hex()  # secrets.token_hex's bytes
            os.symlink(f"../layers/{final.name}/diff", self.root / "l" / short)
            # Durable before the row that names them (a crash after the row must not
            # leave a row whose dir was never written to disk).
            fsync_dir(self.root / "layers")
            fsync_dir(self.root / "l")
            point("layer:renamed")
            with self.transaction() as db:
                db.execute("INSERT INTO layers VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (chain_id, diff_id, parent, size, short, epoch, time.time()))
                db.execute("DELETE FROM packed_layers WHERE chain_id = ?", (chain_id,))
        return chain_id

    def apply_blob(self, blob: Path, parent: str | None, what: str,
                   diff_id: str | None = None) -> tuple[str, int]:
        """Extract a (compressed) layer blob as the layer on ``parent``; (chain_id, size).

        With ``diff_id`` (from an image config), content that hashes to anything
        else is refused before it is registered (M09).
        """
        work, actual, size = self.extract(blob, what)
        try:
            if diff_id is not None and actual != diff_id:
                raise StoreError(f"{what}: content has diff_id {actual}, the image config "
                                 f"says {diff_id}")
            return self.commit_layer(parent, work, actual, size), size
        except BaseException:
            work.release()
            raise

    def extract(self, blob: Path, what: str, work: TmpDir | None = None,
                expect: str | None = None) -> _Extracted:
        """A work dir holding ``blob`` applied as ``diff/``, with its diff_id and tar size;
        ``commit_layer`` it once the diff_id is trusted, else release it.  ``expect``:
        the compression the blob's media type names (M10).

        Touches no database, so worker threads may call it."""
        from builder.layers.blob import extract_blob

        work = work or self.tmp_dir("apply")
        try:
            # The layer's root dir, 0755 as a tar without a "./" entry implies (umask or not).
            os.mkdir(work.path / "diff", 0o755)
            os.chmod(work.path / "diff", 0o755)
            with open(blob, "rb") as raw:
                actual, size = extract_blob(raw, work.path / "diff", what,
                                            os.fstat(raw.fileno()).st_size, expect)
        except BaseException:
            work.release()
            raise
        return work, actual, size

    def add_packed_layer(self, parent: str | None, diff_id: str, size: int) -> str:
        """Record a layer whose verified blob is in the store (``record_layer_blob``)
        but not extracted; ``unpack`` extracts it when a snapshot or export needs it."""
        chain_id = chain_id_of(parent, diff_id)
        with self.transaction() as db:
            if not self._is_unpacked(chain_id):
                db.execute("INSERT OR IGNORE INTO packed_layers VALUES (?, ?, ?, ?, ?)",
                           (chain_id, diff_id, parent, size, time.time()))
        return chain_id

    def unpack_dir(self, chain_id: str) -> TmpDir:
        """The work dir to extract layer ``chain_id`` in.  Named by the layer: a second
        build extracting the same layer at the same time waits here for the first."""
        return TmpDir(self.root / "tmp" / f"unpack-{check_digest(chain_id).split(':', 1)[1]}")

    def unpack(self, top: str | None) -> None:
        """Extract the packed layers of a chain (a pull leaves them as blobs, as
        BuildKit does, until a step or an export needs their files)."""
        self.unpack_records(self.chain(top))

    def unpack_records(self, chain: Iterable[LayerRecord]) -> None:
        """``unpack`` for a chain already read (base first).

        Layers extract side by side in worker threads and are committed here in
        order, each only once its content gives its recorded diff_id.  A work dir
        named by the chain ID keeps two builds from extracting the same layer twice.
        """
        packed = [record for record in chain if record.packed]
        if not packed:
            return
        blobs = {}
        for record in packed:
            found = self.layer_blobs(record.diff_id)
            if not found:
                raise StoreError(f"layer {record.chain_id}: its blob is not in the store "
                                 "(removed or corrupt); run 'pybuild doctor --repair' and "
                                 "pull the image again")
            blobs[record.chain_id] = self.blob_path(found[0].digest)
        self.db  # noqa: B018 - the layout exists before the workers use tmp/
        self._extract_and_commit(packed, blobs)

    def _extract_one(self, record: LayerRecord, blob: Path) -> _Extracted | None:
        work = self.unpack_dir(record.chain_id)
        if self.layer_dir(record.chain_id).is_dir():  # the other build committed it
            work.release()
            return None
        return self.extract(blob, record.chain_id, work)

    def _extract_and_commit(self, packed: list[LayerRecord], blobs: dict[str, Path]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        jobs: list[Future[_Extracted | None]] = []
        with ThreadPoolExecutor(max_workers=min(4, len(packed))) as pool:
            try:
                jobs = [pool.submit(self._extract_one, record, blobs[record.chain_id])
                        for record in packed]
                for record, job in zip(packed, jobs, strict=True):
                    self._commit_extracted(record, job, blobs[record.chain_id])
            except BaseException:
                for job in jobs:
                    job.cancel()
                raise
            finally:
                pool.shutdown(wait=True)
                for job in jobs:  # what was extracted but not committed
                    if job.done() and not job.cancelled() and job.exception() is None \
                            and (extracted := job.result()) is not None:
                        extracted[0].release()  # a no-op once committed (detached)

    def _commit_extracted(self, record: LayerRecord, job: Future[_Extracted | None],
                          blob: Path) -> None:
        try:
            extracted = job.result()
        except LayerError as err:
            raise StoreError(f"{err} (from its pulled blob sha256:{blob.name}; "
                             "'pybuild doctor' checks the blobs)") from None
        if extracted is None:
            with self.store_lock():
                pass  # whoever renamed the dir in has written its row too
            return
        work, diff_id, size = extracted
        if diff_id != record.diff_id:
            raise StoreError(f"layer {record.chain_id}: content has diff_id "
                             f"{diff_id}, recorded {record.diff_id}")
        self.commit_layer(record.parent, work, diff_id, size)

    # -- every layer, for prune and doctor --------------------------------------------
    def all_layers(self) -> list[LayerRecord]:
        """Every layer row, extracted ones first."""
        unpacked = [_extracted(row) for row in self.db.execute(
            "SELECT chain_id, diff_id, parent, size, short, epoch FROM layers")]
        packed = [_packed(row) for row in self.db.execute(
            "SELECT chain_id, diff_id, parent, size FROM packed_layers")]
        return unpacked + packed

    def remove_layers(self, records: Iterable[LayerRecord]) -> None:
        """Drop layers: their rows first (one transaction), then their links and dirs.
        The caller holds ``store_lock``."""
        records = list(records)
        with self.transaction() as db:
            for record in records:
                db.execute("DELETE FROM layers WHERE chain_id = ?", (record.chain_id,))
                db.execute("DELETE FROM packed_layers WHERE chain_id = ?", (record.chain_id,))
        for record in records:
            if record.short:
                (self.root / "l" / record.short).unlink(missing_ok=True)
            if self.layer_dir(record.chain_id).parent.exists():
                remove_tree(self.layer_dir(record.chain_id).parent)
