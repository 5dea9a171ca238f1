"""``pybuild load`` reads stdin without ``-i`` (or with ``-i -``), as ``docker load``
does (docker/cli ``cli/command/image/load.go``: stdin by default, "requested load
from stdin, but stdin is empty" for a terminal).  The stream is spooled to a private
file in the store's tmp/ chunk by chunk, and nothing is left there afterwards.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from helpers import run_cli

from builder.store import Store


@pytest.fixture
def archive(store: Store, busybox: str, tmp_path: Path) -> bytes:
    out = tmp_path / "busybox.tar"
    run_cli("save", "-o", str(out), busybox, root=store.root)
    return out.read_bytes()


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "tmp").iterdir())


@pytest.mark.root
@pytest.mark.parametrize("args", [(), ("-i", "-")])
def test_load_reads_stdin(tmp_path: Path, archive: bytes, args: tuple[str, ...]) -> None:
    root = tmp_path / "fresh"
    result = run_cli("load", *args, root=root, stdin=archive)
    assert result.stdout.decode() == "Loaded image: busybox:latest\n"
    assert Store(root).resolve_image("busybox") is not None
    assert _leftovers(root) == []


@pytest.mark.root
@pytest.mark.parametrize(("data", "expected"), [
    (b"", "pybuild: requested load from stdin, but stdin is empty"),
    (b"garbage\n", "pybuild: stdin: not a readable archive: not a tar archive"),
])
def test_bad_stdin_is_one_line(tmp_path: Path, data: bytes, expected: str) -> None:
    root = tmp_path / "fresh"
    result = run_cli("load", root=root, stdin=data, check=False)
    err = result.stderr.decode()
    assert result.returncode != 0 and err.startswith(expected), err
    assert len(err.strip().splitlines()) == 1, err
    assert _leftovers(root) == []


class _Trickle(io.RawIOBase):
    """A stream that hands out data in small pieces and records the read sizes."""

    def __init__(self, total: int):
        self.left = total
        self.asked: list[int] = []

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.asked.append(size)
        n = min(self.left, 4096 if size < 0 else min(size, 4096))
        self.left -= n
        return b"x" * n


def test_spool_copies_in_bounded_chunks(store: Store, tmp_path: Path) -> None:
    """Never read(-1): a stream of any length is never held whole in memory."""
    from builder.image.load_stdin import spool

    assert store.db is not None  # the store exists (spool keeps its free-space margin)
    src = _Trickle(3 << 20)
    out = tmp_path / "spooled"
    assert spool(src, str(out), store) == 3 << 20  # type: ignore[arg-type]
    assert out.stat().st_size == 3 << 20 and out.stat().st_mode & 0o777 == 0o600
    assert src.asked and all(0 < size <= 1 << 20 for size in src.asked)
