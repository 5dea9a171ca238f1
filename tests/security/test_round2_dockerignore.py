"""Security points 4 and 5: ``.dockerignore`` applies to every view of the context,
with the negation semantics of BuildKit's context transfer.

Point 4: ``RUN --mount=type=bind`` of the context (read-only or ``rw``, the whole
context or a ``source=`` below it) must not show what ``.dockerignore`` excludes,
nor its bytes through a symlink inside the context; COPY of the same context
leaves out exactly the same entries.

Point 5: BuildKit sends the context with tonistiigi/fsutil's filter
(``filter.go``, ``filterFS.Walk``), which asks moby/patternmatcher's
``MatchesUsingParentResults`` (``patternmatcher.go``) about each walked path with
its parent directory's ``MatchInfo``.  A pattern is then tried on the path
itself, never on its parents, unless it matched the parent: ``secrets/*`` then
``!secrets`` keeps ``secrets/key`` out (``!secrets`` matches ``secrets``, but was
skipped there because nothing had matched it yet), where the parent-matching
``MatchesOrParentMatches`` would put it back.  An excluded directory is entered
only when an exception might match inside it (always, once an exception has a
wildcard before its trailing ``/*``/``/**``: ``!cache/**/keep``), and is sent only
as the parent of something sent below it (``parentDirs``/``calledFn``).

The expected trees below were written by hand from those two files (walked
step by step in the comments), not produced by pybuild.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import mounts_under
from security.oracle import build

pytestmark = [
    pytest.mark.root, pytest.mark.overlay, pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: overlay mounts, mknod"),
]

IGNORE = """\
secret.txt
secrets/*
!secrets
dir/*
!dir
docs
!docs/README.md
cache
!cache/**/keep
"""

# Patterns 0..8 above.  fsutil's walk, entry by entry (lexical order):
#   .dockerignore      no pattern                                   -> sent
#   cache              7 matches; 8 tried, no                       -> excluded, entered (8 has *)
#   cache/a            7 inherited; 8 tried on "cache/a", no        -> excluded, entered
#   cache/a/drop       7 inherited                                  -> excluded
#   cache/a/keep       7 inherited; 8 matches ^cache/(.*/)?keep$    -> sent, with cache, cache/a
#   cache/b, cache/b/drop                                           -> excluded, nothing sent below
#   dir                3 (^dir/[^/]*$) no; 4 skipped (nothing matched) -> sent
#   dir/x              3 matches; 4 tried on "dir/x" only, no       -> excluded
#   docs               5 matches; 6 tried, no                       -> excluded, entered
#   docs/README.md     5 inherited; 6 matches                       -> sent, with docs
#   docs/other.md      5 inherited; 6 no                            -> excluded
#   link, abslink      symlinks, no pattern                         -> sent (dangling there)
#   ok.txt                                                          -> sent
#   secret.txt         0 matches                                    -> excluded
#   secrets            1 no; 2 skipped                              -> sent
#   secrets/key        1 matches; 2 tried on "secrets/key" only, no -> excluded
SENT = {".dockerignore", "abslink", "cache", "cache/a", "cache/a/keep", "dir", "docs",
        "docs/README.md", "link", "ok.txt", "secrets"}
SECRET_FILES = ["secret.txt", "secrets/key", "dir/x", "docs/other.md", "cache/a/drop",
                "cache/b/drop"]


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    for rel in SECRET_FILES:
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(f"TOPSECRET {rel}\n")
    for rel in ("ok.txt", "docs/README.md", "cache/a/keep"):
        (ctx / rel).write_text(f"fine {rel}\n")
    os.symlink("secret.txt", ctx / "link")
    os.symlink("/ctx/secrets/key", ctx / "abslink")  # absolute: resolves in the step's root
    (ctx / ".dockerignore").write_text(IGNORE)
    return ctx


def _tree(root: Path) -> set[str]:
    found = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(directory, name), root))
    return found


def _listing(text: str, prefix: str) -> set[str]:
    """``find PREFIX`` output as paths relative to it."""
    return {line[len(prefix) + 1:] for line in text.splitlines()
            if line.startswith(prefix + "/")}


def _no_leftovers(store: Path) -> None:
    """The view went with its step: no mount, no whiteout layer in the store."""
    assert mounts_under(store) == []
    assert [p for p in (store / "tmp").rglob("*") if p.name == "hide"] == []


READ_ALL = ("find {t} > /out/{n}.list; "
            "cat {t}/secret.txt {t}/secrets/key {t}/dir/x {t}/docs/other.md {t}/cache/a/drop "
            "{t}/cache/b/drop {t}/link {t}/abslink > /out/{n}.leak 2>/dev/null; "
            "cat {t}/ok.txt {t}/docs/README.md {t}/cache/a/keep > /out/{n}.fine")


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])
def test_run_bind_mount_of_the_context_hides_ignored_files(bstore, context, tmp_path, driver):
    out = tmp_path / "out"
    build(bstore, context, "FROM busybox\nRUN mkdir /out\n"
          "RUN --mount=type=bind,target=/ctx sh -c '" + READ_ALL.format(t="/ctx", n="ro")
          + "'\n"
          "RUN --mount=type=bind,target=/ctx,rw sh -c '" + READ_ALL.format(t="/ctx", n="rw")
          + "; echo new > /ctx/secret.txt'\n", out, "--no-cache", driver=driver)
    for name in ("ro", "rw"):
        assert (out / "out" / f"{name}.leak").read_text() == ""
        assert _listing((out / "out" / f"{name}.list").read_text(), "/ctx") == SENT
        assert (out / "out" / f"{name}.fine").read_text() == \
            "fine ok.txt\nfine docs/README.md\nfine cache/a/keep\n"
    assert (context / "secret.txt").read_text() == "TOPSECRET secret.txt\n"  # rw: thrown away
    _no_leftovers(bstore)


def test_run_bind_mount_of_a_context_subdir(bstore, context, tmp_path):
    out = tmp_path / "out"
    build(bstore, context, "FROM busybox\n"
          "RUN --mount=type=bind,source=docs,target=/d sh -c "
          "'find /d > /d.list; cat /d/other.md > /d.leak 2>/dev/null; true'\n"
          "RUN --mount=type=bind,source=secrets,target=/s sh -c "
          "'find /s > /s.list; cat /s/key > /s.leak 2>/dev/null; true'\n", out, "--no-cache")
    assert _listing((out / "d.list").read_text(), "/d") == {"README.md"}
    assert _listing((out / "s.list").read_text(), "/s") == set()
    assert (out / "d.leak").read_text() == (out / "s.leak").read_text() == ""
    _no_leftovers(bstore)


@pytest.mark.parametrize("source", ["secret.txt", "link", "secrets/key", "dir/x", "cache/b"])
def test_run_bind_mount_of_an_ignored_source_is_not_found(bstore, context, source):
    result = build(bstore, context, f"FROM busybox\nRUN --mount=type=bind,source={source},"
                   "target=/x cat /x\n", None, "--no-cache", check=False)
    assert result.returncode != 0
    assert b"TOPSECRET" not in result.stdout + result.stderr
    assert b"not found" in result.stderr
    _no_leftovers(bstore)


def test_copy_of_the_context_sends_what_buildkit_sends(bstore, context, tmp_path):
    out = tmp_path / "out"
    build(bstore, context, "FROM busybox\nCOPY . /copy/\n", out, "--no-cache")
    assert _tree(out / "copy") == SENT
    assert os.readlink(out / "copy" / "link") == "secret.txt"
    for rel in SECRET_FILES:
        assert not (out / "copy" / rel).exists()


@pytest.mark.parametrize("source", ["link", "secrets/key", "dir/*", "cache/b"])
def test_copy_of_an_ignored_source_is_not_found(bstore, context, tmp_path, source):
    out = tmp_path / "out"
    result = build(bstore, context, f"FROM busybox\nCOPY {source} /x/\n", out, "--no-cache",
                   check=False)
    if result.returncode == 0:  # a wildcard that matches nothing copies nothing
        assert source.endswith("*") and _tree(out / "x") == set()
    else:
        assert b"not found" in result.stderr
    assert b"TOPSECRET" not in result.stdout + result.stderr
