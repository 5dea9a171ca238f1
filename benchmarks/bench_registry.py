"""pybuild pull/push against ``skopeo copy`` on the same image and registry, side by side.

    /work/venv/bin/python benchmarks/bench_registry.py [--layers 10] [--layer-mib 50] [--out F]

As root, with Debian's docker-registry and skopeo installed. Builds an image of
N layers of random data (incompressible, so every byte crosses the wire) on a
busybox base in a private store, compresses its layers once (gzip), then:

  push   pybuild push STORE -> registry A    vs  skopeo copy oci:DIR -> registry B
  pull   pybuild pull registry A -> empty store (download; verify digests and diff_ids;
             layers stay packed until a build needs them, as in BuildKit)
         vs  skopeo copy registry A -> oci:DIR (download and verify digests)

Each round starts two empty registries, so both pushes upload every blob, and the
two pulls alternate who goes first. Wall time (median of --rounds) and peak RSS (GNU
time, the worst round) are recorded; a summary and JSON are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYBUILD = [sys.executable, "-m", "builder"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, work: Path):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        config = work / "config.yml"
        config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {work}/data\n"
                          f"http:\n  addr: {self.host}\nlog:\n  level: error\n")
        self.process = subprocess.Popen(["docker-registry", "serve", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("registry did not start")

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGTERM)
        self.process.wait(15)


def timed(cmd: list[str], **kw) -> dict:  # type: ignore[no-untyped-def]
    """Wall time, and peak RSS from GNU time (a fork of this Python would inherit its
    high-water mark, so wait4's ru_maxrss here would not measure the tool)."""
    start = time.monotonic()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr}")
    peak_kib = int(result.stderr.strip().splitlines()[-1])
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(peak_kib / 1024, 1)}


def make_image(work: Path, layers: int, layer_mib: int) -> Path:
    store = work / "store"
    rootfs = work / "busybox.tar"
    subprocess.run([str(ROOT / "testdata/busybox-rootfs.sh"), str(rootfs)], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*PYBUILD, "--root", str(store), "import", str(rootfs), "busybox"],
                   check=True, stdout=subprocess.DEVNULL)
    ctx = work / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\n" + "".join(
        f"RUN head -c {layer_mib}m /dev/urandom > /layer{i}\n" for i in range(layers)))
    subprocess.run([*PYBUILD, "--root", str(store), "build", "-q", "-t", "big", str(ctx)],
                   check=True, stdout=subprocess.DEVNULL)
    # Compress once, as a build that exported or pushed before would have.
    sys.path.insert(0, str(ROOT))
    from builder.image.archive import layer_for_export
    from builder.store import Store

    s = Store(store)
    for record in s.chain(s.image_top_chain(s.resolve_image("big"))):
        layer_for_export(s, record.chain_id, "gzip")
    s.close()
    return store


def one_round(work: Path, store: Path, round_: int, results: dict) -> None:
    """Fresh registries, pushes into them, then both pulls (who goes first alternates)."""
    here = work / f"round{round_}"
    (here / "ra").mkdir(parents=True)
    (here / "rb").mkdir()
    a = b = None
    try:
        a, b = Registry(here / "ra"), Registry(here / "rb")
        tls = ["--src-tls-verify=false", "--dest-tls-verify=false"]
        policy = work / "policy.json"
        policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
        skopeo = ["skopeo", "--policy", str(policy), "copy", "-q", *tls]
        results["pybuild_push"].append(timed(
            [*PYBUILD, "--root", str(store), "push", "-q", "big", f"{a.host}/big:1"], cwd=ROOT))
        pulls = [("skopeo_pull", [*skopeo, f"docker://{a.host}/big:1", f"oci:{here}/oci:big"]),
                 ("pybuild_pull", [*PYBUILD, "--root", str(here / "pulled"), "pull", "-q",
                                   f"{a.host}/big:1"])]
        for name, cmd in pulls if round_ % 2 == 0 else reversed(pulls):
            results[name].append(timed(cmd, cwd=ROOT))
        results["skopeo_push"].append(timed([*skopeo, f"oci:{here}/oci:big",
                                             f"docker://{b.host}/big:1"]))
        # What the lazy pull leaves for later: the first step on the image extracts it.
        ctx = here / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM {a.host}/big:1\nRUN true\n")
        results["pybuild_first_step"].append(timed(
            [*PYBUILD, "--root", str(here / "pulled"), "build", "-q", str(ctx)], cwd=ROOT))
    finally:
        for registry in (a, b):
            if registry is not None:
                registry.stop()
        shutil.rmtree(here, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--layer-mib", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="report the median of these")
    parser.add_argument("--out")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-registry-", dir="/var/tmp"))
    runs: dict[str, list[dict]] = {name: [] for name in
                                   ("pybuild_push", "skopeo_push", "pybuild_pull", "skopeo_pull",
                                    "pybuild_first_step")}
    try:
        store = make_image(work, args.layers, args.layer_mib)
        for round_ in range(args.rounds):
            one_round(work, store, round_, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results: dict = {"layers": args.layers, "layer_mib": args.layer_mib, "rounds": args.rounds}
    for name, samples in runs.items():
        results[name] = {
            "seconds": statistics.median(s["seconds"] for s in samples),
            "peak_rss_mib": max(s["peak_rss_mib"] for s in samples),
            "all_seconds": [s["seconds"] for s in samples]}
    for verb in ("push", "pull"):
        pb, sk = results[f"pybuild_{verb}"], results[f"skopeo_{verb}"]
        results[f"{verb}_ratio"] = round(pb["seconds"] / sk["seconds"], 2)
        print(f"{verb}: pybuild {pb['seconds']} s ({pb['peak_rss_mib']} MiB), skopeo "
              f"{sk['seconds']} s ({sk['peak_rss_mib']} MiB): ratio "
              f"{results[f'{verb}_ratio']} (medians of {args.rounds})")
    step = results["pybuild_first_step"]
    print(f"first RUN after the pull (extracts the layers): {step['seconds']} s "
          f"({step['peak_rss_mib']} MiB)")
    text = json.dumps(results, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
