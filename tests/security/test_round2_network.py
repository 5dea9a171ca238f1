"""Round 2, point 3: RUN's default network is a namespace of its own (docs/security.md).

A RUN step used to share the host's network namespace (with CAP_NET_RAW): it
could reach services bound to the host's 127.0.0.1 and sniff loopback traffic.
Now each step gets its own namespace, online through slirp4netns with
``--disable-host-loopback``, as ``docker build`` gives it; ``--network host`` is
the explicit opt-in.  Every service here binds 127.0.0.1 or lives in a network
namespace the test makes itself; only the ``network`` tests reach Debian's and
PyPI's servers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import processes, run_cli
from security.oracle import build, one_line_error

pytestmark = [pytest.mark.root, pytest.mark.overlay]

NC = "nc -w 3 {addr} {port} </dev/null 2>/dev/null"
GATEWAY, DNS = "10.0.2.2", "10.0.2.3"   # slirp4netns's virtual host and DNS forwarder


class Bait:
    """A TCP service on the host's 127.0.0.1 that hands every caller a secret."""

    def __init__(self) -> None:
        self.secret = f"host-only-{uuid.uuid4().hex}"
        self.callers: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 600  # bounded, whatever happens to the test
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            self.callers.append(peer[0])
            with conn:
                conn.sendall(self.secret.encode() + b"\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def bait() -> Iterator[Bait]:
    service = Bait()
    try:
        yield service
    finally:
        service.close()


def _probe(bait: Bait, *addrs: str) -> str:
    """A RUN line that tries ``bait`` at each address and records what came back."""
    return "RUN " + "; ".join(f"echo \"{a}=$({NC.format(addr=a, port=bait.port)})\" >> /probe"
                              for a in addrs) + "; true\n"


def _probed(out: Path) -> dict[str, str]:
    lines = (out / "probe").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_default_network_cannot_reach_the_hosts_loopback(bstore, tmp_path, bait):
    out = tmp_path / "out"
    build(bstore, tmp_path, "FROM busybox\n"
          + _probe(bait, "127.0.0.1", GATEWAY, DNS, "10.0.2.255")
          + "RUN ls /sys/class/net > /ifaces; cat /proc/net/dev > /netdev\n",
          out, "--no-cache")
    probed = _probed(out)
    assert set(probed) == {"127.0.0.1", GATEWAY, DNS, "10.0.2.255"}
    for addr, answer in probed.items():
        assert bait.secret not in answer, f"a default-network step reached the host's {addr}"
    assert bait.callers == [], bait.callers
    # Its own namespace: only lo and the stack's tap, none of the host's interfaces.
    assert (out / "ifaces").read_text().split() == ["lo", "tap0"]
    assert "eth0" not in (out / "netdev").read_text()


def test_host_network_is_the_explicit_opt_in(bstore, tmp_path, bait):
    out = tmp_path / "out"
    build(bstore, tmp_path, "FROM busybox\n" + _probe(bait, "127.0.0.1"), out,
          "--no-cache", "--network", "host")
    assert _probed(out)["127.0.0.1"] == bait.secret
    assert bait.callers == ["127.0.0.1"]


def test_network_none_has_only_loopback(bstore, tmp_path, bait):
    out = tmp_path / "out"
    build(bstore, tmp_path, "FROM busybox\n" + _probe(bait, "127.0.0.1", GATEWAY)
          + "RUN ls /sys/class/net > /ifaces\n", out, "--no-cache", "--network", "none")
    assert bait.secret not in (out / "probe").read_text()
    assert bait.callers == []
    assert (out / "ifaces").read_text().split() == ["lo"]


def test_run_network_flags_against_the_default(bstore, tmp_path):
    # RUN --network=default is the build's network; =host needs the invoker's --network host.
    out = tmp_path / "out"
    build(bstore, tmp_path, "FROM busybox\nRUN --network=default ls /sys/class/net > /a\n"
          "RUN --network=none ls /sys/class/net > /b\n", out, "--no-cache")
    assert (out / "a").read_text().split() == ["lo", "tap0"]
    assert (out / "b").read_text().split() == ["lo"]
    result = build(bstore, tmp_path, "FROM busybox\nRUN --network=host true\n", None,
                   "--no-cache", check=False)
    assert "--network=host is not allowed" in one_line_error(result)
    build(bstore, tmp_path, "FROM busybox\nRUN --network=host true\n", None,
          "--no-cache", "--network", "host")


def _build_with_path(root: Path, context: Path, path: str, *args: str
                     ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", "--root", str(root), "build",
                           "--progress", "plain", "--no-cache", *args, str(context)],
                          capture_output=True, timeout=300, env={**os.environ, "PATH": path})


def test_missing_stack_fails_before_any_run(bstore, tmp_path):
    # PATH without slirp4netns (pybuild itself runs from sys.executable).
    empty = tmp_path / "bin"
    empty.mkdir()
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo STEP-$((40 + 2))\n")
    result = _build_with_path(bstore, context, str(empty))
    error = one_line_error(result)
    assert error.startswith("pybuild: "), error
    for needed in ("slirp4netns", "apt-get install slirp4netns", "--network host",
                   "--network none"):
        assert needed in error, error
    assert b"STEP-42" not in result.stdout + result.stderr  # the RUN never ran
    # The named alternatives do work without it.
    for network in ("none", "host"):
        ok = _build_with_path(bstore, context, str(empty), "--network", network)
        assert ok.returncode == 0, ok.stderr.decode()
        assert b"STEP-42" in ok.stderr


def test_a_stack_that_fails_is_a_one_line_error(bstore, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "slirp4netns"
    fake.write_text("#!/bin/sh\necho 'cannot open tap: boom' >&2\nexit 1\n")
    fake.chmod(0o755)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo STEP-$((40 + 2))\n")
    result = _build_with_path(bstore, context, str(bin_dir))
    error = one_line_error(result)
    assert "slirp4netns did not bring up the step's network: cannot open tap: boom" in error
    assert b"STEP-42" not in result.stdout + result.stderr


def test_loopback_resolver_becomes_the_stacks_forwarder(bstore, tmp_path, bait):
    # A host whose resolv.conf names 127.0.0.1 (a local dnsmasq; 127.0.0.53 for
    # systemd-resolved): the step gets slirp4netns's forwarder in its place, and
    # the forwarder is no way to the host's other loopback services.
    fake = tmp_path / "resolv.conf"
    fake.write_text("nameserver 127.0.0.1\nnameserver 192.0.2.99\nsearch example.test\n")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN cat /etc/resolv.conf > /r\n"
                                        + _probe(bait, DNS))
    out = tmp_path / "out"
    pybuild = [sys.executable, "-m", "builder", "--root", str(bstore), "build", "--no-cache",
               "-o", f"type=local,dest={out}", str(context)]
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script, str(fake), *pybuild],
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    lines = (out / "r").read_text().splitlines()
    assert lines == [f"nameserver {DNS}", "nameserver 192.0.2.99", "search example.test"]
    assert bait.secret not in _probed(out)[DNS]
    assert bait.callers == []


def test_resolv_conf_filtering() -> None:
    from builder.run.network import resolv_conf

    assert resolv_conf(b"nameserver 10.1.1.1\n") == b"nameserver 10.1.1.1\n"
    assert resolv_conf(b"nameserver 127.0.0.53\noptions ndots:2\n") == \
        f"nameserver {DNS}\noptions ndots:2\n".encode()
    assert resolv_conf(b"nameserver ::1\nnameserver fd00::1\nnameserver 10.1.1.1\n") == \
        f"nameserver {DNS}\nnameserver 10.1.1.1\n".encode()
    assert resolv_conf(b"nameserver bogus\n") == f"nameserver {DNS}\n".encode()
    assert resolv_conf(b"") == f"nameserver {DNS}\n".encode()


# -- outbound: a server in a network namespace this test makes ----------------
@pytest.fixture
def outside() -> Iterator[tuple[str, str, int, Path]]:
    """A TCP server in a network namespace of its own (``unshare --net``: it dies with
    the server), routed from the host over a veth pair; yields (host side, server
    address, port, server log)."""
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        pytest.skip("iproute2 and util-linux are needed")
    tag = uuid.uuid4().hex[:6]
    net = f"10.213.{int(tag[:2], 16)}"
    host_side, inside = f"{net}.1", f"{net}.2"
    host_if = f"va2{tag}"
    log = Path(f"/tmp/pyb-a2-{tag}.log")
    code = ("import socket,sys,time\n"
            "end=time.monotonic()+300\n"
            "while True:\n"  # until the test has configured the address (bounded)
            "    try: s=socket.socket(); s.bind((sys.argv[1],0)); break\n"
            "    except OSError:\n"
            "        s.close(); assert time.monotonic()<end; time.sleep(0.05)\n"
            "s.listen(4); s.settimeout(1); print(s.getsockname()[1], flush=True)\n"
            "while time.monotonic()<end:\n"
            "    try: c,p=s.accept()\n"
            "    except TimeoutError: continue\n"
            "    print('from', p[0], flush=True); c.sendall(b'outside-ok\\n'); c.close()\n")
    with open(log, "wb") as sink:
        server = subprocess.Popen(["unshare", "--net", sys.executable, "-c", code, inside],
                                  stdout=sink)
    ns = ["nsenter", "-t", str(server.pid), "-n"]
    try:
        deadline = time.monotonic() + 30
        while os.readlink(f"/proc/{server.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline and server.poll() is None, "unshare failed"
            time.sleep(0.01)  # the veth's peer must land in the new namespace, not here
        for argv in (["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth9",
                      "netns", str(server.pid)],
                     ["ip", "addr", "add", f"{host_side}/30", "dev", host_if],
                     ["ip", "link", "set", host_if, "up"],
                     [*ns, "ip", "addr", "add", f"{inside}/30", "dev", "eth9"],
                     [*ns, "ip", "link", "set", "eth9", "up"],
                     [*ns, "ip", "link", "set", "lo", "up"]):
            made = subprocess.run(argv, capture_output=True, text=True)
            assert made.returncode == 0, f"{' '.join(argv)}: {made.stderr}"
        deadline = time.monotonic() + 30
        while not log.read_text().strip():
            assert time.monotonic() < deadline and server.poll() is None, "server did not start"
            time.sleep(0.05)
        yield host_side, inside, int(log.read_text().split()[0]), log
    finally:
        server.kill()
        server.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)  # gone already
        log.unlink(missing_ok=True)


def test_default_network_reaches_out(bstore, tmp_path, outside):
    host_side, addr, port, log = outside
    out = tmp_path / "out"
    build(bstore, tmp_path, f"FROM busybox\nRUN {NC.format(addr=addr, port=port)} > /got\n",
          out, "--no-cache")
    assert (out / "got").read_text() == "outside-ok\n"
    # It came from the host's side of the veth: through the stack, not a tap of its own.
    assert f"from {host_side}" in log.read_text()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(
                int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _is_slirp(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"slirp4netns")
    except OSError:
        return False


def test_stack_ends_with_the_step_and_on_ctrl_c(tmp_path, busybox_tar):
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN true\nRUN sleep 171\n")
    log = tmp_path / "log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "builder", "--root", str(root),
                                 "--progress", "plain", str(context)],
                                stdout=sink, stderr=sink, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not processes([b"sleep", b"171"]):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # The first step's stack is gone and reaped (no zombie); the second's runs.
        below = _descendants(proc.pid)
        stacks = [pid for pid in below if _is_slirp(pid)]
        assert len(stacks) == 1, stacks
        assert not [pid for pid in below if _state(pid) == "Z"]
        # pybuild's own child, in a session of its own (a terminal's ^C goes to pybuild).
        assert os.getsid(stacks[0]) == stacks[0]
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not _is_slirp(stacks[0]), "slirp4netns outlived the interrupted step"
    assert not Path(f"/proc/{stacks[0]}").exists(), "slirp4netns was not reaped"


# -- real outbound: Debian's mirror and PyPI ---------------------------------
@pytest.mark.network
@pytest.mark.slow
def test_apt_get_and_pip_install_on_the_default_network(tmp_path, debian_tar):
    root = tmp_path / "store"
    run_cli("import", str(debian_tar), "debian:bookworm", root=root)
    context = tmp_path / "ctx"
    context.mkdir()
    # This machine's CA bundle (it may trust a TLS-inspecting egress proxy) for pip.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", context / "ca.crt")
    (context / "Dockerfile").write_text(
        "FROM debian:bookworm\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends python3-pip\n"
        "RUN --mount=type=bind,source=ca.crt,target=/tmp/ca.crt "
        "pip install --cert /tmp/ca.crt --no-cache-dir --break-system-packages six==1.16.0\n"
        "RUN python3 -c 'import six; print(six.__version__)' > /six-version\n")
    out = tmp_path / "out"
    result = run_cli("build", "--progress", "plain", "-o", f"type=local,dest={out}",
                     str(context), root=root, check=False)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert (out / "six-version").read_text().strip() == "1.16.0"
