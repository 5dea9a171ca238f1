"""Helpers shared by test modules (conftest.py holds the fixtures)."""

from __future__ import annotations

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
