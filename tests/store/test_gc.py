"""df and prune: unused layers go, everything a tagged image or the cache needs stays."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]


def test_prune_keeps_what_tagged_images_need(tmp_path: Path, busybox_tar: Path) -> None:
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo one > /one\n")
    run_cli("-t", "keep", str(context), root=root)
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo two > /two\n")
    run_cli("-t", "drop", str(context), root=root)
    run_cli("rmi", "drop", root=root)  # deletes the image record (docker rmi), not its layer
    # The cache still names the dropped layer: a plain prune keeps it.
    assert run_cli("prune", root=root).stdout == b"Deleted 0 images, 0 layers, 1 blobs\n"
    assert run_cli("prune", "--cache", root=root).stdout == \
        b"Deleted 0 images, 1 layers, 0 blobs\n"
    assert len(list((root / "layers").iterdir())) == 2  # busybox and keep's RUN
    run_cli("save", "-o", str(tmp_path / "keep.tar"), "keep", root=root)
    df = run_cli("df", root=root).stdout.decode()
    assert df.splitlines()[2].split()[:3] == ["Layers", "2", "2"]
