"""Wasted space: bytes a layer adds that a later layer deletes or overwrites.

Such bytes are still shipped in every pull (the earlier layer carries them) but
never seen in the image: the classic ``RUN apt-get install`` in one step and
``RUN rm -rf /var/lib/apt/lists`` in the next.  No file contents are read.

Each later layer is walked and every entry looked up in the layers beneath it, the
way overlay resolves a path: only where a lower layer has the same directory does the
walk go deeper.  So the cost follows the later layers' size and what they hide, not
the size of the layers below: a small RUN over a 100,000-file COPY costs a few lstats
(issue 17: this ran on every build that produced a layer).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from builder.layers.changes import same_entry
from builder.layers.whiteout import has_opaque, is_overlay_whiteout, read_xattrs
from builder.userns import rootless


class _Below:
    """What the layers under a later one show at a path: a file (or link) owned by
    ``file_layer``, a directory merged from ``dirs`` (topmost first), or nothing."""

    __slots__ = ("dirs", "file_layer", "file_size")

    def __init__(self) -> None:
        self.file_layer: int | None = None
        self.file_size = 0
        self.dirs: list[int] = []


def _copied_up(path: bytes, st: os.stat_result, old_path: bytes) -> bool:
    """A later layer's entry equal to the one it covers: overlay copied it up (a chmod
    to its own mode, a touch undone) and the layer's tar leaves it out (``same_entry``),
    so it hides nothing and owns nothing."""
    if is_overlay_whiteout(st) or not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return False
    try:
        return same_entry(st, read_xattrs(path), path, os.lstat(old_path), old_path)
    except OSError:
        return False


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


class _Stack:
    """The layer dirs (base first) and the bytes each wastes so far."""

    def __init__(self, layer_dirs: list[Path]) -> None:
        self.dirs = [os.fsencode(d) for d in layer_dirs]
        self.wasted = [0] * len(layer_dirs)

    def below(self, parents: list[int], rel: bytes) -> _Below:
        """Resolve ``rel`` in the directory merged from ``parents`` (topmost first),
        with overlay's rules: a whiteout ends the lookup, a directory merges with the
        directories under it until an opaque one, a file hides everything under it."""
        found = _Below()
        for position, layer in enumerate(parents):
            st = _lstat(self.dirs[layer] + rel)
            if st is None:
                continue
            if is_overlay_whiteout(st):
                break
            if stat.S_ISDIR(st.st_mode):
                found.dirs.append(layer)
                if has_opaque(self.dirs[layer] + rel, rootless=rootless()):
                    break
                continue
            if not found.dirs:  # a file under a directory is hidden by it
                found.file_layer, found.file_size = self._owner(parents[position:], rel, st)
            break
        return found

    def _owner(self, chain: list[int], rel: bytes, st: os.stat_result) -> tuple[int, int]:
        """The layer whose tar carries the file ``chain[0]`` shows: copy-ups of an equal
        file below are not in their layer's tar."""
        owner = chain[0]
        for layer in chain[1:]:
            old = _lstat(self.dirs[layer] + rel)
            if old is None:
                continue
            if not _copied_up(self.dirs[owner] + rel, st, self.dirs[layer] + rel):
                break
            owner, st = layer, old
        return owner, st.st_size if stat.S_ISREG(st.st_mode) else 0

    def charge(self, found: _Below, rel: bytes) -> None:
        """Everything ``found`` shows at ``rel`` is hidden: its bytes are waste."""
        if found.file_layer is not None:
            self.wasted[found.file_layer] += found.file_size
            return
        names: set[bytes] = set()
        for layer in found.dirs:
            names.update(os.listdir(self.dirs[layer] + rel))
        for name in names:
            child = rel + b"/" + name
            self.charge(self.below(found.dirs, child), child)

    def walk(self, upper: int, rel: bytes, parents: list[int]) -> None:
        """Charge what layer ``upper``'s directory ``rel`` hides in the directory
        merged from ``parents`` beneath it."""
        with os.scandir(self.dirs[upper] + rel) as listing:
            entries = list(listing)
        for entry in entries:
            child = rel + b"/" + os.fsencode(entry.name)
            found = self.below(parents, child)
            if found.file_layer is None and not found.dirs:
                continue  # new here: hides nothing
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                if found.file_layer is not None and _copied_up(
                        self.dirs[upper] + child, st, self.dirs[found.file_layer] + child):
                    continue
                self.charge(found, child)
            elif found.file_layer is not None or has_opaque(self.dirs[upper] + child,
                                                            rootless=rootless()):
                # A directory over a file, or an opaque one: all that was here is hidden.
                self.charge(found, child)
            else:
                self.walk(upper, child, found.dirs)


def wasted_bytes(layer_dirs: list[Path]) -> list[int]:
    """For each layer (base first): bytes of its files that later layers hide."""
    stack = _Stack(layer_dirs)
    for upper in range(1, len(layer_dirs)):
        stack.walk(upper, b"", list(range(upper - 1, -1, -1)))
    return stack.wasted
