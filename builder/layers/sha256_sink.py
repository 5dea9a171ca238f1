"""A write-only sink that hashes what it is given with SHA-256 on a thread of its own:
the diff_id of a layer tar being walked (``tar_write``), or the digest of a compressed
blob being written (``compress``).

hashlib drops the GIL for big updates, so the writer's thread (the walk, the kernel's
reads, a compressor) goes on while a MiB is being hashed.  A big file's body can be
handed over as a descriptor: this thread reads it, so the walk goes on formatting the
entries after it.  Errors here (a file that shrank, a read error, a stop) are raised
in the writer's thread, by its next write or by ``close``: never a digest of less.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from dataclasses import dataclass

from builder import interrupt
from builder.errors import LayerError

__all__ = ["Sha256Writer"]

_CHUNK = 1 << 20  # a read of a handed-over file
_FILES_PENDING = 4


@dataclass(frozen=True)
class _FileBody:
    """A file's bytes for the hash thread to read itself: an fd it owns and closes."""
    fd: int
    size: int
    shrank: LayerError


class Sha256Writer:
    """Hashes what is written to it, and the files handed to ``write_file``, in order,
    on a thread of its own.  At most ``pending`` writes are queued (about a MiB each)
    and ``_FILES_PENDING`` files: memory and descriptors stay few."""

    def __init__(self, pending: int = 8) -> None:
        self.hash = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.queue: queue.Queue[bytes | bytearray | _FileBody | None] = queue.Queue(pending)
        # Descriptors handed over and not yet closed: a few, whatever ``pending`` is.
        self._open_files = threading.BoundedSemaphore(_FILES_PENDING)
        self.thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buffer: memoryview | None = None  # made for the first file handed over
        while (item := self.queue.get()) is not None:
            # Whatever happens, the thread goes on draining: the walk never waits on it.
            try:
                if self.error is not None or self._stop.is_set():
                    continue
                if isinstance(item, bytes | bytearray):
                    self.hash.update(item)
                    continue
                if buffer is None:
                    buffer = memoryview(bytearray(_CHUNK))
                self._hash_file(item, buffer)
            except BaseException as err:  # handed to the walk's thread (write, close)
                self.error = err
            finally:
                if isinstance(item, _FileBody):
                    self._release(item.fd)

    def _release(self, fd: int) -> None:
        try:
            os.close(fd)
        finally:
            self._open_files.release()

    def _hash_file(self, body: _FileBody, buffer: memoryview) -> None:
        os.posix_fadvise(body.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        done = 0
        while done < body.size:
            if self._stop.is_set():
                return  # aborted: nothing waits for this hash
            interrupt.check()  # the walk's thread then raises it (close), never a digest
            n = os.preadv(body.fd, [buffer[:min(body.size - done, _CHUNK)]], done)
            if not n:
                raise body.shrank
            self.hash.update(buffer[:n])
            done += n

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._raise_error()
        # A memoryview is a caller's reusable buffer: copy it.
        self.queue.put(bytes(data) if isinstance(data, memoryview) else data)
        self.size += len(data)
        return len(data)

    def write_file(self, fd: int, size: int, shrank: LayerError) -> None:
        """Hash ``size`` bytes of ``fd`` (from offset 0) next; the thread reads a
        duplicate of it, so the caller may close ``fd`` at once.  ``shrank`` is raised
        (by a later ``write`` or ``close``) if the file has fewer."""
        self._raise_error()
        self._open_files.acquire()
        try:
            body = _FileBody(os.dup(fd), size, shrank)
        except BaseException:
            self._open_files.release()
            raise
        try:
            self.queue.put(body)
        except BaseException:  # a KeyboardInterrupt in a blocked put: nothing queued
            self._release(body.fd)
            raise
        self.size += size

    def close(self) -> str:
        """Wait for the hash; "sha256:<hex>".  Call ``abort`` instead on error paths."""
        self._finish()
        self._raise_error()
        if self._stop.is_set():
            raise RuntimeError("Sha256Writer.close after abort: the hash is incomplete")
        return "sha256:" + self.hash.hexdigest()

    def abort(self) -> None:
        """Stop hashing (a file being read is left at its next MiB) and end the thread;
        ``close`` no longer gives a digest."""
        self._stop.set()
        self._finish()

    def _finish(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
