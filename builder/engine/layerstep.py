"""A step that changes the filesystem: reuse its cached layer, or run it on a snapshot
and commit what it changed as a layer (prepare -> action -> commit -> record)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from builder.cache import CacheEntry, Inputs
from builder.cache.keys import PLANNED
from builder.engine.buildrun import BuildRun
from builder.engine.cachelookup import decide
from builder.engine.state import StageState
from builder.explain.steps import StepRecord
from builder.layers.summary import ChangeSummary

if TYPE_CHECKING:  # the snapshot machinery loads on a miss only (a cached rebuild skips it)
    from builder.snapshot import ActiveSnapshot

# What a step does on its snapshot (mounted by the action itself, often in a child).
SnapshotAction = Callable[["ActiveSnapshot"], None]


def layer_step(run: BuildRun, state: StageState, record: StepRecord, inputs: Inputs,
               action: SnapshotAction) -> None:
    """Reuse the cached result of a step with these inputs, or run it and record it."""
    decision = decide(run, state, record.index, inputs)
    record.key, record.reasons = decision.key, decision.reasons
    run.progress.decided(record.reasons, hit=decision.hit is not None)
    if decision.hit is not None:
        record.cached, record.created = True, decision.hit.created
        record.layer, record.changes = decision.hit.chain_id, decision.hit.changes
        state.chain, state.cache_key = decision.hit.chain_id, decision.key
        state.ran = ""  # the steps below build on a result that did not change
        run.progress.cached()
        return
    state.ran = state.ran or f"{state.name}:{record.index}"
    if run.options.plan:  # explain --plan: the prediction is made; nothing runs (PLANNED:
        # COPY --from and --mount from= of this stage then see a source other than last time)
        state.chain, state.cache_key = PLANNED + decision.key, decision.key
        return
    record.created = run.created()
    record.layer, record.changes = _run_on_snapshot(run, state, action)
    run.cache.record(CacheEntry(
        key=decision.key, parent=state.cache_key, slot=decision.slot, inputs=decision.inputs,
        chain_id=record.layer, created=record.created, changes=record.changes))
    state.chain, state.cache_key = record.layer, decision.key


def _run_on_snapshot(run: BuildRun, state: StageState,
                     action: SnapshotAction) -> tuple[str, ChangeSummary]:
    """Prepare a snapshot of the stage's chain, run ``action`` on it, commit it: the new
    chain ID and what the layer changed."""
    from builder.snapshot import EarlyWriteback, commit, prepare

    snapshot = prepare(run.store, state.chain, run.options.storage_driver)
    try:
        # What the step writes goes to disk while it runs (snapshot/writeback.py).
        with EarlyWriteback(snapshot.work.path):
            action(snapshot)
        committed = commit(snapshot, source_date_epoch=run.options.source_date_epoch)
    except BaseException:
        snapshot.release()
        raise
    return committed.chain_id, committed.summary
