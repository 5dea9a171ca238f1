"""Disk full (catalogue REL-4, REL-8): the build that hits it fails with one line, and
nothing already in the store is lost; after freeing space the same build succeeds.

The store lives on its own 20 MiB tmpfs (``--root`` on it), so "full" is real ENOSPC
from the kernel, in the two places a build writes a lot: a RUN step's upper dir,
and a layer blob written into the store at export.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import fails_in_one_line, run_cli
from relcommon import ENV, assert_store_clean, new_store

pytestmark = [pytest.mark.root, pytest.mark.overlay]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mountpoint)],
                   check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def _grow(mountpoint: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=80m", str(mountpoint)], check=True)


def _build(root: Path, context: Path, *extra: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, "-m", "builder", "--root", str(root), "build",
                           "--progress", "plain", *extra, str(context)],
                          capture_output=True, env={**os.environ, **ENV})


def _context(path: Path, big_step: str) -> Path:
    path.mkdir()
    (path / "Dockerfile").write_text(f"FROM busybox\nRUN echo small > /small\n{big_step}\n")
    return path


def test_run_that_fills_the_disk(small_fs: Path, tmp_path: Path, busybox_tar: Path) -> None:
    root = new_store(small_fs / "store", busybox_tar)
    context = _context(tmp_path / "ctx", "RUN dd if=/dev/zero of=/big bs=1M count=40")
    failed = _build(root, context)
    err = failed.stderr.decode()
    assert failed.returncode == 1
    assert "No space left on device" in err and "did not complete successfully" in err
    assert "Traceback" not in err
    assert_store_clean(root)
    run_cli("save", "-o", str(tmp_path / "busybox.tar"), "busybox", root=root)  # intact
    _grow(small_fs)
    again = _build(root, context)
    assert again.returncode == 0, again.stderr.decode()
    assert "RUN echo small > /small\n#2 CACHED" in again.stderr.decode()  # kept
    assert_store_clean(root)


def test_blob_write_that_fills_the_disk(small_fs: Path, tmp_path: Path,
                                        busybox_tar: Path) -> None:
    """The layer fits, its compressed blob does not: the export's blob write fails."""
    root = new_store(small_fs / "store", busybox_tar)
    context = _context(tmp_path / "ctx", "RUN head -c 9000000 /dev/urandom > /big")
    out = tmp_path / "image.tar"
    failed = _build(root, context, "-o", f"type=oci,dest={out}")
    err = failed.stderr.decode()
    assert failed.returncode == 1, err
    assert "no space left on device on the filesystem holding" in err
    assert "Traceback" not in err and len(err.strip().splitlines()[-1]) < 300
    assert not out.exists()
    assert_store_clean(root)
    assert not list((root / "blobs").glob(".incoming-*"))
    _grow(small_fs)
    again = _build(root, context, "-o", f"type=oci,dest={out}")
    assert again.returncode == 0, again.stderr.decode()
    assert again.stderr.decode().count("CACHED") == 2  # both layers were kept
    assert out.stat().st_size > 9_000_000
    assert_store_clean(root)


def test_copy_that_fills_the_disk(small_fs: Path, tmp_path: Path, busybox_tar: Path) -> None:
    """A COPY of files bigger than the store's filesystem (written on the copy's worker
    threads) fails in one line naming the step and the cause, not the helper's
    "internal error"; nothing is left behind and the next build, with room, works."""
    root = new_store(small_fs / "store", busybox_tar)
    context = _context(tmp_path / "ctx", "COPY files/ /files/")
    for folder in range(3):   # files of new directories: the copy's pooled path
        (context / "files" / f"d{folder}").mkdir(parents=True)
        for index in range(4):
            (context / "files" / f"d{folder}" / f"f{index}").write_bytes(
                os.urandom(1 << 20) * 2)
    failed = _build(root, context)
    assert failed.returncode == 1, failed.stderr.decode()
    fails_in_one_line(failed, "Dockerfile:3: COPY files/ /files/: cannot write the copied "
                              "files: No space left on device")
    assert "internal error" not in failed.stderr.decode()
    assert_store_clean(root)
    _grow(small_fs)
    again = _build(root, context)
    assert again.returncode == 0, again.stderr.decode()
    assert_store_clean(root)
