"""arm64 under QEMU for the tests: the machine's binfmt_misc handlers, held under a lock.

binfmt_misc is the whole machine's, so the tests that switch arm64's handler off
(to see a build refused) take the lock exclusively and the tests that run arm64
steps take it shared; the xdist workers share it (``/tmp``).  The handlers are
registered by ``pybuild doctor --enable-emulation``, as a user would, once per
session.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import TESTDATA, run_cli

LOCK = "/tmp/pybuild-tests-binfmt.lock"
ARM64_HANDLER = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


@contextmanager
def binfmt_lock(exclusive: bool) -> Iterator[None]:
    fd = os.open(LOCK, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def enable(root: Path) -> str | None:
    """Run ``pybuild doctor --enable-emulation``; None when arm64 then runs, else why not."""
    if shutil.which("qemu-aarch64-static") is None:
        return "qemu-user-static is not installed (apt-get install qemu-user-static)"
    with binfmt_lock(exclusive=True):
        result = run_cli("doctor", "--enable-emulation", root=root, check=False)
    out = result.stdout.decode()
    if "linux/arm64 (qemu-aarch64)" not in out:
        return f"pybuild doctor --enable-emulation did not enable arm64: {out[-400:]!r}"
    return None


def busybox_arm64_tar(cache: Path, work: Path) -> Path | str:
    """A busybox rootfs tarball from Debian's busybox-static:arm64 (the .deb kept in
    ``cache``); a str says why it could not be made.  Needs arm64 emulation: the
    rootfs script asks busybox for its applets."""
    debs = sorted(cache.glob("busybox-static_*_arm64.deb"))
    if not debs:
        cache.mkdir(parents=True, exist_ok=True)
        got = subprocess.run(["apt-get", "download", "busybox-static:arm64"], cwd=cache,
                             capture_output=True, text=True, timeout=300)
        debs = sorted(cache.glob("busybox-static_*_arm64.deb"))
        if not debs:
            return ("apt-get download busybox-static:arm64 failed (dpkg --add-architecture "
                    f"arm64 && apt-get update first?): {got.stderr.strip()[-300:]}")
    unpacked = work / "deb"
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(unpacked)], check=True)
    out = work / "busybox-arm64.tar"
    subprocess.run([str(TESTDATA / "busybox-rootfs.sh"), str(out)], check=True,
                   env={**os.environ, "BUSYBOX": str(unpacked / "bin" / "busybox")})
    return out


@contextmanager
def arm64_switched_off() -> Iterator[None]:
    """arm64's handler disabled for the duration (nothing else emulates arm64 then)."""
    with binfmt_lock(exclusive=True):
        registered = ARM64_HANDLER.exists()
        if registered:
            ARM64_HANDLER.write_text("0", encoding="ascii")
        try:
            yield
        finally:
            if registered:
                ARM64_HANDLER.write_text("1", encoding="ascii")
