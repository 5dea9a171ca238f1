"""A real registry for tests: Debian's ``docker-registry`` (CNCF distribution v2.8).

Started on 127.0.0.1 with a random free port and its storage under the test's tmp dir,
in three flavours: plain HTTP without auth; TLS (a CA made here with the ``openssl``
CLI) with htpasswd basic auth; and bearer tokens from a small token service that runs
in the test process and signs RS256 JWTs with the ``openssl`` CLI. Nothing here uses
pybuild's registry code, so these fixtures can check it.

The fixtures themselves are in conftest.py; this module is the implementation, plus
helpers tests call directly (``push_with_skopeo``, ``push_multiplatform_index``,
``RegistryServer.request``).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from helpers import TESTDATA

REGISTRY_BIN = "/usr/bin/docker-registry"
START_TIMEOUT = 30.0
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


class Unavailable(Exception):
    """A tool the fixture needs is missing; the fixture turns this into a skip/fail."""


# -- certificates and passwords ----------------------------------------------------

def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    if shutil.which("openssl") is None:
        raise Unavailable("the openssl CLI is missing (apt-get install openssl)")
    result = subprocess.run(["openssl", *args], input=stdin, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.decode()[-500:]}")
    return result.stdout


def make_ca(directory: Path, name: str = "pybuild test CA") -> tuple[Path, Path]:
    """A self-signed CA; returns (ca.crt, ca.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    crt, key = directory / "ca.crt", directory / "ca.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(crt), "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def make_cert(directory: Path, stem: str, ca: tuple[Path, Path], *, ip: str = "127.0.0.1",
              usage: str = "serverAuth") -> tuple[Path, Path]:
    """A leaf certificate for ``ip`` (subjectAltName IP and DNS:localhost) signed by ``ca``."""
    crt, key, csr = directory / f"{stem}.crt", directory / f"{stem}.key", directory / f"{stem}.csr"
    ext = directory / f"{stem}.ext"
    ext.write_text(f"subjectAltName=IP:{ip},DNS:localhost\n"
                   "basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   f"extendedKeyUsage={usage}\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(csr), "-subj", f"/CN={ip}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-set_serial", str(secrets.randbits(63)), "-out", str(crt), "-days", "2",
             "-extfile", str(ext))
    csr.unlink()
    ext.unlink()
    return crt, key


def htpasswd_line(username: str, password: str) -> str:
    """``user:$2y$...``: distribution's htpasswd accepts bcrypt only."""
    if shutil.which("htpasswd"):
        out = subprocess.run(["htpasswd", "-Bbn", username, password], check=True,
                             capture_output=True, text=True).stdout
        return out.strip().splitlines()[0]
    # Python's crypt (deprecated, gone in 3.13) calls libxcrypt, which does bcrypt.
    with contextlib.suppress(ImportError), _no_deprecation_warning():
        import crypt

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
        if hashed and hashed.startswith("$2"):
            return f"{username}:{hashed}"
    raise Unavailable("no bcrypt for htpasswd: apt-get install apache2-utils")


@contextlib.contextmanager
def _no_deprecation_warning() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the token service ---------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parse_scope(scope: str) -> dict | None:
    """``repository:name:pull,push`` -> an access entry (the name may hold a port's ':')."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


class TokenService:
    """Docker's token auth, enough for distribution: basic auth in, RS256 JWT out.

    GET ``/token?service=..&scope=..`` (the Docker Hub flow) and POST ``/token`` with an
    OAuth2 form (``grant_type=password`` or ``refresh_token``). Valid credentials get
    every action asked for; anonymous requests get ``pull`` only when
    ``anonymous_pull`` is set; bad credentials get 401. Every request is recorded in
    ``requests`` as ``(method, path, query or form dict, user or None)``.
    """

    def __init__(self, workdir: Path, *, username: str, password: str,
                 service: str = "pybuild-test-registry", issuer: str = "pybuild-test-issuer",
                 anonymous_pull: bool = True):
        self.username, self.password = username, password
        self.service, self.issuer = service, issuer
        self.anonymous_pull = anonymous_pull
        self.refresh_token = "refresh-" + secrets.token_hex(16)
        self.requests: list[tuple[str, str, dict[str, str], str | None]] = []
        workdir.mkdir(parents=True, exist_ok=True)
        # A self-signed signing certificate; distribution trusts it as a root, and
        # the token's x5c header carries it, so no key id has to be computed.
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                 "-out", str(self.cert), "-days", "2", "-subj", "/CN=pybuild test token signer",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,digitalSignature,keyCertSign")
        self._x5c = base64.b64encode(ssl.PEM_cert_to_DER_cert(self.cert.read_text())).decode()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="token-service")
        self._thread.start()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def issue(self, subject: str, scopes: list[str], *, anonymous: bool = False,
              lifetime: int = 600) -> str:
        """A signed JWT granting ``scopes`` (anonymous: pull only)."""
        access = []
        for scope in scopes:
            entry = _parse_scope(scope)
            if entry is None:
                continue
            if anonymous:
                entry["actions"] = [a for a in entry["actions"] if a == "pull"]
            access.append(entry)
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service,
                  "exp": now + lifetime, "nbf": now - 60, "iat": now - 60,
                  "jti": secrets.token_hex(12), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = _openssl("dgst", "-sha256", "-sign", str(self.key),
                             stdin=signing_input.encode())
        return signing_input + "." + _b64url(signature)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: pytest shows failures, not access logs

            def _user(self) -> tuple[str | None, bool]:
                """(user, ok): (None, True) for anonymous, (name, False) for bad creds."""
                header = self.headers.get("Authorization", "")
                if not header.lower().startswith("basic "):
                    return None, True
                try:
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    return "?", False
                return user, (user == service.username and password == service.password)

            def _answer(self, status: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="token service"')
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                user, ok = self._user()
                service.requests.append(("GET", url.path, {k: ",".join(v) for k, v in
                                                          query.items()}, user))
                if url.path != "/token":
                    return self._answer(404, {"error": "not found"})
                if not ok:
                    return self._answer(401, {"error": "bad credentials"})
                if user is None and not service.anonymous_pull:
                    return self._answer(401, {"error": "authentication required"})
                token = service.issue(user or "", query.get("scope", []),
                                      anonymous=user is None)
                self._answer(200, {"token": token, "access_token": token, "expires_in": 600,
                                   "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime())})

            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: ",".join(v) for k, v in
                        urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
                service.requests.append(("POST", url.path, form, form.get("username")))
                if url.path != "/token":
                    return self._answer(404, {"error": "not found"})
                grant = form.get("grant_type")
                if grant == "password":
                    ok = (form.get("username") == service.username
                          and form.get("password") == service.password)
                    subject = form.get("username", "")
                elif grant == "refresh_token":
                    ok = form.get("refresh_token") == service.refresh_token
                    subject = service.username
                else:
                    return self._answer(400, {"error": "unsupported_grant_type"})
                if not ok:
                    return self._answer(401, {"error": "invalid_grant"})
                scopes = form.get("scope", "").split(" ") if form.get("scope") else []
                token = service.issue(subject, scopes)
                doc = {"access_token": token, "expires_in": 600, "scope": form.get("scope", "")}
                if form.get("access_type") == "offline":
                    doc["refresh_token"] = service.refresh_token
                self._answer(200, doc)

        return Handler


# -- the registry process ----------------------------------------------------------

@dataclass
class RegistryServer:
    """A running registry. ``root`` is its storage directory (blobs are under
    ``root/docker/registry/v2/blobs/sha256/XX/HEX/data``)."""

    host: str
    url: str
    root: Path
    pid: int
    config: Path
    log: Path
    process: subprocess.Popen = field(repr=False)
    ca_path: Path | None = None
    certs_d: Path | None = None
    username: str | None = None
    password: str | None = None
    token_service: TokenService | None = None

    def blob_path(self, digest: str) -> Path:
        algorithm, hex_ = digest.split(":", 1)
        return self.root / "docker/registry/v2/blobs" / algorithm / hex_[:2] / hex_ / "data"

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.ca_path is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_path))

    def _authorization(self, scope: str) -> str | None:
        if self.username is None:
            return None
        basic = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if self.token_service is None:
            return basic
        query = urllib.parse.urlencode({"service": self.token_service.service, "scope": scope})
        request = urllib.request.Request(f"{self.token_service.realm}?{query}",
                                         headers={"Authorization": basic})
        with urllib.request.urlopen(request, timeout=30) as response:
            return "Bearer " + json.loads(response.read())["token"]

    def request(self, method: str, path: str, body: bytes | None = None, *,
                headers: dict[str, str] | None = None, scope: str = "",
                auth: bool = True) -> tuple[int, Message, bytes]:
        """One HTTP request with plain urllib; answers (status, headers, body), never raises
        for an HTTP status (headers look up case-insensitively). With ``auth``, uses the
        fixture's credentials (a token for ``scope`` on a token registry)."""
        sent = dict(headers or {})
        if auth and (value := self._authorization(scope)):
            sent["Authorization"] = value
        url = path if path.startswith(("http://", "https://")) else self.url + path
        request = urllib.request.Request(url, data=body, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=60, context=self.ssl_context()) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.headers, err.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait()


def start_registry(workdir: Path, *, tls: bool = False, htpasswd: tuple[str, str] | None = None,
                   token: TokenService | None = None) -> RegistryServer:
    """Start ``docker-registry serve`` under ``workdir``; returns once /v2/ answers."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        raise Unavailable(f"{REGISTRY_BIN} is missing (apt-get install docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "storage"
    root.mkdir(exist_ok=True)
    ca_path = certs_d = None
    http: dict = {"secret": secrets.token_hex(16), "headers": {"X-Content-Type-Options":
                                                                ["nosniff"]}}
    if tls:
        certs = workdir / "certs"
        ca = make_ca(certs)
        server = make_cert(certs, "server", ca)
        http["tls"] = {"certificate": str(server[0]), "key": str(server[1])}
        ca_path = ca[0]
    config: dict = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": http,
    }
    username = password = None
    if htpasswd is not None:
        username, password = htpasswd
        passwd = workdir / "htpasswd"
        passwd.write_text(htpasswd_line(username, password) + "\n")
        config["auth"] = {"htpasswd": {"realm": "pybuild-test", "path": str(passwd)}}
    if token is not None:
        username, password = token.username, token.password
        config["auth"] = {"token": {"realm": token.realm, "service": token.service,
                                    "issuer": token.issuer,
                                    "rootcertbundle": str(token.cert)}}
    log = workdir / "registry.log"
    last_error = ""
    for _attempt in range(3):  # the free port can be taken between probe and bind
        port = free_port()
        http["addr"] = f"127.0.0.1:{port}"
        config_path = workdir / "config.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        with open(log, "ab") as out:
            process = subprocess.Popen([REGISTRY_BIN, "serve", str(config_path)],
                                       stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        host = f"127.0.0.1:{port}"
        scheme = "https" if tls else "http"
        registry = RegistryServer(host=host, url=f"{scheme}://{host}", root=root,
                                  pid=process.pid, config=config_path, log=log,
                                  process=process, ca_path=ca_path, username=username,
                                  password=password, token_service=token)
        if tls:
            certs_d = workdir / "certs.d"
            (certs_d / host).mkdir(parents=True)
            shutil.copy(ca_path, certs_d / host / "ca.crt")
            registry.certs_d = certs_d
        if _wait_ready(registry):
            return registry
        last_error = log.read_text(errors="replace")[-800:]
        registry.stop()
        if certs_d is not None:
            shutil.rmtree(certs_d)
    raise RuntimeError(f"docker-registry did not start: {last_error}")


def _wait_ready(registry: RegistryServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            return False
        try:
            status, _, _ = registry.request("GET", "/v2/", auth=False)
            if status in (200, 401):
                return True
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.05)
    return False


# -- putting images into a registry without pybuild -------------------------------------

def _skopeo_policy(workdir: Path) -> Path:
    policy = workdir / "skopeo-policy.json"
    if not policy.exists():
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    return policy


def skopeo_args(registry: RegistryServer, prefix: str = "") -> list[str]:
    """skopeo flags for talking to ``registry``: ``prefix`` is ``src`` or ``dest`` for
    ``copy``, empty for ``inspect`` (whose flags have no prefix)."""
    if shutil.which("skopeo") is None:
        raise Unavailable("skopeo is not installed (apt-get install skopeo)")
    flag = f"--{prefix}-" if prefix else "--"
    args = []
    if registry.ca_path is not None:
        assert registry.certs_d is not None
        args += [f"{flag}cert-dir", str(registry.certs_d / registry.host)]
    else:
        args += [f"{flag}tls-verify=false"]
    if registry.username is not None:
        args += [f"{flag}creds", f"{registry.username}:{registry.password}"]
    else:
        args += [f"{flag}no-creds"]
    return args


def _skopeo_env(workdir: Path) -> dict[str, str]:
    # Never read or write the user's own logins.
    env = dict(os.environ)
    env["REGISTRY_AUTH_FILE"] = str(workdir / "skopeo-auth.json")
    return env


def push_with_skopeo(registry: RegistryServer, src: Path | str, ref: str) -> str:
    """Copy ``src`` (an OCI archive path, or any skopeo source like ``oci:DIR``) to
    ``registry`` as ``ref`` (``repo:tag``); returns the pushed manifest's digest."""
    source = str(src) if isinstance(src, str) and ":" in src.split("/")[0] \
        else f"oci-archive:{src}"
    workdir = registry.root.parent
    digestfile = workdir / f"digest-{secrets.token_hex(4)}"
    result = subprocess.run(
        ["skopeo", "--policy", str(_skopeo_policy(workdir)), "copy", "--quiet",
         *skopeo_args(registry, "dest"), "--digestfile", str(digestfile),
         source, f"docker://{registry.host}/{ref}"],
        capture_output=True, text=True, env=_skopeo_env(workdir))
    if result.returncode != 0:
        raise AssertionError(f"skopeo copy to {registry.host}/{ref} failed: {result.stderr}")
    digest = digestfile.read_text().strip()
    digestfile.unlink()
    return digest


def skopeo(registry: RegistryServer, *args: str) -> subprocess.CompletedProcess:
    """Run ``skopeo ARGS`` with the isolated policy and auth file (no check)."""
    workdir = registry.root.parent
    return subprocess.run(["skopeo", "--policy", str(_skopeo_policy(workdir)), *args],
                          capture_output=True, text=True, env=_skopeo_env(workdir))


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


_BUSYBOX_TAR: bytes | None = None


def _busybox_layer() -> bytes:
    """The busybox rootfs tarball the ``busybox_tar`` fixture makes, made once here."""
    global _BUSYBOX_TAR
    if _BUSYBOX_TAR is None:
        if not Path("/bin/busybox").exists():
            raise Unavailable("/bin/busybox missing (apt-get install busybox-static)")
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"pybuild-busybox-{os.getpid()}.tar"
        try:
            subprocess.run([str(TESTDATA / "busybox-rootfs.sh"), str(out)], check=True)
            _BUSYBOX_TAR = out.read_bytes()
        finally:
            out.unlink(missing_ok=True)
    return _BUSYBOX_TAR


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(registry: RegistryServer, repo: str, data: bytes) -> str:
    """Monolithic upload (POST, then PUT ?digest=); returns the digest."""
    digest = _sha(data)
    scope = f"repository:{repo}:pull,push"
    status, _, _ = registry.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope)
    if status == 200:
        return digest
    status, headers, body = registry.request("POST", f"/v2/{repo}/blobs/uploads/", b"",
                                             scope=scope)
    if status != 202:
        raise AssertionError(f"upload start: {status} {body[:300]!r}")
    location = urllib.parse.urljoin(registry.url + "/", headers["Location"])
    separator = "&" if "?" in location else "?"
    status, _, body = registry.request(
        "PUT", f"{location}{separator}digest={digest}", data, scope=scope,
        headers={"Content-Type": "application/octet-stream"})
    if status != 201:
        raise AssertionError(f"upload of {digest}: {status} {body[:300]!r}")
    return digest


def put_manifest(registry: RegistryServer, repo: str, ref: str, doc: dict,
                 media_type: str) -> str:
    data = json.dumps(doc, separators=(",", ":")).encode()
    status, headers, body = registry.request(
        "PUT", f"/v2/{repo}/manifests/{ref}", data, scope=f"repository:{repo}:pull,push",
        headers={"Content-Type": media_type})
    if status != 201:
        raise AssertionError(f"manifest PUT {repo}:{ref}: {status} {body[:300]!r}")
    assert headers.get("Docker-Content-Digest", _sha(data)) == _sha(data)
    return _sha(data)


def push_image(registry: RegistryServer, repo: str, ref: str, layer_tar: bytes, *,
               architecture: str, os_name: str = "linux", variant: str | None = None,
               cmd: list[str] | None = None) -> dict:
    """Push a one-layer OCI image made here; returns its digests and descriptor."""
    layer = gzip.compress(layer_tar, mtime=0)
    config_doc: dict = {
        "created": "2023-11-14T22:13:20Z", "architecture": architecture, "os": os_name,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": cmd or ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer_tar)]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "registry_server.py"}]}
    if variant:
        config_doc["variant"] = variant
    config = json.dumps(config_doc, separators=(",", ":")).encode()
    put_blob(registry, repo, layer)
    put_blob(registry, repo, config)
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": _sha(config),
                           "size": len(config)},
                "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": _sha(layer),
                            "size": len(layer)}]}
    data = json.dumps(manifest, separators=(",", ":")).encode()
    digest = put_manifest(registry, repo, ref, manifest, MEDIA_MANIFEST)
    platform = {"architecture": architecture, "os": os_name}
    if variant:
        platform["variant"] = variant
    return {"manifest": digest, "config": _sha(config), "layer": _sha(layer),
            "diff_id": _sha(layer_tar),
            "descriptor": {"mediaType": MEDIA_MANIFEST, "digest": digest, "size": len(data),
                           "platform": platform}}


def push_multiplatform_index(registry: RegistryServer, repo: str, tag: str) -> dict:
    """Put an OCI index ``repo:tag`` with two images: the busybox rootfs as linux/amd64
    (runnable here) and a different one-file image as linux/arm64.

    Returns ``{"index": digest, "linux/amd64": {...}, "linux/arm64": {...}}`` where
    each platform's dict has ``manifest``, ``config``, ``layer``, ``diff_id`` digests.
    """
    amd64 = push_image(registry, repo, f"{tag}-amd64", _busybox_layer(), architecture="amd64")
    arm64 = push_image(registry, repo, f"{tag}-arm64",
                       tar_bytes({"hello.txt": b"this is the arm64 image\n"}),
                       architecture="arm64", variant="v8", cmd=["/hello.txt"])
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX,
             "manifests": [amd64["descriptor"], arm64["descriptor"]]}
    digest = put_manifest(registry, repo, tag, index, MEDIA_INDEX)
    return {"index": digest, "linux/amd64": amd64, "linux/arm64": arm64}
