"""The default RUN network: a network namespace of its own, online through slirp4netns.

``docker build`` gives each RUN a network namespace with outbound access and no
way back to the host's loopback.  pybuild does the same with a user-mode
network stack: ``slirp4netns`` opens a tap device in the step's namespace and
turns the step's packets into ordinary socket calls made from the host's
namespace.  ``--disable-host-loopback`` stops the gateway (10.0.2.2) from
standing for the host's 127.0.0.1, so neither the host's loopback services nor
its loopback traffic (a concurrent push's registry credentials) reach a step.

slirp4netns rather than pasta: it is what rootless Docker, BuildKit and podman
have used for years, it numbers the namespace 10.0.2.0/24 instead of copying the
host's addresses and interface name into it, and ``--enable-sandbox`` and
``--enable-seccomp`` take its capabilities and most syscalls away while it
parses the step's packets as root.  Debian 12's pasta (0.0~git20230309), run
as root, could not join a step's namespace here ("Couldn't open network
namespace", with its default drop to ``nobody`` and with ``--runas 0``).

pybuild forks the stack's launcher right after the step's setup child
(``launch``); it waits until the setup child has made the namespace
(``attach``), then execs slirp4netns, which runs in the host's namespaces, in a
session of its own (a terminal's Ctrl-C goes to pybuild, which ends it), and
dies with pybuild: the kernel's parent-death signal, and ``--exit-fd``, whose
write end pybuild holds.  ``stop`` ends and reaps it when the step is over,
however it ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import select
import shutil
import signal
import time

import msgspec

from builder import syscalls
from builder.errors import BuildError, SandboxError

PROGRAM = "slirp4netns"
PACKAGE = "slirp4netns"
TAP = "tap0"
TUN_DEVICE = "/dev/net/tun"
DNS = "10.0.2.3"            # slirp4netns's DNS forwarder (to the host's resolvers)
MISSING = (f"RUN with the default network needs {PROGRAM}, which is not installed "
           f"(apt-get install {PACKAGE}); or build with --network host (not isolated) "
           "or --network none")
_READY_SECONDS = 30.0
_FD_EXIT, _FD_READY = 3, 4   # fd numbers in the stack's process


class Stack(msgspec.Struct):
    """The pipes and process of one step's slirp4netns (all fds close-on-exec)."""

    program: str
    log: str
    pid: int = 0
    go: tuple[int, int] = (-1, -1)      # setup child -> launcher: the namespace exists
    ready: tuple[int, int] = (-1, -1)   # slirp4netns -> setup child: "1", the tap is up
    exit: tuple[int, int] = (-1, -1)    # pybuild holds the write end; EOF ends slirp4netns

    @classmethod
    def open(cls, program: str, log: str) -> Stack:
        return cls(program, log, go=os.pipe2(os.O_CLOEXEC), ready=os.pipe2(os.O_CLOEXEC),
                   exit=os.pipe2(os.O_CLOEXEC))


def find_program() -> str | None:
    """The stack's executable, looked up on $PATH (so tests can hide it)."""
    return shutil.which(PROGRAM)


def require_program() -> str:
    """The stack's executable, or the one-line error naming the package and the alternatives."""
    program = find_program()
    if program is None:
        raise BuildError(MISSING)
    if (why := tun_problem()) is not None:
        raise BuildError(why)
    return program


def tun_problem() -> str | None:
    """Why slirp4netns cannot make the step's tap device, if it cannot: rootless, it
    opens /dev/net/tun as the user (root may always)."""
    if os.access(TUN_DEVICE, os.R_OK | os.W_OK):
        return None
    return (f"RUN with the default network needs {TUN_DEVICE} readable and writable "
            "by you (udev makes it 0666; without udev: chmod 0666 /dev/net/tun as root); "
            "or build with --network host (not isolated) or --network none")


def resolv_conf(host: bytes) -> bytes:
    """The step's /etc/resolv.conf from the host's, as Docker filters it.

    A loopback nameserver (127.0.0.53 of systemd-resolved, a local dnsmasq)
    means nothing in the step's namespace, and an IPv6 one is unreachable (the
    stack has no IPv6): slirp4netns's forwarder, which asks the host's
    resolvers (a loopback one too, on port 53 only), takes the first one's
    place, and is the only one when the host names none at all.
    """
    lines: list[bytes] = []
    forwarder = f"nameserver {DNS}".encode()
    servers = 0
    for line in host.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == b"nameserver":
            try:
                address = ipaddress.ip_address(fields[1].decode("ascii", "replace"))
            except ValueError:
                continue
            if address.is_loopback or address.version == 6:
                line = forwarder
                if forwarder in lines:
                    continue
            servers += 1
        lines.append(line)
    if not servers:
        lines.append(forwarder)
    return b"\n".join(lines) + b"\n"


def in_setup_child(stack: Stack) -> None:
    """In the setup child just forked: keep only its own ends (go's write, ready's read)."""
    _close(stack.go[0], stack.ready[1], *stack.exit)


def launch(stack: Stack, target: int) -> None:
    """Fork the stack's launcher from pybuild itself, after the setup child ``target``.

    pybuild, not the setup child, is its parent: so it runs in the host's network
    and mount namespaces, and pybuild reaps it however the step ends (a stopped
    build SIGKILLs every child of pybuild, then each stage's ``stop`` reaps).
    """
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _launcher(stack, parent, target)
    stack.pid = pid
    _close(*stack.go, *stack.ready, stack.exit[0])
    stack.go = stack.ready = (-1, -1)
    stack.exit = (-1, stack.exit[1])


def _launcher(stack: Stack, parent: int, target: int) -> None:
    """The stack's process until it execs slirp4netns; never returns."""
    try:
        _close(stack.go[1], stack.ready[0], stack.exit[1])  # else EOF never comes
        # Its own session: a terminal's Ctrl-C goes to pybuild, which ends it.
        os.setsid()
        syscalls.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent or os.read(stack.go[0], 1) != b"1":
            os._exit(1)  # pybuild, or the setup child, died before the namespace was made
        log = os.open(stack.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        # Only the stack's own fds survive the exec: a step's output pipe held open
        # here would keep pybuild from ever seeing that step end.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
                for fd in (stack.exit[0], stack.ready[1], null, log)]
        for fd, number in zip(high, (_FD_EXIT, _FD_READY, 0, 1), strict=True):
            os.dup2(fd, number)
        os.dup2(1, 2)
        os.closerange(_FD_READY + 1, 65536)
        os.execv(stack.program, [
            stack.program, "--configure", "--mtu=65520", "--disable-host-loopback",
            "--enable-sandbox", "--enable-seccomp", f"--exit-fd={_FD_EXIT}",
            f"--ready-fd={_FD_READY}", str(target), TAP])
    except BaseException:  # must not return into pybuild's code
        pass
    os._exit(127)


def attach(stack: Stack) -> None:
    """In the setup child, once in its new network namespace: let the stack join
    it, and wait (bounded) until the tap is configured."""
    os.write(stack.go[1], b"1")
    _close(stack.go[1])
    deadline = time.monotonic() + _READY_SECONDS
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stack.ready[0]], [], [], 0.5)
        if ready:
            if os.read(stack.ready[0], 1) == b"1":
                _close(stack.ready[0])
                return
            break  # EOF: it exited before configuring the tap
    raise SandboxError(f"{PROGRAM} did not bring up the step's network: {_log_tail(stack.log)}")


def stop(stack: Stack) -> None:
    """In pybuild, when the step is over (however it ended): end the stack and reap it.

    SIGKILL at once: the step is gone, so nothing is in flight, and waiting for
    the exit fd's EOF could wait on a sibling stage's child that inherited it.
    """
    _close(*stack.go, *stack.ready, *stack.exit)
    stack.go = stack.ready = stack.exit = (-1, -1)
    if stack.pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stack.pid, signal.SIGKILL)  # our unreaped child: the pid is still ours
        os.waitpid(stack.pid, 0)
        stack.pid = 0


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)


def _log_tail(path: str) -> str:
    try:
        with open(path, "rb") as log:
            text = log.read()[-2000:].decode(errors="replace")
    except OSError:
        return "no log"
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and "experimental" not in line]
    return lines[-1] if lines else "it exited without a message"
