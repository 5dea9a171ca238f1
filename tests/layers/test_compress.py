"""One-pass compression (diff_id and digest together) and sniffing decompression."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from builder.errors import LayerError
from builder.layers import (
    compress_layer,
    compress_tar,
    layer_diff_id,
    open_decompressed,
    write_layer_tar,
)
from builder.layers.compress import (
    MEDIA_TYPES,
    _ParallelGzip,
    iter_decompressed,
    sniff_compression,
)


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    root = tmp_path / "layer"
    (root / "bin").mkdir(parents=True)
    rng = __import__("random").Random(7)
    # Compressible and incompressible parts, several gzip blocks in all.
    (root / "bin" / "text").write_bytes(b"the quick brown fox\n" * 200_000)
    (root / "bin" / "noise").write_bytes(rng.randbytes(1_500_000))
    for i in range(50):
        (root / f"f{i}").write_text(str(i) * i)
    return root


def tar_of(layer: Path) -> bytes:
    out = io.BytesIO()
    write_layer_tar(layer, out, source_date_epoch=0)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_one_pass_gives_diff_id_and_digest(layer, kind):
    out = io.BytesIO()
    blob = compress_layer(layer, out, kind, source_date_epoch=0)
    data = out.getvalue()
    tar = tar_of(layer)
    assert blob.diff_id == layer_diff_id(layer, source_date_epoch=0)[0]
    assert blob.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (blob.size, blob.uncompressed_size) == (len(data), len(tar))
    assert blob.media_type == MEDIA_TYPES[kind]
    assert open_decompressed(io.BytesIO(data)).read() == tar
    if kind == "none":
        assert blob.digest == blob.diff_id


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_reproducible(layer, kind):
    a, b = io.BytesIO(), io.BytesIO()
    assert compress_layer(layer, a, kind, source_date_epoch=0) == compress_layer(
        layer, b, kind, source_date_epoch=0)
    assert a.getvalue() == b.getvalue()


def test_gzip_header_has_no_name_and_no_mtime(layer):
    out = io.BytesIO()
    compress_layer(layer, out, "gzip")
    head = out.getvalue()[:10]
    assert head[:4] == b"\x1f\x8b\x08\x00"  # deflate, no FNAME/FEXTRA/FCOMMENT
    assert head[4:8] == b"\0\0\0\0"


def test_parallel_gzip_does_not_depend_on_thread_count(layer):
    tar = tar_of(layer)
    outputs = []
    for threads in (1, 3, 8):
        out = io.BytesIO()
        gz = _ParallelGzip(out, 6, threads=threads)
        for i in range(0, len(tar), 70_000):  # writes that straddle block edges
            gz.write(tar[i:i + 70_000])
        gz.close()
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]
    assert gzip.decompress(outputs[0]) == tar


@pytest.mark.skipif(shutil.which("gzip") is None or shutil.which("zstd") is None,
                    reason="gzip and zstd command-line tools needed")
@pytest.mark.parametrize(("kind", "tool"), [("gzip", "gzip"), ("zstd", "zstd")])
def test_command_line_tools_accept_the_blobs(layer, tmp_path, kind, tool):
    blob = tmp_path / "blob"
    with open(blob, "wb") as f:
        compress_layer(layer, f, kind, source_date_epoch=0)
    subprocess.run([tool, "-t", str(blob)], check=True, capture_output=True)
    out = subprocess.run([tool, "-dc", str(blob)], check=True, capture_output=True).stdout
    assert out == tar_of(layer)


def test_zstd_frame_has_checksum(layer):
    out = io.BytesIO()
    compress_layer(layer, out, "zstd")
    params = zstandard.get_frame_parameters(out.getvalue())
    assert params.has_checksum


def test_compress_tar_matches_compress_layer(layer):
    direct = io.BytesIO()
    blob = compress_layer(layer, direct, "zstd", source_date_epoch=0)
    again = io.BytesIO()
    assert compress_tar(io.BytesIO(tar_of(layer)), again, "zstd") == blob
    assert again.getvalue() == direct.getvalue()


@pytest.mark.parametrize(("blob", "kind"), [
    (gzip.compress(b"tar" * 1000, mtime=0) + gzip.compress(b"more", mtime=0), "gzip"),
    (zstandard.ZstdCompressor().compress(b"tar" * 1000) + zstandard.ZstdCompressor().compress(
        b"more"), "zstd"),
    (bz2.compress(b"tar" * 1000) + bz2.compress(b"more"), "bzip2"),
    (lzma.compress(b"tar" * 1000) + lzma.compress(b"more"), "xz"),
    (b"tar" * 1000 + b"more", "none"),
])
def test_open_decompressed_sniffs_and_concatenates(blob, kind):
    assert sniff_compression(blob[:6]) == kind
    assert open_decompressed(io.BytesIO(blob)).read() == b"tar" * 1000 + b"more"
    assert b"".join(iter_decompressed(io.BytesIO(blob))) == b"tar" * 1000 + b"more"


@pytest.mark.parametrize("blob", [
    gzip.compress(os.urandom(3 << 20), mtime=0) + b"\0" * 5000,       # stored blocks, padding
    gzip.compress(b"\0" * (5 << 20), mtime=0) * 2,                     # 1000:1, two members
    b"", b"ab", os.urandom(3 << 20),
    zstandard.ZstdCompressor().compress(os.urandom(2 << 20)) * 2])
def test_iter_decompressed_reads_what_open_decompressed_reads(blob):
    # The pull checks diff_ids with one, extraction hashes with the other: they
    # must agree byte for byte, and no chunk may exceed 1 MiB (bombs stay small).
    chunks = list(iter_decompressed(io.BytesIO(blob)))
    assert b"".join(chunks) == open_decompressed(io.BytesIO(blob)).read()
    assert all(len(chunk) <= 1 << 20 for chunk in chunks)


def test_open_decompressed_tiny_and_empty():
    assert open_decompressed(io.BytesIO(b"")).read() == b""
    assert open_decompressed(io.BytesIO(b"ab")).read() == b"ab"


def test_media_type_must_match_magic():
    with pytest.raises(LayerError, match="M10"):
        open_decompressed(io.BytesIO(gzip.compress(b"x")), expect="zstd")
    assert open_decompressed(io.BytesIO(b"plain"), expect="none").read() == b"plain"


def test_zstd_window_is_capped():
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=28)
    # Streamed, so the frame declares its 256 MiB window, not a content size.
    comp = zstandard.ZstdCompressor(compression_params=params).compressobj()
    blob = comp.compress(os.urandom(1 << 20)) + comp.flush()
    with pytest.raises(zstandard.ZstdError):
        open_decompressed(io.BytesIO(blob)).read()


@pytest.mark.parametrize("blob", [gzip.compress(b"x" * 100_000)[:-20],
                                  lzma.compress(os.urandom(100_000))[:-50],
                                  bz2.compress(os.urandom(100_000))[:-50]])
def test_truncated_streams_raise(blob):
    with pytest.raises((EOFError, OSError, lzma.LZMAError)):
        open_decompressed(io.BytesIO(blob)).read()
    with pytest.raises((EOFError, OSError, lzma.LZMAError)):
        b"".join(iter_decompressed(io.BytesIO(blob)))


def test_unknown_compression_rejected(layer):
    with pytest.raises(ValueError):
        compress_layer(layer, io.BytesIO(), "lz4")  # type: ignore[arg-type]
