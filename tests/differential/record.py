"""Record what Docker's BuildKit makes of each case in testdata/differential/.

    DOCKER_HOST=unix:///path/docker.sock python tests/differential/record.py [CASE ...]

Needs root, a daemon with an image ``busybox:latest`` (``docker import`` of
testdata/busybox-rootfs.sh's tarball) and, for add_url, nothing listening on port
18765 (a local http.server is started there).  Writes <case>/expected.json, except
where the daemon's BuildKit is too old for a case and a hand-checked expectation
(key "handwritten", saying how it was checked) is kept instead.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "diffcommon", Path(__file__).with_name("diffcommon.py"))
assert _spec and _spec.loader
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

URL_PORT = 18765


def serve(directory: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", URL_PORT), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# A docker CLI that builds with BuildKit by itself: newer CLIs need the buildx plugin,
# which Debian's docker.io lacks, so Debian's own CLI comes first.
DOCKER = os.environ.get("DOCKER") or ("/usr/bin/docker" if os.path.exists("/usr/bin/docker")
                                      else "docker")


def docker(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], capture_output=True, **kw)


def record(case: str) -> dict:
    context = common.CASES / case
    tag = f"pybuild-diff-{case.replace('_', '-')}"
    build = docker("build", "--network", "host", "-t", tag, str(context),
                   env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if build.returncode != 0:
        lines = build.stderr.decode(errors="replace").strip().splitlines()
        return {"error": next((x for x in reversed(lines) if "error" in x.lower()), lines[-1])}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        container = docker("create", tag, "/nonexistent", check=True).stdout.decode().strip()
        try:
            docker("export", "-o", str(work / "rootfs.tar"), container, check=True)
        finally:
            docker("rm", container)
        docker("save", "-o", str(work / "image.tar"), tag, check=True)
        config = common.read_saved(work / "image.tar")
        common.unpack(work / "rootfs.tar", work / "rootfs")
        result = {"config": common.describe_config(config),
                  "files": common.describe_tree(work / "rootfs")}
        shutil.rmtree(work / "rootfs")
    docker("rmi", tag)
    return result


def main(argv: list[str]) -> int:
    cases = argv or sorted(p.parent.name for p in common.CASES.glob("*/Dockerfile"))
    server = serve(common.CASES / "add_url")
    try:
        for case in cases:
            result = record(case)
            out = common.CASES / case / "expected.json"
            if "error" in result and out.exists() and \
                    "handwritten" in json.loads(out.read_text()):
                print(case, "kept handwritten expectation; docker: " + result["error"])
                continue
            out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
            print(case, "error: " + result["error"] if "error" in result else "ok")
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
