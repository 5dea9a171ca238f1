"""Layers: convert layer directories in overlay format to OCI layer tars and
back, and compress them.

A layer directory holds one layer's change set the way overlayfs stores an
upper dir: a deletion is a 0:0 character device, an opaque directory carries
``trusted.overlay.opaque=y``.  Modules, split by direction:

    whiteout     whiteout names, overlay xattrs, the xattr allowlist (both ways)
    changes      walk a layer dir as a change set (vs lowers); explain summary
    tar_write    layer dir -> OCI tar (streaming), diff_id
    sha256_sink  hashes a stream on a thread; reads big files handed over by fd
    tar_read     OCI tar -> validated members (tarfile as a header parser only)
    apply        members -> layer dir ("overlay") or into a rootfs ("merged")
    safepath     fd-based resolution inside a root (openat2 / O_PATH walk)
    safeout      writing beneath an output directory, never through a symlink
    compress     one-pass tar -> gzip/zstd with diff_id and digest; sniffing
    blob         a compressed layer blob -> its diff_id, or applied into a layer dir
    diff         tree diff into a layer dir, for the vfs snapshot driver

Imports only the standard library, ``zstandard``, ``builder.errors``,
``builder.limits`` and ``builder.syscalls`` (openat2).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from builder.layers.apply import ApplyStats, apply_layer_tar
    from builder.layers.compress import (
        LayerBlob,
        compress_layer,
        compress_tar,
        open_decompressed,
    )
    from builder.layers.diff import diff_trees
    from builder.layers.tar_write import (
        LayerChanges,
        layer_changes,
        layer_diff_id,
        write_layer_tar,
    )

# Submodules load on first use (PEP 562): a build that only hashes layers
# never pays for tarfile, logging or the compressors.
_WHERE = {
    "ApplyStats": "apply", "apply_layer_tar": "apply",
    "LayerBlob": "compress", "compress_layer": "compress", "compress_tar": "compress",
    "open_decompressed": "compress",
    "diff_trees": "diff",
    "LayerChanges": "tar_write", "layer_changes": "tar_write", "layer_diff_id": "tar_write",
    "write_layer_tar": "tar_write",
}

__all__ = [
    "ApplyStats",
    "LayerBlob",
    "LayerChanges",
    "apply_layer_tar",
    "compress_layer",
    "compress_tar",
    "diff_trees",
    "layer_changes",
    "layer_diff_id",
    "open_decompressed",
    "write_layer_tar",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'builder.layers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"builder.layers.{module}"), name)
    globals()[name] = value
    return value
