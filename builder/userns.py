"""Who pybuild is: root, or an ordinary user made root of a user namespace (rootless).

Started by a user other than root, every command that touches the store (everything
but ``login``, ``logout``, ``check``, ``debug`` and a replayed rebuild) first enters
a user namespace of its own, with a mount namespace, in this process (``enter``):

* the user becomes root inside, and the user's subordinate ids (``/etc/subuid``,
  ``/etc/subgid``) become ids 1 and up, written by the set-uid ``newuidmap`` and
  ``newgidmap`` of Debian's ``uidmap``, as rootless Docker, podman and buildah do:
  a layer's files owned by uid 1000 are owned by the user's 1000th subordinate id
  on the host, never by a real user's id;
* without subordinate ids (or without ``uidmap``) the map has one id, the user's
  own (``single``): a file that another owner needs cannot be represented and the
  build says which (``builder.layers.apply``), never writes it with a wrong owner.

Inside, the process has every capability over what the namespace owns: it mounts
overlayfs (with ``userxattr``: ``user.overlay.*`` instead of ``trusted.overlay.*``),
creates 0/0 character devices (whiteouts), chowns to mapped ids and makes the RUN
steps' namespaces.  What a user namespace cannot do (a real device node, an
unmapped id, a ``trusted.*`` xattr) is what differs from root mode
(docs/rootless.md).

``rootless()`` answers "which mode is this?" anywhere, before or after entering:
not root, or root of a user namespace whose map is not the whole id space (pybuild
run as root of a container's user namespace is rootless too: the same limits hold).
It only reads ``/proc/self/uid_map``: the replayed rebuild asks without loading
ctypes.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import msgspec

from builder.errors import SandboxError

CLONE_NEWUSER = 0x10000000
_WHOLE_MAP = ((0, 0, 4294967295),)   # the initial user namespace's uid_map
_HELPERS = ("newuidmap", "newgidmap")
_HELPER_SECONDS = 30


class IdRange(msgspec.Struct, frozen=True):
    """``count`` ids from ``inside`` in the namespace are ``outside`` and up on the host."""

    inside: int
    outside: int
    count: int


class IdMap(msgspec.Struct, frozen=True):
    """The namespace's uid and gid maps, as the kernel shows them."""

    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]

    @property
    def single(self) -> bool:
        """Only the user's own id is mapped: nothing but root can own a file."""
        return sum(r.count for r in self.uids) <= 1 or sum(r.count for r in self.gids) <= 1

    def describe(self) -> str:
        def ranges(found: tuple[IdRange, ...]) -> str:
            return ", ".join(f"{r.inside}-{r.inside + r.count - 1} -> "
                             f"{r.outside}-{r.outside + r.count - 1}" for r in found)
        return f"uids {ranges(self.uids)}; gids {ranges(self.gids)}"


def _read_map(kind: str, pid: str = "self") -> tuple[IdRange, ...]:
    with open(f"/proc/{pid}/{kind}", encoding="ascii") as f:
        rows = [tuple(int(n) for n in line.split()) for line in f if line.strip()]
    return tuple(IdRange(*row) for row in rows)


@functools.cache
def rootless() -> bool:
    """True unless this process is root of the initial user namespace."""
    if os.geteuid() != 0:
        return True
    try:
        rows = _read_map("uid_map")
    except OSError:  # no /proc: nothing else in pybuild works either; say root
        return False
    return tuple((r.inside, r.outside, r.count) for r in rows) != _WHOLE_MAP


def highest_gid() -> int:
    """The highest group id this namespace maps (2147483647 as root of the host's,
    the largest a ping_group_range takes)."""
    if not rootless():
        return 2147483647
    return max(r.inside + r.count - 1 for r in _read_map("gid_map"))


def may_set_groups() -> bool:
    """False in a namespace whose map its own process wrote (``single``): the kernel
    then forbids setgroups(2), and the supplementary groups stay as they were."""
    try:
        with open("/proc/self/setgroups", encoding="ascii") as f:
            return f.read().strip() == "allow"
    except FileNotFoundError:
        return True


def unmapped(uid: int, gid: int) -> str | None:
    """Why a file cannot be owned by ``uid``/``gid`` here (rootless, not in the map);
    None if it can."""
    if not rootless():
        return None
    found = current_map()
    for kind, number, ranges in (("uid", uid, found.uids), ("gid", gid, found.gids)):
        if not any(r.inside <= number < r.inside + r.count for r in ranges):
            return (f"{kind} {number} is not mapped in this rootless build's user namespace "
                    f"({found.describe()}; docs/rootless.md: subordinate ids)")
    return None


def summary() -> str:
    """One line for ``pybuild doctor``: the mode and, rootless, the id map."""
    if not rootless():
        return "mode: root"
    try:
        return f"mode: rootless ({current_map().describe()})"
    except OSError:
        return "mode: rootless"


def current_map() -> IdMap:
    return IdMap(_read_map("uid_map"), _read_map("gid_map"))


def subordinate(path: Path, name: str, host_id: int) -> tuple[IdRange, ...]:
    """The ranges ``path`` (/etc/subuid or /etc/subgid) gives the user, numbered
    from 1 inside the namespace (0 is the user itself), in the file's order."""
    found: list[IdRange] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ()
    inside = 1
    for line in text.splitlines():
        owner, _, rest = line.strip().partition(":")
        start, _, count = rest.partition(":")
        if owner not in (name, str(host_id)) or not start.isdigit() or not count.isdigit():
            continue
        if int(count) > 0:
            found.append(IdRange(inside, int(start), int(count)))
            inside += int(count)
    return tuple(found)


def _user_name(uid: int) -> str:
    """The invoking user's name, as /etc/subuid may spell it; by number if it has none.
    Read from /etc/passwd as text, else asked of id(1) (users from LDAP and the like):
    this process never loads NSS modules (tests/security R14)."""
    try:
        with open("/etc/passwd", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split(":")
                if len(fields) > 2 and fields[2] == str(uid):
                    return fields[0]
    except OSError:
        pass
    import subprocess  # the commands that enter only: a replayed rebuild never asks

    try:
        found = subprocess.run(["id", "-un", str(uid)], capture_output=True, text=True,
                               timeout=_HELPER_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return str(uid)
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() \
        else str(uid)


class Plan(msgspec.Struct, frozen=True):
    """The maps ``enter`` will ask for, and why it falls back to one id if it does."""

    uid: int
    gid: int
    name: str
    subuids: tuple[IdRange, ...]
    subgids: tuple[IdRange, ...]
    missing_helper: str | None

    @property
    def full(self) -> bool:
        return bool(self.subuids and self.subgids) and self.missing_helper is None

    @property
    def why_single(self) -> str:
        if self.missing_helper is not None:
            return f"{self.missing_helper} is not installed (apt-get install uidmap)"
        return (f"no subordinate ids for uid {self.uid} in /etc/subuid and /etc/subgid "
                f"(add them: usermod --add-subuids 100000-165535 --add-subgids "
                f"100000-165535 {self.name})")


def plan(subuid: Path = Path("/etc/subuid"), subgid: Path = Path("/etc/subgid")) -> Plan:
    import shutil

    uid, gid = os.getuid(), os.getgid()
    name = _user_name(uid)
    missing = next((h for h in _HELPERS if shutil.which(h) is None), None)
    return Plan(uid, gid, name, subordinate(subuid, name, uid),
                subordinate(subgid, name, uid), missing)


def _map_args(host_id: int, ranges: tuple[IdRange, ...]) -> list[str]:
    args = ["0", str(host_id), "1"]
    for r in ranges:
        args += [str(r.inside), str(r.outside), str(r.count)]
    return args


def _run_helpers(target: int, wanted: Plan, go: int, report: int) -> None:
    """In the forked helper: wait until ``target`` has unshared, run newuidmap and
    newgidmap for it side by side, write their error (if any) to ``report``; never
    returns."""
    status = 1
    try:
        if os.read(go, 1) == b"y":
            # Their error output goes straight to ``report``: it is what the caller says.
            running = [os.posix_spawnp(name, [name, str(target), *_map_args(host_id, ranges)],
                                       os.environ, file_actions=[
                                           (os.POSIX_SPAWN_DUP2, report, 2)])
                       for name, host_id, ranges in (
                           ("newuidmap", wanted.uid, wanted.subuids),
                           ("newgidmap", wanted.gid, wanted.subgids))]
            codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in running]
            status = 0 if codes == [0, 0] else 1
    except BaseException as err:
        os.write(report, str(err).encode(errors="replace"))
    finally:
        os._exit(status)


def _write_single_map(wanted: Plan) -> None:
    """The one-id map an unprivileged process may write for itself."""
    with open("/proc/self/setgroups", "w", encoding="ascii") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w", encoding="ascii") as f:
        f.write(f"0 {wanted.uid} 1\n")
    with open("/proc/self/gid_map", "w", encoding="ascii") as f:
        f.write(f"0 {wanted.gid} 1\n")


def enter(wanted: Plan | None = None) -> IdMap:
    """Make this (single-threaded) process root of a new user and mount namespace
    mapped as ``wanted`` says (module docstring); returns the map in force."""
    from builder import syscalls  # ctypes: only for the commands that enter

    wanted = wanted or plan()
    helper = go_r = go_w = report_r = report_w = -1
    if wanted.full:
        go_r, go_w = os.pipe()
        report_r, report_w = os.pipe()
        helper = os.fork()
        if helper == 0:
            os.close(go_w)
            os.close(report_r)
            _run_helpers(os.getppid(), wanted, go_r, report_w)
        os.close(go_r)
        os.close(report_w)
    unshared = False
    try:
        syscalls.unshare(CLONE_NEWUSER | syscalls.CLONE_NEWNS)
        unshared = True
    except OSError as err:
        raise SandboxError(f"rootless mode needs an unprivileged user namespace, and "
                           f"unshare(CLONE_NEWUSER) failed: {os.strerror(err.errno or 0)} "
                           "(is user.max_user_namespaces 0, or does a seccomp or AppArmor "
                           "profile forbid it?); or run pybuild as root") from None
    finally:
        if helper > 0:  # "y" runs the helpers; end of file, unshare failed: it just exits
            if unshared:
                os.write(go_w, b"y")
            os.close(go_w)
            _, status = os.waitpid(helper, 0)
            with os.fdopen(report_r, "rb") as f:
                said = f.read().decode(errors="replace").strip().splitlines()
            # Both helpers write here; when both fail, newuidmap's line is the one said,
            # whichever finished first.
            why = min(said, key=lambda line: not line.startswith(_HELPERS[0]),
                      default="newuidmap or newgidmap failed")
    if helper > 0 and status != 0:
        raise SandboxError(f"rootless mode could not map the subordinate ids: {why}")
    if helper < 0:
        _write_single_map(wanted)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    if wanted.full:
        os.setgroups([])
    # Nothing mounted in here (overlays, RUN steps' roots) is seen outside, whatever
    # the host's propagation.
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    rootless.cache_clear()
    return current_map()
