"""Compress layers in one pass, and decompress whatever a registry sends.

``compress_layer`` streams: tar writer -> sha256 (diff_id) -> compressor ->
sha256 (digest) -> ``out``; nothing is buffered beyond a few MiB and the
layer is read once.

* gzip: a pigz-style parallel deflate.  The tar is cut into fixed 1 MiB
  blocks; each is deflated on a worker thread (zlib drops the GIL) with the
  previous 32 KiB as preset dictionary and ends on a sync flush, so the
  concatenation is one valid deflate stream.  The header has no name and
  mtime 0.  Block boundaries do not depend on the number of threads, so the
  bytes are the same on every machine with the same zlib.  The empty tar is
  the exception: it gets Go's bytes, BuildKit's shared empty blob (``empty.py``).
* zstd: ``zstandard``, multi-threaded (one worker per CPU, at most 4, 4 MiB
  jobs, so memory stays bounded; the output is the same whatever the worker
  count), a content checksum, level 3.
* Both sha256 run on their own threads, beside the compressor's.
* none: the tar itself; digest == diff_id.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, cast

import msgspec

from builder.errors import LayerError
from builder.layers.changes import PathLike
from builder.layers.empty import EMPTY_GZIP_BODY, EMPTY_TAR_SIZE

if TYPE_CHECKING:
    from concurrent.futures import Future

Compression = Literal["gzip", "zstd", "none"]

MEDIA_TYPE_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPES: dict[str, str] = {
    "none": MEDIA_TYPE_TAR,
    "gzip": MEDIA_TYPE_TAR + "+gzip",
    "zstd": MEDIA_TYPE_TAR + "+zstd",
}

_GZIP_BLOCK = 1 << 20
_DICT = 32 * 1024
_ZSTD_MAX_WINDOW = 1 << 27     # libzstd's default limit (X06)
_ZSTD_JOB = 4 << 20
_XZ_MEMLIMIT = 1 << 28
_READ = 1 << 20


class LayerBlob(msgspec.Struct, frozen=True):
    """A compressed layer: ``size`` is the blob's, ``uncompressed_size`` the tar's."""

    diff_id: str
    digest: str
    size: int
    uncompressed_size: int
    media_type: str


class _Digest:
    """Hands the compressed bytes on to ``out`` and hashes them on a thread."""

    def __init__(self, out: Any) -> None:
        from builder.layers.sha256_sink import Sha256Writer

        self.out = out
        self.hash = Sha256Writer()

    @property
    def size(self) -> int:
        return self.hash.size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.out.write(data)
        self.hash.write(data)
        return len(data)

    def hexdigest(self) -> str:
        return self.hash.close()


class _ParallelGzip:
    """Deflate fixed-size blocks on threads; see the module docstring."""

    def __init__(self, out: Any, level: int, threads: int | None = None) -> None:
        self.out = out
        self.level = level
        self.pending = bytearray()
        self.dictionary = b""
        self.crc = 0
        self.length = 0
        from concurrent.futures import ThreadPoolExecutor

        workers = threads or os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gzip")
        self.inflight: deque[Future[bytes]] = deque()
        self.limit = 2 * workers
        # RFC 1952: deflate, no flags, mtime 0, no extra flags, OS unknown (as Go).
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        self.pending += data
        while len(self.pending) >= _GZIP_BLOCK:
            block = bytes(self.pending[:_GZIP_BLOCK])
            del self.pending[:_GZIP_BLOCK]
            self._submit(block, final=False)
        return len(data)

    def _submit(self, block: bytes, final: bool) -> None:
        self.inflight.append(self.pool.submit(_deflate, block, self.dictionary, self.level, final))
        self.dictionary = block[-_DICT:]
        while len(self.inflight) > self.limit:
            self.out.write(self.inflight.popleft().result())

    def close(self) -> None:
        try:
            if self.level == 6 and self.length == EMPTY_TAR_SIZE and not any(self.pending):
                # The empty layer: Go's bytes, not zlib's, so that its blob is the one
                # every BuildKit image has (layers/empty.py).
                self.out.write(EMPTY_GZIP_BODY)
                return
            self._submit(bytes(self.pending), final=True)
            while self.inflight:
                self.out.write(self.inflight.popleft().result())
            self.out.write(struct.pack("<II", self.crc, self.length & 0xFFFFFFFF))
        finally:
            self.pool.shutdown(cancel_futures=True)


def _deflate(block: bytes, dictionary: bytes, level: int, final: bool) -> bytes:
    if dictionary:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=dictionary)
    else:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    data = comp.compress(block)
    return data + comp.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


class _Tee:
    """The tar side: hashes the diff_id (on a thread) and feeds the compressor."""

    def __init__(self, compressor: Any) -> None:
        from builder.layers.sha256_sink import Sha256Writer

        self.digest = Sha256Writer()
        self.compressor = compressor

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.digest.write(data)
        self.compressor.write(data)
        return len(data)


def _compressor(compression: str, sink: _Digest, level: int | None) -> Any:
    if compression == "gzip":
        return _ParallelGzip(sink, 6 if level is None else level)
    if compression == "zstd":
        import zstandard  # ~10 ms to import: only when a blob is really needed

        # Multi-threaded, but at most 4 workers with 4 MiB jobs: each worker
        # holds a few jobs' worth of buffers (50 MiB each with the defaults),
        # and the output does not depend on the worker count.
        params = zstandard.ZstdCompressionParameters.from_level(
            3 if level is None else level, threads=min(os.cpu_count() or 1, 4),
            job_size=_ZSTD_JOB, write_checksum=True)
        zc = zstandard.ZstdCompressor(compression_params=params)
        # zstandard only ever calls the sink's write().
        return zc.stream_writer(cast(IO[bytes], sink), closefd=False, write_return_read=True)
    if compression == "none":
        return sink
    raise ValueError(f"unknown compression {compression!r}")


def _finish(compressor: Any, tee: _Tee, sink: _Digest, compression: str) -> LayerBlob:
    if compressor is not sink:
        compressor.close()
    diff_id = tee.digest.close()
    return LayerBlob(diff_id=diff_id, digest=sink.hexdigest(), size=sink.size,
                     uncompressed_size=tee.digest.size, media_type=MEDIA_TYPES[compression])


def _abort(compressor: Any, tee: _Tee, sink: _Digest) -> None:
    if isinstance(compressor, _ParallelGzip):
        compressor.pool.shutdown(cancel_futures=True)
    tee.digest.abort()
    sink.hash.abort()


def compress_layer(layer_dir: PathLike, out: BinaryIO, compression: Compression = "gzip", *,
                   source_date_epoch: int | None = None, lowers: Sequence[PathLike] = (),
                   rootless: bool | None = None, level: int | None = None) -> LayerBlob:
    """Write ``layer_dir`` as a compressed layer blob to ``out``, in one pass."""
    from builder.layers.tar_write import write_layer_tar

    sink = _Digest(out)
    compressor = _compressor(compression, sink, level)
    tee = _Tee(compressor)
    try:
        write_layer_tar(layer_dir, cast(BinaryIO, tee), source_date_epoch=source_date_epoch,
                        lowers=lowers, rootless=rootless)
    except BaseException:
        _abort(compressor, tee, sink)
        raise
    return _finish(compressor, tee, sink, compression)


def compress_tar(src: BinaryIO, out: BinaryIO, compression: Compression = "gzip", *,
                 level: int | None = None) -> LayerBlob:
    """Compress an existing uncompressed tar stream (an ADD source, an import)."""
    sink = _Digest(out)
    compressor = _compressor(compression, sink, level)
    tee = _Tee(compressor)
    try:
        while chunk := src.read(_READ):
            tee.write(chunk)
    except BaseException:
        _abort(compressor, tee, sink)
        raise
    return _finish(compressor, tee, sink, compression)


# ---------------------------------------------------------------- reading

_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)


def sniff_compression(head: bytes) -> str:
    """"gzip", "zstd", "bzip2", "xz" or "none" from a stream's first bytes."""
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    return "none"


class _Prefixed(io.RawIOBase):
    """``head`` (already read to sniff it) followed by the rest of ``src``."""

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self.head = memoryview(head)
        self.src = src

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self.head:
            n = min(len(buf), len(self.head))
            buf[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.src.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        # Straight from ``src`` once the head is out: no copy through a buffer.
        if not self.head:
            return self.src.read(size)
        n = len(self.head) if size < 0 else min(size, len(self.head))
        data = bytes(self.head[:n])
        self.head = self.head[n:]
        return data


def _decompressed_chunks(src: BinaryIO, factory: Any) -> Iterator[bytes]:
    """``src`` through decompressors made by ``factory`` (lzma's interface), concatenated
    streams included, in chunks of at most 1 MiB (a bomb never fills memory)."""
    decoder = factory()
    while True:
        if decoder.eof:
            rest = decoder.unused_data or src.read(_READ)
            while rest and not rest.strip(b"\0"):  # zero padding after the last stream
                rest = src.read(_READ)
            if not rest:
                return
            decoder = factory()
        elif decoder.needs_input:
            rest = src.read(_READ)
            if not rest:
                raise EOFError("compressed stream ends before its end marker")
        else:
            rest = b""  # output was capped; the decompressor still holds input
        if out := decoder.decompress(rest, _READ):
            yield out


class ChunkReader(io.RawIOBase):
    """A raw stream over an iterator of non-empty chunks (a decompressor's output, a
    response body)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.out = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if not self.out:
            self.out = next(self.chunks, b"")
        n = min(len(buf), len(self.out))
        buf[:n] = self.out[:n]
        self.out = self.out[n:]
        return n


class _GzipMember:
    """zlib's gzip decoder with the interface of lzma's and bz2's decompressors.

    Faster than ``gzip.GzipFile``, which feeds zlib 8 KiB at a time.
    """

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=31)

    @property
    def eof(self) -> bool:
        return self._z.eof

    @property
    def unused_data(self) -> bytes:
        return self._z.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._z.unconsumed_tail

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._z.decompress(self._z.unconsumed_tail + data, max_length)


def _sniff(src: BinaryIO, expect: str | None) -> tuple[bytes, str]:
    """The first bytes of ``src`` (consumed) and the compression they name."""
    head = b""
    while len(head) < 6:
        more = src.read(6 - len(head))
        if not more:
            break
        head += more
    kind = sniff_compression(head)
    if expect is not None and expect != kind:
        raise LayerError(f"media type says {expect} but the data is {kind} (M10)")
    return head, kind


def iter_decompressed(src: BinaryIO, *, expect: str | None = None) -> Iterator[bytes]:
    """The bytes ``open_decompressed`` would read, as chunks of at most 1 MiB.

    For a caller that only hashes: no file-object layers copying each chunk
    between them (half the time of a 50 MB gzip layer's diff_id).
    """
    head, kind = _sniff(src, expect)
    raw = cast(BinaryIO, _Prefixed(head, src))  # read() only: no buffer in between
    if kind in ("none", "zstd"):
        reader = raw if kind == "none" else _zstd_reader(raw)
        while chunk := reader.read(_READ):
            yield chunk
    else:
        yield from _decompressed_chunks(raw, _decompressor(kind))


def open_decompressed(src: BinaryIO, *, expect: str | None = None) -> BinaryIO:
    """A streaming reader of ``src`` decompressed by what its magic bytes say.

    ``expect`` ("gzip", "zstd", "none"...), from the descriptor's media type,
    must agree with the magic (M10); a mismatch is a LayerError.
    """
    head, kind = _sniff(src, expect)
    raw = io.BufferedReader(_Prefixed(head, src), buffer_size=_READ)
    if kind == "none":
        return cast(BinaryIO, raw)
    if kind == "zstd":
        return _zstd_reader(raw)
    chunks = _decompressed_chunks(raw, _decompressor(kind))
    return cast(BinaryIO, io.BufferedReader(ChunkReader(chunks), buffer_size=_READ))


def _zstd_reader(raw: BinaryIO) -> BinaryIO:
    import zstandard

    dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    return cast(BinaryIO, dctx.stream_reader(raw, read_across_frames=True, closefd=False))


def _decompressor(kind: str) -> Any:
    """A factory of decompressors with lzma's interface for gzip, bzip2 or xz."""
    if kind == "gzip":
        return _GzipMember
    if kind == "bzip2":
        import bz2

        return bz2.BZ2Decompressor
    import lzma

    return lambda: lzma.LZMADecompressor(memlimit=_XZ_MEMLIMIT)
