"""Helpers shared by test modules (conftest.py holds the fixtures)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO / "testdata"


def run_cli(*args: str, root: Path | str, check: bool = True,
            stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real ``pybuild`` command line in a subprocess."""
    result = subprocess.run([sys.executable, "-m", "builder", "--root", str(root), *args],
                            capture_output=True, input=stdin, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stderr.decode()}")
    return result


def mounts_under(root: Path) -> list[str]:
    """Mount entries, in any process's mount namespace, that mention ``root``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                text = Path(f"/proc/{entry.name}/mountinfo").read_text()
            except OSError:
                continue  # the process went away
            found += [line for line in text.splitlines() if str(root) in line]
    return found


def processes(argv: list[bytes]) -> list[int]:
    """PIDs of processes whose command line starts with ``argv``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.split(b"\0")[: len(argv)] == argv:
                found.append(int(entry.name))
    return found
