"""Getting a step's writes to disk: all of them before its layer is named, and the bulk
of them while it still runs.

A layer the store names must be on disk (catalogue REL-2: a crash after the row must
not leave a layer whose files were never written), and the overlay mounts are
``volatile`` (nothing syncs them at unmount, ``overlay.py``).  So the commit syncs the
filesystem (``Writeback``) on a thread of its own, beside its walk.

Left to that sync alone, a step that writes a lot pays for its writes twice in wall
time: once writing them into the page cache, once more waiting for the disk after it
ends.  The kernel starts writing dirty data back on its own only past a tenth or so of
memory (gigabytes), or after 30 s.  ``EarlyWriteback`` syncs the filesystem while the
step runs, whenever enough dirty data has piled up, so the writing happens beside the
step (a RUN step usually keeps one CPU busy, not all) and the commit finds little left.
It goes by the machine's dirty bytes (the kernel counts no others cheaply): a step that
writes little adds no journal commits or disk flushes, unless something else on the
machine keeps that much dirty.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from builder import interrupt, syscalls
from builder.errors import StoreError

# Dirty data (the whole machine's, /proc/meminfo) past which a running step's
# filesystem is synced, and how often that is looked at.
EARLY_DIRTY_BYTES = 64 << 20
EARLY_INTERVAL_S = 0.25


class Writeback:
    """syncfs of the filesystem under ``path``, on a thread of its own: the layer's
    files reach the disk while the commit walks and hashes them, and before the row that
    names the layer is written."""

    def __init__(self, path: Path) -> None:
        self.error: OSError | None = None
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._sync, name="pybuild-syncfs", daemon=True)
        self._thread.start()

    def _sync(self) -> None:
        try:
            syscalls.syncfs(self._fd)
        except OSError as err:
            self.error = err
        finally:
            os.close(self._fd)

    def wait(self) -> None:
        # Polled, not one join: the disk may take seconds, and a stopping build
        # (Ctrl-C) must not wait for it; the thread ends on its own.
        while self._thread.is_alive():
            interrupt.check()
            self._thread.join(0.1)
        if self.error is not None:
            raise StoreError(f"cannot write the layer to disk: {self.error.strerror}")


def dirty_bytes(meminfo: str = "/proc/meminfo") -> int:
    """The machine's dirty page-cache bytes not yet being written back (0 if unknown)."""
    try:
        with open(meminfo, "rb") as lines:
            for line in lines:
                if line.startswith(b"Dirty:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class EarlyWriteback:
    """While the block runs, sync the filesystem under ``path`` whenever more than
    ``threshold`` bytes are dirty.  Errors are left to the commit's own sync, which
    reports them; leaving the block never waits for a sync in progress."""

    def __init__(self, path: Path, threshold: int = EARLY_DIRTY_BYTES,
                 interval: float = EARLY_INTERVAL_S) -> None:
        self._path, self._threshold, self._interval = path, threshold, interval
        self._stop = threading.Event()
        self.syncs = 0    # how many times it synced (tests)

    def __enter__(self) -> EarlyWriteback:
        fd = os.open(self._path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            threading.Thread(target=self._run, args=(fd,), name="pybuild-early-writeback",
                             daemon=True).start()
        except BaseException:
            os.close(fd)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self, fd: int) -> None:
        try:
            while not self._stop.wait(self._interval):
                if dirty_bytes() >= self._threshold:
                    syscalls.syncfs(fd)
                    self.syncs += 1
        except OSError:
            pass    # the commit's Writeback syncs again, and reports it
        finally:
            os.close(fd)
