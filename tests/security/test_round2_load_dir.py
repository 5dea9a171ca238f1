"""Round 2, point 10: ``pybuild load -i DIR`` reads an OCI layout directory as untrusted.

The layout is a real ``pybuild save --format oci`` of a two-layer image,
unpacked and then edited: a blob that is a FIFO, a link to ``/dev/zero`` or a
device, JSON nested 100 000 deep, a layer whose bytes do not match its digest.
Each must be a one-line error naming the file, quickly, with nothing left in
the store (no layer, no image, no blob, nothing in tmp/).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from security.oracle import one_line_error

pytestmark = [pytest.mark.root, pytest.mark.overlay]

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}
MIB = 1 << 20
DEEP = b"[" * 100_000 + b"]" * 100_000


def _limit_file_size() -> None:
    # Without the defence a blob read from /dev/zero is copied into the store until
    # the disk is full; past 512 MiB the kernel refuses the write instead (EFBIG).
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 * MIB, 512 * MIB))


def cli(root: Path, *args: str, timeout: float = 240,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", "--root", str(root), *args],
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})},
                          preexec_fn=_limit_file_size)


def ok(result: subprocess.CompletedProcess) -> None:
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 0 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Path:
    """An OCI archive of busybox + one RUN layer, as ``pybuild save --format oci`` writes."""
    top = tmp_path_factory.mktemp("load-dir")
    root = top / "store"
    ok(cli(root, "import", str(busybox_tar), "busybox", env=EPOCH))
    context = top / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo one > /one\n")
    ok(cli(root, "build", "-t", "app", str(context)))
    archive = top / "app.tar"
    ok(cli(root, "save", "--format", "oci", "-o", str(archive), "app"))
    return archive


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    def __init__(self, saved: Path, path: Path):
        with tarfile.open(saved) as tar:
            # filter= is Python 3.11.4's; Debian 12's 3.11.2 (tests/rootless) has none.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(path, filter="data")
            else:
                tar.extractall(path)
        self.path = path
        self.index = json.loads((path / "index.json").read_bytes())
        self.manifest: dict[str, Any] = json.loads(
            self.blob(self.index["manifests"][0]["digest"]).read_bytes())

    def blob(self, digest: str) -> Path:
        return self.path / "blobs" / "sha256" / digest.split(":", 1)[1]

    def layer(self, i: int) -> Path:
        return self.blob(self.manifest["layers"][i]["digest"])

    def put(self, data: bytes) -> str:
        self.blob(sha(data)).write_bytes(data)
        return sha(data)

    def save(self, manifest: bytes | None = None) -> None:
        manifest = manifest if manifest is not None else json.dumps(self.manifest).encode()
        self.index["manifests"][0].update(digest=self.put(manifest), size=len(manifest))
        (self.path / "index.json").write_text(json.dumps(self.index))


@pytest.fixture
def layout(saved: Path, tmp_path: Path) -> Layout:
    return Layout(saved, tmp_path / "layout")


def load(root: Path, layout: Layout, timeout: float = 240) -> subprocess.CompletedProcess:
    return cli(root, "load", "-i", str(layout.path), timeout=timeout)


def assert_store_empty(root: Path) -> None:
    """A refused load leaves no layer, no image, no blob and nothing in tmp/."""
    from builder.store import Store

    for sub in ("layers", "blobs/sha256"):
        path = root / sub
        assert not path.exists() or list(path.iterdir()) == [], (sub, list(path.iterdir()))
    if (root / "blobs").exists():
        assert [p.name for p in (root / "blobs").iterdir()] == ["sha256"]
    tmp = root / "tmp"
    assert not tmp.exists() or [p for p in tmp.iterdir() if p.is_dir()] == []
    if (root / "pybuild.db").exists():
        store = Store(root)
        try:
            assert store.images() == []
        finally:
            store.close()


def test_fifo_blob_is_refused_without_hanging(layout, tmp_path):
    blob = layout.layer(-1)
    blob.unlink()
    os.mkfifo(blob)
    root = tmp_path / "store"
    argv = [sys.executable, "-m", "builder", "--root", str(root), "load", "-i",
            str(layout.path)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        try:
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("pybuild load hung opening a FIFO blob")
    result = subprocess.CompletedProcess(argv, process.returncode, b"", stderr)
    message = one_line_error(result)
    assert "FIFO" in message and blob.name in message, message
    assert_store_empty(root)


@pytest.mark.parametrize("kind", ["symlink", "device"])
def test_endless_blob_is_refused_before_reading(layout, tmp_path, kind):
    blob = layout.layer(-1)
    blob.unlink()
    if kind == "symlink":
        blob.symlink_to("/dev/zero")
    else:
        os.mknod(blob, 0o644 | 0o020000, os.makedev(1, 5))
    root = tmp_path / "store"
    started = time.monotonic()
    message = one_line_error(load(root, layout, timeout=300))
    assert "not a regular file" in message and blob.name in message, message
    assert time.monotonic() - started < 120, "it read the endless blob for a while"
    assert_store_empty(root)


@pytest.mark.parametrize("where", ["index", "manifest", "config"])
def test_deeply_nested_json_is_a_one_line_error(layout, tmp_path, where):
    if where == "index":
        (layout.path / "index.json").write_bytes(DEEP)
    elif where == "manifest":
        layout.save(DEEP)
    else:
        layout.manifest["config"].update(digest=layout.put(DEEP), size=len(DEEP))
        layout.save()
    root = tmp_path / "store"
    message = one_line_error(load(root, layout))
    assert "nested" in message, message
    assert_store_empty(root)


def test_digest_mismatch_leaves_nothing_behind(layout, tmp_path):
    blob = layout.layer(-1)  # the last layer: the first one was fine
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    root = tmp_path / "store"
    message = one_line_error(load(root, layout))
    assert "sha256:" + blob.name in message, message
    assert_store_empty(root)


def test_a_good_layout_still_loads(layout, tmp_path):
    """Negative control: the unedited layout loads, and runs."""
    root = tmp_path / "store"
    ok(load(root, layout))
    out = tmp_path / "out"
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM app\nRUN cat /one > /two\n")
    ok(cli(root, "build", "-o", f"type=local,dest={out}", str(context)))
    assert (out / "two").read_text() == "one\n"
