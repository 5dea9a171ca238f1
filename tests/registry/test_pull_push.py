"""Pull, push, FROM a registry, and the registry cache, against a real registry.

Every test talks to Debian's ``docker-registry`` on 127.0.0.1 (fixtures in
conftest.py); results are read back with pybuild's own store and with skopeo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_cli
from registry_server import push_multiplatform_index, skopeo, skopeo_args

from builder.store import Store

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds mount overlay"),
]


def _pushed_busybox(tmp_path: Path, busybox_tar: Path, registry, name: str) -> Path:
    """A store with busybox imported and pushed to ``registry/name``."""
    root = tmp_path / "pusher"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    run_cli("push", "busybox", f"{registry.host}/{name}", root=root)
    return root


def _config(root: Path, name: str) -> dict:
    store = Store(root)
    return store.image_config(store.resolve_image(name))


# ------------------------------------------------------------------ pull

def test_pull_by_tag_selects_the_platform_from_an_index(tmp_path, registry):
    digests = push_multiplatform_index(registry, "multi", "1")
    root = tmp_path / "store"
    name = f"{registry.host}/multi:1"

    out = run_cli("pull", name, "--platform", "linux/amd64", root=root).stdout.decode()
    assert digests["linux/amd64"]["manifest"] in out
    store = Store(root)
    image_id = store.resolve_image(name)
    assert image_id == digests["linux/amd64"]["config"]
    assert store.image_config(image_id)["architecture"] == "amd64"
    # Pulled packed, as BuildKit does: the files appear when a step first needs them.
    top = store.image_top_chain(image_id)
    assert store.layer(top).packed and not store.layer_dir(top).exists()
    store.unpack(top)
    assert (store.lower_dirs(top)[0] / "bin" / "busybox").exists()
    assert not store.layer(top).packed

    run_cli("pull", name, "--platform", "linux/arm64", root=root)
    arm = Store(root).resolve_image(name)
    assert arm == digests["linux/arm64"]["config"]
    assert Store(root).image_config(arm)["architecture"] == "arm64"


def test_pull_by_digest_pins_and_verifies(tmp_path, registry):
    digests = push_multiplatform_index(registry, "multi", "2")
    root = tmp_path / "store"
    by_index = f"{registry.host}/multi@{digests['index']}"
    run_cli("pull", by_index, "--platform", "linux/arm64", root=root)
    assert Store(root).resolve_image(by_index) == digests["linux/arm64"]["config"]

    manifest = digests["linux/amd64"]["manifest"]
    by_manifest = f"{registry.host}/multi@{manifest}"
    run_cli("pull", by_manifest, root=root)
    assert Store(root).resolve_image(by_manifest) == digests["linux/amd64"]["config"]

    wrong = "sha256:" + "0" * 64
    failed = run_cli("pull", f"{registry.host}/multi@{wrong}", root=root, check=False)
    assert failed.returncode == 1
    assert failed.stderr.decode().count("\n") == 1 and "not found" in failed.stderr.decode()


def test_pull_reports_a_missing_platform(tmp_path, registry):
    push_multiplatform_index(registry, "multi", "3")
    failed = run_cli("pull", f"{registry.host}/multi:3", "--platform", "linux/s390x",
                     root=tmp_path / "store", check=False)
    err = failed.stderr.decode()
    assert failed.returncode == 1 and "linux/s390x" in err and "linux/arm64/v8" in err


def test_layers_already_in_the_store_are_not_fetched(tmp_path, registry, busybox_tar):
    _pushed_busybox(tmp_path, busybox_tar, registry, "base:1")
    root = tmp_path / "store"
    first = run_cli("pull", f"{registry.host}/base:1", root=root).stderr.decode()
    assert ": pulled" in first
    again = run_cli("pull", f"{registry.host}/base:1", root=root).stderr.decode()
    assert "already in the store" in again and ": pulled" not in again


def test_build_from_registry_image_with_an_empty_store(tmp_path, registry, busybox_tar):
    _pushed_busybox(tmp_path, busybox_tar, registry, "base:1")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {registry.host}/base:1\nRUN echo built > /built\n")
    root = tmp_path / "empty"
    result = run_cli("build", "-t", "app", "--progress", "plain", str(context), root=root)
    assert f"pulled {registry.host}/base:1" in result.stderr.decode()
    store = Store(root)
    top = store.image_top_chain(store.resolve_image("app"))
    assert (store.layer_dir(top) / "built").read_text() == "built\n"
    # A build's own pull extracts each layer as it arrives: nothing is left packed.
    assert store.db.execute("SELECT * FROM packed_layers").fetchall() == []


def test_missing_base_image_is_one_clear_line(tmp_path, registry):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {registry.host}/nothing:1\n")
    failed = run_cli("build", str(context), root=tmp_path / "s", check=False)
    errors = [line for line in failed.stderr.decode().splitlines()
              if not line.startswith("#")]  # progress lines come first
    assert failed.returncode == 1 and len(errors) == 1, errors
    err = errors[0]
    assert "Dockerfile:1" in err and "not found" in err and "pybuild load" in err


# ------------------------------------------------------------------ corruption and resume

def test_blob_corrupted_on_the_registry_never_enters_the_store(tmp_path, registry,
                                                               busybox_tar):
    pusher = _pushed_busybox(tmp_path, busybox_tar, registry, "base:1")
    layer = _config(pusher, "busybox")["rootfs"]["diff_ids"][0]
    store = Store(pusher)
    blob = store.layer_blobs(layer)[0].digest
    data = registry.blob_path(blob)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))

    root = tmp_path / "victim"
    failed = run_cli("pull", f"{registry.host}/base:1", root=root, check=False)
    err = failed.stderr.decode()
    assert failed.returncode == 1 and err.count("\n") == 1, err
    assert blob in err and "corrupt" in err
    fresh = Store(root)
    assert not fresh.has_blob(blob)
    assert fresh.resolve_image(f"{registry.host}/base:1") is None
    assert list((root / "layers").iterdir()) == []


def _big_image(tmp_path: Path, registry, size: int) -> tuple[Path, str, int]:
    """Push a one-layer image holding ``size`` random bytes; returns (store, blob, size)."""
    import tarfile

    import zstandard

    tar = tmp_path / "big.tar.zst"
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(size))
    with open(tar, "wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as z, \
            tarfile.open(fileobj=z, mode="w|") as out:
        out.add(payload, "payload")
    pusher = tmp_path / "pusher"
    run_cli("import", str(tar), "big", root=pusher)
    run_cli("push", "big", f"{registry.host}/big:1", "--compression", "zstd", root=pusher)
    store = Store(pusher)
    record = store.layer_blobs(_config(pusher, "big")["rootfs"]["diff_ids"][0])
    blob = next(r for r in record if r.compression == "zstd")
    return pusher, blob.digest, blob.size


def test_interrupted_pull_resumes_where_it_stopped(tmp_path, registry):
    pusher, blob, size = _big_image(tmp_path, registry, 8 << 20)
    root = tmp_path / "store"
    Store(root).db  # noqa: B018 - create the layout
    ingest = root / "ingest"
    ingest.mkdir()
    half = Store(pusher).blob_path(blob).read_bytes()[: size // 2]
    (ingest / (blob.split(":")[1] + ".partial")).write_bytes(half)

    result = run_cli("pull", f"{registry.host}/big:1", root=root)
    assert f"resumed at {size // 2} bytes" in result.stderr.decode()
    assert Store(root).resolve_image(f"{registry.host}/big:1") is not None
    assert not list(ingest.iterdir())


def test_pull_killed_midway_then_completes(tmp_path, registry):
    _, blob, _ = _big_image(tmp_path, registry, 48 << 20)
    root = tmp_path / "store"
    partial = root / "ingest" / (blob.split(":")[1] + ".partial")
    process = subprocess.Popen([sys.executable, "-m", "builder", "--root", str(root), "pull",
                                f"{registry.host}/big:1"], stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        if partial.exists() and partial.stat().st_size > 0:
            break
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert Store(root).resolve_image(f"{registry.host}/big:1") is None or \
        process.returncode == 0
    run_cli("pull", f"{registry.host}/big:1", root=root)
    store = Store(root)
    assert store.resolve_image(f"{registry.host}/big:1") is not None
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ------------------------------------------------------------------ push

def test_push_reads_back_with_skopeo(tmp_path, registry, busybox_tar):
    root = _pushed_busybox(tmp_path, busybox_tar, registry, "pushed:1")
    inspected = json.loads(skopeo(registry, "inspect", *skopeo_args(registry),
                                  f"docker://{registry.host}/pushed:1").stdout)
    config = _config(root, "busybox")
    assert inspected["Architecture"] == config["architecture"]
    assert len(inspected["Layers"]) == len(config["rootfs"]["diff_ids"])
    oci = tmp_path / "oci"
    copied = skopeo(registry, "copy", *skopeo_args(registry, "src"),
                    f"docker://{registry.host}/pushed:1", f"oci:{oci}:pushed")
    assert copied.returncode == 0, copied.stderr
    index = json.loads((oci / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads((oci / "blobs/sha256" / manifest_digest.split(":")[1]).read_text())
    assert manifest["config"]["digest"] == Store(root).resolve_image("busybox")


def test_second_push_skips_blobs_and_mounts_across_repositories(tmp_path, registry,
                                                                 busybox_tar):
    root = _pushed_busybox(tmp_path, busybox_tar, registry, "one:1")
    again = run_cli("push", "busybox", f"{registry.host}/one:2", root=root).stderr.decode()
    assert "already on the registry" in again and ": pushed" not in again
    run_cli("pull", f"{registry.host}/one:1", root=root)
    other = run_cli("push", "busybox", f"{registry.host}/two:1", root=root).stderr.decode()
    assert "mounted from one" in other


def test_push_chunked_upload_of_a_big_blob(tmp_path, registry):
    _, blob, size = _big_image(tmp_path, registry, 40 << 20)
    assert size > 32 << 20  # random data does not compress: a chunked upload
    status, headers, _ = registry.request("HEAD", f"/v2/big/blobs/{blob}")
    assert status == 200 and int(headers["Content-Length"]) == size


# ------------------------------------------------------------------ registry cache

def test_two_stores_share_only_the_registry_cache(tmp_path, registry, busybox_tar):
    _pushed_busybox(tmp_path, busybox_tar, registry, "base:1")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "file").write_text("data\n")
    (context / "Dockerfile").write_text(
        f"FROM {registry.host}/base:1\nRUN echo one > /one\nCOPY file /file\n"
        "RUN cat /one /file > /both\nENV DONE=1\n")
    cache = f"{registry.host}/cache:app"
    first = run_cli("build", "-t", "app", "--progress", "plain", "--cache-to",
                    f"type=registry,ref={cache},mode=max", str(context),
                    root=tmp_path / "a")
    assert "exported 3 cache entries" in first.stderr.decode()
    second = run_cli("build", "-t", "app", "--progress", "plain", "--cache-from",
                     f"type=registry,ref={cache}", str(context), root=tmp_path / "b")
    log = second.stderr.decode()
    assert log.count("CACHED") == 3, log
    assert Store(tmp_path / "a").resolve_image("app") == Store(tmp_path / "b").resolve_image("app")


def test_cache_from_a_registry_ref_that_does_not_exist_yet(tmp_path, registry, busybox_tar):
    _pushed_busybox(tmp_path, busybox_tar, registry, "base:1")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {registry.host}/base:1\nRUN true > /x\n")
    run_cli("build", "--cache-from", f"type=registry,ref={registry.host}/cache:none",
            str(context), root=tmp_path / "s")


# ------------------------------------------------------------------ auth and TLS

def test_tls_and_basic_auth(tmp_path, tls_registry, busybox_tar, monkeypatch):
    monkeypatch.setenv("PYBUILD_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    name = f"{tls_registry.host}/secure:1"

    untrusted = run_cli("push", "busybox", name, root=root, check=False)
    assert untrusted.returncode == 1 and "certificate" in untrusted.stderr.decode()

    monkeypatch.setenv("PYBUILD_CERTS_D", str(tls_registry.certs_d))
    anonymous = run_cli("push", "busybox", name, root=root, check=False)
    err = anonymous.stderr.decode()
    assert anonymous.returncode == 1 and "requires authentication" in err
    assert "pybuild login" in err

    run_cli("login", tls_registry.host, "-u", tls_registry.username, "--password-stdin",
            root=root, stdin=f"{tls_registry.password}\n".encode())
    run_cli("push", "busybox", name, root=root)
    run_cli("pull", name, root=tmp_path / "other")


def test_bearer_token_flow(tmp_path, token_registry, busybox_tar, monkeypatch):
    monkeypatch.setenv("PYBUILD_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    if token_registry.certs_d is not None:
        monkeypatch.setenv("PYBUILD_CERTS_D", str(token_registry.certs_d))
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    name = f"{token_registry.host}/tok:1"
    denied = run_cli("push", "busybox", name, root=root, check=False)
    assert denied.returncode == 1
    run_cli("login", token_registry.host, "-u", token_registry.username, "--password-stdin",
            root=root, stdin=f"{token_registry.password}\n".encode())
    run_cli("push", "busybox", name, root=root)
    run_cli("pull", name, root=tmp_path / "other")
    assert Store(tmp_path / "other").resolve_image(name) == Store(root).resolve_image("busybox")


def test_identity_token_from_docker_config(tmp_path, token_registry, busybox_tar, monkeypatch):
    """Docker's config.json with an OAuth2 refresh token (what Docker Desktop stores)."""
    monkeypatch.setenv("PYBUILD_CONFIG", str(tmp_path / "config"))
    docker = tmp_path / "docker-config"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps({"auths": {token_registry.host: {
        "identitytoken": token_registry.token_service.refresh_token}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    run_cli("push", "busybox", f"{token_registry.host}/idtok:1", root=root)
    assert any(method == "POST" for method, *_ in token_registry.token_service.requests)
