"""A step that changes no file still makes a layer: BuildKit's empty one.

Current BuildKit (the reference) gives RUN, COPY, ADD and WORKDIR steps a layer
whatever their diff: frontend/dockerfile/dockerfile2llb/convert.go commits RUN's
history ``withLayer`` true (``dispatchRun``) and WORKDIR's unless the path is "/"
(``dispatchWorkdir``: no mkdir, ``withLayer`` false, for "/"), convert_copy.go does
the same for COPY and ADD (``dispatchCopy``; ``AllowEmptyWildcard`` makes a
wildcard that matches nothing a valid, empty copy), and
exporter/containerimage/writer.go ``normalizeLayersAndHistory`` drops no layer.  An
empty diff is the empty tar, whose gzip blob every BuildKit image shares
(``sha256:4f4fb700...``, docker/buildx#1910); metadata steps (ENV, ...) stay
``empty_layer: true``.  The expectations below are written by hand from that source.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

# Written out here, not imported: the test states BuildKit's values on its own.
EMPTY_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
EMPTY_GZIP_DIGEST = "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1"
EMPTY_GZIP = bytes.fromhex("1f8b08000000000000ff621805a360148c5800080000ffff2eafb5ef00040000")

pytestmark = [pytest.mark.root, pytest.mark.overlay]

DOCKERFILE = """\
FROM busybox
ENV A=1
WORKDIR /bin
RUN true
COPY nomatch* /bin/
COPY emptydir/ /bin/
WORKDIR /
ADD nomatch* /
RUN echo hi > /hi
"""
# (created_by, empty_layer) after the base image's entry, as current BuildKit writes them.
HISTORY = [
    ("ENV A=1", True),
    ("WORKDIR /bin", False),               # /bin exists: an empty layer
    ("RUN /bin/sh -c true # buildkit", False),
    ("COPY nomatch* /bin/ # buildkit", False),
    ("COPY emptydir/ /bin/ # buildkit", False),
    ("WORKDIR /", True),                   # no mkdir for "/": no layer at all
    ("ADD nomatch* / # buildkit", False),
    ("RUN /bin/sh -c echo hi > /hi # buildkit", False),
]
EMPTY_STEPS = 5   # WORKDIR /bin, RUN true, COPY, COPY, ADD


def _context(tmp_path: Path, dockerfile: str = DOCKERFILE) -> Path:
    context = tmp_path / "context"
    (context / "emptydir").mkdir(parents=True)
    (context / "Dockerfile").write_text(dockerfile)
    return context


def _store(tmp_path: Path, busybox_tar: Path, name: str = "store") -> Path:
    root = tmp_path / name
    run_cli("import", str(busybox_tar), "busybox", root=root)
    return root


def _layout(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, config) of the one image in an OCI layout directory."""
    def blob(digest: str) -> bytes:
        return (directory / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()

    index = json.loads((directory / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    return manifest, json.loads(blob(manifest["config"]["digest"]))


def _history(config: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(h["created_by"], h.get("empty_layer", False)) for h in config["history"][1:]]


def _build_oci(root: Path, context: Path, dest: Path, *extra: str,
               driver: str = "overlay") -> tuple[dict, dict]:
    run_cli("--storage-driver", driver, "-t", "a-empty", *extra,
            "-o", f"type=oci,dest={dest},tar=false", str(context), root=root)
    return _layout(dest)


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])
def test_steps_that_change_nothing_make_the_empty_layer(tmp_path: Path, busybox_tar: Path,
                                                        driver: str) -> None:
    """The layer list and history of DOCKERFILE, as current BuildKit makes them.

    Docker 20.10 here (BuildKit v0.8.4) gives the same history (created_by and
    empty_layer of every entry), the same layer count (7) and the empty layer
    (diff_id 5f70bf18...) for WORKDIR /bin, both COPYs and ADD; its ``RUN true``
    layer holds ``etc/``, the parent of the /etc/hosts mount stub that v0.8 left
    with a new mtime; current BuildKit restores it (executor/stubs.go
    ``MountStubsCleaner``, moby/buildkit#3148), so that layer is empty too.
    """
    root = _store(tmp_path, busybox_tar)
    manifest, config = _build_oci(root, _context(tmp_path), tmp_path / "oci", driver=driver)
    assert _history(config) == HISTORY
    diff_ids = config["rootfs"]["diff_ids"]
    layers = manifest["layers"]
    assert len(diff_ids) == len(layers) == 1 + EMPTY_STEPS + 1
    assert diff_ids[1:-1] == [EMPTY_DIFF_ID] * EMPTY_STEPS
    assert EMPTY_DIFF_ID not in (diff_ids[0], diff_ids[-1])
    assert [(d["digest"], d["size"], d["mediaType"]) for d in layers[1:-1]] == \
        [(EMPTY_GZIP_DIGEST, 32, "application/vnd.oci.image.layer.v1.tar+gzip")] * EMPTY_STEPS
    # One blob, shared: in the layout and in the store, with Go's bytes.
    blob = tmp_path / "oci" / "blobs" / "sha256" / EMPTY_GZIP_DIGEST.split(":", 1)[1]
    assert blob.read_bytes() == EMPTY_GZIP
    assert zlib.decompress(EMPTY_GZIP, 31) == bytes(1024)
    stored = root / "blobs" / "sha256" / EMPTY_GZIP_DIGEST.split(":", 1)[1]
    assert stored.read_bytes() == EMPTY_GZIP


def test_workdir_root_stays_config_only(tmp_path: Path, busybox_tar: Path) -> None:
    """``WORKDIR /`` (also spelled ``/bin/..``) makes no layer: dispatchWorkdir skips the
    mkdir for "/" and commits ``withLayer`` false.  Docker 20.10 agrees."""
    root = _store(tmp_path, busybox_tar)
    context = _context(tmp_path, "FROM busybox\nWORKDIR /\nWORKDIR /bin/..\n")
    _, config = _build_oci(root, context, tmp_path / "oci")
    assert _history(config) == [("WORKDIR /", True), ("WORKDIR /", True)]
    assert len(config["rootfs"]["diff_ids"]) == 1
    explain = run_cli("explain", "a-empty", root=root).stdout.decode()
    assert "0 of 2 steps made a layer" in explain and "empty layer" not in explain


def test_cached_rebuild_gives_the_same_image(tmp_path: Path, busybox_tar: Path) -> None:
    """Empty layers come back from the cache: same image ID, every step a hit; explain
    shows them as layers that changed nothing."""
    root = _store(tmp_path, busybox_tar)
    context = _context(tmp_path)
    first = run_cli("-q", "-t", "a-empty", str(context), root=root).stdout
    again = run_cli("-q", "-t", "a-empty", str(context), root=root).stdout
    assert first == again
    explain = run_cli("explain", "a-empty", root=root).stdout.decode()
    assert explain.count("cache hit") == EMPTY_STEPS + 1
    assert explain.count("empty layer: the step changed no files") == EMPTY_STEPS
    assert f"6 of 8 steps made a layer (the others change only the image's config). " \
        f"{EMPTY_STEPS} of the layers are empty." in explain


def test_history_shows_empty_layers_as_0B(tmp_path: Path, busybox_tar: Path) -> None:
    root = _store(tmp_path, busybox_tar)
    run_cli("-t", "a-empty", str(_context(tmp_path)), root=root)
    lines = run_cli("history", "a-empty", root=root).stdout.decode().splitlines()[1:]
    sizes = [line[99:108].strip() for line in reversed(lines)][1:]   # base first, skipped
    # As docker history shows them: the empty tar's 1024 bytes are no content.
    assert sizes[:-1] == ["0B"] * (len(HISTORY) - 1) and sizes[-1] != "0B"


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_other_compressions_use_the_normal_writer(tmp_path: Path, busybox_tar: Path,
                                                  compression: str) -> None:
    """--compression zstd / none: the empty tar through that compression (as BuildKit
    compresses it with the requested type), one blob shared by every empty layer."""
    root = _store(tmp_path, busybox_tar)
    manifest, config = _build_oci(root, _context(tmp_path), tmp_path / "oci",
                                  "--compression", compression)
    assert _history(config) == HISTORY
    empty = manifest["layers"][1:-1]
    assert len(empty) == EMPTY_STEPS and all(d == empty[0] for d in empty)
    data = (tmp_path / "oci" / "blobs" / "sha256" /
            empty[0]["digest"].split(":", 1)[1]).read_bytes()
    assert empty[0]["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    if compression == "zstd":
        import zstandard

        assert empty[0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
        assert zstandard.ZstdDecompressor().decompressobj().decompress(data) == bytes(1024)
    else:
        assert empty[0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
        assert data == bytes(1024) and empty[0]["digest"] == EMPTY_DIFF_ID


def test_prune_and_doctor_keep_the_shared_empty_layer(tmp_path: Path,
                                                      busybox_tar: Path) -> None:
    """The one empty blob stays while any image uses it, goes with the last one, and
    doctor --deep finds nothing wrong with empty layer dirs."""
    root = _store(tmp_path, busybox_tar)
    context = _context(tmp_path)
    run_cli("-t", "a-one", "-o", f"type=oci,dest={tmp_path / 'one'}", str(context), root=root)
    (context / "Dockerfile").write_text("FROM busybox\nRUN true\n")
    run_cli("-t", "a-two", str(context), root=root)
    blob = root / "blobs" / "sha256" / EMPTY_GZIP_DIGEST.split(":", 1)[1]
    assert blob.exists()
    run_cli("rmi", "a-one", root=root)
    run_cli("prune", "--cache", root=root)
    assert blob.exists()
    assert b"store ok" in run_cli("doctor", "--deep", root=root).stdout
    run_cli("save", "--format", "oci", "-o", str(tmp_path / "two.tar"), "a-two", root=root)
    run_cli("rmi", "a-two", root=root)
    run_cli("prune", "--cache", root=root)
    assert not blob.exists()
    assert b"store ok" in run_cli("doctor", "--deep", root=root).stdout
    # Loading the archive brings the blob back.
    run_cli("load", "-i", str(tmp_path / "two.tar"), root=root)
    assert blob.exists()
    assert b"store ok" in run_cli("doctor", "--deep", root=root).stdout


def test_an_older_pybuilds_layerless_cache_entry_is_not_reused(tmp_path: Path,
                                                              busybox_tar: Path) -> None:
    """A store written before empty layers has entries with no layer for unchanged steps:
    never a hit (the image would lack the layer); explain says why."""
    root = _store(tmp_path, busybox_tar)
    context = _context(tmp_path, "FROM busybox\nRUN true\n")
    run_cli("-t", "a-empty", str(context), root=root)
    db = sqlite3.connect(root / "pybuild.db")
    with db:
        (key, changes), = db.execute("SELECT key, changes FROM cache_entries").fetchall()
        old = dict(json.loads(changes), layer=False)
        parent_chain = db.execute("SELECT parent FROM layers WHERE diff_id = ?",
                                  (EMPTY_DIFF_ID,)).fetchone()[0]
        db.execute("UPDATE cache_entries SET changes = ?, chain_id = ? WHERE key = ?",
                   (json.dumps(old), parent_chain, key))
    db.close()
    run_cli("-t", "a-empty", str(context), root=root)
    explain = run_cli("explain", "a-empty", root=root).stdout.decode()
    assert "an older pybuild recorded this step without a layer" in explain
    config = json.loads(run_cli("inspect", "a-empty", root=root).stdout)[0]
    assert config["RootFS"]["Layers"][-1] == EMPTY_DIFF_ID


def test_cache_export_and_import_carry_empty_layers(tmp_path: Path, busybox_tar: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--cache-to / --cache-from between two stores: every step a hit, same image ID."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # same base image ID in both
    one, two = _store(tmp_path, busybox_tar, "one"), _store(tmp_path, busybox_tar, "two")
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    context, cache = _context(tmp_path), tmp_path / "cache"
    first = run_cli("-q", "-t", "a-empty", "--cache-to", f"type=local,dest={cache}",
                    str(context), root=one).stdout
    assert (cache / "blobs" / "sha256" / EMPTY_GZIP_DIGEST.split(":", 1)[1]).exists()
    second = run_cli("-q", "-t", "a-empty", "--cache-from", f"type=local,src={cache}",
                     str(context), root=two)
    assert second.stdout == first and b"warning" not in second.stderr.lower()
    explain = run_cli("explain", "a-empty", root=two).stdout.decode()
    assert explain.count("cache hit") == EMPTY_STEPS + 1


@pytest.mark.docker
@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_docker_loads_it_with_the_same_history(tmp_path: Path, busybox_tar: Path,
                                               docker: dict[str, str], fmt: str) -> None:
    """``docker load`` of the saved archive (uncompressed, or gzip with the shared empty
    blob) gives the same layers and the same ``docker history`` rows, empty ones 0B."""
    root = _store(tmp_path, busybox_tar)
    tag = f"a-empty-load-{fmt}:1"
    run_cli("-t", tag, str(_context(tmp_path)), root=root)
    archive = tmp_path / "image.tar"
    run_cli("save", "--format", fmt, "-o", str(archive), tag, root=root)
    config = json.loads(run_cli("inspect", tag, root=root).stdout)[0]
    subprocess.run(["docker", "load", "-i", str(archive)], env=docker, check=True,
                   capture_output=True)
    try:
        layers = subprocess.run(["docker", "inspect", "--format", "{{json .RootFS.Layers}}",
                                 tag], env=docker, check=True, capture_output=True,
                                text=True).stdout
        assert json.loads(layers) == config["RootFS"]["Layers"]
        assert json.loads(layers)[1:-1] == [EMPTY_DIFF_ID] * EMPTY_STEPS
        rows = subprocess.run(["docker", "history", "--no-trunc", "--format",
                               "{{.CreatedBy}}\t{{.Size}}", tag], env=docker, check=True,
                              capture_output=True, text=True).stdout.splitlines()
        got = [tuple(row.split("\t")) for row in reversed(rows)][1:]
        assert [created_by for created_by, _ in got] == [c for c, _ in HISTORY]
        assert [size for _, size in got][:-1] == ["0B"] * (len(HISTORY) - 1)
        assert got[-1][1] != "0B"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], env=docker, capture_output=True)


def test_the_empty_tar_gzips_to_go_bytes_and_nothing_else_does() -> None:
    """Only the exact empty tar gets the constant; any other input, zlib's own bytes."""
    import gzip
    import io

    from builder.layers.compress import compress_tar

    out = io.BytesIO()
    blob = compress_tar(io.BytesIO(bytes(1024)), out, "gzip")
    assert (out.getvalue(), blob.digest, blob.diff_id) == \
        (EMPTY_GZIP, EMPTY_GZIP_DIGEST, EMPTY_DIFF_ID)
    for data in (bytes(2048), bytes(1023) + b"\x01", bytes(512)):
        out = io.BytesIO()
        compress_tar(io.BytesIO(data), out, "gzip")
        assert gzip.decompress(out.getvalue()) == data and out.getvalue() != EMPTY_GZIP


def _rewrite_cache_entries(cache: Path, edit: Any) -> None:
    """Apply ``edit`` to the entry list of a --cache-to layout and re-link the documents."""
    def blob(digest: str) -> Path:
        return cache / "blobs" / "sha256" / digest.split(":", 1)[1]

    def put(data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blob(digest).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    index = json.loads((cache / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_bytes())
    doc = json.loads(blob(manifest["config"]["digest"]).read_bytes())
    edit(doc["entries"])
    manifest["config"].update(put(json.dumps(doc).encode()))
    index["manifests"][0].update(put(json.dumps(manifest).encode()))
    (cache / "index.json").write_text(json.dumps(index))


def test_an_older_pybuilds_layerless_cache_export_is_not_used(
        tmp_path: Path, busybox_tar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--cache-from of an export whose entry made no layer for an unchanged step (as
    pybuild wrote them before empty layers): skipped with a warning, the step runs."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    one, two = _store(tmp_path, busybox_tar, "one"), _store(tmp_path, busybox_tar, "two")
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    context, cache = _context(tmp_path, "FROM busybox\nRUN true\n"), tmp_path / "cache"
    run_cli("-t", "a-empty", "--cache-to", f"type=local,dest={cache}", str(context), root=one)

    def drop_layer(entries: list[dict[str, Any]]) -> None:
        (entry,) = entries
        assert entry["layers"][-1][0] == EMPTY_DIFF_ID and entry["changes"]["layer"]
        entry["layers"].pop()
        entry["changes"]["layer"] = False
    _rewrite_cache_entries(cache, drop_layer)
    result = run_cli("-t", "a-empty", "--cache-from", f"type=local,src={cache}",
                     str(context), root=two)
    assert b"records no layer for the step" in result.stderr
    config = json.loads(run_cli("inspect", "a-empty", root=two).stdout)[0]
    assert config["RootFS"]["Layers"][-1] == EMPTY_DIFF_ID
    assert "cache miss" in run_cli("explain", "a-empty", root=two).stdout.decode()
