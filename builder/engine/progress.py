"""Build progress: plain lines for logs and CI, a live tty view, JSON for machines.

Every reporter has the same calls: ``step`` (a step starts), ``decided`` (the
cache's decision for it and the reason codes why), ``output`` (bytes the step
printed), ``cached`` (it was a cache hit), ``done`` (it ended), ``failed`` (it
raised), ``message`` (a warning or note) and ``close`` (the build is over, or
interrupted).  Reporters write to stderr, as BuildKit's do, so stdout stays free
for ``-q`` (the image ID) and ``-o -``.  ``--progress`` picks one (``make_progress``):
``plain`` (this module), ``tty`` (``progress_tty``), ``json`` (pybuild's events)
and ``rawjson`` (BuildKit's ``SolveStatus``) in ``progress_events``, ``quiet``.
docs/progress.md documents the two JSON forms.

Titles, messages and step output come from the Dockerfile, the base image and
the step itself: the plain and tty reporters print them through
``textsafe.printable``, so an ESC or CR a step prints shows as ``\\x1b`` and can
neither move the cursor, set the window title nor write the clipboard.  JSON
events carry the exact text (``json.dumps`` escapes control characters).

Independent stages build on their own threads at the same time, so a
reporter keeps one running step per thread: ``decided``/``output``/``cached``/
``done``/``failed`` and ``tail`` are about the calling thread's step.  Steps are
numbered in the order they start (``#N``, as BuildKit's plain output does); each
step's first line names its stage (``#4 [builder 2/5] RUN ...``), and JSON events
carry the stage too.  Writes are serialised, so lines from two stages never mix.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from builder.textsafe import printable

if TYPE_CHECKING:
    from builder.cache.reasons import Reason
    from builder.errors import PybuildError

_TAIL = 10
# A step's output line is shown in pieces of at most this many bytes (X12): a
# RUN printing a gigabyte without a newline must not grow one buffer (and copy
# it again for every 64 KiB read).
MAX_LINE = 64 * 1024
MODES = ("auto", "tty", "plain", "quiet", "json", "rawjson")


class RunningStep:
    """One running step (a plain class: a dataclass costs import time on every build)."""

    __slots__ = ("cached", "number", "partial", "reasons", "stage", "started", "tail",
                 "title", "wall")

    def __init__(self, number: int, title: str, stage: str) -> None:
        self.number = number
        self.title = title
        self.stage = stage
        self.started = time.monotonic()
        self.wall = time.time_ns()   # when it started, for rawjson's timestamps
        self.tail: deque[str] = deque(maxlen=_TAIL)
        self.partial = b""
        self.cached = False
        self.reasons: tuple[Reason, ...] = ()


class _ThreadStep(threading.local):
    """The step the calling thread is in (each stage thread runs its own)."""

    step: RunningStep | None = None


class Failure:
    """What ``failed`` reports: the error's first line and a RUN's exit status."""

    __slots__ = ("exit_code", "message")

    def __init__(self, error: PybuildError) -> None:
        from builder.errors import BuildError

        self.message = str(error).partition("\n")[0]   # the tail follows on later lines
        self.exit_code = error.process_exit if isinstance(error, BuildError) else None


class Progress:
    """Plain progress, one line per event, like ``--progress plain``."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._number = 0
        self._lock = threading.RLock()
        self._local = _ThreadStep()
        self._running: dict[int, RunningStep] = {}   # started, not done: in start order

    # -- the calling thread's step ---------------------------------------------
    @property
    def _current(self) -> RunningStep | None:
        return self._local.step

    @property
    def tail(self) -> deque[str]:
        """The last lines of output of the calling thread's step."""
        step = self._current
        return step.tail if step is not None else deque(maxlen=_TAIL)

    def step(self, title: str, stage: str = "") -> None:
        with self._lock:
            self._number += 1
            step = RunningStep(self._number, title, stage)
            self._local.step = step
            self._running[step.number] = step
            self._started(step)

    def decided(self, reasons: Sequence[Reason], hit: bool) -> None:
        """The cache's decision for the running step, with its reason codes."""
        step = self._current
        if step is None:
            return
        step.reasons, step.cached = tuple(reasons), hit
        with self._lock:
            self._decided(step)

    def output(self, data: bytes) -> None:
        step = self._current
        if step is None:
            return
        with self._lock:
            self._output(step, data)

    def cached(self) -> None:
        """The running step was a cache hit: ``done`` will say CACHED."""
        step = self._current
        if step is not None:
            step.cached = True

    def done(self, status: str = "DONE") -> None:
        step = self._current
        if step is None:
            return
        if step.cached:
            status = "CACHED"
        with self._lock:
            self._running.pop(step.number, None)
            self._finished(step, status)
        self._local.step = None

    def failed(self, error: PybuildError) -> None:
        """The running step raised ``error`` (the build stops): report it, end the step."""
        step = self._current
        if step is None:
            return
        with self._lock:
            self._running.pop(step.number, None)
            self._failed(step, Failure(error))
        self._local.step = None

    def message(self, text: str) -> None:
        with self._lock:
            self._message(text)

    def lint_line(self, line: str) -> None:
        """A line of the lint summary (`` N warnings found:``, `` - Rule: ... (F:L)``):
        printed as it is; the machine formats take each finding as a warning."""
        if not self.structured:
            self.message(line)
        elif line.startswith(" - "):
            self.message("WARNING: " + line[3:])

    structured = False   # json and rawjson: lint findings are warnings, not text

    def close(self) -> None:
        """The build is over (or was interrupted): stop anything still drawing."""

    # -- what a reporter writes (called with the lock held) ----------------------
    def _write(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(printable(text, multiline=True) + "\n")
            self.stream.flush()

    def _split(self, step: RunningStep, data: bytes) -> list[str]:
        """Whole lines of ``data`` (the rest waits in ``step.partial``), exact."""
        data = step.partial + data
        *lines, step.partial = data.split(b"\n")
        while len(step.partial) > MAX_LINE:
            lines.append(step.partial[:MAX_LINE])
            step.partial = step.partial[MAX_LINE:]
        return [raw.decode(errors="replace").rstrip("\r") for raw in lines]

    def _lines(self, step: RunningStep, data: bytes) -> list[str]:
        # Escaped here, so the tail (shown live, quoted in a RUN failure) is safe too.
        out = [printable(line) for line in self._split(step, data)]
        step.tail.extend(out)
        return out

    def _started(self, step: RunningStep) -> None:
        self._write(f"#{step.number} {step.title}")

    def _decided(self, step: RunningStep) -> None:
        """Plain output stays BuildKit's: the reasons show in ``explain``."""

    def _output(self, step: RunningStep, data: bytes) -> None:
        for line in self._lines(step, data):
            self._write(f"#{step.number} {time.monotonic() - step.started:.3f} {line}")

    def _finished(self, step: RunningStep, status: str) -> None:
        if step.partial:
            self._output(step, b"\n")
        elapsed = time.monotonic() - step.started
        self._write(f"#{step.number} {status}" if status == "CACHED"
                    else f"#{step.number} {status} {elapsed:.1f}s")

    def _failed(self, step: RunningStep, failure: Failure) -> None:
        if step.partial:
            self._output(step, b"\n")
        self._write(f"#{step.number} ERROR: {failure.message}")

    def _message(self, text: str) -> None:
        self._write(text)


def make_progress(mode: str, quiet: bool = False) -> Progress:
    """``plain`` lines; ``json`` events; ``rawjson`` BuildKit's SolveStatus; ``quiet``
    nothing; ``tty`` (and ``auto`` on a terminal) a live view.  ``auto`` takes
    ``BUILDKIT_PROGRESS`` when set, as buildx does."""
    if mode == "auto":
        mode = _environment_mode()
    if mode in ("json", "rawjson"):
        from builder.engine.progress_events import JsonProgress, RawJsonProgress

        return (JsonProgress if mode == "json" else RawJsonProgress)(quiet=quiet)
    if mode == "tty" or (mode == "auto" and sys.stderr.isatty()):
        from builder.engine.progress_tty import TtyProgress

        return TtyProgress(quiet=quiet)
    return Progress(quiet=quiet or mode == "quiet")


def _environment_mode() -> str:
    import os

    mode = os.environ.get("BUILDKIT_PROGRESS") or "auto"
    if mode not in MODES:
        from builder.errors import UsageError

        raise UsageError(f"BUILDKIT_PROGRESS: invalid progress mode {mode!r} "
                         f"(one of {', '.join(MODES)})")
    return mode
