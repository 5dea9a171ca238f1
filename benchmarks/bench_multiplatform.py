"""Issue 19: one build for linux/amd64,linux/arm64 against the same two builds run apart.

    env -u PYTHONDONTWRITEBYTECODE python benchmarks/bench_multiplatform.py \\
        --pybuild /var/tmp/venv-root/bin/pybuild [--rounds 5] [--out r.json]

As root, with arm64 emulation enabled (``pybuild doctor --enable-emulation``) and
Debian's busybox-static:arm64 .deb downloadable (``dpkg --add-architecture arm64``).
The bases are busybox for each architecture (``bb-amd64``, ``bb-arm64``).  The
Dockerfile has the cross-compilation shape: a ``FROM --platform=$BUILDPLATFORM``
stage whose first RUN does not read the target (built once, shared) and whose second
does, then a final stage per target whose RUN runs natively on amd64 and under QEMU
on arm64.  Each round, with ``--no-cache`` and in alternating order:

  together  pybuild build --platform linux/amd64,linux/arm64
  apart     pybuild build --platform linux/amd64, then --platform linux/arm64

Prints the medians and together / apart.  Timed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import emulated  # noqa: E402  (the tests' helpers: the arm64 busybox rootfs)

DOCKERFILE = """\
ARG TARGETARCH
FROM --platform=$BUILDPLATFORM bb-amd64 AS build
RUN seq 1 200000 | md5sum > /shared
ARG TARGETARCH
RUN seq 1 100000 | sed "s/^/$TARGETARCH /" | md5sum > /tool
FROM bb-${TARGETARCH}
COPY --from=build /shared /tool /
RUN seq 1 100000 | md5sum > /own && uname -m > /arch
"""


def _run(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.decode()[-500:]}")
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pybuild", default="pybuild")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mp-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        cache = Path(os.environ.get("PYBUILD_TEST_CACHE", "/var/cache/pybuild-tests"))
        arm = emulated.busybox_arm64_tar(cache / "debs", work)
        if isinstance(arm, str):
            raise SystemExit(arm)
        amd = work / "bb-amd64.tar"
        subprocess.run([str(ROOT / "testdata" / "busybox-rootfs.sh"), str(amd)], check=True)
        store = work / "store"
        base = [args.pybuild, "--root", str(store)]
        _run([*base, "import", "--platform", "linux/amd64", str(amd), "bb-amd64"])
        _run([*base, "import", "--platform", "linux/arm64", str(arm), "bb-arm64"])
        ctx = work / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        build = [*base, "build", "-q", "--no-cache", "--provenance", "false"]
        together: list[float] = []
        apart: list[float] = []
        for i in range(args.rounds):
            def both() -> None:
                together.append(_run([*build, "--platform", "linux/amd64,linux/arm64",
                                      str(ctx)]))

            def each() -> None:
                apart.append(_run([*build, "--platform", "linux/amd64", str(ctx)])
                             + _run([*build, "--platform", "linux/arm64", str(ctx)]))

            for step in ((both, each) if i % 2 == 0 else (each, both)):
                step()
            print(f"round {i + 1}/{args.rounds}: together {together[-1]:.2f} s, "
                  f"apart {apart[-1]:.2f} s", file=sys.stderr)
    result = {"together_s": statistics.median(together), "apart_s": statistics.median(apart),
              "together": together, "apart": apart}
    result["ratio"] = round(result["together_s"] / result["apart_s"], 3)
    print(f"| build | median |\n|---|---|\n"
          f"| --platform linux/amd64,linux/arm64 | {result['together_s']:.2f} s |\n"
          f"| --platform linux/amd64, then linux/arm64 | {result['apart_s']:.2f} s |\n"
          f"| together / apart | {result['ratio']} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
