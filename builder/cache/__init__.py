"""The build cache: step keys from explicit inputs, and why a step hit or missed.

A step's key is the sha256 of an unambiguous serialisation of a recorded list
of inputs (parent key, normalized instruction, the env and args it sees, the
platform, source checksums, ``--from`` chain IDs).  The list itself is kept
beside the key, so a miss is explained by diffing two lists (``difference``) into
reason codes (``reasons``), against the previous build of the same step.
Nothing machine-specific enters a key.

Imports builder.errors, builder.context (checksums) and builder.store.
"""

from builder.cache.keys import Inputs, cache_key
from builder.cache.records import CacheEntry, CacheStore

__all__ = ["CacheEntry", "CacheStore", "Inputs", "cache_key"]
