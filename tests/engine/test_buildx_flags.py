"""Build flags as ``docker buildx build`` reads them (issue 14, point 10).

Each test cites the buildx or BuildKit source it follows:
- ``-o``: docker/buildx ``util/buildflags/export.go`` (``ExportEntry.UnmarshalText``:
  ``-o DIR`` is ``type=local,dest=DIR``, ``-o -`` is ``type=tar,dest=-``, ``type`` is
  required otherwise) and ``build/opt.go`` (``CreateExports``);
- ``--load``: docker/buildx ``commands/build.go`` (shorthand for ``-o type=docker``);
- ``--secret``: docker/buildx ``util/buildflags/secrets.go`` and moby/buildkit
  ``session/secrets/secretsprovider/store.go`` (``id=X`` alone: env ``X``, else file ``X``);
- ``--annotation``: docker/buildx ``util/buildflags/export.go`` ``ParseAnnotations`` and
  moby/buildkit ``exporter/containerimage/exptypes/annotations.go`` (no type: manifest)
  and ``writer.go`` (index annotations refused for a single-platform export);
- ``--iidfile`` / ``--metadata-file``: docker/buildx ``commands/build.go`` (``getImageID``,
  ``writeMetadataFile`` with ``atomicwriter.WriteFile``) and moby/buildkit
  ``exporter/containerimage/exptypes/types.go``, ``exporter/oci/export.go``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from helpers import fails_in_one_line as _fails
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]


@pytest.fixture
def root(store, busybox: str) -> Path:  # type: ignore[no-untyped-def]
    return store.root


def _context(tmp_path: Path, dockerfile: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    return context


SIMPLE = "FROM busybox\nRUN echo built > /marker\n"


# -- -o ----------------------------------------------------------------------------------

def test_o_dir_is_a_local_output(root: Path, tmp_path: Path) -> None:
    """``-o DIR`` == ``-o type=local,dest=DIR`` (export.go, UnmarshalText)."""
    context = _context(tmp_path, SIMPLE)
    out = tmp_path / "rootfs"
    run_cli("-o", str(out), str(context), root=root)
    assert (out / "marker").read_text() == "built\n"


def test_o_dash_is_a_tar_on_stdout(root: Path, tmp_path: Path) -> None:
    """``-o -`` == ``-o type=tar,dest=-`` (export.go, UnmarshalText)."""
    context = _context(tmp_path, SIMPLE)
    result = run_cli("-o", "-", str(context), root=root)
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as archive:
        member = archive.extractfile("./marker")
        assert member is not None and member.read() == b"built\n"


def test_o_fields_need_a_type_and_a_dest(root: Path, tmp_path: Path) -> None:
    """export.go: "type is required for output"; opt.go CreateExports: "dest is
    required for local exporter", "destination directory X is a file"."""
    context = _context(tmp_path, SIMPLE)
    _fails(run_cli("-o", f"dest={tmp_path / 'x'},compression=gzip", str(context), root=root,
                   check=False), "type is required for output")
    _fails(run_cli("-o", "type=local", str(context), root=root, check=False),
           "dest is required for local exporter")
    (tmp_path / "file").write_text("")
    _fails(run_cli("-o", f"type=local,dest={tmp_path / 'file'}", str(context), root=root,
                   check=False), "is a file")
    _fails(run_cli("-o", "type=oci,dest=-", "-o", "-", str(context), root=root, check=False),
           "multiple outputs configured to write to stdout")


def test_o_csv_quotes_a_comma_in_a_path(root: Path, tmp_path: Path) -> None:
    """buildx reads -o with csvvalue: a quoted field may hold a comma."""
    context = _context(tmp_path, SIMPLE)
    out = tmp_path / "a,b"
    run_cli("-o", f'type=local,"dest={out}"', str(context), root=root)
    assert (out / "marker").read_text() == "built\n"


def test_load_is_accepted_and_the_image_is_stored(root: Path, tmp_path: Path) -> None:
    """``--load`` (commands/build.go: shorthand for ``-o type=docker``): pybuild's local
    store is where a loaded image goes; ``-o type=docker`` without dest is the same."""
    context = _context(tmp_path, SIMPLE)
    first = run_cli("-q", "--load", "-t", "f-load", str(context), root=root)
    again = run_cli("-q", "-o", "type=docker", "-t", "f-load2", str(context), root=root)
    image = first.stdout.decode().strip()
    assert image.startswith("sha256:") and again.stdout.decode().strip() == image
    shown = run_cli("images", root=root).stdout.decode()
    assert "f-load " in shown and "f-load2" in shown


def test_network_default_is_accepted(root: Path, tmp_path: Path) -> None:
    """``--network default`` is buildx's default value (commands/build.go)."""
    context = _context(tmp_path, "FROM busybox\nRUN ip link show lo > /lo\n")
    out = tmp_path / "out"
    run_cli("--network", "default", "-o", str(out), str(context), root=root)
    run_cli("--network=default", "--no-cache", str(context), root=root)
    assert "lo" in (out / "lo").read_text()


# -- --secret ----------------------------------------------------------------------------

SECRET_DF = ("FROM busybox\n"
             "RUN --mount=type=secret,id=MYTOKEN cat /run/secrets/MYTOKEN > /seen\n")


def _with_env(env: dict[str, str], *args: str, root: Path, cwd: Path):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "builder", "--root", str(root), *args],
                          capture_output=True, cwd=cwd, env={**os.environ, **env})


def test_secret_id_alone_reads_the_env_var_then_the_file(root: Path, tmp_path: Path) -> None:
    """secretsprovider/store.go NewStore: no src/env -> env X if set, else file X."""
    context = _context(tmp_path, SECRET_DF)
    out = tmp_path / "out"
    done = _with_env({"MYTOKEN": "from-env"}, "-o", str(out), "--secret", "id=MYTOKEN",
                     str(context), root=root, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert (out / "seen").read_text() == "from-env"
    (tmp_path / "MYTOKEN").write_text("from-file")
    env = {k: v for k, v in os.environ.items() if k != "MYTOKEN"}
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "builder", "--root", str(root), "-o",
                           str(tmp_path / "out2"), "--no-cache", "--secret", "id=MYTOKEN",
                           str(context)], capture_output=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "out2" / "seen").read_text() == "from-file"


def test_secret_keys_as_buildx_reads_them(root: Path, tmp_path: Path) -> None:
    """secrets.go: ``type=env,src=VAR`` reads VAR; ``source=`` is ``src=``; unknown keys,
    unknown types and a missing id are errors naming the flag; a file over BuildKit's
    500KB MaxSecretSize is refused."""
    context = _context(tmp_path, SECRET_DF)
    out = tmp_path / "out"
    done = _with_env({"OTHER": "via-type-env"}, "-o", str(out), "--secret",
                     "id=MYTOKEN,type=env,src=OTHER", str(context), root=root, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert (out / "seen").read_text() == "via-type-env"
    (tmp_path / "tok").write_text("via-source")
    # A secret is not in the cache key (BuildKit, catalogue K05): --no-cache reruns.
    run_cli("-o", str(tmp_path / "o2"), "--no-cache", "--secret",
            f"id=MYTOKEN,source={tmp_path / 'tok'}", str(context), root=root)
    assert (tmp_path / "o2" / "seen").read_text() == "via-source"
    _fails(run_cli("--secret", "id=MYTOKEN,color=red", str(context), root=root, check=False),
           "--secret", "unexpected key 'color'")
    _fails(run_cli("--secret", "id=MYTOKEN,type=ssh", str(context), root=root, check=False),
           "unsupported secret type")
    _fails(run_cli("--secret", f"src={tmp_path / 'tok'}", str(context), root=root,
                   check=False), "secret missing ID")
    (tmp_path / "big").write_bytes(b"x" * (500 * 1024 + 1))
    _fails(run_cli("--secret", f"id=MYTOKEN,src={tmp_path / 'big'}", str(context), root=root,
                   check=False), "too big")


# -- --annotation ------------------------------------------------------------------------

def _layout(path: Path) -> tuple[dict, dict]:
    index = json.loads((path / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    return index, json.loads((path / "blobs" / "sha256" / digest).read_text())


def test_annotations_land_in_the_manifest_and_its_descriptor(root: Path, tmp_path: Path) -> None:
    """ParseAnnotations: ``KEY=V`` and ``manifest:KEY=V`` -> the manifest (BuildKit's
    default type); ``manifest-descriptor:KEY=V`` -> its descriptor (index.json);
    ``manifest[linux/amd64]:`` -> that platform's manifest."""
    context = _context(tmp_path, SIMPLE)
    layout = tmp_path / "layout"
    run_cli("--platform", "linux/amd64", "-t", "f-ann",
            "--annotation", "org.opencontainers.image.title=demo <&>",
            "--annotation", "manifest:org.example.a=1",
            "--annotation", "manifest[linux/amd64]:org.example.b=2",
            "--annotation", "manifest-descriptor:org.example.d=3",
            "-o", f"type=oci,dest={layout},tar=false", str(context), root=root)
    index, manifest = _layout(layout)
    assert manifest["annotations"] == {"org.example.a": "1", "org.example.b": "2",
                                       "org.opencontainers.image.title": "demo <&>"}
    assert list(manifest) == ["schemaVersion", "mediaType", "config", "layers", "annotations"]
    entry = index["manifests"][0]["annotations"]
    assert entry["org.example.d"] == "3"
    assert entry["io.containerd.image.name"] == "docker.io/library/f-ann:latest"
    assert "org.example.a" not in entry


def test_bad_annotations_are_refused(root: Path, tmp_path: Path) -> None:
    """ParseAnnotations errors; writer.go: "index annotations not supported for single
    platform export", "invalid annotation: no platform X found in source"."""
    context = _context(tmp_path, SIMPLE)
    for value, words in [("novalue", "expected key=value"),
                         ("bogus:k=v", "unknown annotation type"),
                         ("index:k=v", "index annotations not supported"),
                         ("index-descriptor:k=v", "index annotations not supported"),
                         ("manifest[linux/arm64]:k=v", "no platform linux/arm64"),
                         ("manifest[linux amd64]:k=v", "invalid annotation type")]:
        _fails(run_cli("--platform", "linux/amd64", "--annotation", value, str(context),
                       root=root, check=False), "--annotation", words)


def test_annotations_are_pushed(root: Path, tmp_path: Path) -> None:
    """``--push`` sends the annotated manifest (BuildKit's image exporter)."""
    from registry import registry_server

    try:
        server = registry_server.start_registry(tmp_path / "registry")
    except registry_server.Unavailable as err:
        pytest.skip(str(err))
    try:
        context = _context(tmp_path, SIMPLE)
        ref = f"{server.host}/f/ann:1"
        meta = tmp_path / "meta.json"
        run_cli("-t", ref, "--push", "--annotation", "org.example.pushed=yes",
                "--metadata-file", str(meta), str(context), root=root)
        import urllib.request

        digest = json.loads(meta.read_text())["containerimage.digest"]
        request = urllib.request.Request(
            f"http://{server.host}/v2/f/ann/manifests/1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
        assert json.loads(body)["annotations"] == {"org.example.pushed": "yes"}
    finally:
        server.stop()


# -- --iidfile / --metadata-file ---------------------------------------------------------

def test_metadata_file_describes_the_exported_manifest(root: Path, tmp_path: Path) -> None:
    """buildx writes the exporter response: ``containerimage.digest`` (the manifest),
    ``containerimage.config.digest``, ``containerimage.descriptor`` ({mediaType, digest,
    size, annotations, platform}, field order kept) and ``image.name`` (full names)."""
    context = _context(tmp_path, SIMPLE)
    layout, meta, iid = tmp_path / "layout", tmp_path / "meta.json", tmp_path / "iid"
    run_cli("--platform", "linux/amd64", "-t", "f-meta", "-t", "f-meta:2",
            "--annotation", "manifest-descriptor:org.example.d=1",
            "--iidfile", str(iid), "--metadata-file", str(meta),
            "-o", f"type=oci,dest={layout},tar=false", str(context), root=root)
    data = json.loads(meta.read_text())
    index, manifest = _layout(layout)
    entry = index["manifests"][0]
    assert data["containerimage.digest"] == entry["digest"]
    assert data["containerimage.config.digest"] == manifest["config"]["digest"] \
        == iid.read_text()
    descriptor = data["containerimage.descriptor"]
    assert list(descriptor) == ["mediaType", "digest", "size", "annotations", "platform"]
    assert descriptor["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert (descriptor["digest"], descriptor["size"]) == (entry["digest"], entry["size"])
    assert descriptor["annotations"] == {"org.example.d": "1"}
    assert descriptor["platform"] == {"architecture": "amd64", "os": "linux"}
    assert data["image.name"] == "docker.io/library/f-meta:latest,docker.io/library/f-meta:2"
    blob = layout / "blobs" / "sha256" / entry["digest"].split(":", 1)[1]
    assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == entry["digest"]


def test_metadata_without_an_export_names_the_manifest_oci_would_write(
        root: Path, tmp_path: Path) -> None:
    """No -o: the digest is that of the manifest ``-o type=oci`` writes for the image."""
    context = _context(tmp_path, SIMPLE)
    meta = tmp_path / "meta.json"
    run_cli("--metadata-file", str(meta), str(context), root=root)
    layout = tmp_path / "layout"
    run_cli("-o", f"type=oci,dest={layout},tar=false", str(context), root=root)
    data = json.loads(meta.read_text())
    assert data["containerimage.digest"] == _layout(layout)[0]["manifests"][0]["digest"]
    assert "image.name" not in data  # no -t: buildx writes no name


def test_metadata_and_iid_files_are_replaced_atomically(root: Path, tmp_path: Path) -> None:
    """atomicwriter.WriteFile: a temp file renamed over the path, mode 0644; a symlink
    at the path is replaced, never written through."""
    context = _context(tmp_path, SIMPLE)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    meta, iid = tmp_path / "meta.json", tmp_path / "iid"
    meta.symlink_to(victim)
    iid.symlink_to(victim)
    run_cli("--metadata-file", str(meta), "--iidfile", str(iid), str(context), root=root)
    assert victim.read_text() == "keep"
    assert not meta.is_symlink() and not iid.is_symlink()
    assert stat.S_IMODE(meta.stat().st_mode) == 0o644
    assert json.loads(meta.read_text())["containerimage.config.digest"] == iid.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pybuild-")]
