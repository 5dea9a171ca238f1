"""Attacks on the directory summaries (c925415): every rebuild that uses stored
summaries must give the digest, ``files`` and ``entries()`` a checksum with nothing
remembered gives, never a traceback, and never read a path outside the context.

Failing tests here are real problems (see each docstring); passing ones cover what
tests/context/test_dir_summaries.py does not."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from builder.cache import CacheStore
from builder.context import checksum
from builder.context.checksum import checksum_sources
from builder.errors import ContextError
from builder.store.store import Store

SCOPE = "patterns"


def _sum(store: Store, sources: list[tuple[str, str]], **kwargs: object
         ) -> checksum.SourceChecksum:
    cache = CacheStore(store)
    result = checksum_sources(sources, cache=cache, skip_identity=SCOPE,
                              **kwargs)  # type: ignore[arg-type]
    cache.flush_stats()
    return result


def _fresh(sources: list[tuple[str, str]], **kwargs: object) -> checksum.SourceChecksum:
    return checksum_sources(sources, **kwargs)  # type: ignore[arg-type]


def _same(got: checksum.SourceChecksum, want: checksum.SourceChecksum) -> None:
    assert got.digest == want.digest
    assert got.files == want.files
    assert got.entries() == want.entries()


# ---------------------------------------------------------------- problems found, fixed

@pytest.mark.parametrize("where", ["entry", "context-path"])
def test_a_non_utf8_name_is_summed_without_a_traceback(
        store: Store, tmp_path: Path, where: str) -> None:
    """Linux names are bytes; Python gives a non-UTF-8 one as a str with lone
    surrogates (surrogateescape).  msgspec's msgpack encoder (the summary) and
    sqlite3 (the summary's path and scope, and the stat cache's path) both refuse
    such a str with UnicodeEncodeError, which is not an OSError: the checksum raises
    a traceback out of ``checksum_sources`` (the summary) and, before c925415 too, out
    of ``flush_stats`` (the stat cache).  A from-scratch checksum sums it fine."""
    base = os.fsencode(tmp_path)
    root = base + (b"/caf\xe9" if where == "context-path" else b"/ctx")
    os.makedirs(root + b"/sub")
    name = b"/sub/na\xefve\xff" if where == "entry" else b"/sub/plain"
    with open(root + name, "wb") as out:
        out.write(b"content\n")
    source = [(".", os.fsdecode(root))]
    fresh = _fresh(source)
    first = _sum(store, source)   # UnicodeEncodeError today
    _same(first, fresh)
    _same(_sum(store, source), fresh)


def _swap_after_listing(monkeypatch: pytest.MonkeyPatch, victim: Path, outside: Path,
                        moved: Path) -> list[bool]:
    """Win the race deterministically: right after the walk lists ``victim`` (through
    its fd), rename it away and put a symlink to ``outside`` in its place -- what a
    context owner racing a build can do (tests/reliability style: the change happens
    during the build)."""
    done: list[bool] = []
    real = checksum._lstat_all

    def racing(fd: int, host: str, names: list[str]) -> list[os.stat_result]:
        stats = real(fd, host, names)
        if host == str(victim) and not done:
            victim.rename(moved)
            victim.symlink_to(outside)
            done.append(True)
        return stats

    monkeypatch.setattr(checksum, "_lstat_all", racing)
    return done


def test_a_directory_swapped_for_a_link_mid_walk_is_not_read_through(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_directory`` lists and lstats a directory through an fd opened O_NOFOLLOW, but
    ``_sum`` then opens each file by its full path (``file_digest(f"{host}/{name}")``):
    a directory renamed away and replaced by a symlink between the two makes the
    checksum read the file of the same name wherever the link points (here a file
    outside the context).  Its digest is then stored under the in-context file's stat
    key, in the directory's summary and in the stat cache, so once the directory is
    put back every later rebuild keeps the outside file's digest (a persistent wrong
    key; the copy's own digest check then fails every build until the file changes)."""
    root = tmp_path / "ctx"
    (root / "d").mkdir(parents=True)
    (root / "d" / "config").write_text("in the context\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config").write_text("host secret\n")  # same size as the real one
    secret = "sha256:" + hashlib.sha256(b"host secret\n").hexdigest()
    done = _swap_after_listing(monkeypatch, root / "d", outside, root / "d.moved")
    try:
        raced = _sum(store, [(".", str(root))])
    except ContextError:
        raced = None  # refusing the changed directory is a right answer
    assert done
    monkeypatch.undo()
    (root / "d").unlink()
    (root / "d.moved").rename(root / "d")
    if raced is not None:
        assert not any(secret in entry for _, entry in raced.entries()), \
            "a file outside the context was read"
    _same(_sum(store, [(".", str(root))]), _fresh([(".", str(root))]))


def test_a_parent_swapped_for_a_link_mid_walk_is_not_listed_through(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for subdirectories: a kept subdirectory is opened by its full host
    path (O_NOFOLLOW guards only the last component), so a parent swapped for a link
    after its listing makes the walk list and sum a directory outside the context."""
    root = tmp_path / "ctx"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("inside\n")
    outside = tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    (outside / "b" / "host-only").write_text("host file\n")
    done = _swap_after_listing(monkeypatch, root / "a", outside, root / "a.moved")
    try:
        raced = _sum(store, [(".", str(root))])
    except ContextError:
        raced = None
    assert done
    monkeypatch.undo()
    (root / "a").unlink()
    (root / "a.moved").rename(root / "a")
    if raced is not None:
        assert not any("host-only" in rel for rel, _ in raced.entries()), \
            "a directory outside the context was listed"
    _same(_sum(store, [(".", str(root))]), _fresh([(".", str(root))]))


def test_a_source_that_is_a_link_to_a_directory_is_followed(
        store: Store, tmp_path: Path) -> None:
    """``checksum_sources`` says each source is "followed if it is a link", and
    ``source()`` does os.stat (followed) it, but ``_directory`` opens it with
    O_NOFOLLOW: a source whose host path is a symlink to a directory is now a
    ContextError ("Not a directory").  The engine passes such a host path when the
    build context's own path is a symlink (``pybuild build ./link-to-ctx``): RUN
    --mount=type=bind of the context (ctxbind) worked before c925415 (though its
    digest then covered the root entry only: _walk decided descent on an lstat, a
    silent wrong key), and fails now."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "f").write_text("x\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    want = _fresh([(".", str(real))])
    _same(_fresh([(".", str(link))]), want)
    _same(_sum(store, [(".", str(link))]), want)

    from builder.dockerfile.mounts import Mount
    from builder.engine.ctxbind import context_bind

    _, via_link = context_bind(Mount(type="bind"), "/mnt", str(link), None, CacheStore(store))
    _, direct = context_bind(Mount(type="bind"), "/mnt", str(real), None, CacheStore(store))
    assert via_link == direct


def test_a_skip_without_an_identity_does_not_take_the_unskipped_summaries(
        store: Store, tmp_path: Path) -> None:
    """``skip_identity`` defaults to "" -- the identity of "nothing skipped" that
    ctxbind passes for a context without .dockerignore -- even when the caller passes
    a ``skip``.  A caller that gives a skip and forgets the identity (the signature
    invites it) silently reuses the unskipped summaries: the .log files it skips are
    in its digest.  The default should be None (no summaries) unless ``skip`` is the
    default too."""
    root = tmp_path / "ctx"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "keep.txt").write_text("kept\n")
    (root / "sub" / "drop.log").write_text("skipped\n")
    sources = [(".", str(root))]
    cache = CacheStore(store)
    checksum_sources(sources, cache=cache)  # ctxbind's call without a .dockerignore
    cache.flush_stats()

    def no_logs(source: str, rel: str, is_dir: bool) -> bool:
        return rel.endswith(".log")

    cache = CacheStore(store)
    got = checksum_sources(sources, cache=cache, skip=no_logs)
    _same(got, _fresh(sources, skip=no_logs))


# ---------------------------------------------------------------- passing: withstood

def test_a_write_through_a_hardlink_outside_the_context_is_seen(
        store: Store, tmp_path: Path) -> None:
    """The ctime is the inode's: writing through a link outside the context (same
    size, mtime put back) still moves it."""
    root = tmp_path / "ctx"
    (root / "sub").mkdir(parents=True)
    inside = root / "sub" / "f"
    inside.write_text("one\n")
    elsewhere = tmp_path / "elsewhere"
    os.link(inside, elsewhere)
    before = _sum(store, [(".", str(root))])
    st = elsewhere.stat()
    with open(elsewhere, "r+b") as out:
        out.write(b"two\n")
    os.utime(elsewhere, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = _sum(store, [(".", str(root))])
    assert after.digest != before.digest
    _same(after, _fresh([(".", str(root))]))


def test_a_directory_replaced_by_a_link_between_builds(store: Store, tmp_path: Path) -> None:
    """A summed directory replaced by a symlink to a copy of itself (same names, same
    files through hard links): hashed as a link, its old summary never walked."""
    root = tmp_path / "ctx"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("x\n")
    _sum(store, [(".", str(root))])
    copy = tmp_path / "copy"
    copy.mkdir()
    os.link(root / "d" / "f", copy / "f")
    shutil.rmtree(root / "d")
    (root / "d").symlink_to(copy)
    got = _sum(store, [(".", str(root))])
    _same(got, _fresh([(".", str(root))]))
    assert [rel for rel, _ in got.entries()] == [".", "d"]


def test_a_relative_source_under_another_working_directory(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same relative context path names two different trees from two working
    directories: summaries are found by absolute path, so neither takes the other's."""
    for top, text in (("one", "first\n"), ("two", "second!\n")):
        (tmp_path / top / "ctx" / "sub").mkdir(parents=True)
        (tmp_path / top / "ctx" / "sub" / "f").write_text(text)
    results = {}
    for _ in range(2):
        for top in ("one", "two"):
            monkeypatch.chdir(tmp_path / top)
            got = _sum(store, [(".", "ctx")])
            _same(got, _fresh([(".", "ctx")]))
            results.setdefault(top, got.digest)
            assert results[top] == got.digest
    assert results["one"] != results["two"]


def test_odd_but_valid_names(store: Store, tmp_path: Path) -> None:
    """Names with newlines, NUL-free control bytes, length-prefix look-alikes and
    non-ASCII UTF-8: the stored records decode to what a fresh sum encodes."""
    root = tmp_path / "ctx"
    names = ["a\nb", "1:x\0".rstrip("\0"), "tab\there", "ünïcødé", "😀", "x" * 255, "-", " "]
    (root / "d\nd").mkdir(parents=True)
    for name in names:
        (root / "d\nd" / name).write_text(name)
    _sum(store, [(".", str(root))])
    (root / "d\nd" / "a\nb").write_text("changed")
    _same(_sum(store, [(".", str(root))]), _fresh([(".", str(root))]))


def test_dockerignore_exclude_and_overlapping_sources_through_copy_request(
        store: Store, tmp_path: Path) -> None:
    """The engine's own skip and scope (CopyRequest.leaves_out / summary_scope with a
    real ContextFilter): overlapping sources in one checksum, then .dockerignore and
    --exclude edited between builds, then a file the patterns hid changed."""
    from builder.context.ignore import PatternMatcher
    from builder.context.view import ContextFilter
    from builder.engine.copy_plan import CopyRequest
    from builder.rootpath import resolve_in_root

    root = tmp_path / "ctx"
    for sub in ("a/b", "a/c", "build"):
        (root / sub).mkdir(parents=True)
        for name in ("x.log", "y.txt"):
            (root / sub / name).write_text(f"{sub}/{name}\n")
    context = str(root)

    def both(patterns: list[str], exclude: list[str], srcs: list[str]) -> str:
        def request() -> CopyRequest:
            ignore = ContextFilter(context, PatternMatcher(patterns)) if patterns else None
            return CopyRequest(sources=srcs, dest="/", workdir="/", ignore=ignore,
                               exclude=exclude)
        sources = [(rel, resolve_in_root(context, rel) or "") for rel in srcs]
        req = request()
        scope = req.summary_scope(context, sources)
        assert scope is not None
        cache = CacheStore(store)
        got = checksum_sources(sources, cache=cache, skip=req.leaves_out,
                               skip_identity=scope)
        cache.flush_stats()
        _same(got, checksum_sources(sources, skip=request().leaves_out))
        return got.digest

    srcs = [".", "a", "a/b"]
    plain = both([], [], srcs)
    logs = both(["*.log", "**/*.log"], [], srcs)
    excl = both(["*.log", "**/*.log"], ["*.txt"], srcs)
    assert len({plain, logs, excl}) == 3
    assert both([], [], srcs) == plain
    (root / "a" / "b" / "x.log").write_text("hidden, but changed\n")
    assert both(["*.log", "**/*.log"], [], srcs) == logs
    assert both([], [], srcs) != plain
    assert both(["build"], ["b"], ["a", "."]) == both(["build"], ["b"], ["a", "."])


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("Linux semantics")


def test_a_context_bind_shares_no_summary_with_a_copy(store: Store, tmp_path: Path) -> None:
    """RUN --mount=type=bind (ctxbind) and COPY sum the same directories under other
    skips (.dockerignore alone, or nothing, against .dockerignore and --exclude):
    their scopes differ, so each key matches a checksum with nothing remembered
    whichever ran first and whatever changed in between."""
    from builder.context.ignore import PatternMatcher
    from builder.context.view import ContextFilter
    from builder.dockerfile.mounts import Mount
    from builder.engine.copy_plan import CopyRequest
    from builder.engine.ctxbind import context_bind

    root = tmp_path / "ctx"
    (root / "src").mkdir(parents=True)
    for name in ("a.log", "b.txt"):
        (root / "src" / name).write_text(name)
    context = str(root)

    def bind(patterns: list[str], cached: bool) -> str:
        view = ContextFilter(context, PatternMatcher(patterns)) if patterns else None
        cache = CacheStore(store) if cached else None
        _, key = context_bind(Mount(type="bind", source="src"), "/mnt", context, view, cache)
        if cache is not None:
            cache.flush_stats()
        return key

    def copy(patterns: list[str], exclude: list[str]) -> None:
        view = ContextFilter(context, PatternMatcher(patterns)) if patterns else None
        request = CopyRequest(sources=["src"], dest="/", workdir="/", ignore=view,
                              exclude=exclude)
        sources = [("src", str(root / "src"))]
        cache = CacheStore(store)
        checksum_sources(sources, cache=cache, skip=request.leaves_out,
                         skip_identity=request.summary_scope(context, sources))
        cache.flush_stats()

    for patterns in ([], ["*.log", "**/*.log"]):
        copy(patterns, ["*.txt"])
        assert bind(patterns, True) == bind(patterns, False)
        copy(patterns, [])
        assert bind(patterns, True) == bind(patterns, False)
    (root / "src" / "b.txt").write_text("changed")
    (root / "src" / "a.log").write_text("changed too")
    for patterns in ([], ["*.log", "**/*.log"]):
        assert bind(patterns, True) == bind(patterns, False)
