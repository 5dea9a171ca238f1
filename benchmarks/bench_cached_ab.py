"""Two (or more) pybuild installs on one workload, alternating, same run.

    python benchmarks/bench_cached_ab.py --pybuild before=/venv-a/bin/pybuild \\
        --pybuild after=/venv-b/bin/pybuild [--case cached] [--rounds 15] [--out results.json]

Cases: ``cached`` (the fully cached rebuild, the default), ``cold`` (the same Dockerfile
with ``--no-cache``), ``context-noop`` (a no-op rebuild of a 20,000-file, 20 MB context
copied by one COPY) and ``context-cold`` (that COPY with ``--no-cache``).

Answers "did this change slow a path down?": each install gets its own store with
the same base image (bench_builds.py's Debian minbase) and builds bench_builds.py's
20-instruction Dockerfile once; then the rebuilds alternate between the installs, round
by round, so that machine noise hits them alike.  Bytecode is cached as for a user
(PYTHONDONTWRITEBYTECODE unset, a private pycache warmed by the first build).  Prints
the median and quartiles per install and each median's ratio to the first install's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_builds import BASE, DEFAULT_BASE, ROOT, make_contexts


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def _run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.decode(errors='replace')}")
    return elapsed


def _large_context(work: Path) -> Path:
    context = work / "ctx" / "large"
    for i in range(20_000):
        folder = context / "src" / f"d{i % 200:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.txt").write_bytes(bytes([i % 251]) * 1000)
    (context / "Dockerfile").write_text(f"FROM {BASE}\nCOPY src/ /src/\n")
    return context


CASES = {
    "cached": lambda work: (make_contexts(work)["cached"], []),
    "cold": lambda work: (make_contexts(work)["cached"], ["--no-cache"]),
    "context-noop": lambda work: (_large_context(work), []),
    "context-cold": lambda work: (_large_context(work), ["--no-cache"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pybuild", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--case", choices=tuple(CASES), default="cached")
    ap.add_argument("--base-tar", type=Path, default=DEFAULT_BASE)
    ap.add_argument("--out")
    args = ap.parse_args()
    installs = dict(spec.split("=", 1) for spec in args.pybuild)
    if not args.base_tar.exists():
        args.base_tar.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(ROOT / "testdata" / "debian-rootfs.sh"), str(args.base_tar)],
                       check=True)
    work = Path(tempfile.mkdtemp(prefix="pybuild-ab-", dir="/var/tmp"))
    try:
        context, flags = CASES[args.case](work)
        commands = {}
        for name, exe in installs.items():
            own = work / name
            own.mkdir()
            env = _env(own)
            store = ["--root", str(own / "store")]
            _run([exe, *store, "import", str(args.base_tar), BASE], env)
            build = [exe, *store, "build", "--progress", "plain", "-t", "bench", *flags,
                     str(context)]
            _run(build, env)       # the first build; it also warms the bytecode cache
            commands[name] = (build, env)
        times: dict[str, list[float]] = {name: [] for name in installs}
        for _ in range(args.rounds):
            for name, (build, env) in commands.items():
                times[name].append(_run(build, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = statistics.median(times[next(iter(installs))])
    report = {}
    for name, samples in times.items():
        q1, median, q3 = statistics.quantiles(samples, n=4)
        report[name] = {"median_s": round(statistics.median(samples), 4),
                        "q1_s": round(q1, 4), "q3_s": round(q3, 4),
                        "ratio_to_first": round(statistics.median(samples) / first, 3)}
        print(f"{name:>10}: median {median * 1000:6.1f} ms  (q1 {q1 * 1000:.1f}, "
              f"q3 {q3 * 1000:.1f})  ratio {report[name]['ratio_to_first']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
