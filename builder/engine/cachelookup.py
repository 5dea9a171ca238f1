"""Cache lookup: a step's key, and whether the local or an imported cache has its result."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from builder.cache import CacheEntry, Inputs, cache_key
from builder.cache.keys import recorded_inputs
from builder.cache.reasons import Reason, ReasonCode
from builder.cache.records import MissContext
from builder.engine.buildrun import BuildRun
from builder.engine.state import StageState


class CacheDecision:
    """What the cache says about one step: reuse ``hit``, or run it for ``reasons``.

    A plain slotted class: on the cached path a dataclass costs ~1 ms at import."""

    __slots__ = ("hit", "inputs", "key", "reasons", "slot")

    def __init__(self, key: str, inputs: Inputs, slot: str, hit: CacheEntry | None,
                 reasons: list[Reason]) -> None:
        self.key = key            # the step's cache key
        self.inputs = inputs      # its inputs as recorded (no build-arg value in clear)
        self.slot = slot          # "<project>/<dockerfile>:<stage>:<index>"
        self.hit = hit            # the entry to reuse; None: the step runs
        self.reasons = reasons    # why, as reason codes (explain renders them)


def decide(run: BuildRun, state: StageState, index: int, inputs: Inputs) -> CacheDecision:
    """The cache decision for step ``index`` of ``state`` with these ``inputs``."""
    platform = state.platform or run.plan.target_platform  # the stage's, as BuildKit's ops
    inputs = [("parent", state.cache_key), *inputs, ("platform", str(platform))]
    key = cache_key(inputs)
    clear, inputs = inputs, recorded_inputs(inputs, state.args)  # stored: no value in clear
    slot = f"{_project(run)}/{Path(run.dockerfile_path).name}:{state.name}:{index}"
    skip_cache = (run.options.no_cache or state.name in run.options.no_cache_filter) \
        and key not in run.options.shared_keys
    entry = None if skip_cache else _lookup(run, key, state.cache_key, slot, inputs)
    if entry is not None:
        return CacheDecision(key, inputs, slot, entry, [Reason(ReasonCode.CACHE_HIT)])
    if skip_cache and run.options.no_cache:
        reasons = [Reason(ReasonCode.NO_CACHE)]
    elif skip_cache:
        reasons = [Reason(ReasonCode.NO_CACHE_FILTER, stage=state.name)]
    else:
        miss = MissContext(state.cache_key, slot, ran_above=state.ran, base=state.base_name)
        reasons = run.cache.miss_reasons(miss, inputs, clear)
    return CacheDecision(key, inputs, slot, None, reasons)


def _project(run: BuildRun) -> str:
    """Which project a step belongs to, for explain's baseline: a digest of the context
    directory's absolute path (of the Dockerfile's without one).  Only steps of the same
    project are compared; a digest, so no host path goes into a cache export."""
    where = run.options.context if run.options.context is not None else run.dockerfile_path
    return hashlib.sha256(os.path.abspath(str(where)).encode(errors="surrogateescape")
                          ).hexdigest()[:12]


def _lookup(run: BuildRun, key: str, parent: str, slot: str,
            inputs: Inputs) -> CacheEntry | None:
    """A local cache entry, else one from a --cache-from layout (fetching its layers;
    recorded with this step's ``slot`` and ``inputs``)."""
    entry = run.cache.lookup(key)
    if entry is None and run.imported and run.options.plan:
        from builder.cache.importer import peek

        return next((found for imported in run.imported
                     if (found := peek(imported, key, parent)) is not None), None)
    if entry is None and run.imported:
        from builder.cache.importer import materialize

        with run.lock:  # one stage at a time reads the imported layouts
            for imported in run.imported:
                entry = materialize(run.store, run.cache, imported, key, parent, slot,
                                    inputs)
                if entry is not None:
                    break
    return entry
