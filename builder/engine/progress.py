"""Build progress: plain lines for logs and CI, JSON events for machines, a live tty view.

Every reporter has the same calls: ``step`` (a step starts), ``output`` (bytes
the step printed), ``cached`` (it was a cache hit), ``done`` (it ended) and
``message`` (a warning or note).  Reporters write to stderr, as BuildKit's do,
so stdout stays free for ``-q`` (the image ID) and ``-o -``.

Titles, messages and step output come from the Dockerfile, the base image and
the step itself: the plain and tty reporters print them through
``textsafe.printable``, so an ESC or CR a step prints shows as ``\\x1b`` and can
neither move the cursor, set the window title nor write the clipboard.  JSON
events carry the exact text (``json.dumps`` escapes control characters).

Independent stages build on their own threads at the same time, so a
reporter keeps one running step per thread: ``output``/``cached``/``done``
and ``tail`` are about the calling thread's step.  Steps are numbered in the
order they start (``#N``, as BuildKit's plain output does); each step's first
line names its stage (``#4 [builder 2/5] RUN ...``), and JSON events carry
the stage too.  Writes are serialised, so lines from two stages never mix.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from typing import TextIO

from builder.textsafe import printable

_TAIL = 10
# A step's output line is shown in pieces of at most this many bytes (X12): a
# RUN printing a gigabyte without a newline must not grow one buffer (and copy
# it again for every 64 KiB read).
MAX_LINE = 64 * 1024


class _Step:
    """One running step (a plain class: a dataclass costs import time on every build)."""

    __slots__ = ("cached", "number", "partial", "stage", "started", "tail", "title")

    def __init__(self, number: int, title: str, stage: str) -> None:
        self.number = number
        self.title = title
        self.stage = stage
        self.started = time.monotonic()
        self.tail: deque[str] = deque(maxlen=_TAIL)
        self.partial = b""
        self.cached = False


class _ThreadStep(threading.local):
    """The step the calling thread is in (each stage thread runs its own)."""

    step: _Step | None = None


class Progress:
    """Plain progress, one line per event, like ``--progress plain``."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._number = 0
        self._lock = threading.RLock()
        self._local = _ThreadStep()
        self._running: dict[int, _Step] = {}   # started, not done: in start order

    # -- the calling thread's step ---------------------------------------------
    @property
    def _current(self) -> _Step | None:
        return self._local.step

    @property
    def tail(self) -> deque[str]:
        """The last lines of output of the calling thread's step."""
        step = self._current
        return step.tail if step is not None else deque(maxlen=_TAIL)

    def step(self, title: str, stage: str = "") -> None:
        with self._lock:
            self._number += 1
            step = _Step(self._number, title, stage)
            self._local.step = step
            self._running[step.number] = step
            self._started(step)

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

    def message(self, text: str) -> None:
        with self._lock:
            self._message(text)

    # -- what a reporter writes (called with the lock held) ----------------------
    def _write(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(printable(text, multiline=True) + "\n")
            self.stream.flush()

    def _lines(self, step: _Step, data: bytes) -> list[str]:
        data = step.partial + data
        *lines, step.partial = data.split(b"\n")
        while len(step.partial) > MAX_LINE:
            lines.append(step.partial[:MAX_LINE])
            step.partial = step.partial[MAX_LINE:]
        # Escaped here, so the tail (shown live, quoted in a RUN failure) is safe too.
        out = [printable(raw.decode(errors="replace").rstrip("\r")) for raw in lines]
        step.tail.extend(out)
        return out

    def _started(self, step: _Step) -> None:
        self._write(f"#{step.number} {step.title}")

    def _output(self, step: _Step, data: bytes) -> None:
        for line in self._lines(step, data):
            self._write(f"#{step.number} {time.monotonic() - step.started:.3f} {line}")

    def _finished(self, step: _Step, status: str) -> None:
        if step.partial:
            self._output(step, b"\n")
        elapsed = time.monotonic() - step.started
        self._write(f"#{step.number} {status}" if status == "CACHED"
                    else f"#{step.number} {status} {elapsed:.1f}s")

    def _message(self, text: str) -> None:
        self._write(text)


class JsonProgress(Progress):
    """One JSON object per line: ``{"event": ..., "step": N, "stage": ..., ...}``.

    ``time`` is seconds since the build's first event (a monotonic clock), so a
    reader can see which steps of different stages overlapped.
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        super().__init__(stream, quiet)
        self._origin = time.monotonic()

    def _event(self, **fields: object) -> None:
        if not self.quiet:
            fields["time"] = round(time.monotonic() - self._origin, 3)
            self.stream.write(json.dumps(fields) + "\n")
            self.stream.flush()

    def _started(self, step: _Step) -> None:
        self._event(event="step", step=step.number, stage=step.stage, name=step.title)

    def _output(self, step: _Step, data: bytes) -> None:
        text = data.decode(errors="replace")
        step.tail.extend(text.splitlines())
        self._event(event="output", step=step.number, stage=step.stage, data=text)

    def _finished(self, step: _Step, status: str) -> None:
        self._event(event="done", step=step.number, stage=step.stage, status=status,
                    seconds=round(time.monotonic() - step.started, 3))

    def _message(self, text: str) -> None:
        self._event(event="message", text=text)


class TtyProgress(Progress):
    """A live view: each running step with its last lines of output, collapsed when done.

    With one step running it shows five lines of its output; with several (stages
    building side by side), two lines each.
    """

    _SHOWN = 5
    _SHOWN_EACH = 2
    _UP_AND_CLEAR = "\x1b[{}F\x1b[J"

    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        super().__init__(stream, quiet)
        self._drawn = 0  # lines of the live area currently on screen

    def _clear(self) -> list[str]:
        out = [self._UP_AND_CLEAR.format(self._drawn)] if self._drawn else []
        self._drawn = 0
        return out

    def _live(self) -> list[str]:
        out: list[str] = []
        shown = self._SHOWN if len(self._running) == 1 else self._SHOWN_EACH
        for step in self._running.values():
            elapsed = time.monotonic() - step.started
            tail = list(step.tail)[-shown:]
            out.append(f"\x1b[1m=>\x1b[0m #{step.number} {printable(step.title)}  "
                       f"{elapsed:.1f}s\n")
            out += [f"\x1b[2m   {line[:160]}\x1b[0m\n" for line in tail]
        self._drawn = len(out)
        return out

    def _flush(self, out: list[str]) -> None:
        if not self.quiet:
            self.stream.write("".join(out))
            self.stream.flush()

    def _started(self, step: _Step) -> None:
        self._flush(self._clear() + self._live())

    def _output(self, step: _Step, data: bytes) -> None:
        if self._lines(step, data):
            self._flush(self._clear() + self._live())

    def _finished(self, step: _Step, status: str) -> None:
        elapsed = time.monotonic() - step.started
        mark = "CACHED" if status == "CACHED" else f"{status} {elapsed:.1f}s"
        done = (f"\x1b[1m=>\x1b[0m #{step.number} {printable(step.title)}  "
                f"\x1b[2m{mark}\x1b[0m\n")
        self._flush([*self._clear(), done, *self._live()])

    def _message(self, text: str) -> None:
        self._flush([*self._clear(), printable(text, multiline=True) + "\n", *self._live()])


def make_progress(mode: str, quiet: bool = False) -> Progress:
    """``plain`` lines; ``json`` events; ``tty`` (and ``auto`` on a terminal) a live view."""
    if mode == "json":
        return JsonProgress(quiet=quiet)
    if mode == "tty" or (mode == "auto" and sys.stderr.isatty()):
        return TtyProgress(quiet=quiet)
    return Progress(quiet=quiet)
