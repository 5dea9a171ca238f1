"""The build context as BuildKit's context transfer sends it: ``.dockerignore``'d
entries absent, the parents of re-included entries present.

BuildKit walks the context with tonistiigi/fsutil's filter (``filter.go``):

- each entry's exclusion is moby/patternmatcher's ``MatchesUsingParentResults``
  fed with its parent directory's result (``PatternMatcher.matches_using_parent_results``);
- an excluded directory is skipped whole unless an exception (``!``) might
  match inside it (``PatternMatcher.descends_into_excluded``);
- an excluded directory that is entered is sent only once something below it
  is, just before that entry (so it shows up exactly when it has one).

``ContextFilter`` answers "is this entry in the transferred tree" for every view
of the context pybuild gives (COPY/ADD sources, their cache keys, RUN bind
mounts), resolving symlinks inside the filtered tree, and writes the overlay
whiteouts that hide the rest from a RUN bind mount (``write_whiteouts``).
"""

from __future__ import annotations

import os
import posixpath
import stat

import msgspec

from builder import rootpath
from builder.context.ignore import MatchInfo, PatternMatcher
from builder.errors import ContextError

__all__ = ["ContextFilter"]

_NO_INFO: MatchInfo = frozenset()


class _DirState(msgspec.Struct, frozen=True):
    """A walked directory: what its children inherit, and whether it is excluded
    (then it is in the tree only if something below it is)."""

    info: MatchInfo
    excluded: bool


def _without_trailing_glob(text: str) -> str:
    """fsutil's patternWithoutTrailingGlob: ``a/**`` and ``a/*`` are ``a``."""
    return text.removesuffix("/**").removesuffix("/*")


class ContextFilter:
    """Which entries of the context at ``root`` BuildKit's transfer would send,
    given the ``.dockerignore`` patterns in ``matcher``.  Paths are relative to
    the context, ``/``-separated, never ``.``-prefixed."""

    def __init__(self, root: str, matcher: PatternMatcher) -> None:
        self.root = root
        self.matcher = matcher
        # fsutil enters every excluded dir once an exception has a wildcard before
        # its trailing /* or /**; else only a dir an exception lies in (or names).
        exceptions = [_without_trailing_glob(text) for text, exception in matcher.patterns()
                      if exception]
        self._enter_all = any(c in text for text in exceptions for c in "*[]?^\\")
        self._exception_dirs = [text + "/" for text in exceptions]
        self._dirs: dict[str, _DirState | None] = {}
        self._present: dict[str, bool] = {}  # excluded dirs the walk enters
        self._parents: dict[str, tuple[str | None, bool]] = {}  # _resolve_dir's answers

    # -- the walk's verdicts ----------------------------------------------------------

    def _dir_state(self, rel: str) -> _DirState | None:
        """The walk's state for directory ``rel`` (the context itself is "."),
        computed from the top down and remembered; None if the walk skips it."""
        if rel == ".":
            return _DirState(frozenset(), False)
        missing = []
        path = rel
        while path != "." and path not in self._dirs:
            missing.append(path)
            path = posixpath.dirname(path) or "."
        for path in reversed(missing):
            parent = self._parent_state(path)
            if parent is None:  # below a skipped dir: skipped too
                self._dirs[path] = None
                continue
            excluded, info = self._match(path, parent)
            pruned = excluded and not self.descends_into_excluded(path)
            self._dirs[path] = None if pruned else _DirState(info, excluded)
        return self._dirs[rel]

    def descends_into_excluded(self, dir_path: str) -> bool:
        """Does the walk enter the excluded directory ``dir_path``, or skip it whole?"""
        if self._enter_all:
            return True
        under = dir_path + "/"
        return any(text.startswith(under) for text in self._exception_dirs)

    def _parent_state(self, rel: str) -> _DirState | None:
        return self._dir_state(rel.rpartition("/")[0] or ".")

    def _match(self, rel: str, parent: _DirState) -> tuple[bool, MatchInfo]:
        if not self.matcher.exclusions():
            # Without exceptions the walk's answer is "the path or a parent matches"
            # (an excluded dir is never entered), and the one-regex form is faster.
            return self.matcher.matches_or_parent_matches(rel), _NO_INFO
        # fsutil gives top-level entries no parent MatchInfo (the root is not walked).
        info = parent.info if "/" in rel else None
        return self.matcher.matches_using_parent_results(rel, info)

    def _sent(self, rel: str, is_dir: bool | None) -> bool:
        """Is the entry ``rel`` (its parents real directories) in the tree?  Its
        type is looked up only if needed (an excluded entry) and not given."""
        parent = self._parent_state(rel)
        if parent is None:
            return False
        excluded, _ = self._match(rel, parent)
        if not excluded:
            return True
        if is_dir is None:
            st = self._lstat(rel)
            is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        return is_dir and self._dir_state(rel) is not None and self._has_sent_below(rel)

    def _has_sent_below(self, rel: str) -> bool:
        """For an excluded directory the walk enters: is anything below it sent?"""
        known = self._present.get(rel)
        if known is not None:
            return known
        scanned, stack, found = [], [rel], False
        while stack and not found:
            directory = stack.pop()
            scanned.append(directory)
            state = self._dir_state(directory)
            assert state is not None  # only entered directories are stacked
            for name, is_dir in self._children(directory):
                child = f"{directory}/{name}" if directory != "." else name
                if not self._match(child, state)[0]:
                    found = True
                    break
                if is_dir and self._dir_state(child) is not None:
                    if self._present.get(child) is None:
                        stack.append(child)
                    elif self._present[child]:
                        found = True
                        break
        if found:  # the dirs on the way down to it are sent too
            path = scanned[-1]
            while path != posixpath.dirname(rel) and path:
                self._present[path] = True
                path = posixpath.dirname(path)
        else:
            self._present.update(dict.fromkeys(scanned, False))
        return found

    def _children(self, rel: str) -> list[tuple[str, bool]]:
        try:
            with os.scandir(os.path.join(self.root, rel)) as listing:
                return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in listing)
        except OSError as err:
            raise ContextError(f"{os.path.join(self.root, rel)}: {err.strerror} (did the "
                               "build context change during the build?)") from None

    def _lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(os.path.join(self.root, rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:  # ENAMETOOLONG (a context deeper than PATH_MAX), EACCES
            raise ContextError(f"{os.path.join(self.root, rel)[:200]}: {err.strerror}") from None

    # -- what callers ask ---------------------------------------------------------------

    def summary_scope(self) -> str | None:
        """What ``hides`` depends on besides an entry's path, for a checksum's directory
        summaries (``context.checksum``): the patterns; None when an exception pattern
        makes an excluded directory's fate depend on what lies below it."""
        if self.matcher.exclusions():
            return None
        return repr(self.matcher.patterns())

    def resolve(self, rel: str, *, follow: bool = True) -> tuple[str | None, bool]:
        """``rel`` resolved inside the context with chroot semantics (``..`` stops
        at the root, an absolute link restarts there), the last component
        followed only with ``follow``: ``(path, hidden)``.  ``hidden`` when the
        entry, or anything on the way to it (a component, a link followed), is
        not in the transferred tree; the path is None then, or when it is missing
        from the context itself."""
        try:
            found = rootpath.walk(_FilteredTree(self), rel, follow_last=follow)
        except rootpath.TooManyLinks:
            raise ContextError(f"{rel}: too many levels of symbolic links in the "
                               "build context") from None
        if found.parts is None:
            return None, found.hidden
        return "/".join(found.parts) or ".", False

    def hides(self, rel: str) -> bool:
        """Is the entry ``rel`` (as a walk below a source names it, its last
        component not followed) absent from the transferred tree, or reached
        only through something that is?"""
        parent, _, name = rel.rpartition("/")
        if name in ("", ".", ".."):
            return self.resolve(rel, follow=False)[1]
        where, hidden = self._resolve_dir(parent)
        if where is None:
            return hidden
        # The entry exists (a walk found it); an excluded one's type is looked up.
        return not self._sent(name if where == "." else f"{where}/{name}", None)

    def _resolve_dir(self, rel: str) -> tuple[str | None, bool]:
        """resolve(rel) for a directory a walk is in, remembered, and made from its
        parent's: a copy walks many entries of one directory, and deep trees must
        not cost a lookup per level per entry."""
        missing = []
        path = rel
        while path and path not in self._parents:
            missing.append(path)
            path = path.rpartition("/")[0]
        for path in reversed(missing):
            head, _, name = path.rpartition("/")
            where, hidden = self._parents[head] if head else (".", False)
            if where is not None and name not in (".", ".."):
                entry = name if where == "." else f"{where}/{name}"
                st = self._lstat(entry)
                if st is None:
                    where, hidden = None, False
                elif stat.S_ISLNK(st.st_mode):
                    where, hidden = self.resolve(path)  # a link may lead anywhere
                elif not self._sent(entry, stat.S_ISDIR(st.st_mode)):
                    where, hidden = None, True
                else:
                    where = entry
            elif where is not None:
                where, hidden = self.resolve(path)
            self._parents[path] = (where, hidden)
        return self._parents[rel] if rel else (".", False)

    def hides_source(self, rel: str) -> bool:
        """The same for a source, followed if it is a link (as COPY follows it)."""
        return self.resolve(rel)[1]

    def hidden_below(self, rel: str) -> list[tuple[str, bool]]:
        """The entries below the sent directory ``rel`` that the tree lacks, each as
        ``(path, whole)``: ``whole`` for one whose subtree holds nothing sent (one
        whiteout hides it), else a sent directory that needs its own whiteouts
        below.  Directories no pattern can reach are not listed: the cost is the
        directories that patterns may match in, not the whole context."""
        out: list[tuple[str, bool]] = []
        stack = [rel]
        while stack:
            directory = stack.pop()
            state = self._dir_state(directory)
            if directory != "." and not (state is not None and (
                    state.excluded or self.matcher.may_match_below(directory))):
                continue  # nothing below can differ from this sent dir
            for name, is_dir in reversed(self._children(directory)):
                child = f"{directory}/{name}" if directory != "." else name
                if not self._sent(child, is_dir):
                    out.append((child, True))
                elif is_dir:
                    child_state = self._dir_state(child)
                    if child_state is not None and child_state.excluded:
                        out.append((child, False))
                    stack.append(child)
        return out

    def whiteouts(self, rel: str) -> list[str]:
        """The entries below the sent directory ``rel`` that one whiteout each hides."""
        return [path for path, whole in self.hidden_below(rel) if whole]

    def write_hide_layer(self, rel: str, dest: str) -> bool:
        """write_whiteouts of whiteouts(rel) into ``dest``; False (and nothing
        written) if nothing below ``rel`` is hidden."""
        hidden = self.whiteouts(rel)
        if hidden:
            self.write_whiteouts(rel, hidden, dest)
        return bool(hidden)

    def write_whiteouts(self, rel: str, hidden: list[str], dest: str) -> None:
        """Make ``dest`` an overlay lower layer that, laid over the sent directory
        ``rel``, hides the ``hidden`` entries below it (see whiteouts): a 0:0
        character device each, and each directory on the way with the context's
        mode, owner and times (a merged directory shows the topmost layer's)."""
        made: set[str] = set()  # directories below dest, relative to it
        self._copy_dir(rel, dest)
        for path in hidden:
            below = posixpath.relpath(path, rel) if rel != "." else path
            steps = below.split("/")[:-1]
            for depth in range(1, len(steps) + 1):
                inner = "/".join(steps[:depth])
                if inner not in made:
                    made.add(inner)
                    self._copy_dir(posixpath.join(rel, inner), os.path.join(dest, inner))
            os.mknod(os.path.join(dest, below), stat.S_IFCHR | 0o000, os.makedev(0, 0))
        # Deepest first: making an entry changes its parent's mtime.
        for inner in sorted(made, key=lambda p: -p.count("/")):
            self._copy_times(posixpath.join(rel, inner), os.path.join(dest, inner))
        self._copy_times(rel, dest)

    def _copy_dir(self, rel: str, host: str) -> None:
        st = os.lstat(os.path.join(self.root, rel))
        os.makedirs(host, exist_ok=True)
        os.chown(host, st.st_uid, st.st_gid)
        os.chmod(host, stat.S_IMODE(st.st_mode))

    def _copy_times(self, rel: str, host: str) -> None:
        st = os.lstat(os.path.join(self.root, rel))
        os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns))


class _FilteredTree(rootpath.HostTree):
    """The context as the transfer sends it, for ``rootpath.walk``: an entry the
    transfer leaves out is HIDDEN, even when it exists (a link to it, or a path
    through it, must not reach it)."""

    def __init__(self, view: ContextFilter) -> None:
        super().__init__(view.root)
        self.view = view

    def lookup(self, parents: list[str], name: str, via_link: bool) -> rootpath.Kind:
        candidate = "/".join([*parents, name])
        st = self.view._lstat(candidate)
        if st is None:
            return rootpath.Kind.MISSING
        if not self.view._sent(candidate, stat.S_ISDIR(st.st_mode)):
            return rootpath.Kind.HIDDEN
        return rootpath.kind_of(st.st_mode)
