"""Benchmark layer export: diff_id and compression against GNU tar pipelines.

    python benchmarks/bench_layers.py [--dir DIR] [--repeat 3] [--big-mib 1024] [--files 100000]

Two layers are built once in DIR (kept for later runs): ``big`` (one file of
random bytes) and ``small`` (1 KiB random files, 1,000 per directory).  After
a warm-up read of both (all timings are page-cache hot), each measurement runs
in a fresh process; pybuild's own are timed inside it (interpreter start-up
excluded, as in a running build) and report that process's peak RSS.  Every
number is the best of ``--repeat`` runs: the machine is shared, so noise only
ever adds time.  The table compares:

    diff_id      layer_diff_id()                vs  tar -c | sha256sum
    zstd         compress_layer(.., "zstd")     vs  tar -c | zstd -T0 -3
    gzip         compress_layer(.., "gzip")     vs  tar -c | gzip -6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from builder.layers import compress_layer, layer_diff_id
op, path = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if op == "diff_id":
    size = layer_diff_id(path)[1]
else:
    with open("/dev/null", "wb") as out:
        size = compress_layer(path, out, op).uncompressed_size
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "rss_kib": rss, "bytes": size}))
"""

SHELL = {
    "diff_id": "tar -C {d} -cf - . | sha256sum > /dev/null",
    "zstd": "tar -C {d} -cf - . | zstd -q -T0 -3 > /dev/null",
    "gzip": "tar -C {d} -cf - . | gzip -6 > /dev/null",
}


def build(root: Path, big_mib: int, files: int) -> dict[str, Path]:
    big, small = root / "big", root / "small"
    if not (big / ".done").exists():
        shutil.rmtree(big, ignore_errors=True)
        big.mkdir(parents=True)
        with open(big / "random.bin", "wb") as f:
            for _ in range(big_mib):
                f.write(os.urandom(1 << 20))
        (big / ".done").touch()
    if not (small / ".done").exists():
        shutil.rmtree(small, ignore_errors=True)
        for i in range(files):
            d = small / f"d{i // 1000:04d}"
            if i % 1000 == 0:
                d.mkdir(parents=True)
            (d / f"f{i % 1000:04d}").write_bytes(os.urandom(1024))
        (small / ".done").touch()
    return {"1 GiB file" if big_mib == 1024 else f"{big_mib} MiB file": big,
            f"{files:,} x 1 KiB": small}


def ours(op: str, path: Path, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, op, str(path)], check=True,
                             capture_output=True, text=True)
        runs.append(json.loads(out.stdout))
    best = min(runs, key=lambda r: r["seconds"])
    best["rss_kib"] = max(r["rss_kib"] for r in runs)
    return best


def theirs(op: str, path: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(["bash", "-o", "pipefail", "-c", SHELL[op].format(d=path)], check=True)
        best = min(best, time.perf_counter() - start)
    return best


def describe() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    tar = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout
    return (f"{platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs ({cpu}), {tar.splitlines()[0]}, "
            f"load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/var/tmp/pybuild-bench-layers")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--ops", default="diff_id,zstd,gzip")
    args = parser.parse_args()
    layers = build(Path(args.dir), args.big_mib, args.files)
    for path in layers.values():  # warm the page cache for everyone
        subprocess.run(f"tar -C {path} -cf - . > /dev/null", shell=True, check=True)
    print(describe())
    print()
    header = (f"{'layer':<18} {'op':<8} {'pybuild s':>9} {'MB/s':>7} {'tar|sha256 s':>12} "
              f"{'ratio':>6} {'tar|tool s':>10} {'ratio':>6} {'peak RSS':>9}")
    print(header)
    print("-" * len(header))
    for name, path in layers.items():
        base = theirs("diff_id", path, args.repeat)
        for op in args.ops.split(","):
            mine = ours(op, path, args.repeat)
            tool = base if op == "diff_id" else theirs(op, path, args.repeat)
            mbps = mine["bytes"] / mine["seconds"] / 1e6
            print(f"{name:<18} {op:<8} {mine['seconds']:>9.3f} {mbps:>7.0f} {base:>12.3f} "
                  f"{mine['seconds'] / base:>6.2f} {tool:>10.3f} "
                  f"{mine['seconds'] / tool:>6.2f} {mine['rss_kib'] / 1024:>6.1f} MiB")
    own = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"\nlargest child peak RSS (any process, tools included): {own / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
