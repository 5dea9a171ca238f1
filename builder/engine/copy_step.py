"""The COPY and ADD handler: the request, its cache inputs, the copy in a child.

The copy itself (globbing, ownership, archives) is ``copy.py``; ADD's URLs and
git sources are ``add_sources.py``.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from builder import replay
from builder.cache import Inputs
from builder.context.checksum import checksum_sources, reading_the_context
from builder.dockerfile.commands import AddCommand, CopyCommand
from builder.engine.add_sources import checkouts
from builder.engine.buildrun import BuildRun, Step
from builder.engine.copy_plan import CopyRequest, select_sources
from builder.engine.git_source import redact
from builder.engine.layerstep import layer_step
from builder.engine.sources import resolve_from
from builder.engine.state import StageState
from builder.errors import BuildError
from builder.explain.steps import StepRecord
from builder.rootpath import resolve_in_root

if TYPE_CHECKING:
    from builder.context.view import ContextFilter
    from builder.engine.add_sources import RemoteSources
    from builder.snapshot import ActiveSnapshot

CopyLike = CopyCommand | AddCommand
# Where a COPY reads when it does not read the main context: a directory and its
# .dockerignore (a --build-context directory).
LocalSource = tuple[str, "ContextFilter | None"]
_NO_CONTEXT = "/nonexistent"   # what the child is given when it reads no context


class _CopyPlan:
    """What the step needs on a cache miss: where it reads and what it copies.

    A plain slotted class: on the cached path a dataclass costs ~1 ms at import."""

    __slots__ = ("context", "inputs", "remote", "request", "source_chain", "source_from")

    def __init__(self, request: CopyRequest, inputs: Inputs, source_from: str | None) -> None:
        self.request = request
        self.inputs = inputs
        self.context = _NO_CONTEXT
        self.source_from = source_from      # COPY --from (a stage, context or image)
        self.source_chain: str | None = None     # the chain that --from names
        self.remote: RemoteSources | None = None     # ADD's URLs and git sources


def copy(step: Step, command: CopyLike) -> str:
    copy_files(step.run, step.state, command, step.record)
    return copy_history(command) + " # buildkit"


def copy_history(command: CopyLike) -> str:
    parts = [command.keyword.upper()]
    if isinstance(command, CopyCommand) and command.parents:
        parts.append("--parents")
    if command.chown:
        parts.append(f"--chown={command.chown}")
    if command.chmod:
        parts.append(f"--chmod={command.chmod}")
    parts += list(command.sources)
    parts += [f"<<{h.name}" for h in command.source_heredocs]
    parts.append(command.dest)
    return " ".join(parts)


def copy_files(run: BuildRun, state: StageState, command: CopyLike, record: StepRecord,
               local: LocalSource | None = None) -> None:
    """COPY/ADD into the stage; ``local``: a directory read instead of the main context."""
    plan = _plan(run, state, command, local)

    def action(snapshot: ActiveSnapshot) -> None:
        from builder.run import in_mount_namespace  # a miss only: a hit never copies
        from builder.snapshot import prepare

        # The --from view is made and released here, not in the child, so that its work
        # dir never outlives the step; and only on a miss (a vfs view copies a tree).
        view = (prepare(run.store, plan.source_chain, run.options.storage_driver)
                if plan.source_chain is not None else None)
        try:
            with checkouts(run.store, plan.remote, plan.request):
                in_mount_namespace(_copy_in_child, snapshot, view, plan.source_from is None,
                                   plan.context, plan.request, writing="the copied files")
        finally:
            if view is not None:
                view.release()
    layer_step(run, state, record, plan.inputs, action)


def _plan(run: BuildRun, state: StageState, command: CopyLike,
          local: LocalSource | None) -> _CopyPlan:
    source_from = command.from_ if isinstance(command, CopyCommand) else None
    main = str(run.options.context) if run.options.context is not None else None
    context_dir, ignore = local or (main, run.ignore)
    heredocs = [(h.name, h.content) for h in command.source_heredocs]
    request = CopyRequest(
        sources=list(command.sources), dest=command.dest, workdir=state.workdir(),
        chown=command.chown or "", chmod=command.chmod or "",
        ignore=ignore if source_from is None else None, heredocs=heredocs,
        exclude=list(command.exclude),
        parents=isinstance(command, CopyCommand) and command.parents,
        link=command.link, add=isinstance(command, AddCommand),
        preserve_owner=source_from is not None)
    plan = _CopyPlan(request, _request_inputs(command, request, heredocs), source_from)
    if source_from is not None:
        plan.source_chain = resolve_from(run, source_from, command.line)
        plan.inputs.append(("from", plan.source_chain or "scratch"))
    elif context_dir is None:
        if command.sources:
            raise BuildError("no build context: COPY and ADD need a context directory")
    else:
        plan.context = context_dir
        _add_context_inputs(run, command, plan)
    return plan


def _request_inputs(command: CopyLike, request: CopyRequest,
                    heredocs: list[tuple[str, str]]) -> Inputs:
    inputs: Inputs = [("instruction", command.keyword.upper()),
                      ("sources", json.dumps([redact(s) for s in request.sources])),
                      ("dest", request.dest),
                      ("workdir", request.workdir), ("chown", request.chown),
                      ("chmod", request.chmod), ("heredocs", json.dumps(heredocs)),
                      ("exclude", json.dumps(request.exclude)),
                      ("parents", str(request.parents))]
    if request.link:  # K03: --link is a different BuildKit op (own cache key); added
        inputs.append(("link", "true"))  # only when set, so existing keys stay valid
    return inputs


def _add_context_inputs(run: BuildRun, command: CopyLike, plan: _CopyPlan) -> None:
    """The sources' content digest (and ADD's remote sources) into the cache key."""
    request, context = plan.request, plan.context
    with reading_the_context():
        request.selected = select_sources(context, request)
    # A URL is not in the context: its text is the key (BuildKit also asks the
    # server; pybuild refetches only when the URL or the step's inputs change);
    # a git source's key holds the commit its ref names now (add_sources.py).
    if isinstance(command, AddCommand):
        from builder.engine.add_sources import plan_add

        plan.remote = plan_add(run.store, command, request)
        plan.inputs += plan.remote.inputs
    with reading_the_context():
        sources = [(rel, resolve_in_root(context, rel) or "")
                   for rel in request.kept_sources(request.selected)]
        scope = request.summary_scope(context, sources)
    _record_sources(context, sources, scope,
                    plan.remote is not None and plan.remote.asks_a_server)
    checksum = checksum_sources(sources, cache=run.cache, skip=request.leaves_out,
                                skip_identity=scope)
    run.cache.flush_stats()
    plan.inputs += [("file", f"{rel}={entry}") for rel, entry in checksum.files.items()]
    plan.inputs.append(("content", checksum.digest))
    if checksum.large:  # too many files for the inputs: explain's manifest
        run.cache.put_manifest(checksum.digest, checksum.entries)
    request.expected_content = checksum.digest   # the copy must write just this


def _record_sources(context: str, sources: list[tuple[str, str]], scope: str | None,
                    remote: bool) -> None:
    """What a replay of the build checks of this step's sources (``builder.replay``)."""
    if (recorder := replay.recording()) is None:
        return
    if remote:
        recorder.refuse("ADD of a URL or git source (the server is asked again)")
    elif scope is None:
        recorder.refuse("a .dockerignore exception or a source reached through a link")
    else:
        for rel, _ in sources:
            recorder.source(context, rel)


def _copy_in_child(snapshot: ActiveSnapshot, view: ActiveSnapshot | None, from_context: bool,
                   context: str, request: CopyRequest) -> None:
    merged = str(snapshot.work.path / "merged")
    os.makedirs(merged, exist_ok=True)
    snapshot.mount(merged)
    source_root = context
    if not from_context:
        source_root = str(snapshot.work.path / "source")
        os.makedirs(source_root, exist_ok=True)
        if view is not None:
            view.mount(source_root, readonly=True)
    from builder.engine.copy import copy_into

    offline = (lambda: snapshot.offline_upper(merged)) if snapshot.has_offline_upper else None
    copy_into(merged, source_root, request, offline)
