"""What things in the store are called: the root, digests, chain IDs and tags."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from builder.errors import StoreError

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def default_root() -> Path:
    """Where the store lives unless ``--root`` or ``PYBUILD_ROOT`` says otherwise."""
    if env := os.environ.get("PYBUILD_ROOT"):
        return Path(env)
    from builder.userns import rootless

    if not rootless():
        return Path("/var/lib/pybuild")
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "pybuild"


def check_digest(digest: str) -> str:
    """Validate a digest before it is used in any path (catalogue §0.6)."""
    if not _DIGEST.match(digest):
        raise StoreError(f"invalid digest {digest!r}: want sha256:<64 hex digits>")
    return digest


def chain_id_of(parent: str | None, diff_id: str) -> str:
    """OCI ChainID: the diff_id for a base layer, else sha256(parent + " " + diff_id)."""
    if parent is None:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


def normalize_tag(name: str) -> str:
    """``app`` -> ``app:latest``; a name that has a tag or digest is kept."""
    if "@" in name:
        return name
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"
