"""Directory summaries (issue 17 point 2): a rebuild re-sums only directories whose
listing or entries' stat changed, and gets every digest a full checksum would."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import msgspec
import pytest

from builder.cache import CacheStore
from builder.context import checksum
from builder.context.checksum import checksum_sources
from builder.store import records
from builder.store.store import Store

SCOPE = "patterns"


def _tree(root: Path, dirs: int = 6, files: int = 8) -> None:
    for d in range(dirs):
        sub = root / f"d{d}" / "inner"
        sub.mkdir(parents=True)
        for f in range(files):
            (root / f"d{d}" / f"f{f}").write_text(f"{d}/{f}\n")
            (sub / f"g{f}").write_text(f"inner {d}/{f}\n")
        (root / f"d{d}" / "link").symlink_to(f"f{d % files}")


def _sum(store: Store, root: Path, **kwargs: object) -> checksum.SourceChecksum:
    cache = CacheStore(store)
    result = checksum_sources([(".", str(root))], cache=cache,
                              skip_identity=SCOPE, **kwargs)  # type: ignore[arg-type]
    cache.flush_stats()
    return result


def _fresh(root: Path, **kwargs: object) -> checksum.SourceChecksum:
    """The checksum with nothing remembered: what a summary must reproduce."""
    return checksum_sources([(".", str(root))], **kwargs)  # type: ignore[arg-type]


def test_an_unchanged_tree_is_summed_from_its_summaries_alone(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ctx"
    _tree(root)
    first = _sum(store, root)
    full = _fresh(root).digest

    def no_file_work(*args: object) -> None:
        raise AssertionError("per-file work in an unchanged tree")

    monkeypatch.setattr(checksum, "file_digest", no_file_work)
    monkeypatch.setattr(records, "stat_digests_below", no_file_work)
    monkeypatch.setattr(records, "put_dir_summaries", no_file_work)  # nothing to write
    again = _sum(store, root)
    assert again.digest == first.digest == full
    assert again.files == first.files and again.entries() == first.entries()


@pytest.mark.parametrize("change", ["rewrite-same-size-and-mtime", "chmod", "add-deep",
                                    "remove", "relink", "dir-to-file", "rename"])
def test_every_kind_of_change_is_seen(store: Store, tmp_path: Path, change: str) -> None:
    root = tmp_path / "ctx"
    _tree(root)
    before = _sum(store, root).digest
    target = root / "d2" / "f3"
    if change == "rewrite-same-size-and-mtime":  # K04: only the ctime tells
        st = target.stat()
        target.write_text("2/X\n")
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "chmod":
        target.chmod(0o600)
    elif change == "add-deep":
        (root / "d4" / "inner" / "new").write_text("new\n")
    elif change == "remove":
        (root / "d5" / "inner" / "g0").unlink()
    elif change == "relink":
        (root / "d1" / "link").unlink()
        (root / "d1" / "link").symlink_to("elsewhere")
    elif change == "dir-to-file":
        shutil.rmtree(root / "d3" / "inner")
        (root / "d3" / "inner").write_text("a file now\n")
    else:
        (root / "d0" / "f1").rename(root / "d0" / "f1-renamed")
    after = _sum(store, root)
    assert after.digest != before
    assert after.digest == _fresh(root).digest
    assert after.entries() == _fresh(root).entries()


def test_random_edits_always_match_a_full_checksum(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    _tree(root, dirs=4, files=5)
    rng = random.Random(17)
    for _ in range(25):
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        victim = rng.choice(files)
        action = rng.randrange(3)
        if action == 0:
            victim.write_text(f"edited {rng.random()}\n")
        elif action == 1:
            (victim.parent / f"n{rng.randrange(1000)}").write_text("added\n")
        else:
            victim.unlink()
        assert _sum(store, root).digest == _fresh(root).digest


def test_a_summary_made_under_other_patterns_is_not_used(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    _tree(root)
    _sum(store, root)
    skip_f0 = {"skip": lambda source, rel, is_dir: rel.endswith("/f0")}
    cache = CacheStore(store)
    other = checksum_sources([(".", str(root))], cache=cache, skip_identity="other patterns",
                             **skip_f0)  # type: ignore[arg-type]
    assert other.digest == _fresh(root, **skip_f0).digest != _fresh(root).digest
    # No identity for what is skipped (an exception pattern): nothing is remembered.
    unnamed = CacheStore(store)
    checksum_sources([(".", str(root))], cache=unnamed, skip_identity=None, **skip_f0)  # type: ignore[arg-type]
    assert unnamed._pending_summaries == []


def test_a_forged_summary_cannot_lead_the_walk_out_of_the_context(
        store: Store, tmp_path: Path) -> None:
    """A row whose kept names are not in the directory (a damaged or edited store) is
    not used: the walk never opens a path a summary names."""
    root = tmp_path / "ctx"
    _tree(root, dirs=1, files=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file\n")
    first = _sum(store, root)
    host = str(root)
    rows = records.dir_summaries_below(store, host + "/")
    scope = next(s for p, s in rows if p == host)
    forged = checksum.DirSummary(
        keys=msgspec.msgpack.decode(rows[(host, scope)], type=checksum.DirSummary).keys,
        kept=["../outside"], entries=["dir 755 "], runs=[b"", b""], subdirs=[0])
    records.put_dir_summaries(store, [(host, scope, msgspec.msgpack.encode(forged))])
    again = _sum(store, root)
    assert again.digest == first.digest
    assert not any("secret" in rel for rel, _ in again.entries())


def test_summaries_are_not_used_where_a_directory_listing_cannot_decide(
        tmp_path: Path) -> None:
    """A .dockerignore exception makes an excluded directory's fate depend on what lies
    below it, and a source reached through a link on the way through ignored paths:
    neither gets a scope, so their checksums remember no summary."""
    from builder.context.ignore import PatternMatcher
    from builder.context.view import ContextFilter
    from builder.engine.copy_plan import CopyRequest

    context = tmp_path / "ctx"
    (context / "real").mkdir(parents=True)
    (context / "via").symlink_to("real")
    plain = ContextFilter(str(context), PatternMatcher(["*.log", "build"]))
    excepting = ContextFilter(str(context), PatternMatcher(["build", "!build/keep"]))
    assert plain.summary_scope() is not None and excepting.summary_scope() is None
    assert plain.summary_scope() != ContextFilter(
        str(context), PatternMatcher(["*.log"])).summary_scope()

    request = CopyRequest(sources=["real", "via"], dest="/", workdir="/", ignore=plain)
    direct = [("real", str(context / "real")), (".", str(context))]
    assert request.summary_scope(str(context), direct) is not None
    linked = [("via", str(context / "real"))]
    assert request.summary_scope(str(context), linked) is None
    request.ignore = excepting
    assert request.summary_scope(str(context), direct) is None


def _remembered(store: Store) -> tuple[int, int]:
    return (store.db.execute("SELECT COUNT(*) FROM stat_cache").fetchone()[0],
            store.db.execute("SELECT COUNT(*) FROM dir_summaries").fetchone()[0])


def test_prune_forgets_contexts_that_are_gone(store: Store, tmp_path: Path) -> None:
    """A CI job checks out into a new directory every run: what was remembered of the
    old checkouts (a row per file and per directory) is dropped by prune, what is still
    there is kept, and prune --cache drops it all."""
    from builder.store.gc import prune

    gone, kept = tmp_path / "job-1", tmp_path / "job-2"
    _tree(gone, dirs=2, files=3)
    _tree(kept, dirs=2, files=3)
    _sum(store, gone)
    _sum(store, kept)
    both = _remembered(store)
    assert both[0] > 0 and both[1] > 0
    shutil.rmtree(gone)
    prune(store)
    assert _remembered(store) == (both[0] // 2, both[1] // 2)
    assert _sum(store, kept).digest == _fresh(kept).digest   # what was kept still holds
    prune(store, cache=True)
    assert _remembered(store) == (0, 0)
