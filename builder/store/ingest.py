"""Resumable, verified downloads into the blob store.

A blob that arrives over the network is written to ``ingest/<hex>.partial``
(named by the digest it must have, so an interrupted transfer is found and
continued by the next one), hashed as it is written, and renamed into
``blobs/`` only when its size and digest both match.  An flock on the partial
file keeps two processes from writing the same blob at once; the second one
waits and then finds the blob already there.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from types import TracebackType

from builder.errors import DigestMismatch
from builder.store import perms
from builder.store.store import Store, check_digest

_CHUNK = 1 << 20


class Ingest:
    """One blob being written; ``offset`` bytes of it are already on disk."""

    def __init__(self, store: Store, digest: str, size: int | None):
        self.store = store
        self.digest = check_digest(digest)
        self.size = size
        store.db  # noqa: B018 - make sure the layout exists
        directory = store.root / "ingest"
        perms.private_dir(directory)
        self.path: Path = directory / (self.digest.split(":", 1)[1] + ".partial")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._hasher = hashlib.sha256()
        self.offset = 0
        if not store.has_blob(self.digest):
            self._rehash_existing()

    @property
    def done(self) -> bool:
        return self.store.has_blob(self.digest)

    def _rehash_existing(self) -> None:
        """Hash what an earlier, interrupted transfer left, so it can be continued."""
        length = os.fstat(self._fd).st_size
        if self.size is not None and length > self.size:
            os.ftruncate(self._fd, 0)
            return
        with open(self.path, "rb") as earlier:
            while chunk := earlier.read(_CHUNK):
                self._hasher.update(chunk)
                self.offset += len(chunk)

    def restart(self) -> None:
        """Throw away what is there (the server ignored a range request)."""
        os.ftruncate(self._fd, 0)
        self._hasher = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> None:
        if self.size is not None and self.offset + len(data) > self.size:
            self.restart()
            raise DigestMismatch(f"blob {self.digest}: more data than the {self.size} bytes "
                                 "its descriptor declares")
        os.pwrite(self._fd, data, self.offset)
        self._hasher.update(data)
        self.offset += len(data)

    def commit(self) -> Path:
        """Verify size and digest, then rename into the store; a mismatch discards the data."""
        actual = "sha256:" + self._hasher.hexdigest()
        if (self.size is not None and self.offset != self.size) or actual != self.digest:
            got = self.offset
            self.restart()
            raise DigestMismatch(f"blob {self.digest}: received {got} bytes hashing to "
                                 f"{actual}; expected {self.size} bytes")
        os.fsync(self._fd)
        target = self.store.blob_path(self.digest)
        os.rename(self.path, target)
        # As Store._publish: write-once, its owner's only (after the rename, so a partial
        # file that failed to move stays writable for the next try).
        os.fchmod(self._fd, perms.BLOB_MODE)
        return target

    def close(self) -> None:
        if self._fd >= 0:
            if self.done and self.path.exists() and os.fstat(self._fd).st_size == 0:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Ingest:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
