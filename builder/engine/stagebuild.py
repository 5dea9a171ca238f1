"""One stage, on its stage thread: its base, its ONBUILD triggers, then each step in turn."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING

import msgspec

from builder.engine import dispatch, stageplatform
from builder.engine.buildrun import BuildRun
from builder.engine.scheduler import check_cancelled, stage_label, wait_for
from builder.engine.sources import base_image
from builder.engine.state import DEFAULT_PATH, StageState
from builder.errors import BuildError, DockerfileError, PybuildError
from builder.explain.steps import StepRecord
from builder.image import config as image_config

if TYPE_CHECKING:
    from builder.dockerfile.commands import Command
    from builder.dockerfile.stages import PlannedStage


def build_stage(run: BuildRun, planned: PlannedStage) -> StageState:
    """Build ``planned`` from its base; the state it ends in (its image and chain)."""
    stage = planned.stage
    label = stage_label(stage.name, stage.index)
    run.progress.step(f"[{label}] FROM {stage.base}", stage=label)
    try:
        state = _base_state(run, planned)
    except PybuildError as err:
        _report_failure(run, err)
        raise
    run.progress.done()
    # A stage that a --build-context replaces runs nothing (BuildKit's dispatchState).
    replaced = run.named is not None and run.named.find(stage.name or "-") is not None
    commands = [] if replaced else [*_onbuild_triggers(run, planned, state), *stage.commands]
    for number, command in enumerate(commands, 1):
        check_cancelled(run)
        instruction = one_line(command.original)
        run.progress.step(f"[{label} {number}/{len(commands)}] {instruction}", stage=label)
        record = StepRecord(stage=label, index=number, instruction=instruction,
                            line=command.line)
        started = time.monotonic()
        try:
            dispatch.execute(run, state, command, record)
        except PybuildError as err:
            if not isinstance(err, DockerfileError):
                # The step names itself; the error keeps its class (a failed step exits 1).
                err.within(f"{run.dockerfile_path}:{command.line}: {instruction}",
                           exit_code=BuildError.exit_code)
            _report_failure(run, err)
            raise
        record.seconds = time.monotonic() - started
        state.steps.append(record)
        run.progress.done()
    return state


def _report_failure(run: BuildRun, err: PybuildError) -> None:
    if not run.cancel.is_set():  # a step the stopping build killed did not fail
        run.progress.failed(err)


def one_line(text: str) -> str:
    first = " ".join(text.split())
    return first if len(first) <= 120 else first[:117] + "..."


def _base_state(run: BuildRun, planned: PlannedStage) -> StageState:
    state = _from_base(run, planned)
    if "PATH" not in state.env():  # BuildKit makes sure PATH is always set
        state.set_env("PATH", DEFAULT_PATH)
    return state


def _from_base(run: BuildRun, planned: PlannedStage) -> StageState:
    stage = planned.stage
    name = stage_label(stage.name, stage.index)
    base = planned.base
    if run.named is not None:
        from builder.engine.named_contexts import stage_base

        named = stage_base(run, planned)
        if named is not None:
            return named
    if planned.base_stage is not None:
        wait_for(run, planned.base_stage)
        return run.stages[planned.base_stage].fork(name)
    if base == "scratch":
        target = run.plan.target_platform
        image = image_config.new_image(target.os, target.architecture, target.variant)
        return StageState(name=name, image=image, chain=None, base_ref="scratch",
                          cache_key="scratch", platform=target)
    image_id = base_image(run, base, stage.line, stageplatform.requested(run.plan, planned))
    image = copy.deepcopy(run.store.image_config(image_id))
    image.pop("created", None)
    platform = stageplatform.image_platform(run.plan, planned, image, base,
                                            lambda text: run.progress.message(f"WARNING: {text}"))
    return StageState(name=name, image=image, chain=run.store.image_top_chain(image_id),
                      base_ref=image_id, cache_key=f"image {image_id}", base_name=base,
                      platform=platform)


def _onbuild_triggers(run: BuildRun, planned: PlannedStage, state: StageState) -> list[Command]:
    """ONBUILD triggers of the base image (or base stage) run first, then are dropped."""
    from builder.dockerfile import parse_text
    from builder.dockerfile.commands import OnbuildCommand

    triggers = list(state.config.pop("OnBuild", None) or [])
    if planned.base_stage is not None:
        base = next(p.stage for p in run.plan.stages if p.stage.index == planned.base_stage)
        triggers += [c.expression for c in base.commands if isinstance(c, OnbuildCommand)]
    commands = []
    for trigger in triggers:
        parsed = parse_text(f"FROM scratch\n{trigger}\n", run.dockerfile_path)
        found = parsed.stages[0].commands if parsed.stages else []
        if len(found) != 1 or found[0].keyword in ("onbuild", "maintainer"):
            raise DockerfileError(f"invalid ONBUILD trigger {trigger!r}", run.dockerfile_path,
                                  planned.stage.line)
        commands.append(msgspec.structs.replace(found[0], line=planned.stage.line,
                                            end_line=planned.stage.line))
    return commands
