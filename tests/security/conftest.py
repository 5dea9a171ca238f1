"""Fixtures for the security catalogue tests (security/catalogue.md).

The oracle and the tar builder live in ``security/oracle.py`` (import them from
there, never from this file); here they become fixtures:

* ``tar``: the ``TarMaker`` class, for hostile layer tars;
* ``sandbox``: a ``Sandbox`` whose ``dest`` is an extraction root or a build
  context, checked for breakouts at teardown;
* ``mode``: both extractor modes, ``overlay`` (a per-layer dir) and ``merged``
  (a whole rootfs), for rows where both are meaningful;
* ``bstore``: a store with busybox imported, shared by a module's builds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli
from security.oracle import Sandbox, TarMaker


@pytest.fixture
def tar() -> type[TarMaker]:
    return TarMaker


@pytest.fixture
def sandbox(tmp_path: Path):
    sb = Sandbox(tmp_path / "sb")
    try:
        yield sb
        sb.assert_no_breakout()
    finally:
        sb.cleanup()


@pytest.fixture(params=["overlay", "merged"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def bstore(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Path:
    """A store directory holding the ``busybox`` image; builds in one module share it
    (and its cache, which only makes reruns of identical steps cheaper)."""
    root = tmp_path_factory.mktemp("secstore") / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    return root
