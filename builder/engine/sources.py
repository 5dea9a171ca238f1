"""What a stage reads from outside itself: its ``FROM`` image and what ``--from`` names."""

from __future__ import annotations

from builder.engine import stageplatform
from builder.engine.buildrun import BuildRun
from builder.engine.scheduler import stage_label, wait_for
from builder.platforms import Platform


def base_image(run: BuildRun, base: str, line: int, platform: Platform | None = None) -> str:
    """The store's image for ``FROM base`` (default: the target platform's), pulled when
    missing (or always with --pull): engine/stageplatform.find_base."""
    return stageplatform.find_base(
        run.store, base, platform or run.plan.target_platform, pull_always=run.options.pull,
        insecure=run.options.insecure_registries, where=(run.dockerfile_path, line),
        message=run.progress.message)


def resolve_from(run: BuildRun, source: str, line: int) -> str | None:
    """The chain ID that ``--from=`` on line ``line`` names: a stage (name or index),
    a ``--build-context`` or an image.

    As in a sequential build, only stages earlier in the plan count; the plan
    made them dependencies, so they are built (an ONBUILD trigger of a base
    image is not in the plan: then this waits for that stage)."""
    current = run.local.stage
    here = run.position.get(current, len(run.position)) if current is not None \
        else len(run.position)
    for planned in run.plan.stages:
        index = planned.stage.index
        if run.position[index] >= here:
            continue
        if source in (stage_label(planned.stage.name, index), str(index)):
            wait_for(run, index)
            return run.stages[index].chain
    found = run.named.find(source) if run.named is not None else None
    if found is not None:  # a --build-context, before any image of that name
        from builder.engine.named_contexts import chain_of

        return chain_of(run, found, line)
    # Not a stage: an image, from the store or pulled, as BuildKit does.
    return run.store.image_top_chain(base_image(run, source, line))
