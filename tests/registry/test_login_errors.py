"""``pybuild login`` refused: one line with ``unauthorized`` and the registry's own
message (docker prints ``unauthorized: authentication required`` from the
registry's ``errors`` body, docker/distribution ``registry/api/errcode``; Docker
Hub's token service answers ``{"details": "incorrect username or password"}``), never
the circular "log in with 'pybuild login'".  And a non-root user may pull and look
at what it pulled; what needs root says so in one line (issue 14 point 11).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_cli
from nonroot import User, nonroot_user


def _refused(result) -> str:
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "pybuild login" not in err, err  # no advice to run what just failed
    return err


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYBUILD_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    return tmp_path / "config" / "auth.json"


def test_wrong_password_basic_auth(tmp_path, tls_registry, config, monkeypatch) -> None:
    monkeypatch.setenv("PYBUILD_CERTS_D", str(tls_registry.certs_d))
    result = run_cli("login", tls_registry.host, "-u", tls_registry.username,
                     "--password-stdin", root=tmp_path / "s", stdin=b"wrong\n", check=False)
    err = _refused(result)
    assert err == (f"pybuild: login to {tls_registry.host} failed: unauthorized: "
                   "authentication required\n")
    assert not config.exists()
    run_cli("login", tls_registry.host, "-u", tls_registry.username, "--password-stdin",
            root=tmp_path / "s", stdin=f"{tls_registry.password}\n".encode())
    assert config.exists()


def test_wrong_password_token_auth(tmp_path, token_registry, config) -> None:
    result = run_cli("login", token_registry.host, "-u", token_registry.username,
                     "--password-stdin", root=tmp_path / "s", stdin=b"wrong\n", check=False)
    err = _refused(result)
    assert err == (f"pybuild: login to {token_registry.host} failed: unauthorized: "
                   "bad credentials\n")  # the token service's {"error": "bad credentials"}
    assert not config.exists()


def test_an_unwritable_config_is_one_line(tmp_path, registry, monkeypatch) -> None:
    # Nothing to read there, and nothing may be made there (procfs), even by root.
    monkeypatch.setenv("PYBUILD_CONFIG", "/proc/pybuild-test-nothing/config")
    result = run_cli("login", registry.host, "-u", "alice", "--password-stdin",
                     root=tmp_path / "s", stdin=b"pw\n", check=False)
    err = result.stderr.decode()
    assert result.returncode != 0 and "Traceback" not in err, err
    assert "cannot save the credentials" in err and len(err.strip().splitlines()) == 1, err


@pytest.fixture
def user() -> Iterator[User]:
    with nonroot_user() as made:
        yield made


@pytest.mark.root
def test_a_non_root_user_pulls_and_looks(tmp_path, registry, busybox_tar, user) -> None:
    root = tmp_path / "root-store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    name = f"{registry.host}/bb:1"
    run_cli("push", "busybox", name, root=root)

    pulled = user.run("pull", name)
    assert pulled.returncode == 0, pulled.stderr.decode()
    for args in (("images",), ("history", name), ("inspect", name),
                 ("save", "-o", str(user.home / "bb.tar"), name),
                 ("save", "--format", "oci", "-o", str(user.home / "oci.tar"), name),
                 ("push", name, f"{registry.host}/bb:2"), ("tag", name, "mine"), ("df",)):
        result = user.run(*args)
        assert result.returncode == 0 and b"Traceback" not in result.stderr, \
            (args, result.stderr.decode())
    unwritable = user.run("save", "-o", str(tmp_path / "not-yours.tar"), name)  # 0700 root
    err = unwritable.stderr.decode()
    assert unwritable.returncode != 0 and "Traceback" not in err, err
    assert "cannot write the archive: Permission denied" in err, err
    explained = user.run("explain", name)
    err = explained.stderr.decode()
    assert explained.returncode != 0 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    out = user.run("rmi", "mine", name).stdout.decode().splitlines()
    assert out[:2] == ["Untagged: mine:latest", f"Untagged: {name}"]
    assert out[-1].startswith("Deleted: sha256:")
    assert user.run("prune").returncode == 0
