"""The Store object: blobs, layers, images and tags under one root directory.

``Store`` is the sum of one class per part of the store, each in its own module:

    database  the root, the SQLite connection (opened, migrated by ``schema`` and swept
              on first use), transactions and the store lock
    blobs     content-addressed blobs and the layer-blob rows
    layers    layer rows and directories: commit by rename, extract, unpack
    images    images and tags
    export    an image's (or the cache's) layers as an export needs them, in one call
              (``exportview``: what it hands out, made only when something is exported)

Cache and explain rows are in ``records`` (functions over a store); ``gc``, ``doctor``
and ``remove`` work through these APIs.  The names other packages import from here
are re-exported below.
"""

from __future__ import annotations

from builder.store.blobs import LayerBlobRecord
from builder.store.export import ExportStore
from builder.store.layers import LayerRecord
from builder.store.names import chain_id_of, check_digest, default_root, normalize_tag
from builder.store.tmpdir import TmpDir, mounts_under, remove_tree

__all__ = ["LayerBlobRecord", "LayerRecord", "Store", "TmpDir", "chain_id_of",
           "check_digest", "default_root", "mounts_under", "normalize_tag", "remove_tree"]


class Store(ExportStore):
    """The local store.  Cheap to construct; the database opens on first use."""
