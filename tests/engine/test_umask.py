"""A build's result does not depend on the invoker's umask.

runc sets umask 0022 for every container process (opencontainers/runc
libcontainer/rootfs_linux.go), and the step's root is 0755; pybuild used to pass its
own umask to RUN steps and to the overlay upper dir, so ``umask 000; pybuild build``
made world-writable files and a world-writable ``/`` in the image.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.overlay]


def _build_with_umask(root: Path, tmp_path: Path, umask: int) -> str:
    context = tmp_path / f"ctx{umask:o}"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox\nRUN touch /f && mkdir /d && stat -c '%a' / /f /d > /modes\n")
    out = tmp_path / f"out{umask:o}"

    def set_umask() -> None:
        os.umask(umask)

    subprocess.run([sys.executable, "-m", "builder", "--root", str(root), "build", "-q",
                    "--no-cache", "-o", f"type=local,dest={out}", str(context)],
                   check=True, capture_output=True, preexec_fn=set_umask)
    return (out / "modes").read_text()


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_run_steps_see_umask_022_and_a_0755_root(store, busybox, tmp_path, umask) -> None:
    assert _build_with_umask(store.root, tmp_path, umask) == "755\n644\n755\n"
