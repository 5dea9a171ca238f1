"""Test vectors for the one in-root resolver (builder/rootpath.py) and the three
trees it walks: host paths (RUN mount points, COPY sources and destinations), the
filtered build context, and O_PATH fds (layer extraction, with and without openat2).

The hostile cases are the security catalogue's (T04-T08, T16, C02, C05, C06): a
``victim`` directory next to the root must never be reached, whatever the links.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder import rootpath
from builder.context.ignore import PatternMatcher
from builder.context.view import ContextFilter
from builder.errors import ContextError, SandboxError
from builder.layers import safepath
from builder.rootpath import resolve_components

LOOP = "ELOOP"


def _tree(base: Path) -> Path:
    """The root every vector walks, with a victim beside it."""
    root, victim = base / "root", base / "victim"
    for rel in ("etc", "inner", "target", "deep/a/b", "victim"):
        (root / rel).mkdir(parents=True)
    victim.mkdir()
    (victim / "secret").write_text("host")
    (root / "etc" / "passwd").write_text("root")
    (root / "file").write_text("f")
    links = {
        "abs": "/etc",                     # absolute: restarts at the root (T05, T06)
        "up": "../../../..",               # climbs: clamped at the root
        "esc": "../victim",                # T04: the victim beside the root
        "via": "abs",                      # a link through a link
        "loop1": "loop2", "loop2": "loop1",
        "self": "self",
        "dangling": "/missing/dir",        # C05: created where it leads
        "inner/go_up": "..",               # T07, first hop
        "escape": "../victim",             # T07 second hop / T08
        "absolute": "/target",             # T08
        "filelink": "file",
        "deep/a/b/top": "../../../etc",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    for i in range(41):                    # c0 -> c1 -> ... -> c40 -> etc: 41 links
        os.symlink(f"c{i + 1}" if i < 40 else "etc", root / f"c{i}")
    for i in range(40):                    # d0 -> ... -> d39 -> etc: exactly 40 links
        os.symlink(f"d{i + 1}" if i < 39 else "etc", root / f"d{i}")
    return root


# (path, resolved components or None or LOOP, with keep_missing)
VECTORS: list[tuple[str, str | None, str | None]] = [
    ("etc/passwd", "etc/passwd", "etc/passwd"),
    ("/etc/passwd", "etc/passwd", "etc/passwd"),
    ("//etc//./passwd", "etc/passwd", "etc/passwd"),
    ("/../../etc/passwd", "etc/passwd", "etc/passwd"),
    ("..", "", ""),
    ("abs/passwd", "etc/passwd", "etc/passwd"),
    ("up/etc/passwd", "etc/passwd", "etc/passwd"),
    ("up/../../victim/secret", None, "victim/secret"),
    ("esc/secret", None, "victim/secret"),
    ("via/passwd", "etc/passwd", "etc/passwd"),
    ("inner/go_up/escape/newfile", None, "victim/newfile"),
    ("escape/absolute/file", None, "victim/absolute/file"),
    ("inner/go_up/absolute", "target", "target"),
    ("deep/a/b/top/passwd", "etc/passwd", "etc/passwd"),
    ("loop1", LOOP, LOOP),
    ("self/x", LOOP, LOOP),
    ("c0", LOOP, LOOP),
    ("c0/passwd", LOOP, LOOP),
    ("d0/passwd", "etc/passwd", "etc/passwd"),
    ("dangling", None, "missing/dir"),
    ("dangling/new/file", None, "missing/dir/new/file"),
    ("missing/../etc", None, "etc"),
    ("file/x", None, None),
    ("file/../etc/passwd", None, None),
    ("filelink/x", None, None),
    ("filelink", "file", "file"),
    ("etc/passwd/..", None, None),
]


def _expect(value: str | None) -> list[str] | None:
    return None if value is None else rootpath.split(value)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return _tree(tmp_path)


class _Watched(rootpath.HostTree):
    """A HostTree that records every host path it looks at."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.seen: list[str] = []

    def lookup(self, parents: list[str], name: str, via_link: bool) -> rootpath.Kind:
        self.seen.append(os.path.join(self.root, *parents, name))
        return super().lookup(parents, name, via_link)


@pytest.mark.parametrize(("path", "plain", "keep"), VECTORS)
def test_host_tree(root: Path, path: str, plain: str | None, keep: str | None) -> None:
    for keep_missing, want in ((False, plain), (True, keep)):
        tree = _Watched(str(root))
        if want == LOOP:
            with pytest.raises(rootpath.TooManyLinks):
                rootpath.walk(tree, path, keep_missing=keep_missing)
        else:
            found = rootpath.walk(tree, path, keep_missing=keep_missing)
            assert found.parts == _expect(want), (path, keep_missing)
            assert not found.hidden
        # Every lstat is below the root, never through "..": the victim is never seen.
        for seen in tree.seen:
            assert seen.startswith(f"{root}/") and "/../" not in seen + "/", seen


@pytest.mark.parametrize(("path", "plain", "keep"), VECTORS)
def test_run_resolver_keeps_its_errors(root: Path, path: str, plain: str | None,
                                       keep: str | None) -> None:
    """builder.run.mountpoints (mount points, COPY): ELOOP is a SandboxError."""
    for keep_missing, want in ((False, plain), (True, keep)):
        if want == LOOP:
            with pytest.raises(SandboxError, match="too many levels of symbolic links"):
                resolve_components(str(root), path, keep_missing=keep_missing)
        else:
            assert resolve_components(str(root), path, keep_missing=keep_missing) \
                == _expect(want)


def test_last_component_not_followed(root: Path) -> None:
    tree = rootpath.HostTree(str(root))
    assert rootpath.walk(tree, "abs", follow_last=False).parts == ["abs"]
    assert rootpath.walk(tree, "via/passwd", follow_last=False).parts == ["etc", "passwd"]
    assert rootpath.walk(tree, "loop1", follow_last=False).parts == ["loop1"]
    assert rootpath.walk(tree, "etc", want_dir=True).parts == ["etc"]
    assert rootpath.walk(tree, "etc/passwd", want_dir=True).parts is None
    assert rootpath.walk(tree, "filelink", want_dir=True).parts is None


@pytest.mark.parametrize(("path", "plain", "keep"), VECTORS)
def test_context_view(root: Path, path: str, plain: str | None, keep: str | None) -> None:
    """The context's filtered view, with nothing filtered: the same answers."""
    view = ContextFilter(str(root), PatternMatcher(["nothing-matches-this"]))
    if plain == LOOP:
        with pytest.raises(ContextError, match="too many levels of symbolic links"):
            view.resolve(path)
        return
    where, hidden = view.resolve(path)
    assert not hidden
    assert where == (None if plain is None else plain or ".")


def test_context_view_hides_through_links(root: Path) -> None:
    """A link to an excluded entry, or a path through one, is hidden (C02 + .dockerignore)."""
    view = ContextFilter(str(root), PatternMatcher(["etc"]))
    assert view.resolve("etc/passwd") == (None, True)
    assert view.resolve("abs/passwd") == (None, True)
    assert view.resolve("deep/a/b/top") == (None, True)
    assert view.resolve("deep/a/b/top", follow=False) == ("deep/a/b/top", False)
    assert view.resolve("target") == ("target", False)


@pytest.fixture(params=["openat2", "walk"])
def fd_root(request: pytest.FixtureRequest, root: Path, monkeypatch: pytest.MonkeyPatch):
    if request.param == "walk":
        monkeypatch.setattr(safepath, "_have_openat2", False)
    opened = safepath.Root(root)
    yield opened
    opened.close()


@pytest.mark.parametrize(("path", "plain", "keep"), VECTORS)
def test_fd_tree_looks_up_directories(root: Path, fd_root: safepath.Root, path: str,
                                      plain: str | None, keep: str | None) -> None:
    """Layer extraction's lookup (directories only, never created here)."""
    comps = [os.fsencode(part) for part in path.split("/")]
    want = _expect(plain) if plain != LOOP else LOOP
    if want == LOOP:
        with pytest.raises(OSError, match="Too many levels"):
            fd_root.open_dir(comps, create=False)
        return
    fd = fd_root.open_dir(comps, create=False)
    if want is None or not (root / "/".join(want)).is_dir():
        assert fd is None
        return
    assert fd is not None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    expected = os.stat(root.joinpath(*want))
    assert (st.st_dev, st.st_ino) == (expected.st_dev, expected.st_ino)


def test_fd_tree_creates_inside_the_root(root: Path, fd_root: safepath.Root) -> None:
    """Creating through links: dangling targets are made inside the root; the victim
    beside it stays as it was; a file a link leads to is never replaced."""
    before = sorted(os.listdir(root.parent / "victim"))
    for path, made in (("dangling/new", "missing/dir/new"), ("esc/x", "victim/x"),
                       ("inner/go_up/escape/y", "victim/y"), ("abs/sub", "etc/sub")):
        fd = fd_root.open_dir([os.fsencode(p) for p in path.split("/")], create=True)
        assert fd is not None
        os.close(fd)
        assert (root / made).is_dir(), path
    assert sorted(os.listdir(root.parent / "victim")) == before
    with pytest.raises(NotADirectoryError):
        fd_root.open_dir([b"filelink", b"x"], create=True)
    assert (root / "file").read_text() == "f"
    replaced: list[bytes] = []
    fd = fd_root.open_dir([b"file", b"x"], create=True,
                          on_replace=lambda _fd, name: replaced.append(name))
    assert fd is not None
    os.close(fd)
    assert replaced == [b"file"] and (root / "file" / "x").is_dir()


def test_very_long_chain_of_directories(tmp_path: Path) -> None:
    """A 1000-deep path climbed back with ``..``: no recursion, no fd per level."""
    root = tmp_path / "r"
    root.mkdir()
    depth = 1000
    deep = "/".join(["d"] * depth)
    fd_root = safepath.Root(root)
    try:
        made = fd_root._walk([b"d"] * depth, True, None)   # the user-space walk
        assert made is not None
        os.close(made)
        back = rootpath.walk(rootpath.HostTree(str(root)), deep + "/.." * (depth - 1))
        assert back.parts == ["d"]
        up = fd_root._walk([b"d"] * depth + [b".."] * (depth + 5) + [b"d"], False, None)
        assert up is not None
        os.close(up)
    finally:
        # pytest's own cleanup of old tmp dirs recurses and would fail on 1000 levels.
        fd_root.close()
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            safepath.clear_dir(fd)
        finally:
            os.close(fd)


def test_a_link_swapped_for_a_directory_mid_walk_reads_as_gone(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """C03's race made deterministic: lstat sees ``via`` as a link, then the context
    is edited and it is a directory when the walk reads it.  The walk reports the link
    gone (FileNotFoundError, which COPY turns into "changed while being copied"),
    not readlink's EINVAL, which reached the user as an internal error."""
    looked_up = rootpath.HostTree.lookup

    def lookup_then_swap(self: rootpath.HostTree, parents: list[str], name: str,
                         via_link: bool) -> rootpath.Kind:
        kind = looked_up(self, parents, name, via_link)
        if name == "via":
            os.unlink(root / "via")
            (root / "via").mkdir()
        return kind

    monkeypatch.setattr(rootpath.HostTree, "lookup", lookup_then_swap)
    with pytest.raises(FileNotFoundError, match="no longer a symbolic link"):
        resolve_components(str(root), "via/passwd")


def test_a_parent_swapped_for_a_looping_link_mid_walk_is_a_clean_error(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolved parent (``etc``, a directory when looked up) becomes a link to itself
    before the next component is looked up: lstat meets ELOOP.  That is the one-line
    "too many levels of symbolic links" (SandboxError), not a bare OSError that reached
    the user as an internal error."""
    looked_up = rootpath.HostTree.lookup

    def lookup_then_loop(self: rootpath.HostTree, parents: list[str], name: str,
                         via_link: bool) -> rootpath.Kind:
        kind = looked_up(self, parents, name, via_link)
        if name == "etc":
            os.rename(root / "etc", root / "etc.real")
            os.symlink("etc", root / "etc")
        return kind

    monkeypatch.setattr(rootpath.HostTree, "lookup", lookup_then_loop)
    with pytest.raises(SandboxError, match="too many levels of symbolic links"):
        resolve_components(str(root), "etc/passwd")
