"""A step's writes reach the disk while it runs (builder.snapshot.writeback): the
commit's own sync then finds little left.  Whether a file's pages are still dirty is
asked of the kernel with cachestat(2)."""

from __future__ import annotations

import ctypes
import os
import platform
import time
from pathlib import Path

import pytest

from builder.snapshot.writeback import EarlyWriteback, dirty_bytes

_CACHESTAT = {"x86_64": 451, "aarch64": 451}


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in
                ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


def _dirty_pages(path: Path) -> int:
    number = _CACHESTAT.get(platform.machine())
    if number is None:
        pytest.skip(f"cachestat(2): no syscall number known for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        found = _Stat()
        if libc.syscall(number, fd, ctypes.byref(_Range(0, 0)), ctypes.byref(found), 0) != 0:
            pytest.skip(f"cachestat(2): {os.strerror(ctypes.get_errno())} (Linux 6.5+)")
        return int(found.dirty + found.writeback)
    finally:
        os.close(fd)


def _write(path: Path, mib: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(block)


def test_a_big_write_is_on_disk_before_the_step_ends(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with EarlyWriteback(tmp_path, threshold=0, interval=0.05) as early:
        _write(big, 64)
        assert _dirty_pages(big) > 0   # the kernel alone waits 30 s, or gigabytes
        deadline = time.monotonic() + 10
        while _dirty_pages(big) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _dirty_pages(big) == 0
    assert early.syncs >= 1


def test_nothing_is_synced_below_the_threshold_or_after_the_step(tmp_path: Path) -> None:
    with EarlyWriteback(tmp_path, threshold=1 << 62, interval=0.02) as never:
        time.sleep(0.2)
    assert never.syncs == 0
    with EarlyWriteback(tmp_path, threshold=0, interval=0.02) as early:
        time.sleep(0.2)
    time.sleep(0.1)
    after = early.syncs
    time.sleep(0.2)
    assert after >= 1 and early.syncs == after


def test_dirty_bytes_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684000 kB\nDirty:              1234 kB\n")
    assert dirty_bytes(str(meminfo)) == 1234 * 1024
    assert dirty_bytes(str(tmp_path / "missing")) == 0
