"""``--metadata-file``: buildx's keys and pybuild's per-step cache summary (issue 15 point 6).

buildx's own keys (``containerimage.digest``, ``containerimage.config.digest``,
``containerimage.descriptor``, ``image.name``) are checked in detail against the
exported manifest by tests/engine/test_buildx_flags.py; here they are checked to be
there, with buildx's shapes, next to ``pybuild.cache`` (docs/progress.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]

DOCKERFILE = ("FROM busybox\nARG TOKEN=none\nRUN echo base > /base\nENV MODE=test\n"
              "COPY app.txt /app.txt\nRUN cat /app.txt\n")


def _build(store_root: Path, context: Path, meta: Path, *extra: str) -> dict[str, object]:
    iid = meta.with_suffix(".iid")
    run_cli("build", "--progress", "plain", "-t", "meta-app", "--iidfile", str(iid),
            "--metadata-file", str(meta), *extra, str(context), root=store_root)
    data = json.loads(meta.read_text())
    assert data["containerimage.config.digest"] == iid.read_text()
    return data


@pytest.fixture
def context(tmp_path: Path) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "app.txt").write_text("one\n")
    return context


def _steps(data: dict[str, object]) -> dict[str, dict]:
    cache = data["pybuild.cache"]
    assert isinstance(cache, dict)
    return {step["instruction"]: step for step in cache["steps"]}


def test_metadata_file_has_buildx_keys_and_the_cache_summary(store, busybox, context: Path,
                                                             tmp_path: Path) -> None:
    meta = tmp_path / "meta.json"
    data = _build(store.root, context, meta)
    assert list(data) == sorted(data)   # Go's map order, as buildx writes it
    assert set(data) == {"containerimage.config.digest", "containerimage.descriptor",
                         "containerimage.digest", "image.name", "pybuild.cache"}
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", str(data["containerimage.digest"]))
    descriptor = data["containerimage.descriptor"]
    assert isinstance(descriptor, dict)
    assert list(descriptor) == ["mediaType", "digest", "size", "platform"]
    assert descriptor["digest"] == data["containerimage.digest"]
    assert data["image.name"] == "docker.io/library/meta-app:latest"

    cache = data["pybuild.cache"]
    assert isinstance(cache, dict)
    assert (cache["version"], cache["hits"], cache["misses"]) == (1, 0, 3)
    steps = _steps(data)
    assert list(steps) == ["ARG TOKEN=none", "RUN echo base > /base", "ENV MODE=test",
                           "COPY app.txt /app.txt", "RUN cat /app.txt"]
    run = steps["RUN echo base > /base"]
    assert (run["stage"], run["index"], run["line"], run["cache"]) == ("stage-0", 2, 3, "miss")
    assert run["reasons"][0]["code"] == "not-built-before"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", run["layer"])
    assert steps["ENV MODE=test"]["cache"] == "none"
    assert steps["ENV MODE=test"]["reasons"] == [{"code": "config-only", "params": {}}]

    # A changed file: hits above it, the miss names the file, the step below says why.
    (context / "app.txt").write_text("two\n")
    data = _build(store.root, context, meta, "--build-arg", "TOKEN=s3cr3t-value")
    cache = data["pybuild.cache"]
    assert isinstance(cache, dict)
    steps = _steps(data)
    assert steps["COPY app.txt /app.txt"]["cache"] == "miss"
    reasons = steps["COPY app.txt /app.txt"]["reasons"]
    assert {"code": "file-changed", "params": {"path": "app.txt"}} in reasons, reasons
    assert steps["RUN cat /app.txt"]["reasons"][0]["code"] == "parent-missed"
    assert "s3cr3t-value" not in meta.read_text()   # an ARG value never appears


def test_cached_rebuild_reports_every_layer_step_as_a_hit(store, busybox, context: Path,
                                                          tmp_path: Path) -> None:
    meta = tmp_path / "meta.json"
    first = _build(store.root, context, meta)
    again = _build(store.root, context, meta)
    assert again["containerimage.digest"] == first["containerimage.digest"]
    cache = again["pybuild.cache"]
    assert isinstance(cache, dict)
    assert (cache["hits"], cache["misses"]) == (3, 0)
    assert all(step["reasons"] == [{"code": "cache-hit", "params": {}}]
               for step in _steps(again).values() if step["cache"] == "hit")
