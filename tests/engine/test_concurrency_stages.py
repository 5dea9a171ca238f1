"""Independent stages build at the same time, and give what a sequential build gives."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers import mounts_under, processes, run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay,
              pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root")]

TWO_SLEEPERS = """\
FROM busybox AS left
RUN sleep 2 && echo left > /left
FROM busybox AS right
RUN sleep 2 && echo right > /right
FROM busybox AS unused
RUN exit 9
FROM busybox
COPY --from=left /left /left
COPY --from=right /right /right
RUN cat /left /right > /both
"""


def _store_with_busybox(root: Path, busybox_tar: Path) -> Path:
    run_cli("import", str(busybox_tar), "busybox", root=root)
    return root


def _events(stderr: bytes) -> list[dict]:
    return [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]


def _record(root: Path, image_id: str) -> list[tuple[str, int, str]]:
    from builder.explain.records import load_build
    from builder.store import Store

    store = Store(root)
    try:
        steps = load_build(store, image_id) or []
    finally:
        store.close()
    return [(s.stage, s.index, s.instruction) for s in steps]


def test_independent_stages_overlap_and_match_a_sequential_build(
        tmp_path: Path, busybox_tar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(TWO_SLEEPERS)
    epoch = {"SOURCE_DATE_EPOCH": "1700000000"}

    # In parallel, through the real command line.
    parallel = _store_with_busybox(tmp_path / "parallel", busybox_tar)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch["SOURCE_DATE_EPOCH"])
    iidfile = tmp_path / "iid"
    started = time.monotonic()
    result = run_cli("--progress", "json", "--iidfile", str(iidfile), str(context),
                     root=parallel)
    wall = time.monotonic() - started
    image_parallel = iidfile.read_text().strip()
    events = _events(result.stderr)
    assert events, result.stderr
    runs = {e["stage"]: e for e in events
            if e["event"] == "step" and "RUN sleep 2" in e["name"]}
    assert set(runs) == {"left", "right"}, events
    done = {e["stage"]: e for e in events if e["event"] == "done"
            and e["step"] in (runs["left"]["step"], runs["right"]["step"])}
    # Each sleeping step started before the other one ended: they overlapped.
    assert runs["left"]["time"] < done["right"]["time"]
    assert runs["right"]["time"] < done["left"]["time"]
    # Every output and done event names the stage of its step.
    stage_of = {e["step"]: e["stage"] for e in events if e["event"] == "step"}
    assert all(e["stage"] == stage_of[e["step"]] for e in events
               if e["event"] in ("output", "done"))
    assert not any(e.get("stage") == "unused" for e in events)  # never built
    assert wall < 30  # loose: the overlap above is the real check

    # One stage at a time, in process, in a fresh store.
    from builder.engine import engine, scheduler
    from builder.engine.options import BuildOptions
    from builder.engine.progress import Progress
    from builder.store import Store

    monkeypatch.setattr(scheduler, "jobs", lambda: 1)
    sequential_root = _store_with_busybox(tmp_path / "sequential", busybox_tar)
    store = Store(sequential_root)
    try:
        seq = engine.build(store, BuildOptions(context=context, source_date_epoch=1700000000),
                           Progress(quiet=True))
    finally:
        store.close()
    assert seq.image_id == image_parallel
    record = _record(parallel, image_parallel)
    assert record == _record(sequential_root, seq.image_id)
    # The record lists steps in plan order, whatever the interleaving.
    assert [r[0] for r in record] == ["left", "right", "stage-3", "stage-3", "stage-3"]


def test_a_failing_stage_stops_the_others(tmp_path: Path, busybox_tar: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox AS slow\nRUN sleep 173\n"
        "FROM busybox AS broken\nRUN sleep 1; echo going down; exit 3\n"
        "FROM busybox\nCOPY --from=slow /etc/passwd /a\nCOPY --from=broken /etc/passwd /b\n")
    root = _store_with_busybox(tmp_path / "store", busybox_tar)
    started = time.monotonic()
    result = run_cli(str(context), root=root, check=False)
    assert time.monotonic() - started < 60, "the sleeping stage was not stopped"
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    assert "exit code: 3" in stderr and "going down" in stderr
    assert "Dockerfile:4: RUN sleep 1; echo going down; exit 3" in stderr
    assert not processes([b"sleep", b"173"])
    assert not [p for p in (root / "tmp").iterdir()], list((root / "tmp").iterdir())
    assert not mounts_under(root)
