"""COPY and ADD planning: the request, and which sources it selects.

This runs in the engine's process, before the cache decision: the selected
sources are what the step's cache key digests.  The copy itself runs in a
child with the snapshot mounted (``copy.py``).  Sources are resolved inside
their root with chroot semantics (``resolve_in_root``).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

import msgspec

from builder import replay
from builder.context.fnmatch_go import BadPattern
from builder.context.fnmatch_go import match as go_match
from builder.context.ignore import PatternMatcher
from builder.engine.git_source import is_git_source
from builder.errors import BuildError
from builder.rootpath import lexical_in_root, resolve_in_root

if TYPE_CHECKING:
    from builder.context.view import ContextFilter

_URL_PREFIXES = ("http://", "https://")


class CopyRequest(msgspec.Struct, dict=True):  # dict: for the cached matcher
    sources: list[str]
    dest: str
    workdir: str
    chown: str = ""
    chmod: str = ""
    ignore: ContextFilter | None = None   # .dockerignore: what the context transfer sends
    heredocs: list[tuple[str, str]] = msgspec.field(default_factory=list)  # (name, content)
    selected: list[str] | None = None   # sources after globbing, when chosen in advance
    exclude: list[str] = msgspec.field(default_factory=list)   # --exclude patterns
    parents: bool = False     # --parents: keep each source's path below the context
    link: bool = False        # --link: same files as a plain copy (see module doc)
    add: bool = False         # ADD: extract local archives, fetch URLs
    preserve_owner: bool = False   # COPY --from keeps owners; the context's are root's
    checksum: str = ""        # ADD --checksum of an http(s) source (add_url.py)
    git_trees: dict[str, str] = msgspec.field(default_factory=dict)  # git source -> its checkout
    # The content digest the step's cache key holds (context sources only): the copy
    # recomputes it from the bytes it writes and fails on a difference.
    expected_content: str | None = None

    @cached_property
    def exclude_matcher(self) -> PatternMatcher | None:
        return PatternMatcher(self.exclude) if self.exclude else None

    def excluded(self, rel: str) -> bool:
        """A source BuildKit's context transfer would not send (followed if a link)."""
        return self.ignore is not None and self.ignore.hides_source(rel)

    def skipped(self, rel: str, is_dir: bool) -> bool:
        """An entry below a source that the transferred context lacks."""
        return self.ignore is not None and self.ignore.hides(rel)

    def leaves_out(self, source_rel: str, rel: str, is_dir: bool) -> bool:
        """Whether an entry found below ``source_rel`` is left out of the copy: by
        .dockerignore, or by --exclude (matched on its path below the source, as
        BuildKit's ExcludePatterns); the cache key leaves out the same entries."""
        if self.skipped(rel, is_dir):
            return True
        matcher = self.exclude_matcher
        if matcher is None:
            return False
        below = posixpath.relpath(rel, source_rel)
        return matcher.matches(below) and not (is_dir and matcher.may_reinclude_under(below))

    def summary_scope(self, context: str, sources: list[tuple[str, str]]) -> str | None:
        """What ``leaves_out`` depends on besides an entry's path below its source, for
        the checksum's directory summaries; None (no summaries) when a .dockerignore
        exception makes it depend on a directory's contents, or a source was reached
        through a link (the link's way through ignored paths decides too)."""
        scope = self.ignore.summary_scope() if self.ignore is not None else ""
        if scope is None or any(host != lexical_in_root(context, rel) for rel, host in sources):
            return None
        return f"{scope}\0{self.exclude!r}"

    def kept_sources(self, selected: list[str]) -> list[str]:
        """The selected context sources that are copied: URLs are not in the context,
        and --exclude drops what a wildcard matched (never a source named outright)."""
        named = {clean_source(s) for s in self.sources if not has_magic(s)}
        matcher = self.exclude_matcher
        return [rel for rel in selected if not (self.add and is_url(rel)) and not (
            matcher is not None and rel not in named
            and matcher.matches(posixpath.basename(rel)))]


def clean_source(path: str) -> str:
    """A source path relative to its root; ``..`` cannot climb above it."""
    return posixpath.normpath("/" + path).lstrip("/") or "."


def is_url(source: str) -> bool:
    """A source ADD fetches: an http(s) URL or a git repository (git_source.py)."""
    return source.startswith(_URL_PREFIXES) or is_git_source(source)


def has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def _glob_part(pattern: str, name: str) -> bool:
    try:
        return go_match(pattern, name)
    except BadPattern:
        raise BuildError(f"invalid wildcard pattern {pattern!r}: syntax error") from None


def expand_sources(root: str, pattern: str, excluded: Callable[[str], bool]) -> list[str]:
    """Context-relative paths matching ``pattern`` (a plain path or a glob, matched
    one component at a time with Go's filepath.Match as BuildKit does)."""
    cleaned = clean_source(pattern)
    if not has_magic(cleaned):
        return [cleaned]
    matches = ["."]
    for part in cleaned.split("/"):
        found = []
        for base in matches:
            host = resolve_in_root(root, base)
            is_dir = host is not None and os.path.isdir(host)
            if not is_dir:
                _record_entry(root, base, host)
                continue
            assert host is not None
            names = sorted(os.listdir(host))
            _record_listing(root, base, host, names)
            selected = [n for n in names if _glob_part(part, n)] if has_magic(part) else (
                [part] if part in names else [])
            found += [posixpath.normpath(posixpath.join(base, n)) for n in selected]
        matches = found
    return [m for m in matches if not excluded(m)]


def _record_listing(root: str, base: str, host: str, names: list[str]) -> None:
    """A wildcard's listing, for a replay of the build (``builder.replay``)."""
    if (recorder := replay.recording()) is None:
        return
    if host != lexical_in_root(root, base):
        recorder.refuse("a wildcard listed a directory reached through a link")
    else:
        recorder.names(host, names)


def _record_entry(root: str, base: str, host: str | None) -> None:
    """A path a wildcard met that it does not list (missing, a file, a link)."""
    if (recorder := replay.recording()) is None:
        return
    lexical = lexical_in_root(root, base)
    through_link = host != lexical if host is not None else os.path.islink(lexical)
    if through_link:
        recorder.refuse("a wildcard met a link")
    else:
        recorder.entry(lexical)


def select_sources(root: str, request: CopyRequest) -> list[str]:
    """The request's sources after globbing, each checked to exist inside ``root``.
    With ADD, URLs are kept as they are."""
    selected: list[str] = []
    for source in request.sources:
        if request.add and is_url(source):
            selected.append(source)
            continue
        matches = expand_sources(root, source, request.excluded)
        # A wildcard may match nothing: BuildKit's Dockerfile frontend copies with
        # AllowEmptyWildcard (dockerfile2llb/convert.go, dispatchCopy; COPY and ADD).
        if not has_magic(source) and (not matches
                                       or resolve_in_root(root, matches[0]) is None):
            raise BuildError(f'"/{clean_source(source)}": not found')
        selected += matches
    return selected


def parse_chmod(value: str) -> int | None:
    if not value:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise BuildError(f"invalid chmod parameter: '{value}'. it should be octal string "
                         "and between 0 and 07777")
    return mode
