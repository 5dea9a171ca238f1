"""``pybuild explain IMAGE --against OTHER``: each step's reasons against OTHER's build.

Steps are paired as a build pairs a step with its baseline: the same stage and
position with the same instruction, else the same instruction anywhere in the stage
(lines moved), else the same position.  The comparison is the cache's
(``CacheStore.reasons_between``) over the recorded inputs of both steps.
"""

from __future__ import annotations

from builder.cache.reasons import Reason, ReasonCode
from builder.cache.records import CacheStore
from builder.explain.records import load_build
from builder.explain.report import Report
from builder.explain.steps import StepRecord
from builder.store.store import Store


def _pair(step: StepRecord, baseline: list[StepRecord]) -> StepRecord | None:
    stage = [old for old in baseline if old.stage == step.stage and old.key]
    return next((old for old in stage if (old.index, old.instruction) == (
        step.index, step.instruction)), None) \
        or next((old for old in stage if old.instruction == step.instruction), None) \
        or next((old for old in stage if old.index == step.index), None)


def explain_against(store: Store, report: Report, baseline_id: str) -> bool:
    """Replace the reasons of ``report``'s layer steps; False: no build record."""
    baseline = load_build(store, baseline_id)
    if baseline is None:
        return False
    cache = CacheStore(store)
    differing: dict[str, str] = {}  # stage -> its first step that differs
    for step in report.steps:
        if not step.key:
            continue
        old = _pair(step, baseline)
        if old is None:
            step.reasons = [_not_in_baseline()]
        else:
            step.reasons = cache.reasons_between(old.key, step.key,
                                                 differing.get(step.stage, ""))
        if step.reasons[0].code is not ReasonCode.SAME:
            differing.setdefault(step.stage, f"{step.stage}:{step.index}")
    report.against = baseline_id
    return True


def _not_in_baseline() -> Reason:
    return Reason(ReasonCode.NOT_BUILT_BEFORE)
