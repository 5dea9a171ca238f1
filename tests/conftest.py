"""Shared fixtures: a store per test, base images made on this machine, and skips.

Tests that need root, kernel overlay, Docker or the network carry a marker; where
the machine lacks the capability they skip with the reason.  Under CI (env CI=true)
nothing may skip for lack of a capability: the skip becomes a failure.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import http.server
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nonroot
import pytest
from helpers import TESTDATA
from helpers import run_cli as _run_cli

CACHE = Path(os.environ.get("PYBUILD_TEST_CACHE", "/var/cache/pybuild-tests"))


@functools.cache
def _overlay_works() -> str | None:
    """None if an overlay mount works here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c",
         "d=$(mktemp -d) && mkdir $d/l $d/u $d/w $d/m && "
         "mount -t overlay overlay -o lowerdir=$d/l,upperdir=$d/u,workdir=$d/w $d/m; "
         "r=$?; rm -rf $d; exit $r"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"overlay mount failed: {probe.stderr.strip()}"


def _missing(marker: str) -> str | None:
    if marker == "root":
        return None if os.geteuid() == 0 else "needs root"
    if marker == "overlay":
        return _overlay_works()
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that take the `docker` fixture form one xdist group (--dist loadgroup): a
    # worker that finds no daemon starts its own (seconds each).  pytest 9.2 drops the
    # group (pytest-xdist#1386), so `docker_one_at_a_time` below also serialises them.
    for item in items:
        if isinstance(item, pytest.Function) and "docker" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("docker"))


@pytest.fixture(autouse=True)
def docker_one_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that runs containers holds a lock shared by the xdist workers.  With two
    workers, each with a private dockerd, two of four CI runs had a container come up
    without its image's files (``exec: "nginx": executable file not found``, exit
    126/127 from ``docker run``) while the image itself was right (``docker image
    inspect``, ``pybuild history``), and the test passes alone.  The cause was not
    found; this keeps the two daemons from working at the same time."""
    if "docker" not in request.fixturenames:
        yield
        return
    lock = os.open("/tmp/pybuild-tests-docker.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC,
                   0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # "docker" tests take the `docker` fixture, which starts a daemon when none answers.
    for marker in ("root", "overlay"):
        if item.get_closest_marker(marker) is None:
            continue
        reason = _missing(marker)
        if reason is None:
            continue
        _fail_or_skip(reason)


@pytest.fixture
def store(tmp_path: Path):
    from builder.store import Store

    store = Store(tmp_path / "store")
    yield store
    store.close()


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs tarball made from the host's static busybox."""
    if not Path("/bin/busybox").exists():
        _fail_or_skip("/bin/busybox missing (apt-get install busybox-static)")
    out = tmp_path_factory.mktemp("busybox") / "busybox.tar"
    subprocess.run([str(TESTDATA / "busybox-rootfs.sh"), str(out)], check=True)
    return out


@pytest.fixture
def busybox(store, busybox_tar: Path) -> str:
    """The name of a busybox base image in the test's store."""
    from builder.image.importer import import_tarball
    from builder.platforms import Platform

    import_tarball(store, str(busybox_tar), "busybox", platform=Platform("linux", "amd64"))
    return "busybox"


@pytest.fixture(scope="session")
def debian_tar() -> Path:
    """A Debian bookworm minbase rootfs tarball, made once with debootstrap and cached
    under a name that changes with the script that makes it (so a changed script
    never meets a stale tarball)."""
    script = TESTDATA / "debian-rootfs.sh"
    target = CACHE / f"bookworm-minbase-{hashlib.sha256(script.read_bytes()).hexdigest()[:12]}.tar"
    if target.exists():
        return target
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        _fail_or_skip("debootstrap (as root) is needed to make a Debian base image")
    CACHE.mkdir(parents=True, exist_ok=True)
    # pytest-xdist workers may all need it at once: one makes it, the others wait
    # (the script writes TARGET.tmp, which two runs at once would share).
    with open(CACHE / ".debian-rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            subprocess.run([str(script), str(target)], check=True)
    return target


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test, but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment for the ``docker`` CLI that talks to a working daemon."""
    if shutil.which("docker") is None or shutil.which("dockerd") is None:
        _fail_or_skip("docker.io is not installed (apt-get install docker.io)")
    env = dict(os.environ)
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        yield env
        return
    if os.geteuid() != 0:
        _fail_or_skip("no Docker daemon answers, and starting one needs root")
    # A private daemon: its own socket, data and exec roots, no iptables or bridge.
    base = Path("/tmp") / f"pybuild-dockerd-{os.getpid()}"
    base.mkdir()
    socket = base / "docker.sock"
    log = open(base / "dockerd.log", "wb")  # noqa: SIM115 - closed at teardown
    daemon = subprocess.Popen(
        ["dockerd", "--iptables=false", "--bridge=none", f"--host=unix://{socket}",
         f"--data-root={base / 'data'}", f"--exec-root={base / 'exec'}",
         f"--pidfile={base / 'dockerd.pid'}"], stdout=log, stderr=log)
    env["DOCKER_HOST"] = f"unix://{socket}"
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "info"], env=env, capture_output=True).returncode:
            if daemon.poll() is not None or time.monotonic() > deadline:
                _fail_or_skip("dockerd did not start: "
                              + (base / "dockerd.log").read_text()[-500:])
            time.sleep(0.5)
        yield env
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        # dockerd leaves mounts behind (its data root, exec/netns/default): unmount
        # everything under base, deepest first, before removing it.
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                  .splitlines() if line.split()[4].startswith(str(base))]
        for target in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def bstore(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Path:
    """A store directory holding the ``busybox`` image; builds in one module share it
    (and its cache, which only makes reruns of identical steps cheaper)."""
    root = tmp_path_factory.mktemp("bstore") / "store"
    _run_cli("import", str(busybox_tar), "busybox", root=root)
    return root


@pytest.fixture
def sandbox(tmp_path: Path):
    from security.oracle import Sandbox

    sb = Sandbox(tmp_path / "sb")
    try:
        yield sb
        sb.assert_no_breakout()
    finally:
        sb.cleanup()


@pytest.fixture
def differential_url_server() -> Iterator[None]:
    """testdata/differential/add_url served on 127.0.0.1:18765, the port its cases name.
    Held under a lock the xdist workers share (their groups are not kept: see above),
    so that one test at a time serves it."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(TESTDATA / "differential" / "add_url"))

    class Quiet(http.server.ThreadingHTTPServer):
        pass

    handler_cls: Any = handler
    with open(Path(tempfile.gettempdir()) / "pybuild-tests-port-18765.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            server = Quiet(("127.0.0.1", 18765), handler_cls)
        except OSError as err:
            pytest.skip(f"port 18765 for add_url is taken: {err}")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def rootless_user() -> Iterator[nonroot.User]:
    """A fresh user with subordinate ids, for pybuild's rootless mode (docs/rootless.md),
    with SOURCE_DATE_EPOCH=0 fixing every time its builds record."""
    nonroot.rootless_ready()
    with nonroot.nonroot_user() as made:
        made.env["SOURCE_DATE_EPOCH"] = "0"
        yield made


@pytest.fixture(scope="session")
def emulation_ready(tmp_path_factory: pytest.TempPathFactory) -> None:
    """arm64 runs through QEMU here: ``pybuild doctor --enable-emulation`` has run."""
    import emulated

    if (why := emulated.enable(tmp_path_factory.mktemp("doctor") / "store")) is not None:
        _fail_or_skip(why)


@pytest.fixture
def arm64_emulation(emulation_ready: None) -> Iterator[None]:
    """arm64's handler stays on for the test (see tests/emulated.py)."""
    import emulated

    with emulated.binfmt_lock(exclusive=False):
        yield


@pytest.fixture(scope="session")
def busybox_arm64_tar(tmp_path_factory: pytest.TempPathFactory, emulation_ready: None) -> Path:
    """A busybox rootfs tarball from Debian's busybox-static:arm64."""
    import emulated

    with emulated.binfmt_lock(exclusive=False):
        made = emulated.busybox_arm64_tar(CACHE / "debs", tmp_path_factory.mktemp("bb-arm64"))
    if isinstance(made, str):
        _fail_or_skip(made)
    assert isinstance(made, Path)
    return made


@pytest.fixture
def two_arch_store(tmp_path: Path, busybox_tar: Path, busybox_arm64_tar: Path,
                   arm64_emulation: None) -> Path:
    """A store with ``bb-amd64`` and ``bb-arm64`` (arm64 runs through QEMU meanwhile)."""
    store = tmp_path / "store"
    _run_cli("import", "--platform", "linux/amd64", str(busybox_tar), "bb-amd64", root=store)
    _run_cli("import", "--platform", "linux/arm64", str(busybox_arm64_tar), "bb-arm64",
             root=store)
    return store
