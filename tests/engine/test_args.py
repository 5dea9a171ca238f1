"""ARG defaults are resolved exactly once, in one place, as current BuildKit does.

Current BuildKit expands an ARG's default only when no ``--build-arg`` gives the value,
and expands it once (moby/buildkit frontend/dockerfile/dockerfile2llb/convert.go,
``dispatchArg``); BuildKit v0.8 (the Docker on this machine) expanded it
unconditionally, so these expectations are written from the current source.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root]


def _labels(root: Path, name: str) -> dict[str, str]:
    config = json.loads(run_cli("inspect", name, root=root).stdout)
    config = config[0] if isinstance(config, list) else config
    return config["Config"]["Labels"]


def _build(root: Path, tmp_path: Path, dockerfile: str, *extra: str, check: bool = True):
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    return run_cli("build", "-q", "-t", "args", *extra, str(context), root=root, check=check)


def test_an_arg_default_is_expanded_once(store, busybox, tmp_path: Path) -> None:
    """``ARG X="\\$HOME"`` holds the text ``$HOME``; a later ``$X`` does not expand it
    again (pybuild gave ``/root``)."""
    dockerfile = ('FROM busybox\nENV HOME=/root\nARG X="\\$HOME"\nARG Y=${HOME}\n'
                  'LABEL x=$X y=$Y\n')
    _build(store.root, tmp_path, dockerfile)
    assert _labels(store.root, "args") == {"x": "$HOME", "y": "/root"}


def test_a_build_arg_skips_the_default(store, busybox, tmp_path: Path) -> None:
    """With ``--build-arg Y=v`` the default ``${UNSET:?msg}`` is never expanded."""
    dockerfile = "FROM busybox\nARG Y=${UNSET:?must-be-set}\nLABEL y=$Y\n"
    _build(store.root, tmp_path, dockerfile, "--build-arg", "Y=v")
    assert _labels(store.root, "args") == {"y": "v"}
    failed = _build(store.root, tmp_path, dockerfile, check=False)
    assert failed.returncode != 0
    assert "must-be-set" in failed.stderr.decode()
    assert "Traceback" not in failed.stderr.decode()
