"""Registry credentials: where they come from, and the challenge that asks for them.

No HTTP here. ``find_credentials`` reads pybuild's own auth file, then Docker's
``config.json`` (``credHelpers``, ``auths``, ``credsStore``, as the docker CLI
does), so a machine already logged in with ``docker login`` needs nothing more.
``save_login``/``remove_login`` keep pybuild's file, in Docker's ``auths`` format.

Imports builder.errors only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Container
from pathlib import Path
from typing import Any

import msgspec

from builder.errors import RegistryError, UsageError

__all__ = ["Credentials", "config_paths", "find_credentials", "parse_challenge",
           "remove_login", "save_login"]

# The key Docker Hub credentials are stored under, by docker login and every helper.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# A credential helper's answer for "I have nothing for this server".
_NOT_FOUND = "credentials not found in native keychain"
# Helpers answer with this user name when Secret is an identity (refresh) token.
_TOKEN_USER = "<token>"
HELPER_TIMEOUT = 30.0


class Credentials(msgspec.Struct):
    """What to answer a challenge with.

    ``identity_token`` is an OAuth2 refresh token (``identitytoken`` in config.json,
    or a helper's ``<token>`` user): it is exchanged at the token endpoint instead of
    sending a user name and password.
    """

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:  # never print secrets into logs or tracebacks
        return f"Credentials(username={self.username!r}, password=***, identity_token=***)"


# -- WWW-Authenticate -------------------------------------------------------------

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = _TCHAR | frozenset("/=")


def parse_challenge(header: str) -> list[tuple[str, dict[str, str]]]:
    """Parse a ``WWW-Authenticate`` value (RFC 7235) into ``[(scheme, params)]``.

    Schemes and parameter names are lowercased (both are case-insensitive); values
    are kept as sent, quoted strings unescaped. Several challenges in one header are
    returned in order. A token68 credential (``Negotiate abc==``) is kept under the
    key ``""``. Anything unparsable ends the parse: what was understood is returned.
    """
    challenges: list[tuple[str, dict[str, str]]] = []
    scan = _Scanner(header)
    while scan.more():
        scan.skip(" \t,")
        scheme = scan.token()
        if not scheme:
            break
        params: dict[str, str] = {}
        challenges.append((scheme.lower(), params))
        scan.skip(" \t")
        # token68: a single opaque value right after the scheme.
        mark = scan.i
        value = scan.token(_TOKEN68)
        scan.skip(" \t")
        if value and scan.peek() in ("", ",") and "=" not in value.rstrip("="):
            params[""] = value
            continue
        scan.i = mark
        if not _auth_params(scan, params):
            break
    return challenges


def _auth_params(scan: _Scanner, params: dict[str, str]) -> bool:
    """Read ``name=value`` pairs into ``params`` up to the next challenge's scheme;
    False when something unparsable ends the whole header."""
    while scan.more():
        scan.skip(" \t,")
        mark = scan.i
        name = scan.token()
        scan.skip(" \t")
        if not name or scan.peek() != "=":
            scan.i = mark  # the next challenge's scheme
            return True
        scan.i += 1
        scan.skip(" \t")
        value = scan.quoted() if scan.peek() == '"' else scan.token()
        if value is None:  # unterminated quoted string
            return False
        params[name.lower()] = value
        scan.skip(" \t")
        if scan.more() and scan.peek() != ",":
            return False  # garbage after a value
    return True


class _Scanner:
    """A position in a header value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def more(self) -> bool:
        return self.i < len(self.text)

    def peek(self) -> str:
        """The next character, "" at the end."""
        return self.text[self.i] if self.i < len(self.text) else ""

    def skip(self, chars: Container[str]) -> None:
        while self.i < len(self.text) and self.text[self.i] in chars:
            self.i += 1

    def token(self, allowed: frozenset[str] = _TCHAR) -> str:
        start = self.i
        self.skip(allowed)
        return self.text[start:self.i]

    def quoted(self) -> str | None:
        """At a '"': the unescaped quoted string, None if it never ends."""
        text, n = self.text, len(self.text)
        i = self.i + 1
        chars = []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                i += 1
            chars.append(text[i])
            i += 1
        if i >= n:
            return None
        self.i = i + 1
        return "".join(chars)


# -- where credentials live ---------------------------------------------------------

def config_paths() -> list[Path]:
    """pybuild's auth file, then Docker's config.json: the order they are read in."""
    if env := os.environ.get("PYBUILD_CONFIG"):
        own = Path(env)
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        own = Path(xdg) / "pybuild"
    docker = Path(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"))
    return [own / "auth.json", docker / "config.json"]


def _host_of(key: str) -> str:
    """``https://host:5000/v2/`` -> ``host:5000`` (docker's ConvertToHostname)."""
    for prefix in ("http://", "https://"):
        if key.lower().startswith(prefix):
            key = key[len(prefix):]
            break
    return key.split("/", 1)[0].lower()


def _same_registry(key: str, registry: str) -> bool:
    host, want = _host_of(key), _host_of(registry)
    if want in _DOCKER_HUB_HOSTS:
        return host in _DOCKER_HUB_HOSTS
    return host == want


def _server_key(registry: str) -> str:
    """What docker login files the registry under: Hub's v1 URL, else the host."""
    return DOCKER_HUB_KEY if _host_of(registry) in _DOCKER_HUB_HOSTS else _host_of(registry)


def _load(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read the registry auth config: {err}") from None
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise UsageError(f"{path}: malformed registry auth config: {err}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: malformed registry auth config: not a JSON object")
    for field in ("auths", "credHelpers"):
        if not isinstance(doc.get(field, {}), dict):
            raise UsageError(f"{path}: malformed registry auth config: {field!r} is not an "
                             "object")
    if not isinstance(doc.get("credsStore", ""), str):
        raise UsageError(f"{path}: malformed registry auth config: 'credsStore' is not a "
                         "string")
    return doc


def _matching(mapping: dict[str, Any], registry: str) -> list[str]:
    """Keys of ``mapping`` naming ``registry``, exact spellings first."""
    keys = [k for k in mapping if isinstance(k, str) and _same_registry(k, registry)]
    exact = {registry, _server_key(registry)}
    return sorted(keys, key=lambda k: (k not in exact, k))


def _from_auths_entry(path: Path, key: str, entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        raise UsageError(f"{path}: malformed registry auth config: auths[{key!r}] is not an "
                         "object")
    creds = Credentials()
    if auth := entry.get("auth"):
        try:
            decoded = base64.b64decode(str(auth), validate=True).decode()
        except (binascii.Error, ValueError):
            raise UsageError(f"{path}: malformed registry auth config: auths[{key!r}].auth "
                             "is not base64") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise UsageError(f"{path}: malformed registry auth config: auths[{key!r}].auth "
                             "is not base64 of user:password")
        creds.username, creds.password = user, password
    elif entry.get("username"):
        creds.username = str(entry["username"])
        creds.password = str(entry.get("password", ""))
    if token := entry.get("identitytoken"):
        creds.identity_token = str(token)
    if not (creds.username or creds.identity_token):
        return None  # a placeholder, as docker writes when a credsStore holds the secret
    return creds


def _run_helper(helper: str, server: str, path: Path) -> Credentials | None:
    """``docker-credential-HELPER get`` with the server on stdin; None if it has none."""
    program = f"docker-credential-{helper}"
    if not helper or "/" in helper:
        raise UsageError(f"{path}: malformed registry auth config: bad credential helper "
                         f"name {helper!r}")
    try:
        # A session of its own, like every child of a build: no access to the
        # invoker's terminal (stdin and stdout are pipes anyway).
        result = subprocess.run([program, "get"], input=server.encode(), capture_output=True,
                                timeout=HELPER_TIMEOUT, check=False, start_new_session=True)
    except FileNotFoundError:
        raise RegistryError(f"{server}: credential helper {program} (named in {path}) is "
                            "not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"{server}: credential helper {program} did not answer within "
                            f"{HELPER_TIMEOUT:.0f} s") from None
    out = result.stdout.decode(errors="replace").strip()
    if result.returncode != 0:
        if _NOT_FOUND in out or _NOT_FOUND in result.stderr.decode(errors="replace"):
            return None
        why = (out or result.stderr.decode(errors="replace").strip()).splitlines()
        raise RegistryError(f"{server}: credential helper {program} failed "
                            f"(exit {result.returncode}): {why[0] if why else 'no output'}")
    try:
        doc = json.loads(out)
        username, secret = doc.get("Username", ""), doc.get("Secret", "")
    except (ValueError, AttributeError):
        raise RegistryError(f"{server}: credential helper {program} answered something "
                            "that is not its JSON") from None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise RegistryError(f"{server}: credential helper {program} answered something "
                            "that is not its JSON")
    if not secret:
        return None
    if username == _TOKEN_USER:
        return Credentials(identity_token=secret)
    return Credentials(username=username, password=secret)


def _from_config(path: Path, doc: dict[str, Any], registry: str) -> Credentials | None:
    helpers = doc.get("credHelpers", {})
    for key in _matching(helpers, registry):
        return _run_helper(str(helpers[key]), key, path)
    auths = doc.get("auths", {})
    placeholders = _matching(auths, registry)
    for key in placeholders:
        creds = _from_auths_entry(path, key, auths[key])
        if creds is not None:
            return creds
    if store := doc.get("credsStore"):
        # Ask under the spelling docker login used (the placeholder key), else docker's.
        return _run_helper(store, placeholders[0] if placeholders else _server_key(registry),
                           path)
    return None


def find_credentials(registry: str) -> Credentials | None:
    """Credentials for ``registry`` (``docker.io``, ``host:port``), or None for anonymous."""
    for path in config_paths():
        doc = _load(path)
        if doc:
            creds = _from_config(path, doc, registry)
            if creds is not None:
                return creds
    return None


# -- pybuild login / logout ------------------------------------------------------

def _write_atomically(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".auth-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)  # mkstemp already makes 0600; say so for the reader
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(doc, out, indent="\t")
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_login(registry: str, creds: Credentials) -> Path:
    """Store ``creds`` for ``registry`` in pybuild's auth file (0600); returns its path."""
    path = config_paths()[0]
    doc = _load(path) or {}
    auths = doc.setdefault("auths", {})
    for key in _matching(auths, registry):
        del auths[key]
    entry: dict[str, str] = {}
    if creds.username:
        raw = f"{creds.username}:{creds.password}".encode()
        entry["auth"] = base64.b64encode(raw).decode()
    if creds.identity_token:
        entry["identitytoken"] = creds.identity_token
    auths[_server_key(registry)] = entry
    _write_atomically(path, doc)
    return path


def remove_login(registry: str) -> bool:
    """Forget ``registry`` in pybuild's auth file; False if nothing was stored."""
    path = config_paths()[0]
    doc = _load(path)
    if not doc or not isinstance(doc.get("auths"), dict):
        return False
    keys = _matching(doc["auths"], registry)
    if not keys:
        return False
    for key in keys:
        del doc["auths"][key]
    _write_atomically(path, doc)
    return True
