"""kill -9 a real build at 20 points (RUN, commit, blob write, export); after each one
the store checks clean and the same build succeeds with identical output (catalogue
REL-1/REL-2/REL-6).

Each trial starts from a fresh store holding busybox, so the killed build always has
work to do.  Three kinds of kill points:

* crash points (``PYBUILD_FAULT_POINT``, builder/store/faults.py): the build process
  SIGKILLs itself at a named place, e.g. after a layer dir is renamed into the store
  but before its database row is written; its children must die on their own;
* during a RUN: the process group is SIGKILLed while a marked ``sleep`` runs in the
  sandbox (overlay mounted, PID namespace up);
* at seeded random delays (the seed is printed; ``RELIABILITY_SEED`` replays one).

After each kill: no mount under the store in any process's mountinfo, no process of
the build's session left, ``pybuild doctor`` exit 0 (tmp/ and half-written blobs
swept), then a rebuild gives the reference image ID and a byte-identical OCI archive.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from relcommon import (
    RUN_MARKERS,
    assert_store_clean,
    build,
    make_context,
    new_store,
    running_marker,
    sha256_file,
    start_build,
    wait_clean,
)

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.slow]

CRASH_POINTS = ["layer:locked:1", "layer:locked:3", "layer:renamed:1", "layer:renamed:2",
                "layer:renamed:4", "blob:renamed:1", "blob:renamed:3", "export:layer:2",
                "export:layer:4", "export:layer:6"]
RANDOM_KILLS = 7


def _copy_store(src: Path, dest: Path) -> None:
    # cp -a keeps busybox's hardlinks (one file, not 400 copies) and the l/ symlinks.
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)


def _trials(seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    trials = [("point", p) for p in CRASH_POINTS]
    trials += [("run", m) for m in RUN_MARKERS]
    trials += [("delay", f"{rng.uniform(0.05, 1.2):.3f}") for _ in range(RANDOM_KILLS)]
    return trials


def test_kill_at_20_points(tmp_path: Path, busybox_tar: Path) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED", str(random.SystemRandom().randrange(1 << 30))))
    print(f"fault-injection seed: {seed} (replay with RELIABILITY_SEED={seed})")
    context = make_context(tmp_path / "ctx")
    reference = tmp_path / "reference.tar"
    template = new_store(tmp_path / "template", busybox_tar)
    _copy_store(template, tmp_path / "ref-store")
    ref_id = build(tmp_path / "ref-store", context, reference)
    ref_sum = sha256_file(reference)

    trials = _trials(seed)
    assert len(trials) == 20
    killed_mid_build = 0
    for number, (kind, where) in enumerate(trials):
        root = tmp_path / f"store-{number}"
        _copy_store(template, root)  # a fresh store holding busybox
        out = tmp_path / f"out-{number}.tar"
        env = {"PYBUILD_FAULT_POINT": where} if kind == "point" else None
        proc = start_build(root, context, out, env=env)
        label = f"trial {number} ({kind} {where}, seed {seed})"
        if kind == "run":
            deadline = time.monotonic() + 30
            while not running_marker(proc.pid, where):
                assert proc.poll() is None, f"{label}: build ended before the RUN"
                assert time.monotonic() < deadline, f"{label}: RUN never started"
                time.sleep(0.005)
            os.killpg(proc.pid, signal.SIGKILL)
        elif kind == "delay":
            time.sleep(float(where))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
        if kind != "delay":
            assert proc.returncode == -signal.SIGKILL, \
                f"{label}: not killed (exit {proc.returncode}): {stderr.decode()[-500:]}"
        killed_mid_build += proc.returncode == -signal.SIGKILL

        wait_clean(root, proc.pid)
        assert_store_clean(root)
        image_id = build(root, context, out)
        assert image_id == ref_id, f"{label}: rebuild gave another image"
        assert sha256_file(out) == ref_sum, f"{label}: rebuild's archive differs"
    assert killed_mid_build >= 17, "too few trials actually killed a build"
