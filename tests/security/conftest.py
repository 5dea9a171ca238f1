"""Fixtures for the security catalogue tests (security/catalogue.md).

The oracle and the tar builder live in ``security/oracle.py`` (import them from
there, never from this file); here they become fixtures:

* ``tar``: the ``TarMaker`` class, for hostile layer tars;
* ``mode``: both extractor modes, ``overlay`` (a per-layer dir) and ``merged``
  (a whole rootfs), for rows where both are meaningful;

``sandbox`` (a ``Sandbox`` checked for breakouts at teardown) and ``bstore`` (a store
with busybox, shared by a module's builds) live in tests/conftest.py: tests outside
this directory use them too.
"""

from __future__ import annotations

import pytest
from security.oracle import TarMaker


@pytest.fixture
def tar() -> type[TarMaker]:
    return TarMaker


@pytest.fixture(params=["overlay", "merged"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param
