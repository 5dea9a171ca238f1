"""Render ``pybuild explain``: a table of steps, the layers they made and what changed.

Instructions, stage names and notes come from the Dockerfile: every line goes
through ``textsafe.printable``, so none can reach the terminal as a control sequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from builder.textsafe import printable


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{size:.1f}GB"


def _cache_state(step: dict[str, Any]) -> str:
    if step.get("cached"):
        return "hit"
    return "-" if step.get("note") == "config only" else "miss"


def _empty_layer(step: dict[str, Any]) -> bool:
    """A step that made a layer but changed no file: the empty layer."""
    return bool(step.get("layer")) and not any(
        step.get(name, 0) for name in ("added", "modified", "deleted"))


def render(image_id: str, steps: list[dict[str, Any]],
           values: Mapping[str, str] | None = None) -> str:
    """The table; with ``values`` (``--show-values``: the image's own build-arg and env
    values), notes that name a changed argument show its value in the image."""
    lines = [f"image {image_id}", ""]
    header = f"{'STEP':<14} {'LAYER':<14} {'CACHE':<6} {'ADDED':>6} {'CHANGED':>8} " \
             f"{'DELETED':>8} {'SIZE':>9} {'TIME':>7}  INSTRUCTION"
    lines.append(header)
    layers = empty = 0
    for step in steps:
        layer = step["layer"][7:19] if step.get("layer") else "-"
        layers += bool(step.get("layer"))
        where = f"{step['stage']}:{step['index']}"
        lines.append(
            f"{where:<14} {layer:<14} {_cache_state(step):<6} "
            f"{step.get('added', 0):>6} {step.get('modified', 0):>8} {step.get('deleted', 0):>8} "
            f"{human_size(step.get('size', 0)):>9} {step.get('seconds', 0):>6.2f}s  "
            f"{step['instruction']}")
        notes = [step["note"]] if step.get("note") and step["note"] != "config only" else []
        if _empty_layer(step):
            empty += 1
            notes.append("empty layer: the step changed no files (BuildKit keeps such a "
                         "layer too)")
        if values is not None:
            from builder.explain.values import with_values

            notes = [with_values(note, values) for note in notes]
        if step.get("wasted"):
            notes.append(f"wasted: {human_size(step['wasted'])} of it is deleted or "
                         "overwritten by later steps")
        lines += [f"{'':<14} {note}" for note in notes]
    lines += ["", f"{layers} of {len(steps)} steps made a layer; the others changed no "
              "files." + (f" {empty} of the layers are empty." if empty else "")]
    wasted = sum(step.get("wasted", 0) for step in steps)
    if wasted:
        lines.append(f"{human_size(wasted)} shipped in layers but hidden by later steps: "
                     "delete files in the step that creates them.")
    return "\n".join(printable(line) for line in lines)
