"""COPY's regular files on worker threads, with what depends on order kept in order.

A cold COPY of a big tree spends most of its time in the kernel, creating files
(issue 17, point 4: 100,000 small files, about 50 µs of system time each).  Python
threads run those system calls side by side, since each one releases the GIL: on this
project's 2-core machine two threads copy such a tree 1.45x as fast as one.

Only the regular files of directories the copy itself created are handed out
(``CopyPool.copy_files``): there is nothing in such a directory to replace or to race
with.  What depends on order stays in the copy's order: the records that make up the
copied content's digest (compared with the cache key's, catalogue K), the hard links
to a first copy, and each directory's final mode and times, set once its contents are
written.  Those are steps queued behind the chunks they need (``later``) and run, in
the order they were queued, as soon as the chunks are done; ``drain`` runs the rest.
A copy with one CPU runs every chunk at once, on its own thread.

Each thread hands its chunks to a worker process of its own (``copy_workers``): the
threads only wait, and no copy waits for the GIL.
"""

from __future__ import annotations

import os
import queue
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from builder.engine.copy_files import Metadata, copy_at
from builder.engine.copy_workers import CopyWorker

# Files per task: enough to make a task's overhead small, few enough that a directory
# of a few hundred files is still shared between threads.
CHUNK_FILES = 1024
_MAX_WORKERS = 8

Copied = list[tuple[str, os.stat_result]]   # (content digest, source stat) per file
Step = Callable[[Copied], object]


def _copy_chunk(src_dir: int, dst_dir: int, names: Sequence[str], wheres: Sequence[str],
                meta: Metadata) -> Copied:
    """Copy ``names`` between two directories; closes both fds (the task's own dups)."""
    try:
        return [copy_at(src_dir, dst_dir, name, meta, where)
                for name, where in zip(names, wheres, strict=True)]
    finally:
        os.close(src_dir)
        os.close(dst_dir)


def _chunk_in_worker(src_dir: int, dst_dir: int, names: Sequence[str],
                     wheres: Sequence[str], meta: object) -> Copied:
    """What a worker process runs: ``_copy_chunk``, looked up when called (a test that
    replaces it does so before the pool forks its workers)."""
    assert isinstance(meta, Metadata)
    return _copy_chunk(src_dir, dst_dir, names, wheres, meta)


def _in_worker(idle: queue.SimpleQueue[CopyWorker], src_dir: int, dst_dir: int,
               names: Sequence[str], wheres: Sequence[str], meta: Metadata) -> Copied:
    """A pool thread's task: the chunk in the first idle worker (one per thread)."""
    worker = idle.get()
    try:
        copied = worker.run(src_dir, dst_dir, names, wheres, meta)
    finally:
        idle.put(worker)
    assert isinstance(copied, list)
    return copied


def default_workers() -> int:
    """One thread per CPU this process may run on, at most eight."""
    return min(len(os.sched_getaffinity(0)), _MAX_WORKERS)


class CopyPool:
    """Chunks of files copied on worker threads; steps run in the order queued."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = default_workers() if workers is None else workers
        self._executor: ThreadPoolExecutor | None = None   # made on the first chunk
        self._processes: list[CopyWorker] = []
        self._idle: queue.SimpleQueue[CopyWorker] = queue.SimpleQueue()
        self._queue: deque[tuple[Future[Copied] | None, Step]] = deque()

    def copy_files(self, fds: tuple[int, int], names: Sequence[str], wheres: Sequence[str],
                   meta: Metadata) -> Future[Copied]:
        """Copy regular files ``names`` of directory fd ``fds[0]`` into the new directory
        ``fds[1]`` (the fds stay the caller's); the future gives ``copy_at``'s results."""
        src, dst = os.dup(fds[0]), os.dup(fds[1])
        if self._workers <= 1:
            done: Future[Copied] = Future()
            done.set_result(_copy_chunk(src, dst, names, wheres, meta))
            return done
        if self._executor is None:
            self._executor = self._start()
        return self._executor.submit(_in_worker, self._idle, src, dst, names, wheres, meta)

    def _start(self) -> ThreadPoolExecutor:
        # The processes fork before any thread of the pool exists: a fork while another
        # thread holds a lock would leave the worker stuck on it.
        for _ in range(self._workers):
            worker = CopyWorker(_chunk_in_worker, self._processes)
            self._processes.append(worker)
            self._idle.put(worker)
        return ThreadPoolExecutor(self._workers, thread_name_prefix="copy")

    def later(self, step: Step, after: Future[Copied] | None = None) -> None:
        """Run ``step`` (with ``after``'s result, or [] without one) once everything
        queued before it has run and ``after`` is done: at once when nothing waits."""
        if not self._queue and (after is None or after.done()):
            step(after.result() if after is not None else [])
            return
        self._queue.append((after, step))
        self._run_ready()

    def _run_ready(self) -> None:
        while self._queue and (self._queue[0][0] is None or self._queue[0][0].done()):
            after, step = self._queue.popleft()
            step(after.result() if after is not None else [])

    def drain(self) -> None:
        """Run every queued step, waiting for the chunks they need; a chunk's error is
        raised here, in the copy's order."""
        while self._queue:
            after, step = self._queue.popleft()
            step(after.result() if after is not None else [])

    def close(self) -> None:
        """Stop the workers: chunks not started are dropped, running ones finish."""
        self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        while self._processes:
            self._processes.pop().close()
        self._idle = queue.SimpleQueue()
