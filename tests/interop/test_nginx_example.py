"""The seed example end to end: nginx on a Debian base, built by pybuild, served by Docker.

A Debian bookworm minbase made with debootstrap is imported with ``pybuild import``; the
image installs nginx with apt-get (Debian's package servers), copies a page in, and is
saved with ``pybuild save``, loaded with ``docker load`` and run with ``docker run``;
as root and rootless (issue 18: a fresh user, apt-get through the user's slirp4netns).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import docker_run, run_cli
from nonroot import nonroot_user, rootless_ready

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.docker, pytest.mark.slow,
              pytest.mark.network]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Builder:
    """pybuild as root (a store in tmp_path) or rootless (a fresh user's own store),
    and a directory of the builder's for the context and the archive."""

    run: Callable[..., subprocess.CompletedProcess]
    workdir: Path
    own: Callable[[Path], object] = lambda path: path

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(*args)


@pytest.fixture(params=["root", "rootless"])
def pybuild(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Builder]:
    if request.param == "root":
        yield Builder(lambda *args: run_cli(*args, root=tmp_path / "store"), tmp_path)
        return
    rootless_ready()
    with nonroot_user() as user:
        def run(*args: str) -> subprocess.CompletedProcess:
            done = user.run(*args)
            assert done.returncode == 0, done.stderr.decode(errors="replace")
            return done
        yield Builder(run, user.home, user.own)


def test_nginx_from_debian_serves_the_copied_page(debian_tar: Path,
                                                  docker: dict[str, str],
                                                  pybuild: Builder) -> None:
    base = pybuild.workdir / "debian.tar"
    shutil.copyfile(debian_tar, base)
    pybuild.own(base)
    pybuild("import", str(base), "debian:bookworm")

    marker = f"pybuild-nginx-{uuid.uuid4().hex}"
    # The test's dockerd has no bridge network, so the container shares the host's
    # network; nginx listens on a free port on 127.0.0.1 instead of 80.
    port = _free_port()
    ctx = pybuild.workdir / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "app" / "index.html").write_text(f"<h1>{marker}</h1>\n")
    (ctx / "Dockerfile").write_text(
        "FROM debian:bookworm\n"
        "RUN apt-get update\n"
        "RUN apt-get install -y --no-install-recommends nginx\n"
        f"RUN sed -i -e 's/listen 80 default_server;/listen 127.0.0.1:{port} default_server;/'"
        " -e '/listen \\[::\\]:80/d' /etc/nginx/sites-available/default\n"
        "COPY app/ /var/www/html/\n"
        'CMD ["nginx", "-g", "daemon off;"]\n')
    tag = f"pybuild-nginx-test:{uuid.uuid4().hex[:12]}"
    # The build itself needs no host network: apt-get goes out through the default one.
    pybuild("build", "-t", tag, str(ctx))
    for path in (ctx, ctx / "app", ctx / "app" / "index.html", ctx / "Dockerfile"):
        pybuild.own(path)
    archive = pybuild.workdir / "nginx.tar"
    pybuild("save", "-o", str(archive), tag)

    name = f"pybuild-nginx-{uuid.uuid4().hex[:12]}"
    try:
        loaded = subprocess.run(["docker", "load", "-i", str(archive)], env=docker,
                                capture_output=True, text=True, check=True)
        assert tag in loaded.stdout
        started = docker_run(["-d", "--name", name, "--network", "host", tag], docker)
        assert started.returncode == 0, (
            f"docker run: {started.returncode}: {started.stderr}\n" + subprocess.run(
                ["docker", "image", "inspect", tag], env=docker, capture_output=True,
                text=True).stdout[-3000:] + pybuild("history", tag).stdout.decode())
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = response.read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    logs = subprocess.run(["docker", "logs", name], env=docker,
                                          capture_output=True, text=True)
                    pytest.fail(f"nginx did not answer on {url}:\n{logs.stdout}{logs.stderr}")
                time.sleep(0.3)
        assert marker in body
    finally:
        subprocess.run(["docker", "rm", "-f", name], env=docker, capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], env=docker, capture_output=True)
