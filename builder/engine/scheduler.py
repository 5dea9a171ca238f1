"""Stage scheduling: each planned stage on its own thread, and stopping them all.

A stage starts once the stages it needs are built, at most ``jobs()`` at a
time.  The main thread only waits.  On the first failure, or SIGINT/SIGTERM,
it stops the build: no stage starts another step, and every child process
(RUN sandboxes, COPY helpers) is killed, which ends their PID and mount
namespaces, so their mounts go with them; each stage thread then drops its
snapshot's work dir.  Layers already committed stay (they are complete).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

from builder import interrupt
from builder.cache import CacheStore
from builder.engine.buildrun import BuildRun
from builder.engine.state import StageState
from builder.errors import BuildError, PybuildError
from builder.store.threads import thread_store

if TYPE_CHECKING:
    from builder.dockerfile.stages import PlannedStage

# Builds one stage on the calling stage thread (stagebuild.build_stage).
StageBuilder = Callable[[BuildRun, "PlannedStage"], StageState]


class BuildInterrupted(BuildError):
    """SIGINT or SIGTERM stopped the build; exit status 128 + the signal, as a shell's."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"build interrupted ({signal.Signals(signum).name}): stopped every "
                         "step; nothing was kept")

    def __reduce__(self) -> tuple[type[BuildInterrupted], tuple[int]]:
        return (type(self), (self.signum,))


class _Stop(BaseException):
    """Raised in the main thread by the SIGTERM handler (SIGINT raises KeyboardInterrupt)."""


class Cancelled(Exception):
    """A stage thread stops because the build is stopping (another stage failed, Ctrl-C)."""


def jobs() -> int:
    """How many stages may build at once: the work is in child processes and I/O,
    but a commit walk holds the GIL, so a few are enough."""
    return max(2, min(4, os.cpu_count() or 2))


def stage_label(stage_name: str | None, index: int) -> str:
    return stage_name or f"stage-{index}"


def run_stages(run: BuildRun, build_stage: StageBuilder) -> None:
    """Build every planned stage with ``build_stage``; raise the first failure in plan order."""
    run.slots = threading.Semaphore(jobs())
    for position, planned in enumerate(run.plan.stages):
        run.done[planned.stage.index] = threading.Event()
        run.position[planned.stage.index] = position
    errors: dict[int, BaseException] = {}
    run.exited = [threading.Event() for _ in run.plan.stages]
    threads = [threading.Thread(target=_stage_thread,
                                args=(run, build_stage, planned, errors, exited),
                                name=f"stage-{planned.stage.index}", daemon=True)
               for planned, exited in zip(run.plan.stages, run.exited, strict=True)]
    interrupted = _wait_for_threads(run, threads)
    if interrupted is not None:
        raise BuildInterrupted(interrupted)
    if errors:
        # The failure of the earliest stage in plan order, not whichever came first.
        raise errors[min(errors, key=lambda i: run.position[i])]


def _wait_for_threads(run: BuildRun, threads: list[threading.Thread]) -> int | None:
    """Start the threads and wait until they end or the build stops; the signal, if any."""
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
    return interrupted


def _catch_sigterm() -> Callable[[], None]:
    """SIGTERM stops the build like Ctrl-C; returns the function that undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Stop()
    previous = signal.signal(signal.SIGTERM, on_term)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)
    return restore


def _stop_all(run: BuildRun, threads: list[threading.Thread]) -> None:
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
    """SIGKILL every process below this one: RUN setup children with their steps
    (killing PID 1 ends the rest of its PID namespace), network stacks and COPY
    helpers.  Only called while the build is stopping."""
    from builder.run.child import kill_process_tree

    kill_process_tree(os.getpid(), include_root=False)


def _stage_thread(run: BuildRun, build_stage: StageBuilder, planned: PlannedStage,
                  errors: dict[int, BaseException], exited: threading.Event) -> None:
    index = planned.stage.index
    store = thread_store(run.main_store.root)
    run.local.stage = index
    run.local.store = store
    run.local.cache = CacheStore(store)
    try:
        for dep in planned.dependencies:
            wait_for(run, dep)
        with _slot(run):
            state = build_stage(run, planned)
        with run.lock:
            run.stages[index] = state
        run.done[index].set()
    except Cancelled:
        pass
    except BaseException as err:  # every failure reaches the main thread
        with run.lock:
            if not run.cancel.is_set():
                errors[index] = err if isinstance(err, PybuildError) else BuildError(
                    f"internal error in stage {stage_label(planned.stage.name, index)}: "
                    f"{type(err).__name__}: {err}")
            run.cancel.set()
    finally:
        store.close()
        exited.set()
        run.wake.set()


@contextlib.contextmanager
def _slot(run: BuildRun) -> Iterator[None]:
    while not run.slots.acquire(timeout=0.05):
        if run.cancel.is_set():
            raise Cancelled()
    run.local.holds_slot = True
    try:
        yield
    finally:
        run.local.holds_slot = False
        run.slots.release()


def wait_for(run: BuildRun, index: int) -> None:
    """Wait until stage ``index`` is built, giving up our slot meanwhile."""
    event = run.done[index]
    if event.is_set():
        return
    holds = run.local.holds_slot
    if holds:
        run.slots.release()
    try:
        while not event.wait(0.05):
            if run.cancel.is_set():
                raise Cancelled()
    finally:
        if holds:
            while not run.slots.acquire(timeout=0.05):
                if run.cancel.is_set():
                    run.local.holds_slot = False
                    raise Cancelled()


def check_cancelled(run: BuildRun) -> None:
    """Between steps: stop this stage if the build is stopping."""
    if run.cancel.is_set():
        raise Cancelled()
