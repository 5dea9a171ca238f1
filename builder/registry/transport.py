"""HTTP for one registry: TLS, authentication, retries and redirects.

Built on the standard library's ``http.client`` (httpx and requests were
considered: the distribution API needs only keep-alive connections, streaming
bodies and a few headers, and pybuild keeps to the design card's packages).

- **Scheme:** HTTPS, verified (``tls.ssl_context_for``); plain HTTP only for
  loopback hosts and ``--insecure-registry`` names, and only after HTTPS failed,
  as Docker does.
- **Auth:** a request goes out without credentials; a 401 challenge decides:
  ``Basic`` sends the stored credentials, ``Bearer`` fetches a token from the
  realm for the request's scope (Docker Hub's flow) and caches it per scope.
- **Retries:** connection errors, 5xx and 429 (honouring ``Retry-After``) are
  retried with exponential backoff; a body is re-opened for each attempt.
- **Redirects:** followed (blob storage often lives elsewhere); the
  ``Authorization`` header never follows a redirect to another host (M07).
- **Bounds:** JSON documents and error bodies are read up to a cap (M06).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import random
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO

import msgspec

from builder import interrupt
from builder.errors import RegistryError, Unauthorized

if TYPE_CHECKING:   # auth loads on the first challenge only
    from builder.registry.auth import Credentials

MAX_DOCUMENT = 4 << 20      # manifests and configs
MAX_SMALL_BODY = 1 << 20    # tokens and error bodies
_ATTEMPTS = 5
_TIMEOUT = 60.0
_REDIRECTS = 5
_USER_AGENT = "pybuild/0.1"

Body = bytes | Callable[[], BinaryIO] | None


class Response(msgspec.Struct):
    """A response whose body is read by the caller (streamed, or bounded for JSON)."""

    status: int
    reason: str
    headers: http.client.HTTPMessage
    raw: http.client.HTTPResponse

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def read_bounded(self, limit: int = MAX_DOCUMENT, what: str = "response") -> bytes:
        declared = self.header("Content-Length")
        if declared.isdigit() and int(declared) > limit:
            self.close()
            raise RegistryError(f"{what}: {declared} bytes is more than the {limit} allowed")
        data = self.raw.read(limit + 1)
        if len(data) > limit:
            self.close()
            raise RegistryError(f"{what}: more than the {limit} bytes allowed")
        return data

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        # read1: what one receive brings, so that a stopping build (a download runs
        # on a worker thread, where no signal handler runs) is noticed between
        # receives, not after a megabyte a slow registry trickles in.
        while chunk := self.raw.read1(size):
            interrupt.check()
            yield chunk

    def close(self) -> None:
        self.raw.close()


class _Stoppable:
    """An upload body that stops when the build or command is stopping: http.client
    sends it from a worker thread in 8 KiB reads, and no signal handler runs there."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw

    def read(self, size: int = -1) -> bytes:
        interrupt.check()
        return self.raw.read(size)

    def close(self) -> None:
        self.raw.close()


class _Retry(Exception):
    def __init__(self, why: str, delay: float | None = None):
        super().__init__(why)
        self.delay = delay


class Transport:
    """Requests to one registry host, with its credentials and tokens."""

    def __init__(self, registry: str, api_host: str, *, insecure: Iterable[str] = (),
                 credentials: Credentials | None = None):
        self.registry = registry          # as named in references ("docker.io")
        self.host = api_host              # where the API lives ("registry-1.docker.io")
        self.insecure = tuple(insecure)
        self._scheme: str | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()  # every thread's, for abort()
        self._tokens: dict[str, str] = {}
        self._challenge: tuple[str, dict[str, str]] | None = None
        # Looked up once, on the first challenge, unless given (pybuild login checks them).
        self._credentials = credentials
        self._looked_up = credentials is not None

    # -- connections ---------------------------------------------------------
    def _connection(self, scheme: str, host: str) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = (
            self._local.__dict__.setdefault("pool", {}))
        conn = pool.get((scheme, host))
        if conn is None:
            if scheme == "https":
                from builder.registry.tls import ssl_context_for

                conn = http.client.HTTPSConnection(host, timeout=_TIMEOUT,
                                                   context=ssl_context_for(host))
            else:
                conn = http.client.HTTPConnection(host, timeout=_TIMEOUT)
            pool[(scheme, host)] = conn
            with self._lock:
                self._open.add(conn)
        return conn

    def _drop_connection(self, scheme: str, host: str) -> None:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = (
            self._local.__dict__.setdefault("pool", {}))
        conn = pool.pop((scheme, host), None)
        if conn is not None:
            conn.close()
            with self._lock:
                self._open.discard(conn)

    def abort(self) -> None:
        """Shut down every thread's connections: a download or upload worker
        blocked in a receive from a stalled registry returns at once (it then
        finds the stop request, see interrupt) instead of after the timeout."""
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def check_login(self) -> None:
        """Authenticate against ``/v2/`` with this transport's credentials, as docker login does."""
        self.request("GET", "/v2/", scope="", what=self.registry).raw.read()

    def close(self) -> None:
        for conn in self._local.__dict__.get("pool", {}).values():
            conn.close()
            with self._lock:
                self._open.discard(conn)
        self._local.__dict__["pool"] = {}

    def scheme(self) -> str:
        """HTTPS, or HTTP for a loopback/insecure registry that does not speak TLS."""
        if self._scheme is None:
            from builder.registry.tls import allows_plain_http

            try:
                self._send("GET", "https", self.host, "/v2/", {}, None).close()
                self._scheme = "https"
            except (OSError, http.client.HTTPException) as err:
                # A server that speaks TLS with a certificate we do not trust is an
                # error, never a reason to try plain HTTP.
                if isinstance(err, ssl.SSLCertVerificationError) or \
                        not allows_plain_http(self.host, self.insecure):
                    raise RegistryError(
                        f"{self.registry}: cannot reach the registry over HTTPS: "
                        f"{_describe(err)} (plain HTTP is used only for localhost and "
                        "--insecure-registry names)") from None
                self._scheme = "http"
        return self._scheme

    # -- requests ------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.scheme()}://{self.host}{path}"

    def request(self, method: str, path: str, *, scope: str, what: str,
                headers: dict[str, str] | None = None, body: Body = None,
                ok: Iterable[int] = (200,), retry: bool = True) -> Response:
        """Send a request, authenticating, retrying and following redirects as needed.

        ``path`` is a path on the registry or an absolute URL (upload locations).
        ``what`` names the object for error messages ("127.0.0.1:5000/app:1").
        A status outside ``ok`` raises RegistryError, except 404 when in ``ok``.
        """
        expected = set(ok)
        attempts = _ATTEMPTS if retry else 1
        for attempt in range(attempts):
            try:
                response = self._authenticated(method, path, scope, what, headers or {}, body)
                if response.status in (429,) or response.status >= 500:
                    delay = _retry_after(response.header("Retry-After"))
                    message = _error_text(response)
                    raise _Retry(f"{response.status} {response.reason}{message}", delay)
            except _Retry as err:
                if attempt + 1 == attempts:
                    raise RegistryError(f"{what}: {self.registry} failed: {err}") from None
                time.sleep(err.delay if err.delay is not None else _backoff(attempt))
                continue
            except (OSError, http.client.HTTPException) as err:
                if attempt + 1 == attempts or isinstance(err, (socket.gaierror,
                                                               ssl.SSLCertVerificationError)):
                    raise RegistryError(f"{what}: {self.registry}: {_describe(err)}") from None
                time.sleep(_backoff(attempt))
                continue
            if response.status in expected:
                return response
            raise self._status_error(response, what)
        raise AssertionError("unreachable")

    def _status_error(self, response: Response, what: str) -> RegistryError:
        message = _error_text(response)
        if response.status == 401:
            return Unauthorized(f"{what}: {self.registry} requires authentication{message}: "
                                f"log in with 'pybuild login {self.registry}'", message[2:-1])
        if response.status == 403:
            return RegistryError(f"{what}: {self.registry} denied access{message}")
        if response.status == 404:
            return RegistryError(f"{what}: not found on {self.registry}{message}")
        if "DIGEST_INVALID" in message:
            return RegistryError(f"{what}: {self.registry} refused the upload{message}: the "
                                 "store's copy is corrupt (run 'pybuild doctor --repair')")
        return RegistryError(f"{what}: {self.registry} answered {response.status} "
                             f"{response.reason}{message}")

    def _authenticated(self, method: str, path: str, scope: str, what: str,
                       headers: dict[str, str], body: Body) -> Response:
        response = self._follow(method, path, headers, body, self._authorization(scope, what))
        challenge = response.header("WWW-Authenticate") if response.status == 401 else ""
        if not challenge:
            return response
        from builder.registry.auth import parse_challenge

        parsed = parse_challenge(challenge)
        if not parsed:
            return response
        response.raw.read(MAX_SMALL_BODY)  # drained, so the connection can be reused
        with self._lock:
            self._challenge = (parsed[0][0].lower(), parsed[0][1])
            self._tokens.pop(scope, None)
        auth = self._authorization(scope, what)
        if auth is None:  # no credentials to answer with: the 401 stands
            return response
        return self._follow(method, path, headers, body, auth)

    def _follow(self, method: str, path: str, headers: dict[str, str], body: Body,
                auth: str | None) -> Response:
        if path.startswith(("http://", "https://")):
            url = urllib.parse.urlsplit(path)
            scheme, host = url.scheme, url.netloc
            target = url.path + (f"?{url.query}" if url.query else "")
        else:
            scheme, host, target = self.scheme(), self.host, path
        for _ in range(_REDIRECTS + 1):
            sent = dict(headers)
            if auth and host == self.host:
                sent["Authorization"] = auth  # never to another host (M07)
            response = self._send(method, scheme, host, target, sent, body)
            if response.status not in (301, 302, 303, 307, 308):
                return response
            location = response.header("Location")
            response.raw.read()
            if not location:
                return response
            url = urllib.parse.urlsplit(urllib.parse.urljoin(f"{scheme}://{host}{target}",
                                                             location))
            if url.scheme == "http" and scheme == "https":
                raise RegistryError(f"{self.registry}: refusing a redirect from HTTPS to "
                                    f"plain HTTP ({url.netloc})")
            scheme, host = url.scheme, url.netloc
            target = url.path + (f"?{url.query}" if url.query else "")
            if response.status == 303:
                method, body = "GET", None
        raise RegistryError(f"{self.registry}: more than {_REDIRECTS} redirects")

    def _send(self, method: str, scheme: str, host: str, target: str,
              headers: dict[str, str], body: Body) -> Response:
        headers = {"User-Agent": _USER_AGENT, **headers}
        for fresh in (False, True):
            # A stopping build or command sends nothing more: not even the fresh try
            # after abort() shut the kept-alive connection (a stalled registry would
            # then hold the worker for the whole socket timeout).
            interrupt.check()
            conn = self._connection(scheme, host)
            payload: bytes | _Stoppable | None = \
                _Stoppable(body()) if callable(body) else body
            try:
                conn.request(method, target, body=payload, headers=headers)
                # Connected now: a stop whose abort() came while this connection had no
                # socket yet (so shut nothing down) is seen here, not after the timeout.
                interrupt.check()
                raw = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A kept-alive connection the server had closed: one fresh try.
                self._drop_connection(scheme, host)
                if fresh:
                    raise
                continue
            except BaseException:
                self._drop_connection(scheme, host)
                raise
            finally:
                if payload is not None and hasattr(payload, "close"):
                    payload.close()
            return Response(raw.status, raw.reason, raw.headers, raw)
        raise AssertionError("unreachable")

    # -- authentication ------------------------------------------------------
    def _creds(self) -> Credentials | None:
        if not self._looked_up:
            from builder.registry.auth import find_credentials

            self._credentials = find_credentials(self.registry)
            self._looked_up = True
        return self._credentials

    def _authorization(self, scope: str, what: str = "") -> str | None:
        with self._lock:
            challenge = self._challenge
            token = self._tokens.get(scope)
        if challenge is None:
            return None
        kind, params = challenge
        if kind == "basic":
            creds = self._creds()
            if creds is None or not creds.username:
                return None
            raw = f"{creds.username}:{creds.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if kind != "bearer":
            return None
        if token is None:
            token = self._fetch_token(params, scope, what)
            with self._lock:
                self._tokens[scope] = token
        return f"Bearer {token}"

    def _fetch_token(self, params: dict[str, str], scope: str, what: str) -> str:
        realm = params.get("realm", "")
        url = urllib.parse.urlsplit(realm)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise RegistryError(f"{self.registry}: bad token realm {realm!r} in its challenge")
        query = [("service", params.get("service", ""))] if params.get("service") else []
        query += [("scope", s) for s in scope.split(" ") if s]
        creds = self._creds()
        headers = {"User-Agent": _USER_AGENT}
        body = None
        method = "GET"
        if creds is not None and creds.identity_token:
            method = "POST"
            form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token),
                    ("client_id", "pybuild"), *query]
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            target = url.path or "/"
        else:
            if creds is not None and creds.username:
                raw = f"{creds.username}:{creds.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            separator = "&" if url.query else ""
            target = (url.path or "/") + "?" + url.query + separator + urllib.parse.urlencode(query)
        try:
            response = self._send(method, url.scheme, url.netloc, target, headers, body)
            data = Response.read_bounded(response, MAX_SMALL_BODY, "token")
        except (OSError, http.client.HTTPException) as err:
            raise RegistryError(f"{what or self.registry}: token service {url.netloc}: "
                                f"{_describe(err)}") from None
        if response.status in (401, 403):
            reason = _token_error_text(data)
            raise Unauthorized(f"{what or self.registry}: the token service {url.netloc} "
                               f"refused the credentials{f' ({reason})' if reason else ''} "
                               f"(log in with 'pybuild login {self.registry}')", reason)
        if response.status != 200:
            raise RegistryError(f"{what or self.registry}: token service {url.netloc} "
                                f"answered {response.status} {response.reason}")
        try:
            doc = json.loads(data)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{what or self.registry}: token service {url.netloc} "
                                "sent no token")
        return token


def _error_text(response: Response) -> str:
    """The registry's own error message, for one-line errors (bounded, never raises)."""
    try:
        data = response.raw.read(MAX_SMALL_BODY)
        response.raw.read()
    except (OSError, http.client.HTTPException):
        return ""
    try:
        errors = json.loads(data).get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                         for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        return ""
    return f" ({text})" if text else ""


def _token_error_text(data: bytes) -> str:
    """A token service's own refusal: Docker Hub's ``details``, OAuth2's
    ``error_description``/``error``, or a registry-style ``errors`` list."""
    try:
        doc = json.loads(data)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    for key in ("details", "error_description", "error", "message"):
        if isinstance(doc.get(key), str) and doc[key]:
            return str(doc[key])[:300]
    errors = doc.get("errors")
    if isinstance(errors, list):
        return "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))[:300]
    return ""


def _retry_after(value: str) -> float | None:
    if value.isdigit():
        return min(float(value), 60.0)
    return None


def _backoff(attempt: int) -> float:
    return min(0.25 * 2.0 ** attempt, 8.0) * (0.5 + random.random() / 2)


def _describe(err: BaseException) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({err.verify_message}); add the CA under " \
               "/etc/pybuild/certs.d/HOST/"
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host name ({err.strerror})"
    if isinstance(err, socket.timeout):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__
