"""The cached rebuild's imports, under ``python -X importtime`` (issue 17, first lead).

A cached rebuild is answered by ``builder.entry``'s replay before the command line or
the engine load.  What it imports falls into two parts:

- the floor, paid by any console script of any package: the interpreter's startup
  (``encodings``, ``site``, the venv's ``.pth`` hooks) and the ``re`` that pip's
  generated ``bin/pybuild`` wrapper imports before it calls ``builder.entry.main``;
  measured in the same run as ``python -X importtime -c "import re, sys"``;
- pybuild's own part: every module the rebuild imports beyond the floor.

The guard is on pybuild's part, in two ways.  It may import only FAST_PATH_MODULES
(exact, so any module that creeps onto the fast path fails the run, however fast the
machine), and their own time summed, the median over the rounds, stays under
OWN_BUDGET_MS.  The total (floor included) is reported, not judged: on this VM it
swings between 12 and 21 ms from one run to the next on unchanged code.
"""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

# What the replay needs: its own modules, sqlite3 for the record (which brings datetime
# and math), hashlib's C sha256 for the invocation's digest.
FAST_PATH_MODULES = frozenset({
    "builder", "builder.entry", "builder.replay", "builder.store", "builder.store.replays",
    "__future__", "collections.abc", "_sha256",
    "sqlite3", "sqlite3.dbapi2", "_sqlite3", "datetime", "_datetime", "math",
})
# 2.6-5.0 ms on the VM of benchmarks/README.md's last run.  A module added to the fast
# path is FAST_PATH_MODULES's to catch (argparse with gettext added only 2 ms here); this
# budget catches the fast path's own modules doing much more at import than they do now.
OWN_BUDGET_MS = 8.0


def own_times(python: str, argv: list[str], env: dict[str, str]) -> dict[str, int]:
    """{module: its own import time in us} of one run of ``python -X importtime argv``."""
    run = subprocess.run([python, "-X", "importtime", *argv], env=env, capture_output=True,
                         text=True, check=True)
    out = {}
    for line in run.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if line.startswith("import time:") and fields[0].strip().isdigit():
            out[fields[2].strip()] = int(fields[0])
    return out


def measure(script: Path, argv: list[str], env: dict[str, str], rounds: int) -> dict:
    """Time ``rounds`` runs of ``script argv`` (a cached rebuild) and of the floor."""
    python = script.read_text().splitlines()[0].removeprefix("#!").strip()
    floor: set[str] = set()
    for _ in range(3):   # a module the floor imports only sometimes is still the floor's
        floor |= set(own_times(python, ["-c", "import re, sys"], env))
    totals, own, extra = [], [], set()
    mine: dict[str, int] = {}
    for _ in range(rounds):
        times = own_times(python, [str(script), *argv], env)
        mine = {name: us for name, us in times.items() if name not in floor}
        totals.append(sum(times.values()) / 1000)
        own.append(sum(mine.values()) / 1000)
        extra |= set(mine) - FAST_PATH_MODULES
    slowest = sorted(((us, name) for name, us in mine.items()), reverse=True)[:5]
    return {"median_ms": round(statistics.median(totals), 2),
            "own_median_ms": round(statistics.median(own), 2),
            "own_budget_ms": OWN_BUDGET_MS, "own_modules": sorted(mine),
            "off_fast_path": sorted(extra),
            "slowest_own_us": [f"{name}: {us}" for us, name in slowest]}


def failures(imports: dict) -> list[str]:
    """What the guard found wrong in ``measure``'s result, one line each."""
    out = []
    if imports["off_fast_path"]:
        out.append("IMPORT GUARD: a cached rebuild imports modules off its fast path: "
                   + ", ".join(imports["off_fast_path"]))
    if imports["own_median_ms"] > imports["own_budget_ms"]:
        out.append(f"IMPORT BUDGET EXCEEDED: a cached rebuild spends "
                   f"{imports['own_median_ms']} ms importing its own modules, over the "
                   f"{imports['own_budget_ms']} ms budget; slowest (own us): "
                   + ", ".join(imports["slowest_own_us"]))
    return out
