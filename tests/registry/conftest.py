"""Registry fixtures: a real ``docker-registry`` per test, plain, TLS + basic, or token.

Each fixture yields a ``registry_server.RegistryServer`` (``.host`` "127.0.0.1:PORT",
``.url``, ``.root`` storage dir, ``.pid``; the TLS one adds ``.ca_path``, ``.certs_d``,
``.username``, ``.password``; the token one adds ``.token_service``) and stops it by
PID at teardown. Only 127.0.0.1 is used, so none of them needs the ``network`` marker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import registry_server
from helpers import run_cli
from registry_server import RegistryServer, TokenService, Unavailable

USERNAME = "pybuild"
PASSWORD = "test-password-1"


def _unavailable(reason: str) -> None:
    # As the top-level conftest: under CI a missing tool fails instead of skipping.
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test, but: {reason}", pytrace=False)
    pytest.skip(reason)


def _serve(tmp_path: Path, name: str, **options: object) -> Iterator[RegistryServer]:
    try:
        server = registry_server.start_registry(tmp_path / name, **options)  # type: ignore[arg-type]
    except Unavailable as err:
        _unavailable(str(err))
        raise AssertionError("unreachable") from err
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A plain-HTTP registry without auth on 127.0.0.1:PORT."""
    yield from _serve(tmp_path, "registry")


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """HTTPS with a CA made for the test (``.ca_path``; ``.certs_d/HOST/ca.crt``) and
    htpasswd basic auth (``.username``/``.password``)."""
    yield from _serve(tmp_path, "tls-registry", tls=True, htpasswd=(USERNAME, PASSWORD))


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """Plain HTTP with ``auth: token``; ``.token_service`` issues the JWTs (its
    ``.realm``, ``.service``, ``.requests``, ``.refresh_token``; anonymous pull allowed)."""
    try:
        service = TokenService(tmp_path / "token-service", username=USERNAME,
                               password=PASSWORD)
    except Unavailable as err:
        _unavailable(str(err))
        raise AssertionError("unreachable") from err
    try:
        yield from _serve(tmp_path, "token-registry", token=service)
    finally:
        service.stop()


@pytest.fixture
def busybox_oci_archive(store, busybox: str, tmp_path: Path) -> Path:
    """The ``busybox`` fixture image as an OCI archive, written by ``pybuild save``."""
    out = tmp_path / "busybox-oci.tar"
    run_cli("save", "--format", "oci", "-o", str(out), busybox, root=store.root)
    return out
