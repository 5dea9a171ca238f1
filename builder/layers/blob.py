"""A (compressed) layer blob read as a layer: its diff_id, or its contents in a layer dir.

One streaming pass over the blob: decompress (by its magic bytes), stop a
decompression bomb at ``max_layer_ratio`` times the blob's size (X01), hash the
tar for its diff_id and, when extracting, apply it.  Neither function
registers anything: the caller compares the diff_id with the image config's
(M09) before it trusts the result.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from builder import interrupt, limits
from builder.errors import LayerError


class _HashingReader(io.RawIOBase):
    """Hashes and counts what passes through, and stops at ``max_size`` bytes."""

    def __init__(self, source: BinaryIO, max_size: int, what: str):
        self.source = source
        self.hasher = hashlib.sha256()
        self.size = 0
        self.max_size = max_size
        self.what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.source.read(len(buffer))
        self.hasher.update(data)
        self.size += len(data)
        if self.size > self.max_size:
            raise _too_big(self.max_size, self.what)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


def _too_big(limit: int, what: str) -> LayerError:
    return LayerError(f"decompresses to more than {limit} bytes, over "
                      f"{limits.get().max_layer_ratio} times its compressed size (raise "
                      f"it with {limits.env_name('max_layer_ratio')})", layer=what)


def max_layer_bytes(compressed_size: int) -> int:
    """How many uncompressed bytes a layer blob of ``compressed_size`` may expand to."""
    current = limits.get()
    return max(compressed_size * current.max_layer_ratio, current.max_layer_ratio_floor)


@contextlib.contextmanager
def _naming(what: str) -> Iterator[None]:
    """Errors name the layer: a LayerError raised without one (M10's magic check) gets it."""
    try:
        yield
    except LayerError as err:
        if err.layer:
            raise
        raise LayerError(err.message, layer=what, entry=err.entry) from None


def blob_diff_id(raw: BinaryIO, what: str, compressed_size: int,
                 expect: str | None = None) -> tuple[str, int]:
    """(diff_id, tar size) of a layer blob, without extracting it.

    ``expect`` is the compression its media type names; other magic bytes are refused.
    """
    from builder.layers.compress import iter_decompressed

    hasher = hashlib.sha256()
    size = 0
    limit = max_layer_bytes(compressed_size)
    try:
        with _naming(what):
            for chunk in iter_decompressed(raw, expect=expect):
                interrupt.check()  # a pull worker or stage thread: stop when asked
                hasher.update(chunk)
                size += len(chunk)
                if size > limit:
                    raise _too_big(limit, what)
    except LayerError:
        raise
    except Exception as err:  # zlib, zstd, lzma, bz2 and EOF errors: the data is bad
        raise LayerError(f"cannot decompress: {type(err).__name__}: {err}", layer=what) \
            from None
    return "sha256:" + hasher.hexdigest(), size


def extract_blob(raw: BinaryIO, diff_dir: Path, what: str, compressed_size: int,
                 expect: str | None = None) -> tuple[str, int]:
    """Apply a layer blob into the empty layer dir ``diff_dir``; (diff_id, tar size).

    ``expect`` is the compression its media type names; other magic bytes are refused.
    """
    from builder.layers.apply import apply_layer_tar
    from builder.layers.compress import open_decompressed

    with _naming(what):
        source = open_decompressed(raw, expect=expect)
    reader = _HashingReader(source, max_layer_bytes(compressed_size), what)
    buffered = io.BufferedReader(reader, 1 << 20)
    apply_layer_tar(buffered, diff_dir, layer=what)
    reader.drain()  # what follows the tar's end marker counts for the diff_id too
    buffered.read()
    return reader.digest(), reader.size
