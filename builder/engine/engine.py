"""Run a build: read and plan the Dockerfile, build its stages, write and tag the image.

The jobs are in their own modules: ``scheduler`` (stage threads, stopping them),
``stagebuild`` (one stage: its base, then each step), ``dispatch`` (the table
from instruction kind to handler: ``config_steps``, ``run_step``, ``copy_step``),
``cachelookup`` (a step's key and cache decision), ``layerstep`` (a snapshot
prepared, changed and committed as a layer), ``history`` (the image history),
``finish`` (the image written and tagged, explain record, cache export),
``outputs`` (-o) and ``progress``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from builder import replay
from builder.cache import CacheStore
from builder.engine import scheduler, stageplatform
from builder.engine.buildrun import BuildRun
from builder.engine.finish import commit_image
from builder.engine.options import BuildOptions, BuildResult
from builder.engine.progress import Progress
from builder.engine.scheduler import BuildInterrupted
from builder.engine.stagebuild import build_stage
from builder.errors import ContextError
from builder.store.store import Store
from builder.userns import rootless

if TYPE_CHECKING:
    from builder.context.view import ContextFilter

__all__ = ["BuildInterrupted", "build"]


def _read_dockerfile(options: BuildOptions) -> tuple[bytes, str]:
    if options.dockerfile_text is not None:
        return options.dockerfile_text, "Dockerfile"
    path = options.dockerfile or (options.context or Path(".")) / "Dockerfile"
    try:
        text = Path(path).read_bytes()
        if (recorder := replay.recording()) is not None:
            recorder.file(str(path), text)
        return text, str(path)
    except FileNotFoundError:
        raise ContextError(f"{path}: Dockerfile not found") from None
    except IsADirectoryError:
        raise ContextError(f"{path}: is a directory, not a Dockerfile") from None


def ignore_matcher(options: BuildOptions) -> ContextFilter | None:
    if options.context is None:
        return None
    from builder.context.ignore import PatternMatcher, read_ignore_file
    from builder.context.ignorefile import read_ignore_bytes

    read = read_ignore_bytes(str(options.context),
                             str(options.dockerfile) if options.dockerfile else None)
    if read is None:
        return None
    from builder.context.view import ContextFilter

    found, raw = read
    if (recorder := replay.recording()) is not None:
        recorder.file(found, raw)
    patterns = read_ignore_file(raw)
    try:
        matcher = PatternMatcher(patterns)
    except ValueError as err:
        raise ContextError(f"{found}: {err}") from None
    # No pattern, no filter: every view of the context is then the plain directory.
    return ContextFilter(str(options.context), matcher) if len(matcher) else None


def build(store: Store, options: BuildOptions, progress: Progress) -> BuildResult:
    from builder.dockerfile import parse_text, plan_build

    if options.storage_driver == "default" and not rootless():
        options.storage_driver = "overlay"  # root's default (snapshot.default_driver)
    if options.storage_driver not in ("overlay", "vfs"):
        from builder.snapshot import open_driver  # a cached rebuild of a named driver skips it

        # Resolve "auto" (it probes a mount) and rootless's "default" (the store's record)
        # once, so every step uses the same driver.
        options.storage_driver = open_driver(store, options.storage_driver).name
    text, path = _read_dockerfile(options)
    dockerfile = parse_text(text, path)
    named = None
    if options.build_contexts:  # imported only then: most builds name no context
        from builder.engine.named_contexts import NamedContexts

        named = NamedContexts(options.build_contexts)
    plan = plan_build(dockerfile, target=options.target, build_args=options.build_args,
                      platform=options.platform,
                      replaced=named.replaced([s.name for s in dockerfile.stages if s.name])
                      if named else frozenset())
    # Lint findings (the parser's and the rules') are in the summary the CLI prints
    # at the end (builder.lint.gate); these are about the build's inputs.
    for warning in plan.warnings:
        progress.message(f"WARNING: {warning}")
    stageplatform.check_runnable(plan, path)  # before anything runs or is pulled
    run = BuildRun(store, options, progress, path, ignore_matcher(options), CacheStore(store),
                   plan, escape=dockerfile.escape, named=named)
    if options.cache_from:  # imported lazily: most builds share no cache
        from builder.cache.importer import open_cache

        run.imported = [open_cache(src) for src in options.cache_from]
    if options.cache_from_refs:
        from builder.registry.cache import open_registry_cache

        run.imported += [open_registry_cache(ref, insecure=options.insecure_registries)
                         for ref in options.cache_from_refs]
    scheduler.run_stages(run, build_stage)
    # The record lists steps in plan order, however the stages interleaved.
    run.steps = [step for p in plan.stages for step in run.stages[p.stage.index].steps]
    if options.plan:  # explain --plan: the steps' predicted cache use is the result
        return BuildResult(image_id="", steps=run.steps, tags=[])
    return commit_image(run, run.stages[plan.stages[-1].stage.index])
