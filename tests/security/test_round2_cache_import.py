"""Round 2, point 9: a ``--cache-from`` source is untrusted input.

Every attack is performed for real on a cache that a real build exported: the
layout is edited the way an attacker who controls the cache directory (a CI
cache restored from a fork) or the cache registry would edit it, with digests
kept consistent so that only the attack itself is wrong.  Each must end as a
one-line error (a layout that cannot be read) or a logged skip of the entry
(the step then runs), never a traceback, a hang, a full disk, or an image with
layers that did not come from the source's verified blobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from security.oracle import one_line_error

pytestmark = [pytest.mark.root, pytest.mark.overlay]

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}  # one busybox image ID in every store
DOCKERFILE = "FROM busybox\nRUN echo one > /one\nCOPY f /f\n"
ESC = "\x1b"
MIB = 1 << 20


# -- running the CLI -----------------------------------------------------------------

def _limit_file_size() -> None:
    # A blob read from /dev/zero must not fill the machine's disk when the defence is
    # missing: past 512 MiB the kernel stops the process (SIGXFSZ), which fails the test.
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 * MIB, 512 * MIB))


def cli(root: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", "--root", str(root), *args],
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})},
                          preexec_fn=_limit_file_size)


def ok(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 0, f"exit {result.returncode}:\n{err[-3000:]}"
    assert "Traceback" not in err, err
    return err


def fresh_store(tmp: Path, name: str, busybox_tar: Path) -> Path:
    root = tmp / name
    ok(cli(root, "import", str(busybox_tar), "busybox", env=EPOCH))
    return root


def build(root: Path, context: Path, *args: str, timeout: float = 240) \
        -> subprocess.CompletedProcess:
    return cli(root, "build", "--progress", "plain", *args, str(context), timeout=timeout)


def store_blobs(root: Path) -> set[str]:
    return {"sha256:" + p.name for p in (root / "blobs" / "sha256").iterdir()}


def assert_store_clean(root: Path) -> None:
    """No work dir and no half-written blob left behind."""
    tmp = root / "tmp"
    assert not tmp.exists() or [p.name for p in tmp.iterdir() if not p.name.endswith(".lock")] \
        == [], list(tmp.iterdir())
    assert not [p for p in (root / "blobs").iterdir() if p.name.startswith(".incoming")]


# -- the cache layout, edited as an attacker would ---------------------------------

def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """An exported cache directory: index -> manifest -> entry list + layer blobs."""

    def __init__(self, path: Path):
        self.path = path
        index = json.loads((path / "index.json").read_text())
        self.manifest = json.loads(self.blob(index["manifests"][0]["digest"]).read_bytes())
        self.entries: list[dict[str, Any]] = json.loads(
            self.blob(self.manifest["config"]["digest"]).read_bytes())["entries"]

    def blob(self, digest: str) -> Path:
        return self.path / "blobs" / "sha256" / digest.split(":", 1)[1]

    def entry(self, instruction: str) -> dict[str, Any]:
        return next(e for e in self.entries if ("instruction", instruction)
                    in [tuple(i) for i in e["inputs"]])

    def put(self, data: bytes) -> str:
        digest = sha(data)
        self.blob(digest).write_bytes(data)
        return digest

    def save(self, config: bytes | None = None) -> None:
        """Write the entry list (or ``config`` as is), the manifest and the index again."""
        config = config if config is not None else json.dumps({"entries": self.entries}).encode()
        self.manifest["config"] = {"mediaType": self.manifest["config"]["mediaType"],
                                   "digest": self.put(config), "size": len(config)}
        manifest = json.dumps(self.manifest).encode()
        (self.path / "index.json").write_text(json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": self.put(manifest), "size": len(manifest)}]}))

    def retype(self, digest: str, media_type: str) -> None:
        """Say ``media_type`` for the blob ``digest``, in the manifest and every entry."""
        for layer in self.manifest["layers"]:
            if layer["digest"] == digest:
                layer["mediaType"] = media_type
        for entry in self.entries:
            for layer in entry["layers"]:
                if layer[1] == digest:
                    layer[2] = media_type


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> tuple[Path, Path]:
    """(context, cache dir): DOCKERFILE built once with --cache-to mode=max."""
    top = tmp_path_factory.mktemp("cache-import")
    context = top / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "f").write_text("data\n")
    root = fresh_store(top, "exporter", busybox_tar)
    cache = top / "cache"
    ok(build(root, context, "--cache-to", f"type=local,dest={cache},mode=max"))
    return context, cache


@pytest.fixture
def hostile(exported: tuple[Path, Path], tmp_path: Path) -> Layout:
    copy = tmp_path / "hostile-cache"
    shutil.copytree(exported[1], copy, symlinks=True)
    return Layout(copy)


def import_build(tmp_path: Path, busybox_tar: Path, context: Path, cache: Path, *args: str,
                 timeout: float = 240) -> tuple[Path, subprocess.CompletedProcess]:
    root = fresh_store(tmp_path, "importer", busybox_tar)
    return root, build(root, context, "--cache-from", f"type=local,src={cache}", *args,
                       timeout=timeout)


def new_layer(layout: Layout, instruction: str) -> list[str]:
    """The [diff_id, digest, media type] of the layer the step made (its last)."""
    layer: list[str] = layout.entry(instruction)["layers"][-1]
    return layer


def swap_layer(entries: list[dict[str, Any]], digest: str, diff_id: str,
               new_digest: str) -> None:
    """Make every entry name ``diff_id``/``new_digest`` where it named blob ``digest``
    (the later entries too, so the whole chain looks consistent)."""
    for entry in entries:
        for layer in entry["layers"]:
            if layer[1] == digest:
                layer[0], layer[1] = diff_id, new_digest


# -- malformed layouts ---------------------------------------------------------------

LAYOUTS = {
    "deep-index": b"[" * 100_000,
    "index-is-a-list": b"[]",
    "digest-not-a-string": b'{"manifests": [{"digest": 5}]}',
    "digest-traversal": b'{"manifests": [{"digest": "sha256:../../../../etc/passwd"}]}',
    "duplicate-keys": b'{"manifests": [], "manifests": [{"digest": 1}]}',
}


@pytest.mark.parametrize("case", LAYOUTS)
def test_malformed_layout_is_a_one_line_error(hostile, exported, tmp_path, busybox_tar, case):
    (hostile.path / "index.json").write_bytes(LAYOUTS[case])
    root, result = import_build(tmp_path, busybox_tar, exported[0], hostile.path)
    message = one_line_error(result)
    assert "index.json" in message, message
    assert_store_clean(root)


def test_deeply_nested_entry_list_is_a_one_line_error(hostile, exported, tmp_path,
                                                      busybox_tar):
    hostile.save(b'{"entries": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    root, result = import_build(tmp_path, busybox_tar, exported[0], hostile.path)
    assert "nested" in one_line_error(result)
    assert_store_clean(root)


ENTRY_DAMAGE = {
    "layers-not-triples": lambda e: e.update(layers=[[1, 2]]),
    "layers-a-string": lambda e: e.update(layers="abc"),
    "inputs-not-pairs": lambda e: e.update(inputs=[["parent"]]),
    "changes-a-list": lambda e: e.update(changes=[]),
}


@pytest.mark.parametrize("case", ENTRY_DAMAGE)
def test_malformed_entry_is_skipped(hostile, exported, tmp_path, busybox_tar, case):
    ENTRY_DAMAGE[case](hostile.entry("RUN"))
    hostile.save()
    root, result = import_build(tmp_path, busybox_tar, exported[0], hostile.path,
                                "-o", f"type=local,dest={tmp_path / 'out'}")
    err = ok(result)
    assert (tmp_path / "out" / "one").read_text() == "one\n"
    # Nothing malformed was recorded: a later miss of that step is explained (the
    # explanation diffs the recorded inputs) instead of crashing.
    changed = tmp_path / "changed"
    shutil.copytree(exported[0], changed)
    (changed / "Dockerfile").write_text(DOCKERFILE.replace("echo one", "echo two"))
    ok(build(root, changed))
    assert "skipped" in err, err
    assert_store_clean(root)


# -- blobs that are not regular files ------------------------------------------------

def test_fifo_blob_never_hangs_the_build(hostile, exported, tmp_path, busybox_tar):
    blob = hostile.blob(new_layer(hostile, "RUN")[1])
    blob.unlink()
    os.mkfifo(blob)
    root = fresh_store(tmp_path, "importer", busybox_tar)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "builder", "--root", str(root), "build", "--progress",
            "plain", "--cache-from", f"type=local,src={hostile.path}", "-o",
            f"type=local,dest={out}", str(exported[0])]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          preexec_fn=_limit_file_size) as build_process:
        try:
            _, stderr = build_process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            build_process.send_signal(signal.SIGTERM)
            try:
                build_process.communicate(timeout=30)
                verdict = "hung on the FIFO until SIGTERM"
            except subprocess.TimeoutExpired:
                verdict = "hung on the FIFO, and SIGTERM did not stop it"
            build_process.kill()
            build_process.communicate()
            pytest.fail(verdict)
    err = stderr.decode(errors="replace")
    assert build_process.returncode == 0 and "Traceback" not in err, err
    assert "FIFO" in err and "skipped" in err, err
    assert (out / "one").read_text() == "one\n"
    assert_store_clean(root)


@pytest.mark.parametrize("kind", ["symlink", "device"])
def test_endless_blob_is_refused_before_reading(hostile, exported, tmp_path, busybox_tar,
                                                kind):
    blob = hostile.blob(new_layer(hostile, "RUN")[1])
    blob.unlink()
    if kind == "symlink":
        blob.symlink_to("/dev/zero")
    else:
        os.mknod(blob, 0o644 | 0o020000, os.makedev(1, 5))  # a char device: /dev/zero's
    started = time.monotonic()
    root, result = import_build(tmp_path, busybox_tar, exported[0], hostile.path,
                                "-o", f"type=local,dest={tmp_path / 'out'}", timeout=300)
    assert result.returncode != -signal.SIGXFSZ, "streamed /dev/zero into the store"
    err = ok(result)
    assert "not a regular file" in err and "skipped" in err, err
    assert time.monotonic() - started < 240
    assert (tmp_path / "out" / "one").read_text() == "one\n"
    assert_store_clean(root)


# -- entries that lie about their layers ---------------------------------------------

@pytest.mark.parametrize("case", ["empty", "shortened", "replaced-base"])
def test_entry_must_extend_its_parents_layers(hostile, exported, tmp_path, busybox_tar, case):
    entry = hostile.entry("COPY")
    base, run, copy = entry["layers"]
    entry["layers"] = {"empty": [], "shortened": [base, copy],
                       "replaced-base": [run, run, copy]}[case]
    hostile.save()
    out = tmp_path / "out"
    root, result = import_build(tmp_path, busybox_tar, exported[0], hostile.path,
                                "-o", f"type=local,dest={out}")
    err = ok(result)
    # The image has every layer: busybox, RUN's and COPY's.
    assert (out / "bin" / "busybox").exists(), "the base layers were dropped"
    assert (out / "one").exists(), "the RUN step's layer was dropped"
    assert (out / "one").read_text() == "one\n" and (out / "f").read_text() == "data\n"
    assert "do not extend" in err, err
    assert_store_clean(root)


@pytest.fixture
def victim(tmp_path: Path, busybox_tar: Path) -> tuple[Path, str, str]:
    """A store holding a private image; (root, its secret layer's diff_id, its blob)."""
    from builder.store import Store

    root = fresh_store(tmp_path, "victim", busybox_tar)
    context = tmp_path / "private-ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo topsecret > /secret\n")
    ok(build(root, context, "-t", "private"))
    ok(cli(root, "save", "--format", "oci", "-o", str(tmp_path / "private.tar"), "private"))
    store = Store(root)
    try:
        top = store.chain(store.image_top_chain(store.resolve_image("private")))[-1]
        blob = next(b.digest for b in store.layer_blobs(top.diff_id))
    finally:
        store.close()
    return root, top.diff_id, blob


@pytest.mark.parametrize("blob", ["attackers-own-blob", "blob-not-in-the-source",
                                  "victims-blob-digest"])
def test_entry_naming_a_local_chain_gets_nothing_from_the_store(hostile, exported, tmp_path,
                                                                victim, blob):
    root, secret_diff_id, secret_blob = victim
    own_blob = new_layer(hostile, "RUN")[1]
    named = {"attackers-own-blob": own_blob, "blob-not-in-the-source": "sha256:" + "0" * 64,
             "victims-blob-digest": secret_blob}[blob]
    swap_layer(hostile.entries, own_blob, secret_diff_id, named)
    hostile.save()
    out = tmp_path / "out"
    err = ok(build(root, exported[0], "--cache-from", f"type=local,src={hostile.path}",
                   "-o", f"type=local,dest={out}"))
    assert not (out / "secret").exists(), "another image's private layer was shipped"
    assert (out / "one").read_text() == "one\n"
    assert "skipped" in err, err
    if blob == "attackers-own-blob":
        assert own_blob not in store_blobs(root)  # fetched, refused, removed again
    assert_store_clean(root)


def _magic_compression(data: bytes) -> str:
    return "gzip" if data[:2] == b"\x1f\x8b" else "zstd" if data[:4] == b"\x28\xb5\x2f\xfd" \
        else "none"


def saved_layers(root: Path, image: str, tmp_path: Path) -> list[tuple[str, str]]:
    """(media type, compression its bytes have) of every layer ``save`` writes."""
    archive = tmp_path / f"{image}.tar"
    ok(cli(root, "save", "--format", "oci", "-o", str(archive), image))
    with tarfile.open(archive) as tar:
        def member(digest: str) -> bytes:
            f = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
            assert f is not None
            return f.read()
        index = json.loads(member_bytes(tar, "index.json"))
        manifest = json.loads(member(index["manifests"][0]["digest"]))
        return [(layer["mediaType"], _magic_compression(member(layer["digest"])))
                for layer in manifest["layers"]]


def member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    assert f is not None
    return f.read()


def media_compression(media_type: str) -> str:
    return media_type.rsplit("+", 1)[1] if "+" in media_type else "none"


@pytest.mark.parametrize("lie", ["application/vnd.oci.image.layer.v1.tar+zstd",
                                 "application/vnd.oci.image.layer.v1.tar"])
def test_media_type_lie_is_never_exported(hostile, exported, tmp_path, busybox_tar, lie):
    digest = new_layer(hostile, "RUN")[1]
    assert hostile.blob(digest).read_bytes()[:2] == b"\x1f\x8b"  # the bytes are gzip
    hostile.retype(digest, lie)
    hostile.save()
    root, result = import_build(tmp_path, busybox_tar, exported[0], hostile.path,
                                "-t", "app")
    ok(result)
    for media_type, actual in saved_layers(root, "app", tmp_path):
        assert media_compression(media_type) == actual, (media_type, actual)


HISTORY = {
    "created": lambda e: e.update(created=f"{ESC}]0;owned{ESC}\\{ESC}[2J{ESC}[31m"),
    "changes": lambda e: e["changes"].update(added=f"{ESC}[2J{ESC}[31m"),
}


@pytest.mark.parametrize("case", HISTORY)
def test_escape_sequences_from_the_cache_are_never_printed(hostile, exported, tmp_path,
                                                           busybox_tar, case):
    HISTORY[case](hostile.entry("RUN"))
    hostile.save()
    root, result = import_build(tmp_path, busybox_tar, exported[0], hostile.path,
                                "-t", "app")
    assert ESC not in ok(result)
    for verb in ("history", "explain", "inspect"):
        shown = cli(root, verb, "app")
        ok(shown)
        assert ESC.encode() not in shown.stdout, (verb, shown.stdout[-2000:])


# -- the same artifact in a real registry ----------------------------------------------

@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Any]:
    from registry import registry_server

    try:
        server = registry_server.start_registry(tmp_path / "registry")
    except registry_server.Unavailable as err:
        pytest.skip(str(err))
    try:
        yield server
    finally:
        server.stop()


def _registry_cache(registry: Any, tmp_path: Path, busybox_tar: Path,
                    context: Path) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """Push a real cache for ``context``; (repo, its manifest, its entries)."""
    root = fresh_store(tmp_path, "registry-exporter", busybox_tar)
    ok(build(root, context, "--cache-to",
             f"type=registry,ref={registry.host}/cache:good,mode=max"))
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    status, _, body = registry.request("GET", "/v2/cache/manifests/good", headers=accept)
    assert status == 200
    manifest = json.loads(body)
    status, _, config = registry.request(
        "GET", f"/v2/cache/blobs/{manifest['config']['digest']}")
    assert status == 200
    return "cache", manifest, json.loads(config)["entries"]


def _push_cache(registry: Any, manifest: dict[str, Any], config: bytes) -> str:
    from registry import registry_server

    manifest = dict(manifest, config=dict(manifest["config"], size=len(config),
                                          digest=registry_server.put_blob(registry, "cache",
                                                                          config)))
    registry_server.put_manifest(registry, "cache", "hostile", manifest,
                                 "application/vnd.oci.image.manifest.v1+json")
    return f"type=registry,ref={registry.host}/cache:hostile"


def _run_entry(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in entries if ["instruction", "RUN"] in e["inputs"])


def test_registry_cache_media_type_lie(registry, exported, tmp_path, busybox_tar):
    _, manifest, entries = _registry_cache(registry, tmp_path, busybox_tar, exported[0])
    digest = _run_entry(entries)["layers"][-1][1]
    lie = "application/vnd.oci.image.layer.v1.tar+zstd"
    for layer in manifest["layers"]:
        if layer["digest"] == digest:
            layer["mediaType"] = lie
    for entry in entries:
        for layer in entry["layers"]:
            if layer[1] == digest:
                layer[2] = lie
    ref = _push_cache(registry, manifest, json.dumps({"entries": entries}).encode())
    root = fresh_store(tmp_path, "registry-importer", busybox_tar)
    err = ok(build(root, exported[0], "--cache-from", ref, "-t", "app"))
    for media_type, actual in saved_layers(root, "app", tmp_path):
        assert media_compression(media_type) == actual, (media_type, actual)
    assert "skipped" in err, err


@pytest.mark.parametrize("blob", ["attackers-own-blob", "blob-not-in-the-registry"])
def test_registry_cache_cannot_name_a_local_chain(registry, exported, tmp_path, busybox_tar,
                                                  victim, blob):
    root, secret_diff_id, _ = victim
    _, manifest, entries = _registry_cache(registry, tmp_path, busybox_tar, exported[0])
    own_blob = _run_entry(entries)["layers"][-1][1]
    swap_layer(entries, own_blob, secret_diff_id,
               own_blob if blob == "attackers-own-blob" else "sha256:" + "1" * 64)
    ref = _push_cache(registry, manifest, json.dumps({"entries": entries}).encode())
    out = tmp_path / "out"
    err = ok(build(root, exported[0], "--cache-from", ref, "-o", f"type=local,dest={out}"))
    assert not (out / "secret").exists(), "another image's private layer was shipped"
    assert (out / "one").read_text() == "one\n"
    assert "skipped" in err, err
    assert_store_clean(root)


def test_registry_cache_deeply_nested_entry_list(registry, exported, tmp_path, busybox_tar):
    _, manifest, _ = _registry_cache(registry, tmp_path, busybox_tar, exported[0])
    ref = _push_cache(registry, manifest,
                      b'{"entries": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    root = fresh_store(tmp_path, "registry-importer", busybox_tar)
    result = build(root, exported[0], "--cache-from", ref)
    assert "nested" in one_line_error(result)
    assert_store_clean(root)
