"""Round 2, point 7 (E): ``--cache-to type=local`` never keeps a planted blob.

An earlier export's blobs are reused, but what is in the dest is not trusted
(someone else may have prepared it).  Before the fix a file of the right size
under a blob's name was kept unread, so the export carried the attacker's
bytes under a digest they do not match (and a later ``--cache-from`` reads a
broken, or worse, chosen, cache).  Now an existing blob is hashed (read through
an fd opened beneath the dest, no symlink followed) and replaced unless it is
the blob.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from security.oracle import build

pytestmark = [
    pytest.mark.root,
    pytest.mark.overlay,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds"),
]

DOCKERFILE = "FROM busybox\nRUN echo cached > /greeting\n"


def blobs(dest: Path) -> dict[str, Path]:
    """Every blob the export's index reaches: manifest, config and layers."""
    def path(digest: str) -> Path:
        return dest / "blobs" / "sha256" / digest.split(":", 1)[1]

    index = json.loads((dest / "index.json").read_bytes())
    found = {}
    for descriptor in index["manifests"]:
        manifest = json.loads(path(descriptor["digest"]).read_bytes())
        found[descriptor["digest"]] = path(descriptor["digest"])
        for item in [manifest["config"], *manifest["layers"]]:
            found[item["digest"]] = path(item["digest"])
    return found


def test_planted_blob_of_the_right_size_is_replaced(bstore, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    first = tmp_path / "first"
    build(bstore, context, DOCKERFILE, None, "--cache-to", f"type=local,dest={first}")
    expected = blobs(first)
    assert len(expected) >= 3, expected  # manifest, entry list, at least one layer
    # The attacker's dest: the same names and sizes, other bytes.
    dest = tmp_path / "dest"
    (dest / "blobs" / "sha256").mkdir(parents=True)
    for path in expected.values():
        (dest / "blobs" / "sha256" / path.name).write_bytes(b"\0" * path.stat().st_size)
    build(bstore, context, DOCKERFILE, None, "--cache-to", f"type=local,dest={dest}")
    for digest, path in blobs(dest).items():
        data = path.read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, \
            f"the export kept a planted {len(data)}-byte file as blob {digest}"
    assert not [n for n in os.listdir(dest / "blobs" / "sha256") if ".pybuild-" in n]


def test_an_earlier_good_export_is_reused(bstore, tmp_path):
    """Negative control: the right blobs are kept (the same inode), not rewritten."""
    context = tmp_path / "ctx"
    context.mkdir()
    dest = tmp_path / "dest"
    build(bstore, context, DOCKERFILE, None, "--cache-to", f"type=local,dest={dest}")
    inodes = {d: p.stat().st_ino for d, p in blobs(dest).items()}
    build(bstore, context, DOCKERFILE, None, "--cache-to", f"type=local,dest={dest}")
    after = blobs(dest)
    layers = json.loads(next(iter(after.values())).read_bytes())["layers"]
    for layer in layers:
        assert after[layer["digest"]].stat().st_ino == inodes[layer["digest"]]
