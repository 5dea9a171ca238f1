"""The end of a build: the image config written and tagged, its explain record, the cache export."""

from __future__ import annotations

from typing import TYPE_CHECKING

from builder.engine import stageplatform
from builder.engine.buildrun import BuildRun
from builder.engine.history import fill_created
from builder.engine.options import BuildResult
from builder.engine.state import StageState
from builder.explain.steps import StepRecord

if TYPE_CHECKING:
    from builder.explain.records import BaseRecord
from builder.image import config as image_config


def commit_image(run: BuildRun, state: StageState) -> BuildResult:
    """Write the target stage's image into the store, tag it, record the build's steps."""
    image = state.image
    stageplatform.record_target(image, run.plan)
    if run.options.labels:
        labels = dict(image["config"].get("Labels") or {})
        labels.update(run.options.labels)
        image["config"]["Labels"] = labels
    image["rootfs"] = {"type": "layers",
                       "diff_ids": [r.diff_id for r in run.store.chain(state.chain)]}
    created = fill_created(image.get("history", []), run.options.source_date_epoch)
    image["created"] = created or run.created()
    image_id = run.store.put_image(image_config.marshal(image), state.chain)
    for tag in run.options.tags:
        run.store.tag(tag, image_id)
    from builder.explain.records import save_build

    bases = _bases(run)
    save_build(run.store, image_id, run.steps, bases)
    _export_cache(run, state)
    return BuildResult(image_id=image_id, steps=run.steps, tags=list(run.options.tags),
                       bases=bases)


def _bases(run: BuildRun) -> list[BaseRecord]:
    """Each stage's base image, with the manifest digest it was pulled by (explain's
    record and the provenance's resolved dependencies)."""
    from builder.explain.records import BaseRecord

    return [BaseRecord(state.name, state.base_name, str(state.platform), state.base_ref,
                       run.store.repo_digest(state.base_ref))
            for _index, state in sorted(run.stages.items())
            if state.base_name and state.base_ref.startswith("sha256:")]


def _export_cache(run: BuildRun, state: StageState) -> None:
    """--cache-to: the target stage's steps (mode=min) or every step (mode=max)."""
    options = run.options
    if not options.cache_to and not options.cache_to_ref:
        return
    steps: list[StepRecord] = run.steps if options.cache_mode == "max" else state.steps
    keys = [s.key for s in steps if s.key]
    if options.cache_to:
        from builder.cache.transfer import export_cache

        count = export_cache(run.store, run.cache, keys, options.cache_to)
        run.progress.message(f"exported {count} cache entries to {options.cache_to}")
    if options.cache_to_ref:
        from builder.registry.cache import push_cache

        count = push_cache(run.store, run.cache, keys, options.cache_to_ref,
                           insecure=options.insecure_registries)
        run.progress.message(f"exported {count} cache entries to {options.cache_to_ref}")
