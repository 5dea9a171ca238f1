"""The copy's worker threads (builder.engine.copy_pool): what depends on order stays in
order, and a copy on several threads writes exactly what one thread writes."""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from builder.context.checksum import checksum_sources
from builder.engine import copy_pool
from builder.engine.copier import Copier
from builder.engine.copy import copy_into
from builder.engine.copy_plan import CopyRequest
from builder.engine.copy_pool import CHUNK_FILES, CopyPool
from builder.errors import BuildError, PybuildError


def test_a_step_waits_for_the_chunk_queued_before_it() -> None:
    pool = CopyPool(workers=2)
    ran: list[str] = []
    chunk: Future[copy_pool.Copied] = Future()
    pool.later(lambda _: ran.append("file of the chunk"), chunk)
    pool.later(lambda _: ran.append("directory's final times"))
    assert ran == []   # the directory is not finished before its file is written
    chunk.set_result([])
    pool.later(lambda _: ran.append("next record"))
    assert ran == ["file of the chunk", "directory's final times", "next record"]


def test_drain_raises_a_chunks_error_in_order() -> None:
    pool = CopyPool(workers=2)
    ran: list[str] = []
    failed: Future[copy_pool.Copied] = Future()
    pool.later(lambda _: ran.append("before"))
    pool.later(lambda _: ran.append("never"), failed)
    failed.set_exception(BuildError("cannot copy /x: it changed while being copied"))
    with pytest.raises(BuildError, match="changed while being copied"):
        pool.drain()
    assert ran == ["before"]


def _context(root: Path) -> Path:
    """Three new directories of more files than a chunk, hard links within a chunk,
    across chunks and across directories, a symlink, and directories whose final mode
    and times must be set after their files are written."""
    context = root / "context"
    for folder in range(3):
        directory = context / "src" / f"d{folder}"
        directory.mkdir(parents=True)
        for index in range(CHUNK_FILES + 40):
            (directory / f"f{index:05d}").write_bytes(f"{folder}/{index}\n".encode() * index)
    src = context / "src"
    os.link(src / "d0" / "f00001", src / "d0" / "f00002x")
    os.link(src / "d0" / "f00003", src / "d1" / f"f{CHUNK_FILES + 10:05d}x")
    os.link(src / "d2" / "f00000", src / "d2" / f"f{CHUNK_FILES + 39:05d}x")
    os.symlink("f00001", src / "d1" / "link")
    for folder, mode in (("d0", 0o555), ("d1", 0o700), ("d2", 0o751)):
        os.chmod(src / folder, mode)
        os.utime(src / folder, ns=(1_000_000_000, 2_000_000_000 + len(folder)))
    return context


def _tree(root: Path) -> dict[str, tuple]:
    """Everything a layer keeps of each entry; hard links as the first path of their
    inode."""
    first: dict[int, str] = {}
    found: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        link = first.setdefault(st.st_ino, rel)
        content = (os.readlink(path) if stat.S_ISLNK(st.st_mode) else
                   path.read_bytes() if stat.S_ISREG(st.st_mode) else b"")
        found[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, content, link)
    return found


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_threads_write_what_one_thread_writes(tmp_path: Path, workers: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    context = _context(tmp_path)
    expected = checksum_sources([("src", str(context / "src"))]).digest
    images = {}
    for count in (1, workers):
        monkeypatch.setattr(copy_pool, "default_workers", lambda count=count: count)
        image = tmp_path / f"image-{count}-{len(images)}"
        image.mkdir()
        copy_into(str(image), str(context), CopyRequest(
            sources=["src"], dest="/out/", workdir="/", expected_content=expected))
        images[count] = _tree(image)
        del images[count]["out"]   # made now by mkdir -p, as BuildKit's: its time differs
    assert images[workers] == images[1]
    out = images[1]
    assert out["out/d0"][0] & 0o7777 == 0o555 and out["out/d0"][3] == 2_000_000_002
    assert out["out/d0/f00002x"][5] == "out/d0/f00001"
    assert out[f"out/d1/f{CHUNK_FILES + 10:05d}x"][5] == "out/d0/f00003"
    assert out[f"out/d2/f{CHUNK_FILES + 39:05d}x"][5] == "out/d2/f00000"


def test_a_parallel_copy_still_checks_what_it_wrote(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest of what the threads wrote is compared with the key's (catalogue K):
    content other than the checksummed one is refused."""
    context = _context(tmp_path)
    expected = checksum_sources([("src", str(context / "src"))]).digest
    (context / "src" / "d1" / "f00007").write_bytes(b"changed after the checksum")
    monkeypatch.setattr(copy_pool, "default_workers", lambda: 2)
    (tmp_path / "image").mkdir()
    with pytest.raises(BuildError, match="changed while it was being copied"):
        copy_into(str(tmp_path / "image"), str(context), CopyRequest(
            sources=["src"], dest="/out/", workdir="/", expected_content=expected))


def test_a_second_name_in_a_directory_the_image_has_stays_a_hard_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first copy of an inode is a pooled file of a new directory, still being
    written when a second name for it is copied into a directory the image already has
    (on the COPY's own thread).  The two are still one inode in the layer: whichever is
    copied first, the other is made as a link to it when its turn in order comes."""
    context = tmp_path / "context"
    (context / "src" / "new").mkdir(parents=True)
    (context / "src" / "old").mkdir()
    for index in range(CHUNK_FILES + 5):
        (context / "src" / "new" / f"f{index:05d}").write_text(str(index))
    os.link(context / "src" / "new" / f"f{CHUNK_FILES + 4:05d}", context / "src" / "old" / "b")
    monkeypatch.setattr(copy_pool, "default_workers", lambda: 2)
    copy_chunk = copy_pool._copy_chunk

    def slow_chunk(*args: object) -> copy_pool.Copied:
        time.sleep(0.5)   # still running when the copy reaches old/b
        return copy_chunk(*args)  # type: ignore[arg-type]
    monkeypatch.setattr(copy_pool, "_copy_chunk", slow_chunk)
    image = tmp_path / "image"
    (image / "out" / "old").mkdir(parents=True)   # in the image already
    copy_into(str(image), str(context), CopyRequest(sources=["src"], dest="/out/",
                                                    workdir="/"))
    first = os.stat(image / "out" / "new" / f"f{CHUNK_FILES + 4:05d}")
    assert os.stat(image / "out" / "old" / "b").st_ino == first.st_ino


def test_a_chunk_done_while_a_second_name_is_copied_keeps_the_hard_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunk holding the first name of an inode finishes while a second name, in a
    directory the image has, is being copied on the COPY's own thread: the steps it
    unblocks ran inside that copy (its final times queue behind them), and the first
    name was recorded after the second had looked for it and before the second
    recorded itself.  Neither became a link: two inodes where BuildKit has one.  This
    failed once in a few full test runs with the copy in worker processes."""
    context = tmp_path / "context"
    (context / "src" / "new").mkdir(parents=True)
    (context / "src" / "old").mkdir()
    (context / "src" / "new" / "f").write_text("one inode\n")
    os.link(context / "src" / "new" / "f", context / "src" / "old" / "b")
    monkeypatch.setattr(copy_pool, "default_workers", lambda: 2)
    copy_chunk = copy_pool._copy_chunk

    def slow_chunk(*args: object) -> copy_pool.Copied:
        time.sleep(0.1)   # not done when the walk queues its steps, done during old/b
        return copy_chunk(*args)  # type: ignore[arg-type]
    monkeypatch.setattr(copy_pool, "_copy_chunk", slow_chunk)
    copy_regular = Copier._copy_regular

    def slow_regular(self: Copier, source: str, target: str) -> tuple[str, os.stat_result]:
        time.sleep(0.5)   # old/b: new/'s chunk finishes meanwhile
        return copy_regular(self, source, target)
    monkeypatch.setattr(Copier, "_copy_regular", slow_regular)
    image = tmp_path / "image"
    (image / "out" / "old").mkdir(parents=True)   # in the image already
    expected = checksum_sources([("src", str(context / "src"))]).digest
    copy_into(str(image), str(context), CopyRequest(sources=["src"], dest="/out/",
                                                    workdir="/", expected_content=expected))
    first = os.stat(image / "out" / "new" / "f")
    assert os.stat(image / "out" / "old" / "b").st_ino == first.st_ino
    assert first.st_nlink == 2


def test_a_link_into_a_directory_being_filled_waits_for_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's /out/y links to x, which the copy makes; x's files are a pooled chunk
    still being written when src/y is copied through the link into x.  The chunk is
    finished first, so y's f replaces x's, in the copy's order (else both create f:
    one of them fails with EEXIST)."""
    src = tmp_path / "context" / "src"
    for rel, text in (("x/f", "from x\n"), ("x/only", "only x\n"), ("y/f", "from y\n")):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    monkeypatch.setattr(copy_pool, "default_workers", lambda: 2)
    copy_chunk = copy_pool._copy_chunk

    def slow_chunk(*args: object) -> copy_pool.Copied:
        time.sleep(0.5)   # still running when the copy reaches y
        return copy_chunk(*args)  # type: ignore[arg-type]
    monkeypatch.setattr(copy_pool, "_copy_chunk", slow_chunk)
    image = tmp_path / "image"
    (image / "out").mkdir(parents=True)
    os.symlink("x", image / "out" / "y")
    expected = checksum_sources([("src", str(src))]).digest
    copy_into(str(image), str(src.parent), CopyRequest(
        sources=["src"], dest="/out/", workdir="/", expected_content=expected))
    assert (image / "out" / "x" / "f").read_text() == "from y\n"
    assert (image / "out" / "x" / "only").read_text() == "only x\n"


def test_a_source_gone_since_it_was_listed_is_one_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of a new directory (a pooled chunk), and a directory, each renamed away
    after the walk listed it (C03: a context changing during the build): a one-line
    BuildError naming the source, not the helper's internal error.  Opened by directory
    fd, their errors name no context path for copy_into to place."""
    src = tmp_path / "context" / "src"
    for rel in ("new/f1", "new/f2", "sub/inner/g"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    monkeypatch.setattr(copy_pool, "default_workers", lambda: 2)
    copy_chunk = copy_pool._copy_chunk

    def renamed_first(*args: object) -> copy_pool.Copied:
        if "f2" in args[2]:   # new/'s chunk only (names): sub/inner's runs beside it
            os.rename(src / "new" / "f2", src / "new" / "f2.real")
        return copy_chunk(*args)  # type: ignore[arg-type]
    monkeypatch.setattr(copy_pool, "_copy_chunk", renamed_first)
    (tmp_path / "image").mkdir()
    with pytest.raises(BuildError, match=r'cannot copy "/src/new/f2": it changed while '
                                         r"being copied \(No such file or directory\)"):
        copy_into(str(tmp_path / "image"), str(src.parent), CopyRequest(
            sources=["src"], dest="/out/", workdir="/"))
    os.rename(src / "new" / "f2.real", src / "new" / "f2")
    monkeypatch.setattr(copy_pool, "_copy_chunk", copy_chunk)
    real_lstat = os.lstat

    def lstat(path: str | os.PathLike[str], **kwargs: object) -> os.stat_result:
        if str(path).endswith("/out/sub/inner") and (src / "sub" / "inner").exists():
            os.rename(src / "sub" / "inner", src / "sub" / "inner.real")
        return real_lstat(path, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(os, "lstat", lstat)
    (tmp_path / "image2").mkdir()
    with pytest.raises(BuildError, match=r'"/src/sub/inner": changed while being copied'):
        copy_into(str(tmp_path / "image2"), str(src.parent), CopyRequest(
            sources=["src"], dest="/out/", workdir="/"))


def test_chunks_are_copied_in_worker_processes_that_end_with_the_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each thread's chunks go to a process of its own (no copy waits for the GIL); the
    processes are reaped when the copy ends."""
    context = _context(tmp_path)
    monkeypatch.setattr(copy_pool, "default_workers", lambda: 2)
    copy_chunk = copy_pool._copy_chunk
    log = tmp_path / "pids"

    def logged(*args: object) -> copy_pool.Copied:
        with open(log, "a") as out:
            out.write(f"{os.getpid()}\n")
        return copy_chunk(*args)  # type: ignore[arg-type]
    monkeypatch.setattr(copy_pool, "_copy_chunk", logged)
    (tmp_path / "image").mkdir()
    copy_into(str(tmp_path / "image"), str(context), CopyRequest(
        sources=["src"], dest="/out/", workdir="/"))
    pids = {int(line) for line in log.read_text().split()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)   # already reaped: no zombie, no process


def test_a_worker_that_dies_fails_the_copy_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context = _context(tmp_path)
    monkeypatch.setattr(copy_pool, "default_workers", lambda: 2)

    def killed(*args: object) -> copy_pool.Copied:
        os.kill(os.getpid(), 9)   # the OOM killer, say
        raise AssertionError("unreachable")
    monkeypatch.setattr(copy_pool, "_copy_chunk", killed)
    (tmp_path / "image").mkdir()
    with pytest.raises(PybuildError, match=r"^a copy worker died in the middle of a chunk$"):
        copy_into(str(tmp_path / "image"), str(context), CopyRequest(
            sources=["src"], dest="/out/", workdir="/"))
