"""Catalogue 1.M: registries, manifests and image archives that lie.

A hostile registry (an HTTP server in the test process, answering whatever each
test tells it to) serves crafted manifests, configs and blobs to the real
``pybuild pull``; a real registry is used where its own behaviour matters.
After every refusal the store must hold no image, no layer and no blob from
the lie.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli
from security.oracle import docker_archive, one_line_error

from builder.store import Store

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Image:
    """A one-layer image whose parts a test may replace before serving."""

    tar: bytes = field(default_factory=lambda: layer_tar({"hello": b"hello\n"}))

    def __post_init__(self) -> None:
        self.blob = gzip.compress(self.tar, mtime=0)
        self.config_doc = {"architecture": "amd64", "os": "linux", "config": {},
                           "rootfs": {"type": "layers", "diff_ids": [sha(self.tar)]}}

    @property
    def config(self) -> bytes:
        return json.dumps(self.config_doc).encode()

    def manifest_doc(self) -> dict:
        return {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha(self.config),
                           "size": len(self.config)},
                "layers": [{"mediaType": LAYER_GZIP, "digest": sha(self.blob),
                            "size": len(self.blob)}]}


class Hostile:
    """Routes: path -> (status, headers, body), or a function of the request headers
    returning one (for answers that change: retries, ranges); every request is logged."""

    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, head_only: bool) -> None:
                outer.requests.append((self.command, self.path, dict(self.headers.items())))
                answer = outer.routes.get(
                    self.path.split("?")[0], (404, {}, b'{"errors":[{"code":"NOT_FOUND"}]}'))
                if callable(answer):
                    answer = answer(dict(self.headers.items()))
                if answer is None:  # drop the connection without an answer
                    self.close_connection = True
                    return
                status, headers, body = answer
                if status == 200 and "X-Cut" in headers:  # send part of the body, then hang up
                    cut = int(headers.pop("X-Cut"))
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body[:cut])
                    self.close_connection = True
                    return
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head_only:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(False)

            def do_HEAD(self) -> None:
                self._answer(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, repo: str, image: Image, *, tag: str = "1", manifest: bytes | None = None,
              content_type: str = OCI_MANIFEST) -> bytes:
        data = manifest if manifest is not None else json.dumps(image.manifest_doc()).encode()
        self.routes[f"/v2/{repo}/manifests/{tag}"] = (200, {"Content-Type": content_type}, data)
        self.routes[f"/v2/{repo}/manifests/{sha(data)}"] = (200, {"Content-Type": content_type},
                                                             data)
        self.blob(repo, sha(image.config), image.config)
        self.blob(repo, sha(image.blob), image.blob)
        return data

    def blob(self, repo: str, digest: str, data: bytes, **headers: str) -> None:
        self.routes[f"/v2/{repo}/blobs/{digest}"] = (200, dict(headers), data)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    server.routes["/v2/"] = (200, {}, b"{}")
    try:
        yield server
    finally:
        server.stop()


def pull(root: Path, ref: str, *args: str):  # type: ignore[no-untyped-def]
    return run_cli("pull", ref, *args, root=root, check=False)


def assert_refused(root: Path, result, *words: str) -> str:  # type: ignore[no-untyped-def]
    """One-line error containing ``words``; no image, layer or stray blob in the store."""
    line = one_line_error(result)
    for word in words:
        assert word in line, line
    store = Store(root)
    assert store.tags() == [] and store.images() == []
    assert not any((root / "layers").iterdir()) if (root / "layers").exists() else True
    assert store.db.execute("SELECT chain_id FROM packed_layers").fetchall() == []
    # Partial downloads may stay in ingest/ (the next pull resumes and verifies them);
    # nothing unverified is ever in blobs/.
    blobs = root / "blobs" / "sha256"
    for blob in blobs.iterdir() if blobs.exists() else []:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob
    return line


def test_pull_of_an_honest_hostile_server_works(tmp_path, hostile):
    """Negative control: the test server itself serves a pullable image."""
    image = Image()
    hostile.serve("ok", image)
    pull(tmp_path / "s", f"{hostile.host}/ok:1").check_returncode()
    store = Store(tmp_path / "s")
    top = store.image_top_chain(store.resolve_image(f"{hostile.host}/ok:1"))
    store.unpack(top)
    assert (store.layer_dir(top) / "hello").read_bytes() == b"hello\n"


# ------------------------------------------------------------------ M01 .. M10

def test_M01_manifest_not_matching_the_requested_digest(tmp_path, hostile):
    image = Image()
    data = hostile.serve("m01", image)
    other = data + b" "
    hostile.routes[f"/v2/m01/manifests/{sha(other)}"] = (200, {"Content-Type": OCI_MANIFEST},
                                                         data)
    result = pull(tmp_path / "s", f"{hostile.host}/m01@{sha(other)}")
    assert_refused(tmp_path / "s", result, "digest", sha(data))


@pytest.mark.parametrize("lie", ["other-content", "one-byte-more", "truncated",
                                 "recompressed"])
def test_M02_blob_not_matching_its_descriptor(tmp_path, hostile, lie):
    image = Image()
    hostile.serve("m02", image)
    body = {"other-content": gzip.compress(layer_tar({"evil": b"x"}), mtime=0),
            "one-byte-more": image.blob + b"\0",
            "truncated": image.blob[:-10],
            "recompressed": gzip.compress(image.tar, compresslevel=1, mtime=1)}[lie]
    hostile.blob("m02", sha(image.blob), body)
    result = pull(tmp_path / "s", f"{hostile.host}/m02:1")
    assert_refused(tmp_path / "s", result, sha(image.blob))
    assert not Store(tmp_path / "s").has_blob(sha(image.blob))


@pytest.mark.parametrize("digest", ["sha256:../../../../etc/passwd", "sha256:" + "A" * 64,
                                    "sha256:" + "a" * 63, "md5:" + "a" * 32,
                                    "sha256:" + "a" * 64 + "\n"])
@pytest.mark.parametrize("where", ["layer", "config", "diff_id", "index", "reference"])
def test_M03_malformed_digests_never_reach_a_path_or_url(tmp_path, hostile, digest, where):
    image = Image()
    doc = image.manifest_doc()
    if where == "layer":
        doc["layers"][0]["digest"] = digest
    elif where == "config":
        doc["config"]["digest"] = digest
    elif where == "diff_id":
        image.config_doc["rootfs"]["diff_ids"] = [digest]
        doc = image.manifest_doc()
    manifest = json.dumps(doc).encode()
    if where == "index":
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": 10,
             "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
        hostile.serve("m03", image, manifest=index, content_type=OCI_INDEX)
    else:
        hostile.serve("m03", image, manifest=manifest)
    ref = f"{hostile.host}/m03@{digest}" if where == "reference" else f"{hostile.host}/m03:1"
    result = pull(tmp_path / "s", ref, "--platform", "linux/amd64")
    assert_refused(tmp_path / "s", result)
    for _method, path, _headers in hostile.requests:
        assert ".." not in path and "\n" not in path and "md5" not in path, path
    assert not (tmp_path / "etc").exists()


def test_M04_ambiguous_manifests_are_refused(tmp_path, hostile):
    image = Image()
    doc = image.manifest_doc()
    doc["manifests"] = []
    hostile.serve("both", image, manifest=json.dumps(doc).encode())
    assert_refused(tmp_path / "s", pull(tmp_path / "s", f"{hostile.host}/both:1"), "ambiguous")

    hostile.serve("contradict", image, content_type=OCI_INDEX)
    assert_refused(tmp_path / "s", pull(tmp_path / "s", f"{hostile.host}/contradict:1"),
                   "contradicts")


@pytest.mark.parametrize("body", [
    b'{"schemaVersion":2,"layers":[],"layers":[{"digest":"x"}],"config":{}}',
    b'{"schemaVersion":NaN,"layers":[],"config":{}}',
    b"[" * 10000 + b"]" * 10000,
    b'{"a":' * 10000 + b"1" + b"}" * 10000,
])
def test_M05_duplicate_keys_nan_and_deep_nesting(tmp_path, hostile, body):
    hostile.serve("m05", Image(), manifest=body)
    assert_refused(tmp_path / "s", pull(tmp_path / "s", f"{hostile.host}/m05:1"))


def test_M06_oversized_manifest_and_lying_length(tmp_path, hostile):
    image = Image()
    big = b'{"pad":"' + b"x" * (5 << 20) + b'"}'
    hostile.serve("huge", image, manifest=big)
    assert_refused(tmp_path / "s", pull(tmp_path / "s", f"{hostile.host}/huge:1"), "allowed")
    # A Content-Length that claims 2 GB is refused before anything is read.
    hostile.routes["/v2/liar/manifests/1"] = (200, {"Content-Type": OCI_MANIFEST,
                                                     "Content-Length": str(2 << 30)}, b"{}")
    assert_refused(tmp_path / "s", pull(tmp_path / "s", f"{hostile.host}/liar:1"), "allowed")


def test_M06_oversized_config(tmp_path, hostile):
    image = Image()
    image.config_doc["pad"] = "x" * (5 << 20)
    hostile.serve("bigconfig", image)
    assert_refused(tmp_path / "s", pull(tmp_path / "s", f"{hostile.host}/bigconfig:1"))


def test_M07_descriptor_urls_are_never_fetched(tmp_path, hostile):
    elsewhere = Hostile()
    try:
        image = Image()
        doc = image.manifest_doc()
        doc["layers"][0]["urls"] = [f"http://{elsewhere.host}/layer"]
        hostile.serve("urls", image, manifest=json.dumps(doc).encode())
        pull(tmp_path / "s", f"{hostile.host}/urls:1").check_returncode()  # from the registry

        doc["layers"][0]["mediaType"] = \
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        hostile.serve("foreign", image, manifest=json.dumps(doc).encode())
        result = pull(tmp_path / "f", f"{hostile.host}/foreign:1")
        assert_refused(tmp_path / "f", result, "media type")
        assert elsewhere.requests == []
    finally:
        elsewhere.stop()


def test_M07_credentials_never_follow_a_redirect_to_another_host(tmp_path, hostile,
                                                                 monkeypatch):
    elsewhere = Hostile()
    try:
        image = Image()
        hostile.serve("redir", image)
        elsewhere.blob("redir", sha(image.blob), image.blob)
        hostile.routes[f"/v2/redir/blobs/{sha(image.blob)}"] = (
            307, {"Location": f"http://{elsewhere.host}/v2/redir/blobs/{sha(image.blob)}"},
            b"")
        # The registry asks for basic auth on every path; we have credentials for it.
        config = tmp_path / "config"
        monkeypatch.setenv("PYBUILD_CONFIG", str(config))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
        run_cli("login", hostile.host, "-u", "user", "--password-stdin", root=tmp_path / "s",
                stdin=b"secret\n")
        challenge = (401, {"WWW-Authenticate": 'Basic realm="test"'}, b"")
        original = dict(hostile.routes)

        class Gate(dict):
            def get(self, key, default=None):  # type: ignore[no-untyped-def, override]
                _method, _, headers = hostile.requests[-1]
                if "Authorization" not in headers and key != "/v2/":
                    return challenge
                return original.get(key, default)

        hostile.routes = Gate(original)
        pull(tmp_path / "s", f"{hostile.host}/redir:1").check_returncode()
        assert any("Authorization" in h for _, _, h in hostile.requests)
        assert elsewhere.requests and all("Authorization" not in h
                                          for _, _, h in elsewhere.requests)
    finally:
        elsewhere.stop()


@pytest.mark.parametrize("lie", ["extra-diff-id", "wrong-diff-id", "null-config",
                                 "negative-size", "diff-ids-not-a-list"])
def test_M09_config_that_does_not_match_its_layers(tmp_path, hostile, lie):
    image = Image()
    if lie == "extra-diff-id":
        image.config_doc["rootfs"]["diff_ids"].append(sha(b"other"))
    elif lie == "wrong-diff-id":
        image.config_doc["rootfs"]["diff_ids"] = [sha(b"other")]
    elif lie == "diff-ids-not-a-list":
        image.config_doc["rootfs"]["diff_ids"] = "sha256:" + "a" * 64
    doc = image.manifest_doc()
    if lie == "null-config":
        doc["config"] = None
    elif lie == "negative-size":
        doc["layers"][0]["size"] = -1
    hostile.serve("m09", image, manifest=json.dumps(doc).encode())
    assert_refused(tmp_path / "s", pull(tmp_path / "s", f"{hostile.host}/m09:1"))


@pytest.mark.parametrize(("media_type", "body_kind"), [
    (LAYER_GZIP, "zstd"), (LAYER_GZIP, "plain"), (LAYER_GZIP, "xz"),
    ("application/vnd.oci.image.layer.v1.tar", "gzip"),
    ("application/x-unknown", "gzip")])
def test_M10_media_type_and_magic_must_agree(tmp_path, hostile, media_type, body_kind):
    import lzma

    import zstandard

    image = Image()
    body = {"zstd": zstandard.ZstdCompressor().compress(image.tar), "plain": image.tar,
            "xz": lzma.compress(image.tar), "gzip": image.blob}[body_kind]
    image.blob = body
    doc = image.manifest_doc()
    doc["layers"][0]["mediaType"] = media_type
    hostile.serve("m10", image, manifest=json.dumps(doc).encode())
    assert_refused(tmp_path / "s", pull(tmp_path / "s", f"{hostile.host}/m10:1"))


@pytest.mark.parametrize("body", ["bomb", "corrupt-deflate", "truncated"])
def test_X01_bad_compressed_data_whose_digest_is_right(tmp_path, hostile, body):
    # The blob is what the manifest says, byte for byte; what it decompresses to is
    # a bomb or garbage.  The pull's diff_id check decompresses it and refuses it.
    image = Image()
    if body == "bomb":
        image.blob = gzip.compress(bytes(100 << 20), compresslevel=1, mtime=0)
    elif body == "corrupt-deflate":
        broken = bytearray(gzip.compress(os.urandom(1 << 16), compresslevel=1, mtime=0))
        broken[len(broken) // 2] ^= 0xFF
        image.blob = bytes(broken)
    else:
        image.blob = image.blob[: len(image.blob) // 2]
    hostile.serve("x01", image)
    words = ("PYBUILD_MAX_LAYER_RATIO",) if body == "bomb" else ("cannot decompress",)
    assert_refused(tmp_path / "s", pull(tmp_path / "s", f"{hostile.host}/x01:1"), *words)


@pytest.mark.parametrize("lie", ["wrong-diff-id", "zstd-as-gzip", "bomb", "traversal"])
def test_a_build_pulling_its_base_extracts_nothing_it_should_not(tmp_path, hostile, lie):
    # A build's implicit pull extracts each layer as it downloads (Store.extract), a
    # different path from `pybuild pull`'s packed layers: the same lies are refused.
    import zstandard

    image = Image()
    if lie == "wrong-diff-id":
        image.config_doc["rootfs"]["diff_ids"] = [sha(b"other")]
    elif lie == "zstd-as-gzip":
        image.blob = zstandard.ZstdCompressor().compress(image.tar)
    elif lie == "bomb":
        image.blob = gzip.compress(bytes(100 << 20), compresslevel=1, mtime=0)
    else:
        image.tar = layer_tar({"../../../../tmp/evil": b"x"})
        image.blob = gzip.compress(image.tar, mtime=0)
        image.config_doc["rootfs"]["diff_ids"] = [sha(image.tar)]
    hostile.serve("base", image)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {hostile.host}/base:1\nRUN true\n")
    result = run_cli("build", str(context), root=tmp_path / "s", check=False)
    line = one_line_error(result)
    assert "Dockerfile:1" in line, line
    assert_refused(tmp_path / "s", result)


def test_X08_too_many_layers_refused_before_any_download(tmp_path, hostile, monkeypatch):
    image = Image()
    doc = image.manifest_doc()
    doc["layers"] = doc["layers"] * 3
    image.config_doc["rootfs"]["diff_ids"] *= 3
    doc["config"] = image.manifest_doc()["config"]
    hostile.serve("deep", image, manifest=json.dumps(doc).encode())
    monkeypatch.setenv("PYBUILD_MAX_LAYERS", "2")
    assert_refused(tmp_path / "s", pull(tmp_path / "s", f"{hostile.host}/deep:1"),
                   "PYBUILD_MAX_LAYERS")
    assert not any("/blobs/" in path for _, path, _ in hostile.requests
                   if sha(image.config) not in path)


# ------------------------------------------------------------------ REL-10: flaky registries

def test_5xx_and_429_are_retried_honouring_retry_after(tmp_path, hostile):
    image = Image()
    hostile.serve("flaky", image)
    manifest = hostile.routes["/v2/flaky/manifests/1"]
    blob_path = f"/v2/flaky/blobs/{sha(image.blob)}"
    blob = hostile.routes[blob_path]
    answers = iter([(503, {}, b""), (502, {}, b"")])
    hostile.routes["/v2/flaky/manifests/1"] = lambda headers: next(answers, manifest)
    limited = iter([(429, {"Retry-After": "1"}, b"")])
    hostile.routes[blob_path] = lambda headers: next(limited, blob)
    pull(tmp_path / "s", f"{hostile.host}/flaky:1").check_returncode()
    times = [i for i, r in enumerate(hostile.requests) if r[1] == blob_path]
    assert len(times) == 2


def test_a_registry_that_keeps_failing_is_one_clear_line(tmp_path, hostile):
    hostile.routes["/v2/down/manifests/1"] = (500, {}, b'{"errors":[{"code":"UNKNOWN",'
                                                      b'"message":"disk on fire"}]}')
    line = assert_refused(tmp_path / "s", pull(tmp_path / "s", f"{hostile.host}/down:1"),
                          "disk on fire")
    assert hostile.host in line


def test_dropped_connection_mid_blob_continues_with_a_range_request(tmp_path, hostile):
    image = Image(layer_tar({"big": os.urandom(1 << 20)}))
    hostile.serve("cut", image)
    blob_path = f"/v2/cut/blobs/{sha(image.blob)}"
    cut = len(image.blob) // 3

    def answer(headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        wanted = headers.get("Range", "")
        if wanted.startswith("bytes="):
            start = int(wanted[6:].rstrip("-"))
            return 206, {"Content-Range": f"bytes {start}-{len(image.blob) - 1}/"
                         f"{len(image.blob)}"}, image.blob[start:]
        return 200, {"X-Cut": str(cut)}, image.blob

    hostile.routes[blob_path] = answer
    pull(tmp_path / "s", f"{hostile.host}/cut:1").check_returncode()
    ranges = [h.get("Range") for _, path, h in hostile.requests if path == blob_path]
    assert ranges == [None, f"bytes={cut}-"]


# ------------------------------------------------------------------ M08: archives

@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="load applies layers as root")
@pytest.mark.parametrize("field_name, value", [("Layers", ["../../etc/shadow"]),
                                                ("Config", "/etc/passwd"),
                                                ("Layers", ["/etc/shadow"])])
def test_M08_docker_archive_member_names_stay_in_the_archive(tmp_path, field_name, value):
    archive = docker_archive([layer_tar({"a": b"a"})], "m08:1")
    with tarfile.open(fileobj=io.BytesIO(archive)) as src:
        members = {m.name: src.extractfile(m).read() for m in src if m.isfile()}  # type: ignore[union-attr]
    manifest = json.loads(members["manifest.json"])
    manifest[0][field_name] = value
    members["manifest.json"] = json.dumps(manifest).encode()
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as out:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    result = run_cli("load", "-i", str(path), root=tmp_path / "s", check=False)
    one_line_error(result)
    assert Store(tmp_path / "s").tags() == []


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="load applies layers as root")
def test_M08_archive_member_that_is_a_symlink_to_a_host_file(tmp_path):
    archive = docker_archive([layer_tar({"a": b"a"})], "m08:1")
    with tarfile.open(fileobj=io.BytesIO(archive)) as src:
        members = [(m, src.extractfile(m).read() if m.isfile() else b"") for m in src]  # type: ignore[union-attr]
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as out:
        for member, data in members:
            if member.name.endswith("layer.tar"):
                link = tarfile.TarInfo(member.name)
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
                out.addfile(link)
                continue
            out.addfile(member, io.BytesIO(data))
    result = run_cli("load", "-i", str(path), root=tmp_path / "s", check=False)
    one_line_error(result)
    assert Store(tmp_path / "s").tags() == []
