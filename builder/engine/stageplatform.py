"""Which platform each stage builds for, and what that asks of the base image and host.

BuildKit's rules (moby/buildkit frontend/dockerfile/dockerfile2llb/convert.go,
platform.go):

- the target platform is ``--platform``, else the host's ("implicit");
- a stage's platform is its ``FROM --platform``, else the target's; a stage
  built FROM another stage takes that stage's platform (``dispatchState.init``),
  and ``FROM scratch`` always takes the target's (``resolveReachableStages``);
- with an implicit target, a base image of another platform that the host runs
  natively (``linux/386`` here) makes that the stage's platform
  (``autoDetectPlatform``);
- the image config of the result records the target platform when ``--platform``
  was given (``os``/``architecture``; ``variant`` when the target has one or the
  os/arch changed), else what the base image said; normalised either way.

A stored image of another platform is not used for ``FROM``: the requested platform
is pulled from the registry instead, as BuildKit in dockerd resolves it (moby
builder/builder-next/adapters/containerimage/pull.go, ``ResolveModePreferLocal``:
"does not match local image platform, checking remote").  When that pull fails
the build stops with one line naming both platforms.

RUN needs a platform this host executes: natively (``platforms.host_executes``) or
through a QEMU emulator registered in binfmt_misc with the F flag
(``builder.emulation``; BuildKit's worker lists the same platforms, and
``autoDetectPlatform`` takes a base image's platform when the worker runs it).
``check_runnable`` refuses a build whose plan would RUN on a platform the host
cannot execute before any step runs, so nothing is committed; the error names the
package that provides the emulators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from builder.errors import DockerfileError, PybuildError
from builder.platforms import Platform, host_executes

if TYPE_CHECKING:
    from builder.dockerfile.stages import BuildPlan, PlannedStage
    from builder.store.store import Store

__all__ = ["check_runnable", "ensure_runnable", "find_base", "image_platform", "index_member",
           "record_target", "requested"]


def requested(plan: BuildPlan, planned: PlannedStage) -> Platform:
    """The platform a stage asks for before its base image is known."""
    return planned.platform or plan.target_platform


def _static(plan: BuildPlan, planned: PlannedStage) -> Platform:
    """A stage's platform as far as the plan alone tells (see the module docstring)."""
    seen: set[int] = set()
    by_index = {p.stage.index: p for p in plan.stages}
    while planned.base_stage is not None and planned.base_stage in by_index:
        if planned.stage.index in seen:
            break
        seen.add(planned.stage.index)
        planned = by_index[planned.base_stage]
    if planned.base == "scratch":
        return plan.target_platform
    return requested(plan, planned)


def _run_lines(plan: BuildPlan, planned: PlannedStage) -> list[int]:
    """Lines of the RUN steps a stage executes: its own and its base stage's ONBUILD RUNs."""
    from builder.dockerfile.commands import OnbuildCommand

    lines = [c.line for c in planned.stage.commands if c.keyword == "run"]
    by_index = {p.stage.index: p for p in plan.stages}
    base = by_index.get(planned.base_stage) if planned.base_stage is not None else None
    triggers = [c.expression for c in base.stage.commands
                if isinstance(c, OnbuildCommand)] if base is not None else []
    if any(t.split(None, 1)[0].lower() == "run" for t in triggers if t.strip()):
        lines.append(planned.stage.line)  # the trigger runs as this stage's FROM line
    return sorted(lines)


def check_runnable(plan: BuildPlan, path: str) -> None:
    """Refuse, before anything runs, a plan with a RUN step on a platform this host
    cannot execute; the error names the line, the stage and the platform."""
    for planned in plan.stages:
        lines = _run_lines(plan, planned)
        if lines:
            ensure_runnable(_static(plan, planned), path, lines[0],
                            planned.stage.name or f"stage-{planned.stage.index}")


def ensure_runnable(platform: Platform | None, path: str, line: int, stage: str) -> None:
    """DockerfileError when this host cannot execute ``platform`` (None: the host's)."""
    # BuildKit's getEmulator (solver/llbsolver/ops/exec_binfmt.go): no emulator is
    # needed when platforms.Only(p) of a platform the host runs matches.
    if platform is None or any(p.rank(platform) is not None for p in host_executes()):
        return
    from builder import emulation  # only for a platform the host does not run natively

    if emulation.emulator_for(platform) is not None:
        return
    raise DockerfileError(
        f"RUN in stage {stage!r} needs platform {platform}, which this "
        f"{Platform.host()} host cannot execute: {emulation.missing_message(platform)}",
        path, line)


def image_platform(plan: BuildPlan, planned: PlannedStage, config: dict[str, Any], name: str,
                   warn: Callable[[str], None]) -> Platform:
    """The platform of a stage built FROM image ``name`` whose config is ``config``:
    autodetected with an implicit target; an InvalidBaseImagePlatform warning when
    the image's os/arch is not the stage's (BuildKit validateBaseImagePlatform)."""
    wanted = requested(plan, planned)
    offered = Platform.from_config(config)
    if offered is None:
        return wanted
    detected = (plan.implicit_platform and planned.platform is None
                and (offered.os, offered.architecture) != (wanted.os, wanted.architecture))
    if detected:
        wanted = next((p for p in _worker_platforms(offered)
                       if (p.os, p.architecture) == (offered.os, offered.architecture)), wanted)
    if (offered.os, offered.architecture) != (wanted.os, wanted.architecture):
        warn(f"InvalidBaseImagePlatform: Base image {name} was pulled with platform "
             f'"{offered}", expected "{wanted}" for current build (line {planned.stage.line})')
    return wanted


def _worker_platforms(offered: Platform) -> tuple[Platform, ...]:
    """What BuildKit's worker would list that matters for ``offered``: the native
    platforms, and ``offered`` itself when an emulator runs it."""
    native = host_executes()
    if any((p.os, p.architecture) == (offered.os, offered.architecture) for p in native):
        return native
    from builder import emulation

    return (*native, offered) if emulation.emulator_for(offered) is not None else native


def index_member(store: Store, name: str, platform: Platform) -> str | None:
    """The image of a name built for several platforms that serves ``platform`` best
    (containerd's ranking), None if the name is one image or none serves it."""
    members = store.index_of(name)
    ranked = [(rank, m.image_id) for m in members or ()
              if (rank := platform.rank(Platform.parse(m.platform))) is not None]
    return min(ranked)[1] if ranked else None


def find_base(store: Store, base: str, platform: Platform, *, pull_always: bool,
              insecure: tuple[str, ...], where: tuple[str, int],
              message: Callable[[str], None]) -> str:
    """The store's image for ``FROM base`` on ``platform``; pulled when the store has
    none, or only another platform's (or always, with ``--pull``)."""
    from builder.registry.reference import parse_reference

    path, line = where
    try:
        ref = parse_reference(base)
    except PybuildError as err:
        raise DockerfileError(str(err), path, line) from None
    stored: Platform | None = None
    if not pull_always:
        for name in dict.fromkeys((base, ref.familiar(), str(ref))):
            # A name only, as BuildKit parses FROM as a reference: a short hex FROM
            # that happens to prefix a stored image's ID is a name like any other.
            image_id = store.resolve_tag(name)
            if image_id is None:
                continue
            member = index_member(store, name, platform)
            if member is not None:  # a name built for several platforms, this one among them
                return member
            offered = Platform.from_config(store.image_config(image_id))
            if offered is None or platform.rank(offered) is not None:
                return image_id
            stored = offered
            break
    from builder.registry.pull import pull

    try:
        # Unpacked as it downloads: a build needs the base image's files next.
        pulled = pull(store, ref, platform=platform, insecure=insecure, unpack=True,
                      keep_other_platforms=True)
    except PybuildError as err:
        if stored is not None:
            raise DockerfileError(
                f"base image {base!r} is {stored} in the local store, not {platform}, and "
                f"pulling {platform} failed ({err}); build with --platform {stored}, or "
                f"name a {platform} image in FROM (one imported with 'pybuild import "
                f"--platform {platform} TARBALL NAME', or a name built with --platform "
                f"{stored},{platform})",
                path, line) from None
        raise DockerfileError(
            f"base image {base!r} is not in the local store and pulling it failed ({err}); "
            f"add it with 'pybuild load -i FILE' or 'pybuild import TARBALL {base}'",
            path, line) from None
    message(f"pulled {ref.familiar()} for {platform} ({pulled.manifest_digest})")
    return pulled.image_id


def record_target(image: dict[str, Any], plan: BuildPlan) -> None:
    """Write the result's platform into its config (convert.go, end of toDispatchState)."""
    target = plan.target_platform
    if not plan.implicit_platform:
        same = (image.get("os"), image.get("architecture")) == (target.os, target.architecture)
        image["os"], image["architecture"] = target.os, target.architecture
        if target.variant or not same:
            image["variant"] = target.variant
    found = Platform.from_config(image)
    if found is not None:  # platforms.Normalize(target.image.Platform)
        image["os"], image["architecture"] = found.os, found.architecture
        image["variant"] = found.variant
    if not image.get("variant"):
        image.pop("variant", None)
