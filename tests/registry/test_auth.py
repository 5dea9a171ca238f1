"""Registry credentials: challenge parsing, Docker's config.json, helpers, pybuild login."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from builder.errors import RegistryError, UsageError
from builder.registry.auth import (
    Credentials,
    config_paths,
    find_credentials,
    parse_challenge,
    remove_login,
    save_login,
)

HELPER = """#!/bin/sh
# A docker-credential-* helper: the verb in argv, the server on stdin, JSON out.
printf '%s\\n' "$*" >> "$HELPER_LOG"
[ "$1" = get ] || exit 3
read -r server
printf '%s\\n' "$server" >> "$HELPER_LOG"
case "$server" in
  127.0.0.1:5000) echo '{"ServerURL":"127.0.0.1:5000","Username":"alice","Secret":"s3cret"}';;
  https://index.docker.io/v1/) echo '{"ServerURL":"x","Username":"<token>","Secret":"refresh-1"}';;
  broken.example) echo 'keychain is locked' >&2; exit 2;;
  garbage.example) echo 'not json';;
  *) echo 'credentials not found in native keychain'; exit 1;;
esac
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """pybuild and Docker config dirs under tmp_path, and a fake helper on PATH."""
    own, docker, bin_dir = tmp_path / "pybuild", tmp_path / "docker", tmp_path / "bin"
    for d in (own, docker, bin_dir):
        d.mkdir()
    helper = bin_dir / "docker-credential-fake"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    log = tmp_path / "helper.log"
    monkeypatch.setenv("PYBUILD_CONFIG", str(own))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    monkeypatch.setenv("HELPER_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return {"own": own / "auth.json", "docker": docker / "config.json", "log": log}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _write(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc))


# -- WWW-Authenticate ----------------------------------------------------------------

def test_challenge_docker_hub() -> None:
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/busybox:pull,push"')
    assert parse_challenge(header) == [("bearer", {
        "realm": "https://auth.docker.io/token", "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull,push"})]


def test_challenge_basic_and_several() -> None:
    assert parse_challenge('Basic realm="Registry Realm"') == [
        ("basic", {"realm": "Registry Realm"})]
    assert parse_challenge('Basic realm="a, b", Bearer realm="https://t/x", '
                           'error="insufficient_scope"') == [
        ("basic", {"realm": "a, b"}),
        ("bearer", {"realm": "https://t/x", "error": "insufficient_scope"})]
    assert parse_challenge("Basic, Bearer realm=x") == [("basic", {}), ("bearer", {"realm": "x"})]


def test_challenge_escapes_case_and_spacing() -> None:
    assert parse_challenge('BEARER Realm = "say \\"hi\\"\\\\" ,Service=reg') == [
        ("bearer", {"realm": 'say "hi"\\', "service": "reg"})]
    assert parse_challenge("Negotiate abc+/==") == [("negotiate", {"": "abc+/=="})]
    assert parse_challenge("") == []


def test_challenge_garbage_keeps_what_parsed() -> None:
    assert parse_challenge('Bearer realm="unterminated') == [("bearer", {})]
    assert parse_challenge('Bearer realm="x" junk') == [("bearer", {"realm": "x"})]


# -- config files ----------------------------------------------------------------------

def test_config_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYBUILD_CONFIG", str(tmp_path / "p"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "d"))
    assert config_paths() == [tmp_path / "p" / "auth.json", tmp_path / "d" / "config.json"]
    for var in ("PYBUILD_CONFIG", "DOCKER_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_paths() == [tmp_path / ".config/pybuild/auth.json",
                              tmp_path / ".docker/config.json"]


def test_no_config_is_anonymous(env: dict[str, Path]) -> None:
    assert find_credentials("127.0.0.1:5000") is None


@pytest.mark.parametrize("key", ["127.0.0.1:5000", "https://127.0.0.1:5000",
                                 "http://127.0.0.1:5000/v2/", "https://127.0.0.1:5000/v1/"])
def test_auths_key_spellings(env: dict[str, Path], key: str) -> None:
    _write(env["docker"], {"auths": {key: {"auth": _b64("bob:pa:ss")},
                                     "127.0.0.1:5001": {"auth": _b64("x:y")}}})
    assert find_credentials("127.0.0.1:5000") == Credentials("bob", "pa:ss")
    assert find_credentials("127.0.0.1") is None


def test_auths_username_password_and_identity_token(env: dict[str, Path]) -> None:
    _write(env["docker"], {"auths": {
        "a.example": {"username": "u", "password": "p"},
        "b.example": {"identitytoken": "tok"},
        "c.example": {}}})
    assert find_credentials("a.example") == Credentials("u", "p")
    assert find_credentials("b.example") == Credentials(identity_token="tok")
    assert find_credentials("c.example") is None


def test_docker_hub_key(env: dict[str, Path]) -> None:
    _write(env["docker"], {"auths": {"https://index.docker.io/v1/": {"auth": _b64("hub:pw")}}})
    for name in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert find_credentials(name) == Credentials("hub", "pw")
    assert find_credentials("quay.io") is None


def test_pybuild_file_wins(env: dict[str, Path]) -> None:
    _write(env["docker"], {"auths": {"r.example": {"auth": _b64("docker:1")}}})
    _write(env["own"], {"auths": {"r.example": {"auth": _b64("pybuild:2")}}})
    assert find_credentials("r.example") == Credentials("pybuild", "2")
    _write(env["own"], {"auths": {"other.example": {"auth": _b64("pybuild:2")}}})
    assert find_credentials("r.example") == Credentials("docker", "1")


def test_cred_helpers(env: dict[str, Path]) -> None:
    _write(env["docker"], {
        "credHelpers": {"127.0.0.1:5000": "fake", "https://index.docker.io/v1/": "fake",
                        "nothing.example": "fake"},
        "auths": {"127.0.0.1:5000": {"auth": _b64("ignored:x")},
                  "nothing.example": {"auth": _b64("ignored:y")}}})
    assert find_credentials("127.0.0.1:5000") == Credentials("alice", "s3cret")
    assert find_credentials("docker.io") == Credentials(identity_token="refresh-1")
    # The helper named for a registry has the last word, as in docker.
    assert find_credentials("nothing.example") is None
    log = env["log"].read_text().splitlines()
    assert log[:4] == ["get", "127.0.0.1:5000", "get", "https://index.docker.io/v1/"]


def test_creds_store_after_auths(env: dict[str, Path]) -> None:
    _write(env["docker"], {"credsStore": "fake",
                           "auths": {"https://127.0.0.1:5000": {},
                                     "plain.example": {"auth": _b64("p:q")}}})
    assert find_credentials("plain.example") == Credentials("p", "q")
    # The placeholder's spelling is what the store is asked about.
    assert find_credentials("127.0.0.1:5000") is None
    assert env["log"].read_text().splitlines()[-1] == "https://127.0.0.1:5000"
    _write(env["docker"], {"credsStore": "fake"})
    assert find_credentials("127.0.0.1:5000") == Credentials("alice", "s3cret")
    assert find_credentials("unknown.example") is None


def test_helper_failures_are_one_line(env: dict[str, Path]) -> None:
    _write(env["docker"], {"credHelpers": {"broken.example": "fake",
                                           "garbage.example": "fake",
                                           "missing.example": "nosuchhelper"}})
    with pytest.raises(RegistryError, match=r"docker-credential-fake failed \(exit 2\): "
                                            "keychain is locked"):
        find_credentials("broken.example")
    with pytest.raises(RegistryError, match="not its JSON"):
        find_credentials("garbage.example")
    with pytest.raises(RegistryError, match=r"docker-credential-nosuchhelper .*not installed"):
        find_credentials("missing.example")


@pytest.mark.parametrize(("doc", "what"), [
    ("{not json", "malformed"),
    ("[]", "not a JSON object"),
    ('{"auths": []}', "'auths' is not an object"),
    ('{"auths": {"r.example": "x"}}', "is not an object"),
    ('{"auths": {"r.example": {"auth": "%%%"}}}', "is not base64"),
    ('{"auths": {"r.example": {"auth": "' + _b64("nocolon") + '"}}}', "user:password"),
    ('{"credsStore": 3}', "'credsStore' is not a string"),
    ('{"credHelpers": {"r.example": "../../bin/sh"}}', "bad credential helper"),
])
def test_malformed_config_names_the_file(env: dict[str, Path], doc: str, what: str) -> None:
    env["docker"].write_text(doc)
    with pytest.raises(UsageError) as caught:
        find_credentials("r.example")
    message = str(caught.value)
    assert message.startswith(f"{env['docker']}: ") and what in message
    assert "\n" not in message


# -- pybuild login / logout ----------------------------------------------------------------

def test_save_and_remove_login(env: dict[str, Path]) -> None:
    path = save_login("127.0.0.1:5000", Credentials("alice", "pw"))
    assert path == env["own"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"auths": {"127.0.0.1:5000": {"auth": _b64("alice:pw")}}}
    assert find_credentials("127.0.0.1:5000") == Credentials("alice", "pw")

    save_login("docker.io", Credentials(identity_token="tok"))
    save_login("https://127.0.0.1:5000/", Credentials("alice", "new"))  # replaces, not adds
    doc = json.loads(path.read_text())
    assert doc["auths"] == {"https://index.docker.io/v1/": {"identitytoken": "tok"},
                            "127.0.0.1:5000": {"auth": _b64("alice:new")}}
    assert [p.name for p in path.parent.iterdir()] == ["auth.json"]  # no temp files left

    assert remove_login("127.0.0.1:5000") is True
    assert remove_login("127.0.0.1:5000") is False
    assert find_credentials("127.0.0.1:5000") is None
    assert find_credentials("docker.io") == Credentials(identity_token="tok")


def test_save_login_keeps_other_settings(env: dict[str, Path]) -> None:
    _write(env["own"], {"auths": {"a.example": {"auth": _b64("a:b")}}, "credsStore": "fake"})
    save_login("b.example", Credentials("c", "d"))
    doc = json.loads(env["own"].read_text())
    assert doc["credsStore"] == "fake" and set(doc["auths"]) == {"a.example", "b.example"}


def test_remove_login_without_file(env: dict[str, Path]) -> None:
    assert remove_login("docker.io") is False
    assert not env["own"].exists()


def test_credentials_repr_hides_secrets() -> None:
    text = repr(Credentials("u", "hunter2", "refresh-xyz"))
    assert "hunter2" not in text and "refresh-xyz" not in text
