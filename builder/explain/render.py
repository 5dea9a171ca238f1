"""Render ``pybuild explain`` as text: a table of steps, the layers they made and why.

Reasons are rendered by code (``cache.reasons``); instructions, stage names and paths
come from the Dockerfile and the context, so every line goes through
``textsafe.printable``: none can reach the terminal as a control sequence.
"""

from __future__ import annotations

from collections.abc import Mapping

from builder.cache.reasons import ReasonCode, summary_text
from builder.explain.report import Report
from builder.explain.steps import StepRecord
from builder.textsafe import printable


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{size:.1f}GB"


def cache_state(step: StepRecord) -> str:
    """``hit``, ``miss``, or ``-`` for a step with nothing to cache."""
    if step.cached:
        return "hit"
    return "-" if step.config_only else "miss"


def _notes(step: StepRecord, wasted: int, values: Mapping[str, str] | None,
           against: bool) -> list[str]:
    notes = []
    if step.reasons and step.reasons[0].code is not ReasonCode.CONFIG_ONLY:
        notes.append(summary_text(step.reasons, values,
                                  "against the baseline: " if against else "cache miss: "))
    if step.layer and step.changes.empty:
        notes.append("empty layer: the step changed no files (BuildKit keeps such a layer too)")
    if wasted:
        notes.append(f"wasted: {human_size(wasted)} of it is deleted or overwritten by "
                     "later steps")
    return notes


def _measures(report: Report, step: StepRecord) -> str:
    """ADDED .. TIME; a plan knows none of them."""
    if report.image_id is None:
        return f"{'-':>6} {'-':>8} {'-':>8} {'-':>9} {'-':>7}"
    changes = step.changes
    return (f"{changes.added:>6} {changes.modified:>8} {changes.deleted:>8} "
            f"{human_size(changes.size):>9} {step.seconds:>6.2f}s")


def render(report: Report, values: Mapping[str, str] | None = None) -> str:
    """The table; with ``values`` (``--show-values``: the image's own build-arg and env
    values), a reason that names a changed argument shows its value in the image."""
    title = f"image {report.image_id}" if report.image_id else "plan (nothing was built)"
    if report.against:
        title += f", against {report.against}"
    lines = [title, *(f"base {b.name} ({b.platform}, stage {b.stage}): "
                      f"{b.digest or b.image}" for b in report.bases), "",
             f"{'STEP':<14} {'LAYER':<14} {'CACHE':<6} {'ADDED':>6} {'CHANGED':>8} "
             f"{'DELETED':>8} {'SIZE':>9} {'TIME':>7}  INSTRUCTION"]
    layers = empty = 0
    for step in report.steps:
        facts = report.facts(step)
        layers += bool(step.layer)
        empty += bool(step.layer and step.changes.empty)
        where = f"{step.stage}:{step.index}"
        lines.append(f"{where:<14} {step.layer[7:19] if step.layer else '-':<14} "
                     f"{cache_state(step):<6} {_measures(report, step)}  {step.instruction}")
        wasted = facts.wasted if facts is not None else 0
        lines += [f"{'':<14} {note}"
                  for note in _notes(step, wasted, values, report.against is not None)]
    if report.image_id is None:
        runs = sum(1 for step in report.steps if cache_state(step) == "miss")
        hits = sum(1 for step in report.steps if step.cached)
        lines += ["", f"plan: {runs} step(s) would run, {hits} would come from the cache."]
        return "\n".join(printable(line) for line in lines)
    others = ("" if layers == len(report.steps) else
              " (the others change only the image's config)")
    empty_note = (f" {empty} of the layers {'is' if empty == 1 else 'are'} empty."
                  if empty else "")
    lines += ["", f"{layers} of {len(report.steps)} steps made a layer{others}.{empty_note}"]
    if report.wasted:
        lines.append(f"{human_size(report.wasted)} shipped in layers but hidden by later "
                     "steps: delete files in the step that creates them.")
    return "\n".join(printable(line) for line in lines)
