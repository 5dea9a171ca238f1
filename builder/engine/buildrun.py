"""One build while it runs: what every stage thread shares, and what each keeps to itself."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from builder.cache import CacheStore
from builder.engine.options import BuildOptions
from builder.engine.progress import Progress
from builder.engine.state import StageState
from builder.explain.steps import StepRecord
from builder.image import config as image_config
from builder.store.store import Store

if TYPE_CHECKING:
    from builder.cache.importer import ImportedCache
    from builder.context.view import ContextFilter
    from builder.dockerfile.stages import BuildPlan
    from builder.engine.named_contexts import NamedContexts


class ThreadView(threading.local):
    """What a stage thread keeps to itself; the main thread sees the defaults."""

    stage: int | None = None          # the index of the stage this thread builds
    store: Store | None = None        # its own store view (SQLite connections are per thread)
    cache: CacheStore | None = None   # the cache over that view
    holds_slot: bool = False          # whether it holds one of the build's job slots


class BuildRun(msgspec.Struct):
    """The build shared by its stage threads; ``lock`` guards ``stages``,
    ``imported`` and the reads of imported caches."""

    main_store: Store
    options: BuildOptions
    progress: Progress
    dockerfile_path: str
    ignore: ContextFilter | None   # the context's .dockerignore (None: nothing ignored)
    main_cache: CacheStore
    plan: BuildPlan
    escape: str = "\\"
    named: NamedContexts | None = None   # --build-context, when given
    imported: list[ImportedCache] = msgspec.field(default_factory=list)
    stages: dict[int, StageState] = msgspec.field(default_factory=dict)   # built, by stage index
    steps: list[StepRecord] = msgspec.field(default_factory=list)
    local: ThreadView = msgspec.field(default_factory=ThreadView)
    lock: threading.Lock = msgspec.field(default_factory=threading.Lock)
    done: dict[int, threading.Event] = msgspec.field(default_factory=dict)  # stage index -> built
    position: dict[int, int] = msgspec.field(default_factory=dict)   # stage index -> plan position
    cancel: threading.Event = msgspec.field(default_factory=threading.Event)
    slots: threading.Semaphore = msgspec.field(default_factory=threading.Semaphore)
    exited: list[threading.Event] = msgspec.field(default_factory=list)  # one per stage thread
    wake: threading.Event = msgspec.field(default_factory=threading.Event)  # a stage thread ended

    @property
    def store(self) -> Store:
        """The calling thread's store view (the main one outside stage threads)."""
        return self.local.store or self.main_store

    @property
    def cache(self) -> CacheStore:
        return self.local.cache or self.main_cache

    def created(self) -> str:
        """The time a new layer records: now, or SOURCE_DATE_EPOCH."""
        return image_config.rfc3339(self.options.source_date_epoch)


class Step:
    """One instruction being executed: what its handler works on.

    A plain slotted class, not a dataclass: it is on the cached path, where each
    dataclass costs about a millisecond to create at import."""

    __slots__ = ("expand_word", "record", "run", "state")

    def __init__(self, run: BuildRun, state: StageState, record: StepRecord,
                 expand_word: Callable[[str], str]) -> None:
        self.run = run
        self.state = state
        self.record = record                # what the step did, for explain
        self.expand_word = expand_word      # the stage's variable expansion (ARG defaults)
