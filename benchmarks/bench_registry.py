"""pybuild pull/push against ``skopeo copy`` on the same image and registry, side by side.

    /work/venv/bin/python benchmarks/bench_registry.py [--layers 10] [--layer-mib 50] [--out F]

As root, with Debian's docker-registry and skopeo installed. Builds an image of
N layers of random data (incompressible, so every byte crosses the wire) on a
busybox base in a private store, compresses its layers once (gzip), then:

  push   pybuild push STORE -> registry A    vs  skopeo copy oci:DIR -> registry B
  pull   pybuild pull registry A -> empty store (download, verify, extract)
         vs  skopeo copy registry A -> oci:DIR (download and verify only)

Each registry starts empty, so both pushes upload every blob. Wall time and the
peak RSS of the process tree (os.wait4) are recorded; a table and JSON are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--layer-mib", type=int, default=50)
    parser.add_argument("--out")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-registry-", dir="/var/tmp"))
    a = b = None
    results: dict = {"layers": args.layers, "layer_mib": args.layer_mib}
    try:
        store = make_image(work, args.layers, args.layer_mib)
        (work / "ra").mkdir()
        (work / "rb").mkdir()
        a, b = Registry(work / "ra"), Registry(work / "rb")
        tls = ["--src-tls-verify=false", "--dest-tls-verify=false"]
        policy = work / "policy.json"
        policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
        skopeo = ["skopeo", "--policy", str(policy), "copy", "-q", *tls]
        results["pybuild_push"] = timed([*PYBUILD, "--root", str(store), "push", "-q", "big",
                                         f"{a.host}/big:1"], cwd=ROOT)
        results["skopeo_pull"] = timed([*skopeo, f"docker://{a.host}/big:1",
                                        f"oci:{work}/oci:big"])
        results["pybuild_pull"] = timed([*PYBUILD, "--root", str(work / "pulled"), "pull", "-q",
                                         f"{a.host}/big:1"], cwd=ROOT)
        results["skopeo_push"] = timed([*skopeo, f"oci:{work}/oci:big",
                                        f"docker://{b.host}/big:1"])
    finally:
        for registry in (a, b):
            if registry is not None:
                registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    for verb in ("push", "pull"):
        pb, sk = results[f"pybuild_{verb}"], results[f"skopeo_{verb}"]
        results[f"{verb}_ratio"] = round(pb["seconds"] / sk["seconds"], 2)
        print(f"{verb}: pybuild {pb['seconds']} s ({pb['peak_rss_mib']} MiB), skopeo "
              f"{sk['seconds']} s ({sk['peak_rss_mib']} MiB): ratio "
              f"{results[f'{verb}_ratio']}")
    text = json.dumps(results, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
