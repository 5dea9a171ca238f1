"""``-t`` names are checked before anything is built, as ``docker build`` checks them
(docker/cli opts: ``invalid argument ... for "-t, --tag" flag``), not later by
``docker load``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root]


@pytest.mark.parametrize("tag", ["UPPER:tag", "a::b", "_lead", "a//b", "x:" + "t" * 129,
                                 "x@sha256:" + "a" * 64])
def test_an_invalid_tag_fails_before_building(store, busybox, tmp_path: Path, tag) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN touch /ran\n")
    result = run_cli("build", "-t", "good", "-t", tag, str(context), root=store.root,
                     check=False)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert f'invalid argument "{tag}" for "-t, --tag" flag' in err
    assert len(err.strip().splitlines()) == 1, err
    assert store.resolve_image("good") is None     # nothing was built or tagged


def test_valid_tags_are_accepted(store, busybox, tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\n")
    for tag in ("app", "app:1.0", "127.0.0.1:5000/team/app:v_1", "a.b-c/d__e"):
        run_cli("build", "-q", "-t", tag, str(context), root=store.root)
        assert store.resolve_image(tag) is not None



def test_from_names_an_image_never_an_id(store, busybox, tmp_path: Path) -> None:
    """BuildKit parses FROM as a reference (dockerfile2llb/convert.go
    ``reference.ParseNormalizedNamed``): ``FROM 0123abcd`` is the image
    ``docker.io/library/0123abcd``, never a stored image whose ID starts so, as
    ``pybuild rmi``/``inspect`` take it.  Built in a network namespace of its own
    (``unshare -n``), so the pull it then tries fails at once and sends nothing."""
    image_id = store.resolve_image(busybox)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {image_id.removeprefix('sha256:')[:12]}\n")
    result = subprocess.run(["unshare", "-n", sys.executable, "-m", "builder", "--root",
                             str(store.root), "build", "-t", "byid", str(context)],
                            capture_output=True, timeout=120)
    err = result.stderr.decode()
    assert result.returncode != 0, err
    assert "not in the local store and pulling it failed" in err, err
    assert store.resolve_image("byid") is None
