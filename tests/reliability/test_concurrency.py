"""Four builds at once on one store and one cache, ten rounds (catalogue REL-3).

Each round runs, in parallel, two builds of the same Dockerfile (they race to commit
the same layers and cache entries) and two of another one that shares a RUN cache
mount (each appends a line to a log in it, so their images differ) and has a step
cached since the first round; a build arg makes every round's last steps new work.
Every build must succeed, the twins must give the same image,
and after every round ``pybuild doctor`` must find nothing (no corrupt blob, no
unregistered layer dir, no cache entry naming a missing layer, no leftover tmp/).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from relcommon import ENV, assert_store_clean, doctor, new_store

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.slow]

SAME = """\
FROM busybox
ARG R
COPY a.txt /a.txt
RUN echo "round $R" > /round && seq 1 2000 > /seq
RUN cat /a.txt /round > /both
"""
SHARED_CACHE = """\
FROM busybox
ARG R
RUN echo constant > /constant
RUN --mount=type=cache,target=/cache echo "$R $$" >> /cache/log && cp /cache/log /seen
COPY a.txt /r$R.txt
"""
ROUNDS = 10


def _start(root: Path, context: Path, dockerfile: str, round_: int) -> subprocess.Popen:
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "builder", "--root", str(root), "build", "-q",
         "-f", str(context / dockerfile), "--build-arg", f"R={round_}", str(context)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **ENV})


def test_four_builds_ten_rounds(tmp_path: Path, busybox_tar: Path) -> None:
    root = new_store(tmp_path / "store", busybox_tar)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("hello\n")
    (context / "same.Dockerfile").write_text(SAME)
    (context / "cache.Dockerfile").write_text(SHARED_CACHE)
    started = time.monotonic()
    for round_ in range(ROUNDS):
        procs = [_start(root, context, name, round_) for name in
                 ("same.Dockerfile", "same.Dockerfile", "cache.Dockerfile", "cache.Dockerfile")]
        outputs = [p.communicate(timeout=120) for p in procs]
        results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs,
                                                                     strict=True)]
        for code, _out, err in results:
            assert code == 0, f"round {round_}: a build failed ({code}): {err.decode()}"
        ids = [out.decode().strip() for _code, out, _err in results]
        assert ids[0] == ids[1], f"round {round_}: the same build gave two images"
        assert_store_clean(root)
    print(f"{ROUNDS} rounds of 4 builds: {time.monotonic() - started:.1f}s")
    deep = doctor(root, "--deep")
    assert deep.returncode == 0, deep.stdout.decode()
    log = (root / "cache-mounts").rglob("log")
    lines = [line for path in log for line in path.read_text().splitlines()]
    # Every build that ran the cache step appended one whole line (no torn writes).
    assert all(len(line.split()) == 2 for line in lines)
    assert {line.split()[0] for line in lines} == {str(r) for r in range(ROUNDS)}


_SWEEPER = """
import sys, time
from builder.store import Store
root, seconds = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + seconds
while time.monotonic() < end:
    store = Store(root)
    store.sweep()  # what every pybuild command does when it opens the store
    store.close()
"""


def test_sweep_never_takes_a_live_work_dir(tmp_path: Path) -> None:
    """Another process's open-time sweep runs while this one makes work dirs: a dir that
    exists must always be ours to use (it was lost between mkdir and flock before)."""
    from builder.store import Store

    root = tmp_path / "store"
    store = Store(root)
    store.db  # noqa: B018 - create the layout before the sweepers start
    sweepers = [subprocess.Popen([sys.executable, "-c", _SWEEPER, str(root), "4"])
                for _ in range(2)]
    made = 0
    try:
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            work = store.tmp_dir("race")
            (work.path / "file").write_text("mine")   # fails if a sweeper took the dir
            time.sleep(0.0005)
            assert (work.path / "file").read_text() == "mine"
            work.release()
            made += 1
    finally:
        for sweeper in sweepers:
            sweeper.wait(timeout=30)
        store.close()
    assert all(s.returncode == 0 for s in sweepers)
    assert made > 100
