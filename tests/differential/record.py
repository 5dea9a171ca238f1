"""Record what Docker's BuildKit makes of each case in testdata/differential/.

    DOCKER_HOST=unix:///path/docker.sock python tests/differential/record.py [CASE ...]

Needs root, a daemon with an image ``busybox:latest`` (``docker import`` of
testdata/busybox-rootfs.sh's tarball) and, for add_url, nothing listening on port
18765 (a local http.server is started there).  Cases built on ``debian:bookworm``
need the tests' cached debootstrap tarball (made by the ``debian_tar`` fixture or
testdata/debian-rootfs.sh); it is ``docker import``ed under that name.  Writes
<case>/expected.json, except where the daemon's BuildKit is too old for a case and a
hand-checked expectation (key "handwritten", saying how it was checked) is kept instead.
"""

from __future__ import annotations

import functools
import hashlib
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


# Named as tests/conftest.py's debian_tar names it: after the script that makes it.
_SCRIPT_DIGEST = hashlib.sha256(
    (Path(__file__).resolve().parents[2] / "testdata" / "debian-rootfs.sh").read_bytes()
).hexdigest()[:12]
DEBIAN_TAR = Path(os.environ.get("PYBUILD_TEST_CACHE", "/var/cache/pybuild-tests")) \
    / f"bookworm-minbase-{_SCRIPT_DIGEST}.tar"


def debian_base(work: Path) -> dict:
    """Import the Debian base into the daemon (unless there) and describe its rootfs."""
    if not DEBIAN_TAR.exists():
        sys.exit(f"record.py: {DEBIAN_TAR} missing: run testdata/debian-rootfs.sh {DEBIAN_TAR}")
    if docker("image", "inspect", common.DEBIAN).returncode != 0:
        docker("import", str(DEBIAN_TAR), common.DEBIAN, check=True)
    return common.describe_base(DEBIAN_TAR, work / "debian")


def docker(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], capture_output=True, **kw)


def first_layer(image: str) -> str:
    return docker("image", "inspect", "-f", "{{index .RootFS.Layers 0}}", image,
                  check=True).stdout.decode().strip()


def record(case: str, base: dict | None) -> dict:
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
        files = common.describe_tree(work / "rootfs")
        result = {"config": common.describe_config(config), "files": files}
        if base is not None and first_layer(tag) == first_layer(common.DEBIAN):
            result["files"] = common.relative_to(files, base)
            result["files_relative_to"] = common.DEBIAN
        shutil.rmtree(work / "rootfs")
    docker("rmi", tag)
    return result


def main(argv: list[str]) -> int:
    cases = argv or sorted(p.parent.name for p in common.CASES.glob("*/Dockerfile"))
    server = serve(common.CASES / "add_url")
    tmp = tempfile.TemporaryDirectory()
    try:
        debian = debian_base(Path(tmp.name)) if any(map(common.needs_debian, cases)) else None
        for case in cases:
            result = record(case, debian if common.needs_debian(case) else None)
            out = common.CASES / case / "expected.json"
            if "error" in result and out.exists() and \
                    "handwritten" in json.loads(out.read_text()):
                print(case, "kept handwritten expectation; docker: " + result["error"])
                continue
            out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
            print(case, "error: " + result["error"] if "error" in result else "ok")
    finally:
        server.shutdown()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
