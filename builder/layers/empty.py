"""The empty layer: what a step that changed no files contributes to an image.

BuildKit gives every RUN, COPY, ADD and WORKDIR (but ``WORKDIR /``) step a layer,
even one whose diff is empty (dockerfile2llb/convert.go ``dispatchRun``,
``dispatchWorkdir``; convert_copy.go ``dispatchCopy`` commit their history
``withLayer``), and the exporter keeps it (exporter/containerimage/writer.go
``normalizeLayersAndHistory`` drops nothing).  Its tar is Go's ``tar.Writer``
closed with no entry: two zero blocks.  So does pybuild's writer.

Its gzip blob is Go's ``compress/gzip`` at the default level over those 1024
zero bytes: 32 bytes that every BuildKit image shares (digest ``4f4fb700...``,
docker/buildx#1910).  zlib deflates the same input to other (equally valid)
bytes, so the blob is kept here as a constant and written as is whenever a
gzip layer holds exactly the empty tar: the images pybuild writes then share
that blob with every BuildKit image, and a registry that has it already does
not get it again.  zstd and uncompressed empty layers go through the normal
writers (BuildKit uses its own zstd encoder there; nothing to match byte for byte).
"""

from __future__ import annotations

EMPTY_TAR_SIZE = 1024
# sha256 of 1024 zero bytes.
EMPTY_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
# Made with Go's archive/tar + compress/gzip (gzip.NewWriter, default level):
# header (no name, mtime 0, OS unknown), deflate stream, CRC-32, length 1024.
EMPTY_GZIP = bytes.fromhex("1f8b08000000000000ff621805a360148c5800080000ffff2eafb5ef00040000")
# The part after the 10-byte header, which zlib's and Go's writers share.
EMPTY_GZIP_BODY = EMPTY_GZIP[10:]


def is_empty(diff_id: str) -> bool:
    """Whether a layer with this diff_id holds no entry at all."""
    return diff_id == EMPTY_DIFF_ID
