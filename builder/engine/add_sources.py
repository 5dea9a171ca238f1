"""ADD's remote sources, between the engine and the copy: flags checked where
BuildKit checks them, git refs resolved to commits for the cache key, and, on a
cache miss, the checkouts made before the copy child runs.

What BuildKit refuses (frontend/dockerfile/dockerfile2llb/convert_copy.go,
dispatchCopy) is refused here before the cache is consulted, so a cached step
fails the same way a fresh one does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from builder.engine.git_source import (
    ResolvedGit,
    check_checksum_flag,
    checkout,
    parse_git_ref,
    redact,
    resolve,
    with_flags,
)

if TYPE_CHECKING:
    from builder.dockerfile.commands import AddCommand
    from builder.engine.copy_plan import CopyRequest
    from builder.store import Store

Inputs = list[tuple[str, str]]


class RemoteSources(msgspec.Struct):
    gits: dict[str, ResolvedGit] = msgspec.field(default_factory=dict)
    inputs: Inputs = msgspec.field(default_factory=list)

    @property
    def asks_a_server(self) -> bool:
        """A git or URL source: building the step again asks its server again."""
        return bool(self.gits) or any(kind == "url" for kind, _ in self.inputs)


def plan_add(store: Store, command: AddCommand, request: CopyRequest) -> RemoteSources:
    """Check ADD's flags and resolve its git sources; the cache-key inputs they add."""
    sources = list(command.sources)
    check_checksum_flag(sources, command.checksum)
    planned = RemoteSources()
    for source in request.selected or []:
        found = parse_git_ref(source)
        if found is None:
            if source.startswith(("http://", "https://")):
                planned.inputs.append(("url", redact(source)))
            continue
        found = with_flags(found, command.checksum, command.keep_git_dir)
        work = store.tmp_dir("git-resolve")
        try:
            resolved = resolve(found, work.path)
        finally:
            work.release()
        planned.gits[source] = resolved
        planned.inputs.append(("git", resolved.cache_input()))
    if command.checksum and not planned.gits:
        # Only when set: the keys of steps without it stay as they were.
        request.checksum = command.checksum
        planned.inputs.append(("checksum", command.checksum))
    return planned


@contextlib.contextmanager
def checkouts(store: Store, planned: RemoteSources | None,
              request: CopyRequest) -> Iterator[None]:
    """The git sources checked out, each in a private dir of the store's tmp area,
    for the copy; removed afterwards, whatever happens."""
    made = []
    try:
        for source, resolved in (planned.gits.items() if planned else []):
            work = store.tmp_dir("git")
            made.append(work)
            request.git_trees[source] = str(checkout(resolved, Path(work.path)))
        yield
    finally:
        request.git_trees.clear()
        for work in made:
            work.release()
