"""Pulled layers stay packed (verified blobs) until a step or an export needs their files.

As BuildKit does: ``pybuild pull`` and the implicit pull of ``FROM`` download and
verify (digest and diff_id) but extract nothing; the first snapshot on the image
extracts its layers, once, however many builds or stages ask at the same time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import REPO, run_cli
from registry_server import skopeo, skopeo_args

from builder.store import Store

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds mount overlay"),
]

BASE = """FROM busybox
RUN mkdir -p /data && echo one > /data/one && echo gone > /data/gone
RUN rm /data/gone && echo two > /data/two
RUN dd if=/dev/urandom of=/data/big bs=1M count=3 2>/dev/null
"""


def _build(root: Path, context: Path, dockerfile: str, *args: str,
           check: bool = True) -> subprocess.CompletedProcess:
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    return run_cli("build", "--progress", "plain", *args, str(context), root=root, check=check)


@pytest.fixture
def pushed(tmp_path, registry, busybox_tar) -> str:
    """A four-layer image (with a deletion) in the registry; its reference."""
    root = tmp_path / "pusher"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    _build(root, tmp_path / "base-ctx", BASE, "-t", "base")
    ref = f"{registry.host}/lazy:1"
    run_cli("push", "base", ref, root=root)
    return ref


def _layers(root: Path, ref: str):  # type: ignore[no-untyped-def]
    store = Store(root)
    return store, store.chain(store.image_top_chain(store.resolve_image(ref)))


def _layer_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "layers").iterdir())


def test_pull_records_packed_layers_that_push_and_save_use_as_they_are(
        tmp_path, registry, pushed):
    root = tmp_path / "store"
    run_cli("pull", pushed, root=root)
    _, chain = _layers(root, pushed)
    _, pushed_chain = _layers(tmp_path / "pusher", "base")
    assert len(chain) == 4 and all(record.packed for record in chain)
    # The sizes are the layers' tar sizes, known from the diff_id check at pull time.
    assert [r.size for r in chain] == [r.size for r in pushed_chain]
    assert [r.diff_id for r in chain] == [r.diff_id for r in pushed_chain]
    assert _layer_dirs(root) == []

    # Pushing elsewhere and saving need only the blobs: still nothing extracted.
    run_cli("push", pushed, f"{registry.host}/copy:1", root=root)
    inspected = json.loads(skopeo(registry, "inspect", *skopeo_args(registry),
                                  f"docker://{registry.host}/copy:1").stdout)
    assert len(inspected["Layers"]) == 4
    archive = tmp_path / "saved.tar"
    run_cli("save", "-o", str(archive), pushed, root=root)
    with tarfile.open(archive) as saved:
        assert json.loads(saved.extractfile("manifest.json").read())[0]["Layers"]
    # A build whose steps only change metadata needs no files either.
    _build(root, tmp_path / "meta", f"FROM {pushed}\nENV A=1\nLABEL b=2\n", "-t", "meta")
    assert _layer_dirs(root) == []
    assert all(r.packed for r in _layers(root, pushed)[1])


def test_the_first_step_extracts_the_image_with_its_whiteouts(tmp_path, pushed):
    root = tmp_path / "store"
    _build(root, tmp_path / "ctx", f"FROM {pushed}\nRUN ls /data > /seen && "
           "sha256sum /data/big > /big.sum\n", "-t", "app")
    store, chain = _layers(root, "app")
    assert not any(r.packed for r in chain)
    top = chain[-1].chain_id
    assert (store.layer_dir(top) / "seen").read_text().split() == ["big", "one", "two"]
    pusher, pushed_chain = _layers(tmp_path / "pusher", "base")
    big = hashlib.sha256((pusher.layer_dir(pushed_chain[-1].chain_id) / "data" / "big")
                         .read_bytes()).hexdigest()
    assert (store.layer_dir(top) / "big.sum").read_text().split()[0] == big
    assert [p.name for p in (root / "tmp").iterdir()] == []
    assert "store ok" in run_cli("doctor", "--deep", root=root).stdout.decode()


def test_builds_and_stages_that_need_the_same_packed_image_at_once(
        tmp_path, pushed):
    root = tmp_path / "store"
    run_cli("pull", pushed, root=root)
    # Two stages of one build (threads) and a second build (another process), at once.
    dockerfile = (f"FROM {pushed} AS a\nRUN cat /data/one > /a\n"
                  f"FROM {pushed} AS b\nRUN cat /data/two > /b\n"
                  "FROM a\nCOPY --from=b /b /b\n")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "Dockerfile").write_text(dockerfile)
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "Dockerfile").write_text(f"FROM {pushed}\nRUN cat /data/one > /c\n")
    procs = [subprocess.Popen([sys.executable, "-m", "builder", "--root", str(root), "build",
                               "-t", tag, str(tmp_path / ctx)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for tag, ctx in (("one", "one"), ("two", "two"))]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    store, chain = _layers(root, "one")
    top = chain[-1].chain_id
    assert (store.layer_dir(top) / "b").read_text() == "two\n"
    # Four base layers and four built ones (a, b, the COPY, two), nothing left in tmp/.
    assert len(_layer_dirs(root)) == 4 + 4
    assert [p.name for p in (root / "tmp").iterdir()] == []


def test_a_packed_layer_whose_blob_rotted_is_refused_and_repaired(tmp_path, pushed):
    root = tmp_path / "store"
    run_cli("pull", pushed, root=root)
    store, chain = _layers(root, pushed)
    blob = store.blob_path(store.layer_blobs(chain[1].diff_id)[0].digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    failed = _build(root, tmp_path / "ctx", f"FROM {pushed}\nRUN true\n", check=False)
    lines = [line for line in failed.stderr.decode().splitlines() if line.startswith("pybuild:")]
    assert failed.returncode == 1 and len(lines) == 1, failed.stderr.decode()
    assert "Traceback" not in failed.stderr.decode()
    assert chain[1].chain_id in lines[0] and "pybuild doctor" in lines[0], lines
    # Nothing half-extracted: the base layer below may be in, the broken one is not.
    assert not store.layer_dir(chain[1].chain_id).exists()
    assert [p.name for p in (root / "tmp").iterdir()] == []

    report = run_cli("doctor", root=root, check=False).stdout.decode()
    assert "corrupt" in report
    run_cli("doctor", "--repair", root=root)
    assert Store(root).resolve_image(pushed) is None  # dropped: re-pull it
    run_cli("pull", pushed, root=root)
    _build(root, tmp_path / "ctx", f"FROM {pushed}\nRUN cat /data/two\n")


def test_prune_drops_an_unused_packed_image_and_its_blobs(tmp_path, pushed):
    root = tmp_path / "store"
    run_cli("pull", pushed, root=root)
    blobs_before = len(list((root / "blobs" / "sha256").iterdir()))
    assert blobs_before >= 5  # config + four layers
    run_cli("rmi", pushed, root=root)
    for name, _ in Store(root).tags():
        run_cli("rmi", name, root=root)
    run_cli("prune", root=root)
    store = Store(root)
    assert store.db.execute("SELECT * FROM packed_layers").fetchall() == []
    assert store.db.execute("SELECT * FROM layer_blobs").fetchall() == []
    assert list((root / "blobs" / "sha256").iterdir()) == []
