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


def wasted_bytes(layer_dirs: list[Path]) -> list[int]:
    """For each layer (base first): bytes of its files that later layers hide."""
    owner: dict[str, tuple[int, int]] = {}  # path -> (layer index, size) of what is visible
    wasted = [0] * len(layer_dirs)

    def hide(prefix: str, below: int) -> None:
        """A later layer removes ``prefix`` (and what is under it) from layers < below."""
        for path in [p for p in owner if p == prefix or p.startswith(prefix + "/")]:
            index, size = owner[path]
            if index < below:
                wasted[index] += size
                del owner[path]

    for index, layer in enumerate(layer_dirs):
        for directory, dirs, files in os.walk(layer):
            rel_dir = os.path.relpath(directory, layer)
            rel_dir = "" if rel_dir == "." else rel_dir
            if rel_dir and has_opaque(os.fsencode(directory), rootless=False):
                for path in [p for p in owner if p.startswith(rel_dir + "/")]:
                    if owner[path][0] < index:
                        hide(path, index)
            for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
                path = f"{rel_dir}/{name}" if rel_dir else name
                st = os.lstat(os.path.join(directory, name))
                hide(path, index)
                if not is_overlay_whiteout(st):
                    owner[path] = (index, st.st_size if stat.S_ISREG(st.st_mode) else 0)
    return wasted
