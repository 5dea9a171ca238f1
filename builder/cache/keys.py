"""Step cache keys: an ordered list of named inputs, hashed unambiguously."""

from __future__ import annotations

import hashlib
import json

# A key's inputs, in order: (name, value).  Names repeat for multi-valued inputs
# (one "env" per variable, one "file" per source entry).
Inputs = list[tuple[str, str]]

# Bump when the meaning of the inputs changes, so old entries stop matching.
KEY_VERSION = "pybuild-cache-v1"


def cache_key(inputs: Inputs) -> str:
    """sha256 of the inputs as canonical JSON: no separator ambiguity, no machine state."""
    payload = json.dumps([KEY_VERSION, *([name, value] for name, value in inputs)],
                         ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(payload.encode(errors="surrogateescape")).hexdigest()
