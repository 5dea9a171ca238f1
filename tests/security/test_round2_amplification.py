"""Round 2, points 9 and 10 (D): one big document named many times is parsed once.

A 4 MiB ``index.json`` can list the same manifest 40 000 times; before the fix
``--cache-from type=local`` read, hashed and parsed the manifest's 13 MB entry
list once per listing (hours), and ``load -i DIR`` (or a docker-archive's
``manifest.json``) did the same with a 12 MB config.  Now each distinct
manifest, config and entry list is parsed once, a source may list at most
``PYBUILD_MAX_MANIFESTS`` manifests and have ``PYBUILD_MAX_PARSED_BYTES`` of
JSON parsed: past a cap it is a one-line error, within it the repeats cost
nothing.  Every case must end by itself within a minute (it takes seconds).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from security.oracle import one_line_error, write_tar

pytestmark = [pytest.mark.root]

REPEATS = 40_000   # 85 bytes a descriptor: the index stays under its 4 MiB cap
BIG = 12 << 20     # the repeated document
DEADLINE = 60.0    # seconds; the defended runs take a few, the undefended hours


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put(layout: Path, data: bytes) -> str:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / sha(data).split(":", 1)[1]).write_bytes(data)
    return sha(data)


def repeated_index(layout: Path, manifest: bytes, count: int = REPEATS) -> None:
    digest = put(layout, manifest)
    entry = json.dumps({"digest": digest}, separators=(",", ":"))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text('{"manifests":[' + ",".join([entry] * count) + "]}")


def padded(doc: dict) -> bytes:
    """``doc`` with a padding field that makes it ``BIG`` bytes of valid JSON."""
    return json.dumps({**doc, "padding": "x" * BIG}).encode()


def manifest_of(path: Path, config: bytes, media_type: str) -> bytes:
    """An OCI manifest with no layers whose config (stored in ``path``) is ``config``."""
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": media_type, "digest": put(path, config), "size": len(config)},
        "layers": []}).encode()


def cache_layout(path: Path) -> Path:
    """A --cache-from layout whose one manifest (a 13 MB entry list) is listed 40 000 times."""
    repeated_index(path, manifest_of(path, padded({"entries": []}),
                                     "application/vnd.pybuild.cache.config.v1+json"))
    return path


def image_layout(path: Path) -> Path:
    """A load -i layout: one manifest of an empty image with a 12 MB config, 40 000 times."""
    config = padded({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": []}})
    repeated_index(path, manifest_of(path, config, "application/vnd.oci.image.config.v1+json"))
    return path


def docker_archive(path: Path) -> Path:
    """A docker-archive whose manifest.json names one 12 MB config 40 000 times."""
    config = padded({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": []}})
    entry = json.dumps({"Config": "config.json", "RepoTags": ["amplified:1"], "Layers": []})
    members = {"config.json": config,
               "manifest.json": ("[" + ",".join([entry] * REPEATS) + "]").encode()}
    return write_tar(path, members)


def run(root: Path, *args: str, env: dict[str, str] | None = None) -> \
        subprocess.CompletedProcess:
    """The CLI, which must end by itself within DEADLINE (else the test fails)."""
    argv = [sys.executable, "-m", "builder", "--root", str(root), *args]
    started = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000",
                               **(env or {})}) as process:
        try:
            out, err = process.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail(f"still parsing the same document after {DEADLINE:.0f} s")
    assert time.monotonic() - started < DEADLINE
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def ok(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 0 and "Traceback" not in err, err
    return result.stdout.decode(errors="replace")


# Default caps: refused at the manifest count.  Cap raised past the count: the
# repeats are parsed once, so it still ends in seconds (and works).
CAPS = {"capped": {}, "raised": {"PYBUILD_MAX_MANIFESTS": str(REPEATS * 2)}}


@pytest.mark.parametrize("caps", CAPS)
def test_cache_from_parses_a_repeated_entry_list_once(tmp_path, caps):
    cache = cache_layout(tmp_path / "cache")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a").write_text("a\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    result = run(tmp_path / "store", "build", "--progress", "plain",
                 "--cache-from", f"type=local,src={cache}", str(context), env=CAPS[caps])
    if caps == "capped":
        message = one_line_error(result)
        assert "PYBUILD_MAX_MANIFESTS" in message and "index.json" in message, message
    else:
        ok(result)


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("form", ["oci-dir", "docker-tar"])
def test_load_parses_a_repeated_config_once(tmp_path, caps, form):
    source = image_layout(tmp_path / "layout") if form == "oci-dir" \
        else docker_archive(tmp_path / "amplified.tar")
    root = tmp_path / "store"
    result = run(root, "load", "-i", str(source), env=CAPS[caps])
    if caps == "capped":
        message = one_line_error(result)
        assert "PYBUILD_MAX_MANIFESTS" in message and str(source) in message, message
        return
    out = ok(result)
    assert len(out.splitlines()) == 1, out  # one image, reported once


def test_load_refuses_more_json_than_the_byte_cap(tmp_path):
    """Distinct big configs (no repeat to fold) stop at PYBUILD_MAX_PARSED_BYTES."""
    layout = tmp_path / "layout"
    manifests = []
    for i in range(8):
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": i,
                             "padding": "x" * (1 << 20),
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        manifests.append(json.dumps({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": put(layout, config), "size": len(config)},
            "layers": []}).encode())
    (layout / "index.json").write_text(json.dumps(
        {"manifests": [{"digest": put(layout, m)} for m in manifests]}))
    root = tmp_path / "store"
    result = run(root, "load", "-i", str(layout),
                 env={"PYBUILD_MAX_PARSED_BYTES": str(4 << 20)})
    message = one_line_error(result)
    assert "PYBUILD_MAX_PARSED_BYTES" in message, message
    # Every document is parsed before the first image is stored: none is left.
    images = ok(run(root, "images", "-q"))
    assert images.strip() == "", images
