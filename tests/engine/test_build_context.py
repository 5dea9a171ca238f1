"""``--build-context NAME=DIR|docker-image://REF|oci-layout://DIR[:TAG|@DIGEST]``.

As BuildKit resolves named contexts (moby/buildkit ``frontend/dockerui/namedcontext.go``,
``frontend/dockerfile/dockerfile2llb/convert.go``) and buildx passes them
(docker/buildx ``util/buildflags/context.go``, ``build/opt.go``, ``util/ocilayout/parse.go``):
``FROM NAME``, ``COPY --from=NAME`` and ``RUN --mount=from=NAME`` use the context; a stage
named NAME is replaced by it; a local directory's own ``.dockerignore`` applies
(``namedcontext.go`` reads ``DefaultDockerignoreName`` from it); names are normalised
(``ParseNormalizedNamed``, familiar form, ``:latest`` dropped).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import fails_in_one_line as _fails
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]


@pytest.fixture
def root(store, busybox: str) -> Path:  # type: ignore[no-untyped-def]
    return store.root


def _dir(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def test_copy_and_mount_from_a_local_context_with_its_own_dockerignore(
        root: Path, tmp_path: Path) -> None:
    """COPY --from=NAME / RUN --mount=from=NAME read the directory; its own .dockerignore
    hides files, the main context's .dockerignore does not apply to it."""
    extra = _dir(tmp_path / "extra", {"a.txt": "named\n", "hidden.txt": "no\n",
                                      "keep.log": "kept\n", ".dockerignore": "hidden.txt\n"})
    context = _dir(tmp_path / "ctx", {
        ".dockerignore": "*.log\n",
        "Dockerfile": "FROM busybox\nCOPY --from=extra / /copied/\n"
                      "RUN --mount=from=extra,target=/x ls -a /x > /listing\n"})
    out = tmp_path / "out"
    run_cli("--build-context", f"extra={extra}", "-o", str(out), str(context), root=root)
    assert (out / "copied" / "a.txt").read_text() == "named\n"
    assert (out / "copied" / "keep.log").read_text() == "kept\n"
    assert not (out / "copied" / "hidden.txt").exists()
    listing = (out / "listing").read_text().split()
    assert "a.txt" in listing and "keep.log" in listing and "hidden.txt" not in listing
    assert (out / "copied" / "a.txt").stat().st_uid == 0  # BuildKit's transfer resets owners


def test_from_a_local_context_is_its_files(root: Path, tmp_path: Path) -> None:
    """FROM NAME with a directory: the stage starts from its files (an empty image
    config, BuildKit's emptyImage) and the steps after it run on top."""
    base = _dir(tmp_path / "base", {"etc/greeting": "hi\n"})
    context = _dir(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox AS tools\n"
                      "FROM rootfs\nCOPY --from=tools /bin/busybox /bin/busybox\n"
                      "RUN [\"/bin/busybox\", \"cp\", \"/etc/greeting\", \"/copy\"]\n"})
    out = tmp_path / "out"
    image = run_cli("-q", "-t", "f-fromctx", "--build-context", f"rootfs={base}", "-o",
                    str(out), str(context), root=root).stdout.decode().strip()
    assert (out / "copy").read_text() == "hi\n"
    # The layer of the directory has its history entry (BuildKit's exporter names it
    # after the local source's snapshot, source/local/source.go).
    history = run_cli("history", image, root=root).stdout.decode().strip().splitlines()
    assert "local source for rootfs" in history[-1]
    assert "buildkit.exporter.image.v0" in history[-1]


def test_a_stage_named_like_a_context_is_replaced(root: Path, tmp_path: Path) -> None:
    """convert.go: a stage whose name has a named context is not built (its failing RUN
    never runs, its FROM is never pulled); COPY --from and FROM of it get the context."""
    tools = _dir(tmp_path / "tools", {"who": "replaced\n"})
    context = _dir(tmp_path / "ctx", {
        "Dockerfile": "FROM no-such-image-anywhere AS tools\nRUN exit 3\n"
                      "FROM busybox\nCOPY --from=tools /who /who\n"})
    out = tmp_path / "out"
    run_cli("--build-context", f"tools={tools}", "-o", str(out), str(context), root=root)
    assert (out / "who").read_text() == "replaced\n"


def test_docker_image_context_replaces_a_from_image(root: Path, tmp_path: Path) -> None:
    """``docker-image://REF``; the name is normalised as buildx does
    (``docker.io/library/alpine:latest`` matches ``FROM alpine``)."""
    context = _dir(tmp_path / "ctx", {"Dockerfile": "FROM alpine\nRUN busybox true\n"})
    out = tmp_path / "out"
    run_cli("--build-context", "docker.io/library/alpine:latest=docker-image://busybox",
            "-o", str(out), str(context), root=root)
    assert (out / "bin" / "busybox").exists()
    scratch = _dir(tmp_path / "ctx2", {"Dockerfile": "FROM busybox AS b\n"
                                                     "FROM scratch\nCOPY --from=b /bin /bin\n"})
    _fails(run_cli("--build-context", "b=docker-image://scratch", str(scratch), root=root,
                   check=False), "/bin")


def test_oci_layout_context_loads_through_the_verified_loader(
        root: Path, tmp_path: Path) -> None:
    """``oci-layout://DIR`` (tag ``latest`` by default), ``:TAG`` and ``@DIGEST``
    (buildx ocilayout.Parse + resolveDigest); the layout is loaded as ``pybuild load``
    loads it (every blob verified)."""
    made = _dir(tmp_path / "made", {"Dockerfile": "FROM busybox\nRUN echo layout > /m\n"})
    layout = tmp_path / "layout"
    run_cli("-t", "f-src:v1", "-t", "f-src:v2", "-o", f"type=oci,dest={layout},tar=false",
            str(made), root=root)
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    context = _dir(tmp_path / "ctx", {"Dockerfile": "FROM base\nRUN cat /m > /seen\n"})
    for value in (f"oci-layout://{layout}:v1", f"oci-layout://{layout}:v2",
                  f"oci-layout://{layout}@{digest}"):
        out = tmp_path / f"out-{value[-2:]}"
        run_cli("--no-cache", "--build-context", f"base={value}", "-o", str(out),
                str(context), root=root)
        assert (out / "seen").read_text() == "layout\n"
    # No such tag and not exactly one manifest (two names here): resolveDigest fails.
    _fails(run_cli("--build-context", f"base=oci-layout://{layout}:nope", str(context),
                   root=root, check=False), "base", "failed to resolve digest")


def test_a_tampered_oci_layout_is_refused(root: Path, tmp_path: Path) -> None:
    """The layout is untrusted: a blob that does not match its digest is a one-line error."""
    made = _dir(tmp_path / "made", {"Dockerfile": "FROM busybox\nRUN echo t > /t\n"})
    layout = tmp_path / "layout"
    run_cli("-o", f"type=oci,dest={layout},tar=false", str(made), root=root)
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    manifest = json.loads(manifest_path.read_text())
    config = layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]
    config.chmod(0o644)
    config.write_text(config.read_text().replace("amd64", "arm64"))
    context = _dir(tmp_path / "ctx", {"Dockerfile": "FROM base\n"})
    _fails(run_cli("--build-context", f"base=oci-layout://{layout}", str(context), root=root,
                   check=False), "--build-context base=", "does not match its digest")


def test_a_named_context_change_busts_the_cache_of_steps_using_it(
        root: Path, tmp_path: Path) -> None:
    """The context's content is in the key of every step that uses it."""
    extra = _dir(tmp_path / "extra", {"v": "1\n"})
    context = _dir(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nRUN --mount=from=extra,target=/x cat /x/v > /seen\n"})
    out = tmp_path / "out"
    first = run_cli("--progress", "plain", "--build-context", f"extra={extra}", "-o", str(out),
                    str(context), root=root)
    assert (out / "seen").read_text() == "1\n"
    again = run_cli("--progress", "plain", "--build-context", f"extra={extra}", str(context),
                    root=root).stderr.decode()
    assert "CACHED" in again, again
    (extra / "v").write_text("2\n")
    run_cli("--build-context", f"extra={extra}", "-o", str(out), str(context), root=root)
    assert (out / "seen").read_text() == "2\n"
    assert first.returncode == 0


def test_a_symlink_in_a_named_context_stays_inside_it(root: Path, tmp_path: Path) -> None:
    """As the main context (catalogue C rows): a link to /etc resolves inside the
    named directory, never to the host's /etc."""
    extra = _dir(tmp_path / "extra", {"ok": "x\n"})
    (extra / "evil").symlink_to("/etc")
    good = _dir(tmp_path / "good", {"Dockerfile": "FROM busybox\nCOPY --from=extra /ok /ok\n"})
    run_cli("--build-context", f"extra={extra}", str(good), root=root)
    context = _dir(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nCOPY --from=extra /evil/hostname /stolen\n"})
    result = run_cli("--build-context", f"extra={extra}", str(context), root=root,
                     check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr.decode()


def test_bad_build_context_values_are_one_line_errors(root: Path, tmp_path: Path) -> None:
    """context.go / opt.go errors: key=value, a valid lower-case name, an existing
    directory; remote and bake-only sources are refused by pybuild."""
    context = _dir(tmp_path / "ctx", {"Dockerfile": "FROM busybox\n"})
    (tmp_path / "file").write_text("")
    for value, words in [("novalue", "expected key=value"),
                         ("Upper=.", "invalid context name"),
                         (f"x={tmp_path / 'missing'}", "does not exist"),
                         (f"x={tmp_path / 'file'}", "not a directory"),
                         ("x=https://example.com/repo.git", "remote"),
                         ("x=target:other", "bake"),
                         ("x=docker-image://Bad Ref", "--build-context"),
                         (f"x=oci-layout://{tmp_path / 'missing'}", "invalid store")]:
        _fails(run_cli("--build-context", value, str(context), root=root, check=False),
               "--build-context", words)
