"""Helpers shared by test modules (conftest.py holds the fixtures)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
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


def _proc_files(name: str) -> Iterator[tuple[int, bytes]]:
    """(pid, content of /proc/PID/NAME) for every process still there to read it."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                yield int(entry.name), Path(f"/proc/{entry.name}/{name}").read_bytes()
            except OSError:
                continue  # the process went away


def mounts_under(root: Path) -> list[str]:
    """Mount entries, in any process's mount namespace, that mention ``root``."""
    return [line for _, text in _proc_files("mountinfo")
            for line in text.decode(errors="replace").splitlines() if str(root) in line]


def processes(argv: list[bytes]) -> list[int]:
    """PIDs of processes whose command line starts with ``argv``."""
    return [pid for pid, cmdline in _proc_files("cmdline")
            if cmdline.split(b"\0")[: len(argv)] == argv]


def image_config(root: Path, name: str) -> dict:
    """The config of the image ``name`` in the store at ``root``."""
    from builder.store.store import Store

    store = Store(root)
    try:
        image_id = store.resolve_image(name)
        assert image_id is not None, name
        return store.image_config(image_id)
    finally:
        store.close()


def fails_in_one_line(result: subprocess.CompletedProcess, *words: str) -> None:
    """``result`` failed with a ``pybuild:`` error line, the last of them holding
    every one of ``words``, and no traceback."""
    err = result.stderr.decode()
    assert result.returncode != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("pybuild:")]
    assert lines, err
    for word in words:
        assert word in lines[-1], err


def docker_run(args: list[str], env: dict[str, str],
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``docker run ARGS``, once more if the container started without its image's files
    (exit 126 or 127).  Debian's dockerd 20.10 here does that now and then, in about
    one CI run in three, while ``docker image inspect`` and pybuild's history show the
    image is right (conftest.docker_one_at_a_time).  A second failure is returned.
    The first goes to stderr, so it is on record."""
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "run", *args], env=env, capture_output=True,
                              text=True, timeout=timeout)

    ran = run()
    if ran.returncode not in (126, 127):
        return ran
    print(f"docker run {' '.join(args)}: exit {ran.returncode}: {ran.stderr.strip()}; "
          "once more", file=sys.stderr)
    if "--name" in args:   # the container that failed to start still holds the name
        subprocess.run(["docker", "rm", "-f", args[args.index("--name") + 1]], env=env,
                       capture_output=True)
    return run()
