"""``StepRecord``: what one build step did, the record the engine fills and explain reads.

One type end to end: the engine creates it, the snapshot commit's ``ChangeSummary``
and the cache's ``Reason`` list go into it unchanged, ``records`` stores it as JSON and
reads it back for ``pybuild explain``.  A record written by an older pybuild (top-level
counts and a free-text ``note``) reads as the same type, its note kept as a ``note``
reason that renderers print and never parse.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from builder.cache.reasons import Reason, ReasonCode, from_records, summary_text, to_records
from builder.layers.summary import ChangeSummary


class StepRecord(msgspec.Struct):
    """What one step did; ``explain`` shows these."""

    stage: str
    index: int
    instruction: str
    line: int
    layer: str | None = None          # chain ID of the layer it made, if any
    key: str = ""                     # its cache key (layer steps only)
    cached: bool = False
    changes: ChangeSummary = msgspec.field(default_factory=ChangeSummary)
    seconds: float = 0.0
    created: str = ""                 # history "created" (from the cache entry on a hit)
    reasons: list[Reason] = msgspec.field(default_factory=list)   # why it was or was not cached

    @property
    def config_only(self) -> bool:
        return bool(self.reasons) and self.reasons[0].code is ReasonCode.CONFIG_ONLY

    @property
    def note(self) -> str:
        """The reasons in one line, for people (``cache miss: file app.py changed``)."""
        return summary_text(self.reasons)

    def to_record(self) -> dict[str, object]:
        return {"stage": self.stage, "index": self.index, "instruction": self.instruction,
                "line": self.line, "layer": self.layer, "key": self.key,
                "cached": self.cached, "seconds": self.seconds, "created": self.created,
                "changes": self.changes.to_record(), "reasons": to_records(self.reasons)}

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> StepRecord:
        """A stored record (the store's own: trusted, maybe from an older pybuild)."""
        changes = record.get("changes")
        if not isinstance(changes, dict):  # an older record: counts at the top, "size"
            changes = {**record, "bytes": record.get("size", 0)}
        summary = ChangeSummary.from_record(changes)
        reasons = from_records(record.get("reasons"))
        note = record.get("note")
        if "reasons" not in record and isinstance(note, str) and note:
            old = {"cache hit": ReasonCode.CACHE_HIT, "config only": ReasonCode.CONFIG_ONLY}
            reasons = [Reason(old[note]) if note in old else Reason(ReasonCode.NOTE, text=note)]
        layer, seconds = record.get("layer"), record.get("seconds")
        return cls(stage=str(record.get("stage", "")), index=_int(record.get("index")),
                   instruction=str(record.get("instruction", "")),
                   line=_int(record.get("line")),
                   layer=layer if isinstance(layer, str) else None,
                   key=str(record.get("key") or ""), cached=record.get("cached") is True,
                   changes=summary,
                   seconds=float(seconds) if isinstance(seconds, (int, float)) else 0.0,
                   created=str(record.get("created") or ""), reasons=reasons)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
