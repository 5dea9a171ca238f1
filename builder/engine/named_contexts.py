"""``--build-context NAME=...``: what ``FROM NAME``, ``COPY --from=NAME`` and
``RUN --mount=from=NAME`` resolve to, as BuildKit's Dockerfile frontend does it
(moby/buildkit ``frontend/dockerui/namedcontext.go``, ``dockerfile2llb/convert.go``):

- a stage named NAME is replaced by the context: its FROM and its instructions
  are not built, and whatever uses the stage gets the context;
- otherwise ``FROM NAME`` / ``--from=NAME`` (a name that is no stage) take the
  context instead of the image NAME; names are compared in buildx's normal form
  (``docker.io/library/alpine:latest`` is ``alpine``); ``scratch`` and ``context``
  are never looked up.

A local directory is as untrusted as the main context and is read the same way
(its own ``.dockerignore`` at its root applies, as BuildKit's named local
contexts read it): it becomes one layer made by the engine's COPY machinery
(``COPY . /``, owner 0:0 as BuildKit's file transfer resets it), cached by the
checksum of what it holds, so a changed file changes the key of every step that
uses it.  ``oci-layout://`` goes through ``pybuild load``'s hardened loader
(``image/loader.py``); ``docker-image://`` is resolved like a FROM image.
"""

from __future__ import annotations

import copy
import threading
from typing import TYPE_CHECKING

import msgspec

from builder.engine.buildx_flags import BuildContext, ContextKind, context_name
from builder.engine.state import StageState
from builder.errors import ContextError, PybuildError, ReferenceError, StoreError
from builder.explain.steps import StepRecord
from builder.image import config as image_config
from builder.platforms import Platform

if TYPE_CHECKING:
    from builder.context.view import ContextFilter
    from builder.dockerfile.stages import PlannedStage
    from builder.engine.buildrun import BuildRun

# BuildKit's description of a local source's snapshot (source/local/source.go), and the
# comment its exporter gives a layer that has no history entry of its own.
_LOCAL_HISTORY = "local source for {name}"
_EXPORTER_COMMENT = "buildkit.exporter.image.v0"


class _Loaded(msgspec.Struct):
    chain: str | None
    cache_key: str
    image_id: str | None = None      # image kinds: the store's image
    created: str | None = None       # local: when its layer was made


class NamedContexts(msgspec.Struct):
    contexts: dict[str, BuildContext]
    loaded: dict[str, _Loaded] = msgspec.field(default_factory=dict)
    locks: dict[str, threading.Lock] = msgspec.field(default_factory=dict)
    guard: threading.Lock = msgspec.field(default_factory=threading.Lock)

    def find(self, name: str) -> BuildContext | None:
        """The context a FROM, a ``--from`` or a stage name refers to, if any."""
        if name.lower() in ("scratch", "context"):
            return None
        try:
            return self.contexts.get(context_name(name))
        except ReferenceError:
            return None

    def replaced(self, stage_names: list[str]) -> set[str]:
        """The stage names a context replaces (plan_build leaves their deps out)."""
        return {name for name in stage_names if self.find(name) is not None}


def stage_base(run: BuildRun, planned: PlannedStage) -> StageState | None:
    """The state a context gives this stage: for the stage itself (it is replaced)
    or for its ``FROM`` (when that names no stage); None when no context applies."""
    named = _contexts(run)
    stage = planned.stage
    found = named.find(stage.name) if stage.name else None
    if found is None and planned.base_stage is None:
        found = named.find(planned.base)
    if found is None:
        return None
    loaded = _load(run, found, stage.line)
    label = stage.name or f"stage-{stage.index}"
    platform = run.plan.target_platform
    if loaded.image_id is not None:
        image = copy.deepcopy(run.store.image_config(loaded.image_id))
        image.pop("created", None)
        if image.get("os") and image.get("architecture"):  # BuildKit: the image's platform
            platform = Platform(image["os"], image["architecture"], image.get("variant", ""))
    else:
        image = image_config.new_image(platform.os, platform.architecture, platform.variant)
        if loaded.chain is not None:
            image["history"] = [image_config.history_entry(
                _LOCAL_HISTORY.format(name=found.name), empty_layer=False,
                created=loaded.created, comment=_EXPORTER_COMMENT)]
    return StageState(name=label, image=image, chain=loaded.chain,
                      base_ref=loaded.image_id or f"context {found.name}",
                      cache_key=loaded.cache_key, platform=platform)


def chain_of(run: BuildRun, found: BuildContext, line: int) -> str | None:
    """The layer chain ``COPY --from`` / ``RUN --mount from=`` read for a context."""
    return _load(run, found, line).chain


def _contexts(run: BuildRun) -> NamedContexts:
    """The build's contexts: only builds given --build-context come here."""
    if run.named is None:
        raise AssertionError("a named context is looked up in a build without any")
    return run.named


def _load(run: BuildRun, found: BuildContext, line: int) -> _Loaded:
    """Resolve a context once per build (stage threads share it)."""
    named = _contexts(run)
    with named.guard:
        lock = named.locks.setdefault(found.name, threading.Lock())
    with lock:
        if found.name not in named.loaded:
            try:
                named.loaded[found.name] = _resolve(run, found, line)
            except PybuildError as err:
                # A directory fails as any COPY can; an image or layout names its own
                # registry or Dockerfile errors, so only the store's and the context's
                # get the flag's name.  The class stays (a context's exits 1).
                if found.kind is ContextKind.LOCAL or isinstance(err, (ContextError, StoreError)):
                    err.within(f"--build-context {found.name}={found.value}",
                               exit_code=ContextError.exit_code)
                raise
        return named.loaded[found.name]


def _resolve(run: BuildRun, found: BuildContext, line: int) -> _Loaded:
    from builder.engine.sources import base_image

    if found.kind is ContextKind.SCRATCH:
        return _Loaded(None, "scratch")
    if found.kind is ContextKind.IMAGE:
        image_id = base_image(run, found.ref, line)
    elif found.kind is ContextKind.OCI_LAYOUT:
        from builder.image.loader import load_layout_image

        image_id = load_layout_image(run.store, found.path, tag=found.tag, digest=found.digest)
        run.progress.message(f"[context {found.name}] loaded {image_id} from {found.value}")
    else:
        return _local(run, found)
    return _Loaded(run.store.image_top_chain(image_id), f"image {image_id}", image_id)


def _local(run: BuildRun, found: BuildContext) -> _Loaded:
    """The directory as one layer, made by the engine's COPY of a context."""
    from builder.dockerfile.commands import CopyCommand
    from builder.engine.copy_step import copy_files

    target = run.plan.target_platform
    state = StageState(name=f"context {found.name}", chain=None, base_ref="scratch",
                       image=image_config.new_image(target.os, target.architecture,
                                                    target.variant),
                       cache_key="scratch", platform=target)
    record = StepRecord(stage=state.name, index=1, line=0,
                        instruction=f"[context {found.name}] load from client")
    command = CopyCommand(sources=["."], dest="/", original="COPY . /")
    copy_files(run, state, command, record, local=(found.path, _filter(found.path)))
    return _Loaded(state.chain, state.cache_key, created=record.created)


def _filter(path: str) -> ContextFilter | None:
    """The context's own ``.dockerignore`` (no ``<Dockerfile>.dockerignore``: BuildKit
    reads only ``DefaultDockerignoreName`` from a named context)."""
    from builder.context.ignore import PatternMatcher, read_ignore_file
    from builder.context.ignorefile import read_ignore_bytes

    read = read_ignore_bytes(path, "-")
    if read is None:
        return None
    from builder.context.view import ContextFilter

    found, raw = read
    try:
        matcher = PatternMatcher(read_ignore_file(raw))
    except ValueError as err:
        raise ContextError(f"{found}: {err}") from None
    return ContextFilter(path, matcher) if len(matcher) else None
