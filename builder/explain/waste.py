"""Wasted space: bytes a layer adds that a later layer deletes or overwrites.

Such bytes are still shipped in every pull (the earlier layer carries them) but
never seen in the image: the classic ``RUN apt-get install`` in one step and
``RUN rm -rf /var/lib/apt/lists`` in the next.  Computed by one walk of each
layer directory, bottom to top; no file contents are read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from builder.layers.changes import same_entry
from builder.layers.whiteout import has_opaque, is_overlay_whiteout, read_xattrs


class _Node:
    """A path seen so far: the layer that made it visible and its size, and children."""

    __slots__ = ("children", "layer", "size")

    def __init__(self) -> None:
        self.layer = -1
        self.size = 0
        self.children: dict[str, _Node] = {}


def _copied_up(path: str, st: os.stat_result, old_path: str) -> bool:
    """A later layer's entry equal to the one it covers: overlay copied it up (a chmod
    to its own mode, a touch undone) and the layer's tar leaves it out (``same_entry``),
    so it hides nothing."""
    if is_overlay_whiteout(st) or not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return False
    try:
        old_st = os.lstat(old_path)
        raw = os.fsencode(path)
        return same_entry(st, read_xattrs(raw), raw, old_st, os.fsencode(old_path))
    except OSError:
        return False


def wasted_bytes(layer_dirs: list[Path]) -> list[int]:
    """For each layer (base first): bytes of its files that later layers hide.

    A tree of visible paths makes each hide cost the size of what it removes, so the
    whole walk stays linear in the number of entries.
    """
    root = _Node()
    wasted = [0] * len(layer_dirs)

    def charge(node: _Node) -> None:
        stack = [node]
        while stack:
            current = stack.pop()
            if current.layer >= 0:
                wasted[current.layer] += current.size
            stack.extend(current.children.values())

    def node_at(parts: list[str], create: bool) -> _Node | None:
        node = root
        for part in parts:
            child = node.children.get(part)
            if child is None:
                if not create:
                    return None
                child = node.children[part] = _Node()
            node = child
        return node

    for index, layer in enumerate(layer_dirs):
        for directory, dirs, files in os.walk(layer):
            rel = os.path.relpath(directory, layer)
            parts = [] if rel == "." else rel.split("/")
            if parts and has_opaque(os.fsencode(directory), rootless=False):
                node = node_at(parts, create=False)
                if node is not None:  # everything below it from lower layers is hidden
                    for child in node.children.values():
                        charge(child)
                    node.children.clear()
            links = [d for d in dirs if os.path.islink(os.path.join(directory, d))]
            for name in files + links:
                path = os.path.join(directory, name)
                st = os.lstat(path)
                parent = node_at(parts, create=True)
                assert parent is not None
                old = parent.children.get(name)
                if old is not None and old.layer >= 0 and _copied_up(
                        path, st, os.path.join(layer_dirs[old.layer], *parts, name)):
                    continue  # the same file again (a copy-up): not in the layer's tar
                parent.children.pop(name, None)
                if old is not None:  # overwritten, or deleted by a whiteout
                    charge(old)
                if not is_overlay_whiteout(st):
                    node = parent.children[name] = _Node()
                    node.layer = index
                    node.size = st.st_size if stat.S_ISREG(st.st_mode) else 0
    return wasted
