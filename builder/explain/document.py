"""``pybuild explain --format json|yaml``: the report as a versioned document.

The schema is ``docs/explain.schema.json`` (described in ``docs/explain.md``); bump
``SCHEMA_VERSION`` on any change that is not a new optional field.  Reasons are the
cache's codes and parameters as recorded, never text to parse.  JSON escapes every
control character and PyYAML quotes them, so no output reaches a terminal raw.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from builder.cache.reasons import Reason
from builder.explain.render import cache_state
from builder.explain.report import LayerFacts, Report
from builder.explain.steps import StepRecord

SCHEMA_VERSION = 1
_CACHE_STATES = {"hit": "hit", "miss": "miss", "-": "none"}


def _reason(reason: Reason, values: Mapping[str, str] | None) -> dict[str, object]:
    record = reason.to_record()
    key = reason.names_value()
    now = values.get(key) if values is not None and key is not None else None
    if now is not None:  # --show-values: the image's own value
        record["params"] = {**reason.params, "now": now}
    return record


def _layer(facts: LayerFacts | None) -> dict[str, object] | None:
    if facts is None:
        return None
    return {"chainId": facts.chain_id, "diffId": facts.diff_id, "size": facts.size,
            "blobs": [{"compression": compression, "digest": digest, "size": size}
                      for compression, digest, size in facts.blobs]}


def _step(report: Report, step: StepRecord, values: Mapping[str, str] | None) -> dict[str, object]:
    facts = report.facts(step)
    return {"stage": step.stage, "index": step.index, "instruction": step.instruction,
            "line": step.line, "kind": "config" if step.config_only else "layer",
            "cache": _CACHE_STATES[cache_state(step)],
            "reasons": [_reason(reason, values) for reason in step.reasons],
            "layer": _layer(facts), "changes": step.changes.to_record(),
            "emptyLayer": bool(step.layer) and step.changes.empty,
            "wasted": facts.wasted if facts is not None else 0,
            "seconds": round(step.seconds, 3), "key": step.key}


def document(report: Report, values: Mapping[str, str] | None = None) -> dict[str, object]:
    steps = [_step(report, step, values) for step in report.steps]
    extra: dict[str, object] = {"plan": True} if report.image_id is None else {}
    if report.against:
        extra["against"] = report.against
    if report.bases:
        extra["bases"] = [{"stage": b.stage, "name": b.name, "platform": b.platform,
                           "image": b.image, "digest": b.digest} for b in report.bases]
    return {"schemaVersion": SCHEMA_VERSION, "image": report.image_id, **extra, "steps": steps,
            "summary": {"steps": len(steps),
                        "layers": sum(1 for s in report.steps if s.layer),
                        "emptyLayers": sum(1 for s in steps if s["emptyLayer"]),
                        "hits": sum(1 for s in steps if s["cache"] == "hit"),
                        "misses": sum(1 for s in steps if s["cache"] == "miss"),
                        "wasted": report.wasted}}


def to_json(report: Report, values: Mapping[str, str] | None = None) -> str:
    return json.dumps(document(report, values), indent=2)


def to_yaml(report: Report, values: Mapping[str, str] | None = None) -> str:
    import yaml

    text: str = yaml.safe_dump(document(report, values), sort_keys=False,
                               allow_unicode=False, width=1 << 16)
    return text.rstrip("\n")
