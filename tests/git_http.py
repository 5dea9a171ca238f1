"""Test helpers for ADD of git and HTTP sources: local repositories, a git server
over HTTP (``git http-backend`` as a CGI behind http.server) and a plain file
server, all on 127.0.0.1 and torn down by their context managers.

Every server thread is a daemon, serves only loopback, answers each request
with a bounded CGI run (timeout) and stops when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_BACKEND = "/usr/lib/git-core/git-http-backend"
_CGI_TIMEOUT = 60
_MAX_BODY = 64 << 20

# A fixed identity and no user/system config: the repositories are made the same
# way on every machine.
GIT_ENV = {
    "PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e", "LC_ALL": "C",
}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` (a test repository we made); its stdout, stripped."""
    result = subprocess.run(["git", "-C", str(repo), *args], env=GIT_ENV, check=True,
                            capture_output=True, timeout=60)
    return result.stdout.decode().strip()


def make_repo(path: Path, files: dict[str, str], branch: str = "main") -> str:
    """A repository at ``path`` with one commit of ``files`` on ``branch``; that commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", branch)
    return commit(path, files, "first")


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    """Write ``files`` (a value starting with ``-> `` makes a symlink) and commit."""
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        if content.startswith("-> "):
            target.symlink_to(content[3:])
        else:
            target.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@dataclass
class Served:
    base: str                          # http://127.0.0.1:PORT
    requests: list[str] = field(default_factory=list)   # "METHOD path" in order


class _GitCGI(http.server.BaseHTTPRequestHandler):
    root = ""
    served: Served

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if "/info/" not in self.path and "/objects/" not in self.path \
                and not self.path.endswith("/HEAD"):
            # Like a forge's web UI: a repository URL opened as a page is HTML.
            page = b"<!DOCTYPE html><html><body>a repository page</body></html>\n"
            self.served.requests.append(f"GET {self.path}")
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        self._cgi(b"")

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), _MAX_BODY))
        self._cgi(body)

    def _read_chunked(self) -> bytes:
        body = b""
        while len(body) < _MAX_BODY:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                break
            body += self.rfile.read(size)
            self.rfile.readline()
        return body

    def _cgi(self, body: bytes) -> None:
        self.served.requests.append(f"{self.command} {self.path}")
        path, _, query = self.path.partition("?")
        env = {**GIT_ENV, "GIT_PROJECT_ROOT": self.root, "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1"}
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        result = subprocess.run([_BACKEND], input=body, env=env, capture_output=True,
                                timeout=_CGI_TIMEOUT)
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


@contextlib.contextmanager
def git_http_server(root: Path) -> Iterator[Served]:
    """Serve every repository under ``root`` at ``http://127.0.0.1:PORT/<name>``."""
    served = Served("")
    handler = type("Handler", (_GitCGI,), {"root": str(root), "served": served})
    with _serving(handler) as base:
        served.base = base
        yield served


@contextlib.contextmanager
def file_server(files: dict[str, bytes]) -> Iterator[str]:
    """Serve ``files`` (path -> bytes) over plain HTTP; yields the base URL."""

    class Files(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            data = files.get(self.path)
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

    with _serving(Files) as base:
        yield base


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def no_leftovers(store_root: Path) -> list[str]:
    """Entries left in the store's tmp/ area (a failed build must leave none)."""
    tmp = store_root / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def build(tmp: Path, dockerfile: str, *extra: str, tag: str = "b-add",
          check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``pybuild build`` of ``dockerfile`` (context ``tmp/ctx``, store ``tmp/store``),
    exporting the result to ``tmp/out.tar``."""
    import sys

    ctx = tmp / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    out = tmp / "out.tar"
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    result = subprocess.run(
        [sys.executable, "-m", "builder", "--root", str(tmp / "store"), "build", "-t", tag,
         "-o", f"type=tar,dest={out}", *extra, str(ctx)],
        capture_output=True, timeout=600, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"build failed ({result.returncode}):\n{result.stderr.decode()}")
    return result


def exported(tmp: Path) -> dict[str, tuple[str, str]]:
    """Path -> (kind, content or link target) of the last ``build``'s filesystem."""
    import tarfile

    out: dict[str, tuple[str, str]] = {}
    with tarfile.open(tmp / "out.tar") as archive:
        for member in archive:
            name = member.name.removeprefix("./").rstrip("/")
            if member.issym():
                out[name] = ("link", member.linkname)
            elif member.isdir():
                out[name] = ("dir", oct(member.mode))
            elif member.isfile():
                data = archive.extractfile(member)
                out[name] = ("file", data.read().decode(errors="replace") if data else "")
    return out


def tagged(tmp: Path, tag: str) -> bool:
    import sys

    result = subprocess.run([sys.executable, "-m", "builder", "--root", str(tmp / "store"),
                             "images"], capture_output=True, timeout=120, check=True)
    return any(line.split()[:1] == [tag] for line in result.stdout.decode().splitlines())


@contextlib.contextmanager
def git_daemon(root: Path) -> Iterator[str]:
    """``git daemon`` serving ``root`` on 127.0.0.1; yields ``git://127.0.0.1:PORT``."""
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(
        ["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={root}",
         "--listen=127.0.0.1", f"--port={port}", str(root)],
        env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as conn:
                if conn.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"git://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=30)
