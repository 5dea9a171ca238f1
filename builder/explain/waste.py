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

from builder.layers.whiteout import has_opaque, is_overlay_whiteout


class _Node:
    """A path seen so far: the layer that made it visible and its size, and children."""

    __slots__ = ("children", "layer", "size")

    def __init__(self) -> None:
        self.layer = -1
        self.size = 0
        self.children: dict[str, _Node] = {}


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
                st = os.lstat(os.path.join(directory, name))
                parent = node_at(parts, create=True)
                assert parent is not None
                old = parent.children.pop(name, None)
                if old is not None:  # overwritten, or deleted by a whiteout
                    charge(old)
                if not is_overlay_whiteout(st):
                    node = parent.children[name] = _Node()
                    node.layer = index
                    node.size = st.st_size if stat.S_ISREG(st.st_mode) else 0
    return wasted
