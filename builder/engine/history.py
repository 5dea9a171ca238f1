"""The image history a build writes: one entry per instruction, times as BuildKit sets them."""

from __future__ import annotations

from builder.engine.state import StageState
from builder.explain.steps import StepRecord
from builder.image import config as image_config


def add_history(state: StageState, created_by: str, record: StepRecord) -> None:
    """Append the history entry of the step ``record`` describes."""
    # Only layers carry their own time; fill_created gives the others one, as BuildKit does.
    state.image.setdefault("history", []).append(
        image_config.history_entry(created_by, empty_layer=record.layer is None,
                                   created=record.created if record.layer else None))


def fill_created(history: list[dict[str, object]], epoch: int | None) -> str | None:
    """BuildKit's normalizeLayersAndHistory: an entry without a time takes the first new
    layer's time, or the previous layer's; returns the image's "created" (the last time).
    With SOURCE_DATE_EPOCH, every time after the epoch is clamped to it."""
    created: object = None
    gap = False
    for entry in history:
        if entry.get("created"):
            created = entry["created"]
            if gap:
                break
        else:
            gap = True
    gap = False
    for entry in history:
        if entry.get("created"):
            if gap:
                created = entry["created"]
        else:
            gap = True
            entry["created"] = created
    if epoch is not None:
        stamp = image_config.rfc3339(epoch)
        for entry in history:
            if not entry.get("created") or str(entry["created"]) > stamp:
                entry["created"] = stamp
    return next((str(e["created"]) for e in reversed(history) if e.get("created")), None)
