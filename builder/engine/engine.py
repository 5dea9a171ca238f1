"""Run a build: plan the stages, execute each step, write and tag the image."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder import interrupt
from builder.cache import CacheEntry, CacheStore, Inputs, cache_key
from builder.cache.keys import recorded_inputs
from builder.context.checksum import checksum_sources
from builder.engine import dispatch, stageplatform
from builder.engine.add_sources import checkouts
from builder.engine.copy import CopyRequest, copy_into, make_dirs, select_sources
from builder.engine.git_source import redact
from builder.engine.options import BuildOptions, BuildResult, StepRecord
from builder.engine.progress import Progress
from builder.engine.runmounts import check_privileges, prepare_mounts
from builder.engine.state import DEFAULT_PATH, StageState
from builder.errors import BuildError, ContextError, DockerfileError, PybuildError
from builder.image import config as image_config
from builder.platforms import Platform
from builder.run import RunSpec, in_mount_namespace, run_step
from builder.run.runopts import run_inputs
from builder.run.sandbox import resolve_in_root, resolve_user
from builder.snapshot import Snapshot, commit, open_driver, prepare
from builder.store.store import Store

if TYPE_CHECKING:
    import sqlite3

    from builder.cache.transfer import ImportedCache


class BuildInterrupted(BuildError):
    """SIGINT or SIGTERM stopped the build; exit status 128 + the signal, as a shell's."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"build interrupted ({signal.Signals(signum).name}): stopped every "
                         "step; nothing was kept")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.signum,))


class _Stop(BaseException):
    """Raised in the main thread by the SIGTERM handler (SIGINT raises KeyboardInterrupt)."""


class _Cancelled(Exception):
    """A stage thread stops because the build is stopping (another stage failed, Ctrl-C)."""


# -- SQLite and fork() across stage threads ---------------------------------------
class _ForkGuard:
    """No fork() while another thread is inside SQLite.

    A RUN or COPY child is forked from a stage thread and opens the store's
    database itself; if another thread held one of SQLite's process-wide mutexes
    at that instant, the child would inherit it locked and hang.  SQLite calls
    of stage threads hold the guard shared (they never wait for each other: a
    transaction spans several calls); fork() holds it exclusively.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0

    # ``with _GUARD:`` holds it shared (a plain context manager: it wraps every query).
    def __enter__(self) -> None:
        with self._cond:
            self._readers += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def before_fork(self) -> None:
        self._cond.acquire()
        while self._readers:
            self._cond.wait()

    def after_fork_in_parent(self) -> None:
        self._cond.release()

    def after_fork_in_child(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0


_GUARD = _ForkGuard()
os.register_at_fork(before=_GUARD.before_fork, after_in_parent=_GUARD.after_fork_in_parent,
                    after_in_child=_GUARD.after_fork_in_child)


class _GuardedCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def fetchone(self) -> Any:
        with _GUARD:
            return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        with _GUARD:
            return self._cursor.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    def __getattr__(self, name: str) -> Any:  # rowcount, description, ...
        return getattr(self._cursor, name)


class _GuardedConnection:
    """A stage thread's SQLite connection, every call under the fork guard."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, *args: Any) -> _GuardedCursor:
        with _GUARD:
            return _GuardedCursor(self._conn.execute(*args))

    def executemany(self, *args: Any) -> _GuardedCursor:
        with _GUARD:
            return _GuardedCursor(self._conn.executemany(*args))

    def executescript(self, script: str) -> _GuardedCursor:
        with _GUARD:
            return _GuardedCursor(self._conn.executescript(script))

    def close(self) -> None:
        with _GUARD:
            self._conn.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _StageStore(Store):
    """The build's store as a stage thread uses it: its own SQLite connection
    (connections are per thread), guarded against forks from other threads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        # The build's own Store swept tmp/ when it opened; a stage thread's never
        # does (it would look at the other stages' work dirs while they start).
        self._owner = -1

    @property
    def db(self) -> Any:
        conn = Store.db.fget(self)  # type: ignore[attr-defined]
        return _GuardedConnection(conn)

    def close(self) -> None:
        if self._db is not None:
            with _GUARD:
                self._db.close()
            self._db = None


@dataclass
class _Build:
    main_store: Store
    options: BuildOptions
    progress: Progress
    dockerfile_path: str
    ignore: Any
    main_cache: CacheStore
    imported: list[ImportedCache] = field(default_factory=list)
    plan: Any = None
    escape: str = "\\"
    stages: dict[int, StageState] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    total_steps: int = 0
    # Concurrency: a stage thread has its own store connection and cache view;
    # ``lock`` guards ``stages``, ``done`` and ``imported``.
    local: threading.local = field(default_factory=threading.local)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: dict[int, threading.Event] = field(default_factory=dict)
    position: dict[int, int] = field(default_factory=dict)   # stage index -> plan position
    cancel: threading.Event = field(default_factory=threading.Event)
    slots: threading.Semaphore | None = None
    exited: list[threading.Event] = field(default_factory=list)  # one per stage thread
    wake: threading.Event = field(default_factory=threading.Event)  # a stage thread ended
    named: Any = None  # named_contexts.NamedContexts when --build-context is given

    @property
    def store(self) -> Store:
        return getattr(self.local, "store", None) or self.main_store

    @property
    def cache(self) -> CacheStore:
        return getattr(self.local, "cache", None) or self.main_cache

    def created(self) -> str:
        epoch = self.options.source_date_epoch
        return image_config.rfc3339(epoch if epoch is not None else None)


def _read_dockerfile(options: BuildOptions) -> tuple[bytes, str]:
    if options.dockerfile_text is not None:
        return options.dockerfile_text, "Dockerfile"
    path = options.dockerfile or (options.context or Path(".")) / "Dockerfile"
    try:
        return Path(path).read_bytes(), str(path)
    except FileNotFoundError:
        raise ContextError(f"{path}: Dockerfile not found") from None
    except IsADirectoryError:
        raise ContextError(f"{path}: is a directory, not a Dockerfile") from None


def _ignore_matcher(options: BuildOptions) -> Any:
    if options.context is None:
        return None
    from builder.context.ignore import PatternMatcher, find_ignore_file, read_ignore_file

    found = find_ignore_file(str(options.context),
                             str(options.dockerfile) if options.dockerfile else None)
    if found is None:
        return None
    from builder.context.view import ContextFilter

    patterns = read_ignore_file(Path(found).read_bytes())
    try:
        matcher = PatternMatcher(patterns)
    except ValueError as err:
        raise ContextError(f"{found}: {err}") from None
    # No pattern, no filter: every view of the context is then the plain directory.
    return ContextFilter(str(options.context), matcher) if len(matcher) else None


def build(store: Store, options: BuildOptions, progress: Progress) -> BuildResult:
    from builder.dockerfile import parse_text, plan_build

    # Resolve "auto" once (it probes a mount), so every step uses the same driver.
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
    from builder.dockerfile.secretnames import build_warnings

    for warning in [*dockerfile.warnings, *plan.warnings, *build_warnings(dockerfile)]:
        progress.message(f"WARNING: {warning}")
    stageplatform.check_runnable(plan, path)  # before anything runs or is pulled
    run = _Build(store, options, progress, path, _ignore_matcher(options), CacheStore(store),
                 escape=dockerfile.escape)
    run.plan, run.named = plan, named
    if options.cache_from:  # imported lazily: most builds share no cache
        from builder.cache.transfer import open_cache

        run.imported = [open_cache(src) for src in options.cache_from]
    if options.cache_from_refs:
        from builder.registry.cache import open_registry_cache

        run.imported += [open_registry_cache(ref, insecure=options.insecure_registries)
                         for ref in options.cache_from_refs]
    run.total_steps = sum(len(p.stage.commands) + 1 for p in plan.stages)
    _build_stages(run)
    # The record lists steps in plan order, however the stages interleaved.
    run.steps = [step for p in plan.stages for step in run.stages[p.stage.index].steps]
    return _finish(run, run.stages[plan.stages[-1].stage.index])


def _jobs() -> int:
    """How many stages may build at once: the work is in child processes and I/O,
    but a commit walk holds the GIL, so a few are enough."""
    return max(2, min(4, os.cpu_count() or 2))


def _build_stages(run: _Build) -> None:
    """Build every planned stage, each on its own thread once the stages it needs
    are built, at most ``_jobs()`` at a time.

    The main thread only waits.  On the first failure, or SIGINT/SIGTERM, it
    stops the build: no stage starts another step, and every child process
    (RUN sandboxes, COPY helpers) is killed, which ends their PID and mount
    namespaces, so their mounts go with them; each stage thread then drops its
    snapshot's work dir.  Layers already committed stay (they are complete).
    """
    plan = run.plan
    run.slots = threading.Semaphore(_jobs())
    for position, planned in enumerate(plan.stages):
        run.done[planned.stage.index] = threading.Event()
        run.position[planned.stage.index] = position
    errors: dict[int, BaseException] = {}
    run.exited = [threading.Event() for _ in plan.stages]
    threads = [threading.Thread(target=_stage_thread, args=(run, planned, errors, exited),
                                name=f"stage-{planned.stage.index}", daemon=True)
               for planned, exited in zip(plan.stages, run.exited, strict=True)]
    interrupted: int | None = None
    restore = _catch_sigterm()
    try:
        try:
            for thread in threads:
                thread.start()
            # A bounded wait, not join(): a signal may land on another thread and only
            # the main thread runs Python's handlers; and a join() that KeyboardInterrupt
            # breaks can leave the thread looking finished (CPython gh-90882).
            while True:
                run.wake.clear()
                if run.cancel.is_set() or all(e.is_set() for e in run.exited):
                    break
                run.wake.wait(0.1)
        except KeyboardInterrupt:
            interrupted = signal.SIGINT
        except _Stop:
            interrupted = signal.SIGTERM
        if interrupted is not None or run.cancel.is_set():
            _stop_all(run, threads)
    finally:
        restore()
    if interrupted is not None:
        raise BuildInterrupted(interrupted)
    if errors:
        # The failure of the earliest stage in plan order, not whichever came first.
        raise errors[min(errors, key=lambda i: run.position[i])]


def _catch_sigterm() -> Callable[[], None]:
    """SIGTERM stops the build like Ctrl-C; returns the function that undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum: int, frame: Any) -> None:
        raise _Stop()
    previous = signal.signal(signal.SIGTERM, on_term)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _stop_all(run: _Build, threads: list[threading.Thread]) -> None:
    """Stop every stage thread; a second Ctrl-C (or SIGTERM) meanwhile only repeats it."""
    run.cancel.set()
    # Loops below the engine (context hashing, layer extraction) poll this flag,
    # so a stage busy in one stops within a chunk, not when the step is done.
    interrupt.request()
    for thread, exited in zip(threads, run.exited, strict=True):
        if thread.ident is None:  # interrupted before it was started
            exited.set()
    in_main = threading.current_thread() is threading.main_thread()
    saved = {}
    if in_main:
        for signum in (signal.SIGINT, signal.SIGTERM):
            saved[signum] = signal.signal(signum, lambda *_: _kill_children())
    try:
        while not all(e.is_set() for e in run.exited):
            # Repeated: a stage may fork between the cancel check and the kill.
            _kill_children()
            time.sleep(0.05)
        for thread in threads:
            if thread.ident is not None:
                thread.join()
    finally:
        interrupt.clear()
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _kill_children() -> None:
    """SIGKILL this process's children: RUN setup children (their PID 1 follows by
    its parent-death signal, and the kernel kills the rest of the PID namespace)
    and COPY helpers.  Only called while the build is stopping."""
    me = str(os.getpid())
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                fields = stat_file.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[1].decode() == me:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def _stage_thread(run: _Build, planned: Any, errors: dict[int, BaseException],
                  exited: threading.Event) -> None:
    index = planned.stage.index
    store = _StageStore(run.main_store.root)
    run.local.stage = index
    run.local.store = store
    run.local.cache = CacheStore(store)
    try:
        for dep in planned.dependencies:
            _wait_for(run, dep)
        assert run.slots is not None
        with _slot(run):
            state = _build_stage(run, planned)
        with run.lock:
            run.stages[index] = state
        run.done[index].set()
    except _Cancelled:
        pass
    except BaseException as err:  # every failure reaches the main thread
        with run.lock:
            if not run.cancel.is_set():
                errors[index] = err if isinstance(err, PybuildError) else BuildError(
                    f"internal error in stage {_stage_label(planned.stage)}: "
                    f"{type(err).__name__}: {err}")
            run.cancel.set()
    finally:
        store.close()
        exited.set()
        run.wake.set()


@contextlib.contextmanager
def _slot(run: _Build) -> Iterator[None]:
    assert run.slots is not None
    while not run.slots.acquire(timeout=0.05):
        if run.cancel.is_set():
            raise _Cancelled()
    run.local.holds_slot = True
    try:
        yield
    finally:
        run.local.holds_slot = False
        run.slots.release()


def _current_stage(run: _Build) -> int | None:
    return getattr(run.local, "stage", None)


def _wait_for(run: _Build, index: int) -> None:
    """Wait until stage ``index`` is built, giving up our slot meanwhile."""
    event = run.done[index]
    if event.is_set():
        return
    holds = getattr(run.local, "holds_slot", False)
    if holds and run.slots is not None:
        run.slots.release()
    try:
        while not event.wait(0.05):
            if run.cancel.is_set():
                raise _Cancelled()
    finally:
        if holds and run.slots is not None:
            while not run.slots.acquire(timeout=0.05):
                if run.cancel.is_set():
                    run.local.holds_slot = False
                    raise _Cancelled()


def _stage_label(stage: Any) -> str:
    return stage.name or f"stage-{stage.index}"


def _base_state(run: _Build, planned: Any) -> StageState:
    state = _from_base(run, planned)
    if "PATH" not in state.env():  # BuildKit makes sure PATH is always set
        state.set_env("PATH", DEFAULT_PATH)
    return state


def _from_base(run: _Build, planned: Any) -> StageState:
    stage = planned.stage
    name = _stage_label(stage)
    base = planned.base
    if run.named is not None:
        from builder.engine.named_contexts import stage_base

        named = stage_base(run, planned)
        if named is not None:
            return named
    if planned.base_stage is not None:
        _wait_for(run, planned.base_stage)
        return run.stages[planned.base_stage].fork(name)
    if base == "scratch":
        target = run.plan.target_platform
        image = image_config.new_image(target.os, target.architecture, target.variant)
        return StageState(name=name, image=image, chain=None, base_ref="scratch",
                          cache_key="scratch", platform=target)
    image_id = _base_image(run, base, stage.line, stageplatform.requested(run.plan, planned))
    image = copy.deepcopy(run.store.image_config(image_id))
    image.pop("created", None)
    platform = stageplatform.image_platform(run.plan, planned, image, base,
                                            lambda text: run.progress.message(f"WARNING: {text}"))
    return StageState(name=name, image=image, chain=run.store.image_top_chain(image_id),
                      base_ref=image_id, cache_key=f"image {image_id}", platform=platform)


def _base_image(run: _Build, base: str, line: int, platform: Platform | None = None) -> str:
    """The store's image for ``FROM base`` (default: the target platform's), pulled when
    missing (or always with --pull): engine/stageplatform.find_base."""
    return stageplatform.find_base(
        run.store, base, platform or run.plan.target_platform, pull_always=run.options.pull,
        insecure=run.options.insecure_registries, where=(run.dockerfile_path, line),
        message=run.progress.message)


def _build_stage(run: _Build, planned: Any) -> StageState:
    stage = planned.stage
    label = _stage_label(stage)
    run.progress.step(f"[{label}] FROM {stage.base}", stage=label)
    state = _base_state(run, planned)
    run.progress.done()
    # A stage that a --build-context replaces runs nothing (BuildKit's dispatchState).
    replaced = run.named is not None and run.named.find(stage.name or "-") is not None
    commands = [] if replaced else [*_onbuild_triggers(run, planned, state), *stage.commands]
    count = len(commands)
    for number, command in enumerate(commands, 1):
        if run.cancel.is_set():
            raise _Cancelled()
        title = f"[{label} {number}/{count}] {_one_line(command.original)}"
        run.progress.step(title, stage=label)
        record = StepRecord(stage=_stage_label(stage), index=number,
                            instruction=_one_line(command.original), line=command.line)
        started = time.monotonic()
        try:
            _execute(run, state, command, record)
        except PybuildError as err:
            if isinstance(err, DockerfileError):
                raise
            raise BuildError(f"{run.dockerfile_path}:{command.line}: "
                             f"{_one_line(command.original)}: {err}") from None
        record.seconds = time.monotonic() - started
        state.steps.append(record)
        run.progress.done()
    return state


def _onbuild_triggers(run: _Build, planned: Any, state: StageState) -> list[Any]:
    """ONBUILD triggers of the base image (or base stage) run first, then are dropped."""
    from builder.dockerfile import parse_text

    triggers = list(state.config.pop("OnBuild", None) or [])
    if planned.base_stage is not None:
        base = next(p.stage for p in run.plan.stages if p.stage.index == planned.base_stage)
        triggers += [c.expression for c in base.commands if c.keyword == "onbuild"]
    commands = []
    for trigger in triggers:
        parsed = parse_text(f"FROM scratch\n{trigger}\n", run.dockerfile_path)
        found = parsed.stages[0].commands if parsed.stages else []
        if len(found) != 1 or found[0].keyword in ("onbuild", "maintainer"):
            raise DockerfileError(f"invalid ONBUILD trigger {trigger!r}", run.dockerfile_path,
                                  planned.stage.line)
        commands.append(dataclasses.replace(found[0], line=planned.stage.line,
                                            end_line=planned.stage.line))
    return commands


def _one_line(text: str) -> str:
    first = " ".join(text.split())
    return first if len(first) <= 120 else first[:117] + "..."


def _expanders(run: _Build, state: StageState, command: Any) -> tuple[Callable, Callable]:
    from builder.dockerfile.expand import ExpansionError, ShellLex

    lexer = ShellLex(run.escape)
    env = state.expansion_env()

    def wrap(fn: Callable) -> Callable:
        def expand(word: str) -> Any:
            try:
                return fn(word, env)
            except ExpansionError as err:
                raise DockerfileError(str(err), run.dockerfile_path, command.line) from None
        return expand
    return wrap(lexer.process_word), wrap(lexer.process_words)


def _execute(run: _Build, state: StageState, command: Any, record: StepRecord) -> None:
    expand_word, expand_words = _expanders(run, state, command)
    if hasattr(command, "expand"):
        command = command.expand(expand_word, expand_words)
    keyword = command.keyword
    if keyword == "run":
        _run_instruction(run, state, command, record)
    elif keyword in ("copy", "add"):
        _copy(run, state, command, record)
        _add_history(state, _copy_history(command) + " # buildkit", record)
    elif keyword == "workdir":
        workdir = dispatch.normalize_workdir(state.workdir(), command.path)
        state.config["WorkingDir"] = workdir
        if workdir != "/":
            user = state.config.get("User", "")
            inputs = [("instruction", "WORKDIR"), ("path", workdir), ("user", user)]
            _layer_step(run, state, record, inputs, lambda snap: in_mount_namespace(
                _mkdir_in_snapshot, snap, workdir, user))
        else:  # BuildKit's dispatchWorkdir makes no layer (no mkdir) for "/"
            record.note = "config only"
        _add_history(state, f"WORKDIR {workdir}", record)
    else:
        record.note = "config only"
        history = dispatch.apply_metadata(state, command, run.plan.resolve_args, expand_word)
        if history is not None:
            _add_history(state, history, record)


def _run_instruction(run: _Build, state: StageState, command: Any, record: StepRecord) -> None:
    # check_runnable saw the Dockerfile's RUNs; this catches a base image's ONBUILD RUN.
    stageplatform.ensure_runnable(state.platform, run.dockerfile_path, command.line, state.name)
    argv, pipes = dispatch.run_argv(state, command)
    mounts = prepare_mounts(
        run.store, getattr(command, "mounts", []) or [], workdir=state.workdir(),
        context=str(run.options.context) if run.options.context else None,
        context_filter=run.ignore,
        secrets=run.options.secrets, cache=run.cache,
        resolve_from=lambda name: _resolve_from(run, name, command),
        driver=run.options.storage_driver)
    try:
        env = state.run_env()
        spec = RunSpec(argv=argv, env=env + mounts.secret_env, cwd=state.workdir(),
                       user=state.config.get("User", ""),
                       network=check_privileges(command, run.options.network),
                       mounts=mounts.mounts, pipes=pipes, options=run.options.run_options)
        inputs = [("instruction", "RUN"), ("argv", json.dumps(argv)),
                  *(("env", entry) for entry in sorted(env)), ("workdir", spec.cwd),
                  ("user", spec.user), ("network", spec.network),
                  *(("pipe", f"{name}={hashlib.sha256(data).hexdigest()}")
                    for name, data in pipes), *mounts.inputs, *run_inputs(spec.options)]
        _layer_step(run, state, record, inputs, lambda snap: _run(run, snap, spec))
    finally:
        mounts.release()
    _add_history(state, dispatch.run_history(state, argv) + " # buildkit", record)


def _add_history(state: StageState, created_by: str, record: StepRecord) -> None:
    # Only layers carry their own time; _fill_created gives the others one, as BuildKit does.
    state.image.setdefault("history", []).append(
        image_config.history_entry(created_by, empty_layer=record.layer is None,
                                   created=record.created if record.layer else None))


def _fill_created(history: list[dict], epoch: int | None) -> str | None:
    """BuildKit's normalizeLayersAndHistory: an entry without a time takes the first new
    layer's time, or the previous layer's; returns the image's "created" (the last time).
    With SOURCE_DATE_EPOCH, every time after the epoch is clamped to it."""
    created = None
    gap = False
    for entry in history:
        if entry.get("created"):
            created = entry["created"]
            if gap:
                break
        else:
            gap = True
    gap = False
    for entry in history:
        if entry.get("created"):
            if gap:
                created = entry["created"]
        else:
            gap = True
            entry["created"] = created
    if epoch is not None:
        stamp = image_config.rfc3339(epoch)
        for entry in history:
            if not entry.get("created") or entry["created"] > stamp:
                entry["created"] = stamp
    return next((e["created"] for e in reversed(history) if e.get("created")), None)


def _layer_step(run: _Build, state: StageState, record: StepRecord, inputs: Inputs,
                action: Callable[[Snapshot], None]) -> None:
    """Reuse the cached result of a step with these inputs, or run it and record it."""
    platform = state.platform or run.plan.target_platform  # the stage's, as BuildKit's ops
    inputs = [("parent", state.cache_key), *inputs, ("platform", str(platform))]
    key = cache_key(inputs)
    inputs = recorded_inputs(inputs, state.args)  # what is stored: no build-arg value in clear
    slot = f"{Path(run.dockerfile_path).name}:{state.name}:{record.index}"
    record.key = key
    skip_cache = run.options.no_cache or state.name in run.options.no_cache_filter
    entry = None if skip_cache else _lookup(run, key, state.cache_key)
    if entry is not None:
        record.cached, record.created = True, entry.created
        record.layer = entry.chain_id if entry.changes.get("layer") else None
        for name in ("added", "modified", "deleted"):
            setattr(record, name, entry.changes.get(name, 0))
        record.size = entry.changes.get("bytes", 0)
        record.note = "cache hit"
        state.chain, state.cache_key = entry.chain_id, key
        run.progress.cached()
        return
    record.note = ("cache miss: --no-cache" if run.options.no_cache
                   else f"cache miss: --no-cache-filter {state.name}" if skip_cache
                   else "cache miss: " + run.cache.explain_miss(state.cache_key, slot, inputs))
    record.created = run.created()
    snapshot = prepare(run.store, state.chain, run.options.storage_driver)
    try:
        action(snapshot)
        result = commit(snapshot, source_date_epoch=run.options.source_date_epoch)
    except BaseException:
        snapshot.release()
        raise
    changes = result.changes
    record.added, record.modified = len(changes.added), len(changes.modified)
    record.deleted, record.size = len(changes.deleted), changes.bytes
    if result.layer:
        record.layer = result.chain_id
    run.cache.record(CacheEntry(
        key=key, parent=state.cache_key, slot=slot, inputs=inputs, chain_id=result.chain_id,
        created=record.created, changes={"layer": result.layer, "added": record.added,
                                         "modified": record.modified,
                                         "deleted": record.deleted, "bytes": record.size}))
    state.chain, state.cache_key = result.chain_id, key


def _lookup(run: _Build, key: str, parent: str) -> CacheEntry | None:
    """A local cache entry, else one from a --cache-from layout (fetching its layers)."""
    entry = run.cache.lookup(key)
    if entry is None and run.imported:
        from builder.cache.transfer import materialize

        with run.lock:  # one stage at a time reads the imported layouts
            for imported in run.imported:
                entry = materialize(run.store, run.cache, imported, key, parent)
                if entry is not None:
                    break
    return entry


def _run(run: _Build, snapshot: Snapshot, spec: RunSpec) -> None:
    code = run_step(snapshot, spec, run.progress.output)
    if code != 0:
        tail = "\n".join(run.progress.tail)
        shown = " ".join(spec.argv)
        message = f"process \"{shown}\" did not complete successfully: exit code: {code}"
        if tail:
            message += f"\n--- last lines of output ---\n{tail}"
        raise BuildError(message)


def _mkdir_in_snapshot(snapshot: Snapshot, path: str, user: str) -> None:
    merged = str(snapshot.work.path / "merged")
    os.makedirs(merged, exist_ok=True)
    snapshot.mount(merged)
    ident = resolve_user(merged, user) if user else None
    make_dirs(merged, path, ident.uid if ident else 0, ident.gid if ident else 0)


def _copy_history(command: Any) -> str:
    parts = [command.keyword.upper()]
    if getattr(command, "parents", False):
        parts.append("--parents")
    if getattr(command, "chown", None):
        parts.append(f"--chown={command.chown}")
    if getattr(command, "chmod", None):
        parts.append(f"--chmod={command.chmod}")
    parts += list(command.sources)
    parts += [f"<<{h.name}" for h in getattr(command, "source_heredocs", []) or []]
    parts.append(command.dest)
    return " ".join(parts)


def _copy(run: _Build, state: StageState, command: Any, record: StepRecord,
          local: tuple[str, Any] | None = None) -> None:
    """COPY/ADD; ``local``: (dir, filter) read instead of the main context."""
    source_from = getattr(command, "from_", None)
    main = str(run.options.context) if run.options.context is not None else None
    context_dir, ignore = local or (main, run.ignore)
    heredocs = [(h.name, h.content) for h in getattr(command, "source_heredocs", []) or []]
    request = CopyRequest(
        sources=list(command.sources), dest=command.dest, workdir=state.workdir(),
        chown=getattr(command, "chown", None) or "", chmod=getattr(command, "chmod", None) or "",
        ignore=ignore if source_from is None else None, heredocs=heredocs,
        exclude=list(getattr(command, "exclude", None) or []),
        parents=bool(getattr(command, "parents", False)),
        link=bool(getattr(command, "link", False)),
        add=command.keyword == "add", preserve_owner=source_from is not None)
    inputs: Inputs = [("instruction", command.keyword.upper()),
                      ("sources", json.dumps([redact(s) for s in request.sources])),
                      ("dest", request.dest),
                      ("workdir", request.workdir), ("chown", request.chown),
                      ("chmod", request.chmod), ("heredocs", json.dumps(heredocs)),
                      ("exclude", json.dumps(request.exclude)),
                      ("parents", str(request.parents))]
    if request.link:  # K03: --link is a different BuildKit op (own cache key); added
        inputs.append(("link", "true"))  # only when set, so existing keys stay valid
    source_chain: str | None = None
    remote = None
    if source_from is not None:
        source_chain = _resolve_from(run, source_from, command)
        inputs.append(("from", source_chain or "scratch"))
        context = "/nonexistent"
    elif context_dir is None:
        if command.sources:
            raise BuildError("no build context: COPY and ADD need a context directory")
        context = "/nonexistent"
    else:
        context = context_dir
        request.selected = select_sources(context, request)
        # A URL is not in the context: its text is the key (BuildKit also asks the
        # server; pybuild refetches only when the URL or the step's inputs change);
        # a git source's key holds the commit its ref names now (add_sources.py).
        if request.add:
            from builder.engine.add_sources import plan_add

            remote = plan_add(run.store, command, request)
            inputs += remote.inputs
        checksum = checksum_sources([(rel, resolve_in_root(context, rel) or "")
                                     for rel in request.kept_sources(request.selected)],
                                    cache=run.cache, skip=request.leaves_out)
        run.cache.flush_stats()
        inputs += [("file", f"{rel}={entry}") for rel, entry in checksum.files.items()]
        inputs.append(("content", checksum.digest))
        request.expected_content = checksum.digest   # the copy must write just this

    def action(snapshot: Snapshot) -> None:
        # The --from view is made and released here, not in the child, so that its work
        # dir never outlives the step; and only on a miss (a vfs view copies a tree).
        view = (prepare(run.store, source_chain, run.options.storage_driver)
                if source_chain is not None else None)
        try:
            with checkouts(run.store, remote, request):
                in_mount_namespace(_copy_in_child, snapshot, view, source_from is None,
                                   context, request)
        finally:
            if view is not None:
                view.release()
    _layer_step(run, state, record, inputs, action)


def _copy_in_child(snapshot: Snapshot, view: Snapshot | None, from_context: bool,
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
    copy_into(merged, source_root, request)


def _resolve_from(run: _Build, source: str, command: Any) -> str | None:
    """The chain ID that ``--from=`` names: a stage (name or index) or an image.

    As in a sequential build, only stages earlier in the plan count; the plan
    made them dependencies, so they are built (an ONBUILD trigger of a base
    image is not in the plan: then this waits for that stage)."""
    here = run.position.get(_current_stage(run), len(run.position))
    for planned in run.plan.stages:
        index = planned.stage.index
        if run.position[index] >= here:
            continue
        if source in (_stage_label(planned.stage), str(index)):
            _wait_for(run, index)
            return run.stages[index].chain
    found = run.named.find(source) if run.named is not None else None
    if found is not None:  # a --build-context, before any image of that name
        from builder.engine.named_contexts import chain_of

        return chain_of(run, found, command.line)
    # Not a stage: an image, from the store or pulled, as BuildKit does.
    return run.store.image_top_chain(_base_image(run, source, command.line))


def _finish(run: _Build, state: StageState) -> BuildResult:
    image = state.image
    stageplatform.record_target(image, run.plan)
    if run.options.labels:
        labels = dict(image["config"].get("Labels") or {})
        labels.update(run.options.labels)
        image["config"]["Labels"] = labels
    image["rootfs"] = {"type": "layers",
                       "diff_ids": [r.diff_id for r in run.store.chain(state.chain)]}
    created = _fill_created(image.get("history", []), run.options.source_date_epoch)
    image["created"] = created or run.created()
    image_id = run.store.put_image(image_config.marshal(image), state.chain)
    for tag in run.options.tags:
        run.store.tag(tag, image_id)
    from builder.explain.records import save_build

    save_build(run.store, image_id, run.steps)
    if run.options.cache_to:
        from builder.cache.transfer import export_cache

        steps = run.steps if run.options.cache_mode == "max" else state.steps
        count = export_cache(run.store, run.cache, [s.key for s in steps if s.key],
                             run.options.cache_to)
        run.progress.message(f"exported {count} cache entries to {run.options.cache_to}")
    if run.options.cache_to_ref:
        from builder.registry.cache import push_cache

        steps = run.steps if run.options.cache_mode == "max" else state.steps
        count = push_cache(run.store, run.cache, [s.key for s in steps if s.key],
                           run.options.cache_to_ref, insecure=run.options.insecure_registries)
        run.progress.message(f"exported {count} cache entries to {run.options.cache_to_ref}")
    return BuildResult(image_id=image_id, steps=run.steps, tags=list(run.options.tags))
