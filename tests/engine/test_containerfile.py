"""Which Dockerfile and which ignore file a build uses (issue 14 point 9).

Without ``-f``: ``Dockerfile``, else ``dockerfile`` (docker/buildx ``build/opt.go``
``handleLowercaseDockerfile``; moby/buildkit ``frontend/dockerui/config.go``), else
``Containerfile`` (containers/buildah ``pkg/util/util.go`` ``DiscoverContainerfile``,
which tries it first; Docker's name goes first here).  Ignore files: BuildKit reads
``<Dockerfile>.dockerignore`` then ``.dockerignore`` (``dockerui/config.go``
``ReadEntrypoint``/``dockerIgnorePatterns``); buildah adds ``<file>.containerignore``
(before ``<file>.dockerignore``) and ``.containerignore`` (before ``.dockerignore``)
(containers/buildah ``pkg/parse/parse.go`` ``ContainerIgnoreFile``).  ``-f -`` reads
the Dockerfile from stdin and keeps CONTEXT as the context, from a temporary
directory that has no ``Dockerfile.dockerignore`` (docker/buildx ``build/opt.go``
``loadInputs``); ``-f`` is relative to the current directory.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from helpers import run_cli

from builder.context import find_ignore_file

pytestmark = [pytest.mark.root, pytest.mark.overlay]

COPY_ALL = "FROM busybox\nCOPY . /ctx/\n"


def _context(tmp_path: Path, files: dict[str, str]) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    for name, text in files.items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(text)
    return context


def _build(store, *args: str, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    return run_cli("build", "-q", *args, root=store.root, stdin=stdin,
                   cwd=cwd).stdout.decode().strip()


def _copied(store, image_id: str) -> set[str]:
    """What ``COPY . /ctx/`` put in the image's top layer."""
    top = store.image_top_chain(image_id)
    return {p.name for p in (store.layer_dir(top) / "ctx").iterdir()}


def _label(store, image_id: str) -> str:
    return store.image_config(image_id)["config"]["Labels"]["which"]


def _one_line_error(result) -> str:
    err = result.stderr.decode()
    assert result.returncode != 0 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_a_containerfile_alone_is_built(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, {"Containerfile": COPY_ALL, "a": "a"})
    image_id = _build(store, str(context))
    assert _copied(store, image_id) == {"Containerfile", "a"}


def test_dockerfile_wins_over_containerfile_and_lowercase(store, busybox,
                                                          tmp_path: Path) -> None:
    context = _context(tmp_path, {
        "Dockerfile": "FROM busybox\nLABEL which=Dockerfile\n",
        "dockerfile": "FROM busybox\nLABEL which=dockerfile\n",
        "Containerfile": "FROM busybox\nLABEL which=Containerfile\n"})
    assert _label(store, _build(store, str(context))) == "Dockerfile"
    (context / "Dockerfile").unlink()
    assert _label(store, _build(store, str(context))) == "dockerfile"
    (context / "dockerfile").unlink()
    assert _label(store, _build(store, str(context))) == "Containerfile"


def test_no_dockerfile_is_one_line(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, {"a": "a"})
    err = _one_line_error(run_cli("build", str(context), root=store.root, check=False))
    assert "Dockerfile" in err and "Containerfile" in err


def test_containerignore_applies_to_a_containerfile(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, {"Containerfile": COPY_ALL, ".containerignore": "a\n",
                                  "a": "a", "b": "b"})
    assert _copied(store, _build(store, str(context))) == {"Containerfile",
                                                           ".containerignore", "b"}


@pytest.mark.parametrize(("present", "used"), [
    ({".dockerignore"}, ".dockerignore"),
    ({".containerignore"}, ".containerignore"),
    ({".containerignore", ".dockerignore"}, ".containerignore"),
    ({"Containerfile.containerignore", ".containerignore"}, "Containerfile.containerignore"),
    ({"Containerfile.dockerignore", "Containerfile.containerignore", ".dockerignore"},
     "Containerfile.containerignore"),
    ({"Containerfile.dockerignore", ".containerignore"}, "Containerfile.dockerignore"),
])
def test_ignore_file_order(tmp_path: Path, present: set[str], used: str) -> None:
    """buildah's documented order (``ContainerIgnoreFile``'s comment, and issue 14):
    ``<file>.containerignore``, ``<file>.dockerignore``, ``.containerignore``,
    ``.dockerignore``.  (buildah's code lets ``<file>.dockerignore`` win over
    ``<file>.containerignore``; docs/compat.md says so.)"""
    for name in present:
        (tmp_path / name).write_text("x\n")
    dockerfile = str(tmp_path / "Containerfile")
    assert find_ignore_file(str(tmp_path), dockerfile) == str(tmp_path / used)
    # A Dockerfile on stdin has no neighbour: only the context's files count.
    in_context = [n for n in (".containerignore", ".dockerignore") if n in present]
    assert find_ignore_file(str(tmp_path), "-") == \
        (str(tmp_path / in_context[0]) if in_context else None)


def test_dockerfile_from_stdin_keeps_the_context(store, busybox, tmp_path: Path) -> None:
    """``docker build -f - CONTEXT``: the context is CONTEXT, its ``.dockerignore``
    applies, and the context's ``Dockerfile.dockerignore`` does not (buildx puts the
    stdin Dockerfile in a directory of its own)."""
    context = _context(tmp_path, {"Dockerfile": "FROM busybox\nLABEL which=file\n",
                                  "Dockerfile.dockerignore": "b\n", ".dockerignore": "a\n",
                                  "a": "a", "b": "b"})
    image_id = _build(store, "-f", "-", str(context), stdin=COPY_ALL.encode())
    assert _copied(store, image_id) == {"Dockerfile", "Dockerfile.dockerignore",
                                        ".dockerignore", "b"}
    # Built from the stdin text, not from CONTEXT/Dockerfile (no label).
    assert "which" not in (store.image_config(image_id)["config"].get("Labels") or {})


def test_stdin_for_both_or_two_dockerfiles_is_refused(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, {"Dockerfile": COPY_ALL})
    both = run_cli("build", "-f", "-", "-", root=store.root, stdin=COPY_ALL.encode(),
                   check=False)
    assert "stdin for both" in _one_line_error(both)
    two = run_cli("build", "-f", str(context / "Dockerfile"), "-", root=store.root,
                  stdin=COPY_ALL.encode(), check=False)
    assert "ambiguous Dockerfile source" in _one_line_error(two)


def test_an_archive_on_stdin_is_refused_in_one_line(store, busybox, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(COPY_ALL)
        tar.addfile(info, io.BytesIO(COPY_ALL.encode()))
    result = run_cli("build", "-", root=store.root, stdin=buffer.getvalue(), check=False)
    assert "archive" in _one_line_error(result)


def test_dash_f_is_relative_to_the_current_directory(store, busybox, tmp_path: Path) -> None:
    """``-f sub/app.Dockerfile`` from the current directory, with its own
    ``app.Dockerfile.dockerignore`` next to it (BuildKit's per-Dockerfile file)."""
    _context(tmp_path, {".dockerignore": "a\n", "a": "a", "b": "b"})
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "app.Dockerfile").write_text(COPY_ALL)
    (tmp_path / "sub" / "app.Dockerfile.dockerignore").write_text("b\n")
    image_id = _build(store, "-f", "sub/app.Dockerfile", "ctx", cwd=tmp_path)
    assert _copied(store, image_id) == {".dockerignore", "a"}
