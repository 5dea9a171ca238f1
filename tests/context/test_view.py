"""``ContextFilter`` (builder/context/view.py): the context as BuildKit's transfer
sends it, the overlay whiteouts that hide the rest from a RUN bind mount
(builder/run/ctxmount.py), and what that costs."""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from builder.context.ignore import PatternMatcher
from builder.context.view import ContextFilter
from builder.run.child import in_mount_namespace
from builder.run.ctxmount import mount_filtered

IGNORE = ["secret.txt", "secrets/*", "!secrets", "dir/*", "!dir", "docs",
          "!docs/README.md", "cache", "!cache/**/keep"]
SENT = {"abslink", "cache", "cache/a", "cache/a/keep", "dir", "docs", "docs/README.md",
        "link", "ok.txt", "secrets", "deep", "deep/er", "deep/er/f"}


def _context(root: Path) -> Path:
    for rel in ["secret.txt", "secrets/key", "dir/x", "docs/other.md", "cache/a/drop",
                "cache/b/drop", "ok.txt", "docs/README.md", "cache/a/keep", "deep/er/f"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    os.symlink("secret.txt", root / "link")
    os.symlink("/ctx/secrets/key", root / "abslink")
    os.chmod(root / "docs", 0o751)
    os.utime(root / "docs", (1_000_000, 1_000_000))
    return root


def _tree(root: str) -> set[str]:
    found = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(directory, name), root))
    return found


def test_hides_and_resolves_like_the_transferred_tree(tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx")
    view = ContextFilter(str(ctx), PatternMatcher(IGNORE))
    assert {rel for rel in _tree(str(ctx)) if not view.hides(rel)} == SENT
    # Sources are followed inside the tree: a link to a hidden file is not found.
    assert view.hides_source("link") and not view.hides("link")
    os.symlink("secrets", ctx / "s")
    os.symlink("docs", ctx / "d")
    assert view.hides("s/key") and view.hides_source("s/key")
    assert view.hides("d/other.md") and not view.hides("d/README.md")
    assert view.resolve("d/../../../docs/README.md") == ("docs/README.md", False)
    assert view.resolve("missing") == (None, False)
    assert view.resolve("docs/other.md") == (None, True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod, overlay")
@pytest.mark.parametrize("writable", [False, True])
def test_whiteouts_mounted_show_exactly_the_sent_tree(tmp_path: Path, writable: bool) -> None:
    ctx = _context(tmp_path / "ctx")
    view = ContextFilter(str(ctx), PatternMatcher(IGNORE))
    hidden = view.whiteouts(".")
    assert sorted(hidden) == ["cache/a/drop", "cache/b", "dir/x", "docs/other.md",
                              "secret.txt", "secrets/key"]
    hide = tmp_path / "hide"
    view.write_whiteouts(".", hidden, str(hide))
    st = os.lstat(hide / "cache" / "b")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    target = tmp_path / "mnt"
    target.mkdir()

    def look() -> tuple[set[str], int, int, bool]:
        mount_filtered(str(ctx), str(hide), str(target), tmp_path / "scratch",
                       writable=writable)
        docs = os.stat(target / "docs")
        try:
            (target / "new").write_text("x")
            wrote = True
        except OSError:
            wrote = False
        tree = _tree(str(target)) - {"new"}
        return tree, stat.S_IMODE(docs.st_mode), int(docs.st_mtime), wrote

    tree, mode, mtime, wrote = in_mount_namespace(look)
    assert tree == SENT
    assert (mode, mtime) == (0o751, 1_000_000)  # the merged dir shows the context's
    assert wrote is writable and not (ctx / "new").exists()


def test_nothing_hidden_means_no_whiteouts(tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx")
    assert ContextFilter(str(ctx), PatternMatcher(["nothing-here", "*.pem"])).whiteouts(".") \
        == []
    assert ContextFilter(str(ctx), PatternMatcher(IGNORE)).whiteouts("deep") == []


def test_cost_follows_what_patterns_can_reach(tmp_path: Path) -> None:
    # 20,000 files in 200 dirs.  An exact pattern never lists a directory it cannot
    # match in; a ** pattern has to list them all (as BuildKit's walk does).
    ctx = tmp_path / "ctx"
    for d in range(200):
        sub = ctx / f"d{d}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f}.txt").write_bytes(b"")
    (ctx / "secret.txt").write_text("s")
    started = time.perf_counter()
    view = ContextFilter(str(ctx), PatternMatcher(["secret.txt", "d7/f1.txt"]))
    assert sorted(view.whiteouts(".")) == ["d7/f1.txt", "secret.txt"]
    exact = time.perf_counter() - started
    started = time.perf_counter()
    hidden = ContextFilter(str(ctx), PatternMatcher(["**/f1*.txt", "!d0"])).whiteouts(".")
    glob = time.perf_counter() - started
    assert len(hidden) == 200 * 11  # "!d0" names d0, not what a glob excludes in it
    print(f"\n20k files: exact patterns {exact:.3f}s, **/f1*.txt + !d0 {glob:.3f}s")
    assert exact < 1 and glob < 20


# --------------------------- against a plain transcription of fsutil's walk

def _reference_walk(root: Path, pm: PatternMatcher) -> set[str]:
    """fsutil filter.go's Walk over ``root`` with dense MatchInfo vectors, exactly as
    patternmatcher.go's MatchesUsingParentResults keeps them: one bool per pattern."""
    pats = pm._patterns
    only_prefix = not any(p.exclusion and any(c in p.text.removesuffix("/**").removesuffix("/*")
                                              for c in "*[]?^\\") for p in pats)

    def match(path: str, parent: list[bool] | None) -> tuple[bool, list[bool]]:
        matched, info = False, [False] * len(pats)
        for i, p in enumerate(pats):
            hit = bool(parent) and parent[i]  # an empty vector is "no parent info"
            if not hit:
                if p.exclusion != matched:
                    continue
                hit = p.match(path)
            info[i] = hit
            if hit:
                matched = not p.exclusion
        return matched, info

    sent: set[str] = set()

    def walk(directory: str, parent: list[bool] | None, pending: list[str]) -> None:
        for name in sorted(os.listdir(root / directory) if directory else os.listdir(root)):
            rel = f"{directory}/{name}" if directory else name
            is_dir = (root / rel).is_dir() and not (root / rel).is_symlink()
            excluded, info = match(rel, parent)
            if excluded and is_dir and only_prefix and not any(
                    p.exclusion and (p.text.removesuffix("/**").removesuffix("/*") + "/")
                    .startswith(rel + "/") for p in pats):
                continue  # SkipDir
            if not excluded:
                sent.update(pending)  # the parents not sent yet go first
                pending = []
                sent.add(rel)
            if is_dir:
                walk(rel, info, pending + ([rel] if excluded else []))

    walk("", None, [])
    return sent


_TREE_BITS = ["a", "b", "ab", ".x"]
_PAT_BITS = ["a", "b", "ab", "*", "a*", "**", "?", "[ab]", ".x"]


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.lists(st.sampled_from(_TREE_BITS), min_size=1, max_size=3), min_size=1,
                max_size=8),
       st.lists(st.tuples(st.booleans(), st.lists(st.sampled_from(_PAT_BITS), min_size=1,
                                                  max_size=3)), min_size=1, max_size=4))
@example([["a", "b"], ["a", "ab"]], [(False, ["a", "b"]), (True, ["a"])])
@example([["a", "b"], ["b"]], [(False, ["a", "*"]), (True, ["a"])])
@example([["a", "b", "a"], ["ab", "b"]], [(False, ["**", "b"]), (True, ["a"])])
@example([["a", "b", "ab"], ["a", "a"]], [(False, ["a"]), (True, ["a", "**", "ab"])])
def test_agrees_with_fsutils_walk(paths: list[list[str]], patterns: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for parts in paths:
            for depth in range(1, len(parts)):
                directory = root.joinpath(*parts[:depth])
                if directory.exists() and not directory.is_dir():
                    break
                directory.mkdir(exist_ok=True)
            else:
                leaf = root.joinpath(*parts)
                if not leaf.exists():
                    leaf.write_text("x")
        pm = PatternMatcher([("!" if bang else "") + "/".join(bits) for bang, bits in patterns])
        view = ContextFilter(str(root), pm)
        mine = {rel for rel in _tree(str(root)) if not view.hides(rel)}
        assert mine == _reference_walk(root, pm), pm._patterns
