"""Content-addressed blobs (``blobs/sha256/<hex>``) and the ``layer_blobs`` rows that
name a layer's blob per compression.

A blob is written once: a temp file in ``blobs/`` (``.incoming-<pid>-*``, swept once
its process is gone), fsynced, verified against its digest, made 0400 and renamed to
its name; reads verify it again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import msgspec

from builder import replay
from builder.errors import DigestMismatch, StoreError
from builder.store import perms
from builder.store.database import Database
from builder.store.faults import point
from builder.store.names import check_digest

_CHUNK = 1 << 20


class LayerBlobRecord(msgspec.Struct, frozen=True):
    diff_id: str
    compression: str
    digest: str
    size: int
    media_type: str


def _create(path: Path) -> BinaryIO:
    """A new file only its owner can read, whatever the umask."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             perms.FILE_MODE), "wb")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore(Database):
    """Blobs and the layer-blob rows."""

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / check_digest(digest).split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def put_blob(self, data: bytes, expected: str | None = None) -> str:
        self.db  # noqa: B018 - make sure the layout exists
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected is not None and expected != digest:
            raise DigestMismatch(f"blob content is {digest}, expected {expected}")
        path = self.blob_path(digest)
        if not path.exists():
            self._write_atomically(path, lambda f: f.write(data))
        return digest

    def put_blob_stream(self, src: BinaryIO, expected: str | None = None) -> tuple[str, int]:
        """Stream ``src`` into the blob store; verify against ``expected`` before it lands."""
        self.db  # noqa: B018
        tmp = self._incoming()
        hasher = hashlib.sha256()
        size = 0
        try:
            with _create(tmp) as out:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != check_digest(expected):
                raise DigestMismatch(f"blob content is {digest}, expected {expected}")
            self._publish(tmp, self.blob_path(digest))
        finally:
            tmp.unlink(missing_ok=True)
        return digest, size

    def _incoming(self) -> Path:
        """A temp file name for a blob being written: in blobs/, so the sweeper finds it
        without listing blobs/sha256/, and on the same filesystem as its final name."""
        return self.root / "blobs" / f".incoming-{os.getpid()}-{os.urandom(6).hex()}"

    def _publish(self, tmp: Path, path: Path) -> None:
        """Rename a fsynced temp file to its content address, and make the rename durable."""
        os.chmod(tmp, perms.BLOB_MODE)  # write-once (K07), and the owner's only
        os.rename(tmp, path)
        point("blob:renamed")
        fsync_dir(path.parent)

    def _write_atomically(self, path: Path, write: Callable[[BinaryIO], object]) -> None:
        tmp = self._incoming()
        try:
            with _create(tmp) as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            self._publish(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def verify_blob(self, digest: str) -> bool:
        """Whether the blob file exists and hashes to its name (streamed, any size)."""
        hasher = hashlib.sha256()
        try:
            with open(self.blob_path(digest), "rb") as src:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
        except FileNotFoundError:
            return False
        return "sha256:" + hasher.hexdigest() == digest

    def drop_blob(self, digest: str) -> None:
        """Remove a (corrupt) blob and the layer-blob records naming it, so that the next
        export compresses the layer again from its directory instead of trusting it."""
        with self.transaction() as db:
            db.execute("DELETE FROM layer_blobs WHERE digest = ?", (digest,))
        self.blob_path(digest).unlink(missing_ok=True)

    def read_blob(self, digest: str) -> bytes:
        """Read a whole (small) blob and verify it against its digest."""
        if (recorder := replay.recording()) is not None:
            recorder.entry(str(self.blob_path(digest)))  # a blob lost: the build fails
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is not in the store") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise DigestMismatch(f"blob {digest} in the store is corrupt")
        return data

    # -- layer_blobs rows ---------------------------------------------------------
    def record_layer_blob(self, record: LayerBlobRecord) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO layer_blobs VALUES (?, ?, ?, ?, ?)",
                       (record.diff_id, record.compression, record.digest, record.size,
                        record.media_type))

    def layer_blobs(self, diff_id: str) -> list[LayerBlobRecord]:
        """The blobs of a layer whose file is there."""
        rows = self.db.execute(
            "SELECT diff_id, compression, digest, size, media_type FROM layer_blobs "
            "WHERE diff_id = ?", (diff_id,)).fetchall()
        return [LayerBlobRecord(*row) for row in rows if self.has_blob(row[2])]

    def layer_blobs_of(self, diff_ids: Iterable[str]) -> dict[str, list[LayerBlobRecord]]:
        """``layer_blobs`` for many layers in one query."""
        wanted = list(dict.fromkeys(diff_ids))
        found: dict[str, list[LayerBlobRecord]] = {diff_id: [] for diff_id in wanted}
        for start in range(0, len(wanted), 500):  # SQLite's limit on bound parameters
            part = wanted[start:start + 500]
            rows = self.db.execute(
                "SELECT diff_id, compression, digest, size, media_type FROM layer_blobs "
                f"WHERE diff_id IN ({', '.join('?' * len(part))})", part).fetchall()
            for row in rows:
                if self.has_blob(row[2]):
                    found[row[0]].append(LayerBlobRecord(*row))
        return found

    def all_layer_blobs(self) -> list[LayerBlobRecord]:
        """Every layer-blob row, its file there or not (``doctor``, ``prune``)."""
        return [LayerBlobRecord(*row) for row in self.db.execute(
            "SELECT diff_id, compression, digest, size, media_type FROM layer_blobs")]

    def forget_unused_layer_blobs(self) -> None:
        """Drop the layer-blob rows of layers the store no longer has (``prune``)."""
        with self.transaction() as db:
            db.execute("DELETE FROM layer_blobs WHERE diff_id NOT IN (SELECT diff_id FROM "
                       "layers UNION SELECT diff_id FROM packed_layers)")
