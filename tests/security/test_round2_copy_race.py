"""Security round 2, point 11: COPY check-then-use.

The build checksums a COPY's context sources for the step's cache key, and copies
them later, by path.  An attacker who replaces a file in between (here: the moment
the checksum closes it, seen through inotify) used to get a cache entry whose key
names content A over a layer holding content B; every later build of content A then
got B.  The copy now hashes the bytes it writes and fails when they are not what the
key was computed from, so the poisoned entry is never committed.
"""

from __future__ import annotations

import ctypes
import io
import os
import select
import tarfile
import threading
import uuid
from pathlib import Path

import pytest
from security.oracle import build, one_line_error

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.slow]

_IN_CLOSE_NOWRITE = 0x10


class SwapOnFirstRead(threading.Thread):
    """Replaces ``path`` by ``replacement`` (an atomic rename) right after the first
    reader of ``path`` closes it: the build's checksum pass."""

    def __init__(self, path: Path, replacement: Path):
        super().__init__(daemon=True)
        self.path, self.replacement = path, replacement
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        watch = libc.inotify_add_watch(self.fd, os.fsencode(path), _IN_CLOSE_NOWRITE)
        assert watch >= 0, os.strerror(ctypes.get_errno())
        self.swapped = False

    def run(self) -> None:
        try:
            ready, _, _ = select.select([self.fd], [], [], 120)
            if ready:
                os.read(self.fd, 4096)
                os.rename(self.replacement, self.path)
                self.swapped = True
        finally:
            os.close(self.fd)


def _tar_of(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# (Dockerfile step, the context file the attacker swaps, where it lands in the image,
#  how the context file's bytes are made from the content)
CASES = {
    "copy-file": ("COPY data /data", "data", "data", lambda content: content),
    "copy-dir": ("COPY dir /dir", "dir/data", "dir/data", lambda content: content),
    "add-tar": ("ADD data.tar /x/", "data.tar", "x/data",
                lambda content: _tar_of("data", content)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_K_copy_race_never_poisons_the_cache(bstore: Path, tmp_path: Path, case: str) -> None:
    step, watched, in_image, make = CASES[case]
    token = uuid.uuid4().hex
    content_a = f"A {token}\n".encode() * 1000
    content_b = f"B {token}\n".encode() * 1000
    context = tmp_path / "ctx"
    (context / "dir").mkdir(parents=True)
    source = context / watched
    source.write_bytes(make(content_a))
    replacement = tmp_path / "replacement"
    replacement.write_bytes(make(content_b))
    dockerfile = f"FROM busybox\n{step}\n"

    attacker = SwapOnFirstRead(source, replacement)
    attacker.start()
    raced = build(bstore, context, dockerfile, tmp_path / "out1", check=False)
    attacker.join(timeout=130)
    assert attacker.swapped, "the attacker never saw the checksum read the file"
    if raced.returncode != 0:
        assert "changed while it was being copied" in one_line_error(raced)
    else:   # a successful build must hold what its key names: the content checksummed
        assert (tmp_path / "out1" / in_image).read_bytes() == content_a

    # The victim: a later build of content A must get content A, never B from a
    # poisoned entry.
    source.write_bytes(make(content_a))
    build(bstore, context, dockerfile, tmp_path / "out2")
    assert (tmp_path / "out2" / in_image).read_bytes() == content_a, "cache poisoned"
