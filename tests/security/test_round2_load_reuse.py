"""Round 2, point 10 (C): ``pybuild load`` must not hand out a local image's layers on
the archive's word.

The store holds a private image (busybox + ``RUN echo <secret> > /secret``).  An
attacker who knows its ``rootfs.diff_ids`` (they are in any manifest, history or
registry listing) writes an archive whose config lists those diff_ids, with layer
blobs that are missing or are other bytes.  Before the fix the loader skipped every
layer whose chain the store already had, so ``innocent:latest`` loaded, and
``FROM innocent`` + ``RUN cat /secret`` printed the secret.  Now every layer must
come from the archive's own blob, hashed to its digest and to its diff_id, before
an existing chain is reused: the load is a one-line error that leaves nothing
behind.  Both an OCI layout directory and a docker-archive tar are tried.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from security.oracle import one_line_error, write_tar

pytestmark = [pytest.mark.root, pytest.mark.overlay]

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}
SECRET = "private-s3cret-6d1f0a"


def cli(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", "--root", str(root), *args],
                          capture_output=True, timeout=timeout, env={**os.environ, **EPOCH})


def ok(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 0 and "Traceback" not in err, err
    return result.stdout.decode(errors="replace")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Private:
    """A store with a private image, and what an attacker may know of it."""

    def __init__(self, root: Path, saved: Path, decoy: bytes):
        self.root = root
        self.saved = saved  # the private image's own OCI archive (negative control)
        self.decoy = decoy  # a real gzip layer blob of something else (busybox)
        with tarfile.open(saved) as tar:
            def member(digest: str) -> bytes:
                data = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
                assert data is not None
                return data.read()

            index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
            manifest = json.loads(member(index["manifests"][0]["digest"]))
            self.config: dict[str, Any] = json.loads(member(manifest["config"]["digest"]))
        self.diff_ids: list[str] = self.config["rootfs"]["diff_ids"]


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Private:
    top = tmp_path_factory.mktemp("load-reuse")
    root = top / "store"
    ok(cli(root, "import", str(busybox_tar), "busybox"))
    context = top / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM busybox\nRUN echo {SECRET} > /secret\n")
    ok(cli(root, "build", "-t", "private", str(context)))
    saved = top / "private.tar"
    ok(cli(root, "save", "--format", "oci", "-o", str(saved), "private"))
    busybox = top / "busybox.tar"
    ok(cli(root, "save", "--format", "oci", "-o", str(busybox), "busybox"))
    with tarfile.open(busybox) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        name = "blobs/sha256/" + index["manifests"][0]["digest"].split(":", 1)[1]
        manifest = json.loads(tar.extractfile(name).read())  # type: ignore[union-attr]
        layer = "blobs/sha256/" + manifest["layers"][0]["digest"].split(":", 1)[1]
        decoy = tar.extractfile(layer).read()  # type: ignore[union-attr]
    return Private(root, saved, decoy)


def hostile_config(private: Private) -> bytes:
    """The private image's diff_ids under a config of the attacker's own."""
    config = json.loads(json.dumps(private.config))
    config["config"] = {"Cmd": ["sh"], "Labels": {"innocent": "yes"}}
    config["history"] = [{"created_by": "innocent"}]
    return json.dumps(config).encode()


def layer_blobs(private: Private, blobs: str) -> list[tuple[str, bytes | None]]:
    """(digest, bytes or None for a blob the archive lacks) for each claimed layer."""
    out: list[tuple[str, bytes | None]] = []
    for i, _ in enumerate(private.diff_ids):
        if blobs == "missing":
            out.append((sha(b"not here %d" % i), None))
        else:  # the attacker's own real blob, of other content
            out.append((sha(private.decoy), private.decoy))
    return out


def oci_dir(private: Private, path: Path, blobs: str) -> Path:
    (path / "blobs" / "sha256").mkdir(parents=True)

    def put(data: bytes) -> str:
        (path / "blobs" / "sha256" / sha(data).split(":", 1)[1]).write_bytes(data)
        return sha(data)

    config = hostile_config(private)
    layers = []
    for digest, data in layer_blobs(private, blobs):
        if data is not None:
            put(data)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": digest, "size": len(data) if data is not None else 1234})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config), "size": len(config)},
        "layers": layers}).encode()
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": put(manifest), "size": len(manifest),
                       "annotations": {"io.containerd.image.name":
                                       "docker.io/library/innocent:latest"}}]}))
    return path


def docker_tar(private: Private, path: Path, blobs: str) -> Path:
    config = hostile_config(private)
    members: dict[str, bytes] = {sha(config).split(":", 1)[1] + ".json": config}
    names = []
    for i, (_, data) in enumerate(layer_blobs(private, blobs)):
        name = f"layer{i}/layer.tar"
        names.append(name)
        if data is not None:
            members[name] = data
    members["manifest.json"] = json.dumps([{
        "Config": sha(config).split(":", 1)[1] + ".json",
        "RepoTags": ["innocent:latest"], "Layers": names}]).encode()
    return write_tar(path, members)


def snapshot(root: Path) -> tuple[set[str], set[str], set[str]]:
    """Layers, blobs and tmp dirs of the store, to see that a refusal adds nothing."""
    def names(sub: str) -> set[str]:
        path = root / sub
        return {p.name for p in path.iterdir()} if path.exists() else set()

    return names("layers"), names("blobs/sha256"), names("tmp")


@pytest.mark.parametrize("blobs", ["missing", "other"])
@pytest.mark.parametrize("form", ["oci-dir", "docker-tar"])
def test_an_archive_naming_a_private_images_diff_ids_gets_nothing(private, tmp_path,
                                                                    form, blobs):
    make = oci_dir if form == "oci-dir" else docker_tar
    archive = make(private, tmp_path / ("layout" if form == "oci-dir" else "innocent.tar"),
                   blobs)
    before = snapshot(private.root)
    result = cli(private.root, "load", "-i", str(archive))
    if result.returncode == 0:
        # Loaded: show what it handed out, as the attacker would see it.
        context = tmp_path / "ctx"
        context.mkdir()
        (context / "Dockerfile").write_text("FROM innocent\nRUN cat /secret\n")
        build = cli(private.root, "build", "--progress", "plain", "--no-cache", str(context))
        cli(private.root, "rmi", "innocent")
        output = (build.stdout + build.stderr).decode(errors="replace")
        assert SECRET not in output, "the private image's secret reached FROM innocent"
        pytest.fail(f"the archive was loaded on its word: {result.stdout!r}")
    message = one_line_error(result)
    assert str(archive) in message, message
    assert "innocent" not in ok(cli(private.root, "images"))
    assert snapshot(private.root) == before, "the refused load left something behind"


def test_the_private_images_own_archive_still_loads(private, tmp_path):
    """Negative control: the real blobs prove the diff_ids, and the chains are reused."""
    layout = tmp_path / "layout"
    with tarfile.open(private.saved) as tar:
        tar.extractall(layout, filter="data")
    before = snapshot(private.root)[0]
    ok(cli(private.root, "load", "-i", str(layout)))
    assert snapshot(private.root)[0] == before  # no layer applied twice
