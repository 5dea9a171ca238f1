"""A real non-root user for tests: made with ``useradd``, run with ``runuser``,
removed with ``userdel`` (tests that use it carry the ``root`` marker).

The user runs ``python -m builder`` with this checkout and the venv's packages on
PYTHONPATH.  The venv's own interpreter may live where the user cannot reach it
(pyenv under /root, mode 0700): then another interpreter of the same version is
used (the venv's packages are built for that version).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import REPO

_TIMEOUT = 300
_MADE = itertools.count()  # several users alive at once in one test process


@dataclass
class User:
    name: str
    uid: int
    home: Path                      # 0700, the user's; the default store goes under it
    python: str
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, stdin: bytes | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        """``pybuild ARGS`` as this user (its default store: ~/.local/share/pybuild)."""
        command = ["runuser", "-u", self.name, "--", "env", "-i",
                   *(f"{k}={v}" for k, v in self.env.items()), self.python, "-m", "builder",
                   *args]
        return subprocess.run(command, capture_output=True, input=stdin if stdin is not None
                              else b"", cwd=cwd or self.home, timeout=_TIMEOUT)

    def own(self, path: Path) -> Path:
        """Hand ``path`` (a file made by the test) to the user."""
        os.chown(path, self.uid, -1)
        return path


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test, but: {reason}", pytrace=False)
    pytest.skip(reason)


def _interpreter(name: str, env: dict[str, str]) -> str | None:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, getattr(sys, "_base_executable", ""),
                      shutil.which(version) or "", f"/usr/bin/{version}"):
        if not candidate:
            continue
        probe = subprocess.run(["runuser", "-u", name, "--", "env", "-i",
                                *(f"{k}={v}" for k, v in env.items()), candidate, "-c",
                                "import builder.cli, lark, zstandard"],
                               capture_output=True, timeout=_TIMEOUT)
        if probe.returncode == 0:
            return candidate
    return None


def _subordinate_ids(name: str, wanted: bool) -> None:
    """Give the user subordinate uids and gids (useradd does on Debian, from
    /etc/login.defs; added here where it does not), or take them away."""
    have = any(line.split(":", 1)[0] == name
               for line in Path("/etc/subuid").read_text().splitlines()) \
        if Path("/etc/subuid").exists() else False
    if wanted and not have:
        start = 2_000_000 + (os.getpid() % 30_000) * 65_536
        ids = f"{start}-{start + 65_535}"
        subprocess.run(["usermod", "--add-subuids", ids, "--add-subgids", ids, name],
                       check=True, capture_output=True)
    elif not wanted:
        subprocess.run(["usermod", "--del-subuids", "1-4294967294", "--del-subgids",
                        "1-4294967294", name], check=True, capture_output=True)


def rootless_ready() -> None:
    """What rootless builds with the default network need of the machine (.ci/run
    sets it up; docs/rootless.md)."""
    if shutil.which("newuidmap") is None:
        _unavailable("newuidmap missing (apt-get install uidmap)")
    for device in ("/dev/net/tun", "/dev/fuse"):  # slirp4netns, fuse-overlayfs
        if stat.S_IMODE(os.stat(device).st_mode) & 0o006 != 0o006:
            _unavailable(f"{device} is not 0666 (udev's mode; chmod 0666 {device})")
    if shutil.which("fuse-overlayfs") is None:
        _unavailable("fuse-overlayfs missing (apt-get install fuse-overlayfs)")


@contextmanager
def nonroot_user(*, subordinate_ids: bool = True) -> Iterator[User]:
    """A fresh user (rootless mode: with subordinate ids unless told otherwise)."""
    if os.geteuid() != 0:
        _unavailable("making a user needs root")
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        _unavailable("useradd/runuser missing (apt-get install passwd util-linux)")
    name = f"pbt{os.getpid()}x{next(_MADE)}"
    home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell",
                    "/bin/sh", name], check=True, capture_output=True)
    try:
        _subordinate_ids(name, subordinate_ids)
        uid = pwd.getpwnam(name).pw_uid
        os.chown(home, uid, pwd.getpwnam(name).pw_gid)
        os.chmod(home, 0o700)
        paths = dict.fromkeys([str(REPO), sysconfig.get_paths()["purelib"],
                               sysconfig.get_paths()["platlib"]])
        env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin",
               "LANG": "C.UTF-8", "PYTHONPATH": os.pathsep.join(paths),
               "PYTHONDONTWRITEBYTECODE": "1"}
        python = _interpreter(name, env)
        if python is None:
            _unavailable(f"no Python {sys.version_info[:2]} the user {name} may run "
                         "with this venv's packages")
        yield User(name, uid, home, str(python), env)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
