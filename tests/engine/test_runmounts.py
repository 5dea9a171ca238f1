"""Cache-mount directories are created once, whole, when builds meet a new id together."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

from builder.engine.runmounts import _create_cache_dir

MOUNT = SimpleNamespace(mode=0o700, uid=1234, gid=5678)


def _race(directory: Path, start: threading.Barrier, errors: list[BaseException]) -> None:
    start.wait()
    try:
        _create_cache_dir(directory, MOUNT)
        info = os.stat(directory)
        assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o700, 1234, 5678)
    except BaseException as error:
        errors.append(error)


def test_a_new_cache_dir_is_created_once_by_racing_builds(tmp_path: Path):
    # Round 0 of R12 in CI: two builds both saw the id missing and the second
    # mkdir raised FileExistsError.  Each racer must come back with the
    # directory made and owned as its mount asked.
    errors: list[BaseException] = []
    for round_ in range(30):
        start = threading.Barrier(8)
        args = (tmp_path / "cache-mounts" / f"id{round_}", start, errors)
        threads = [threading.Thread(target=_race, args=args) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
