"""``--progress=tty``: a live view of the running steps, each collapsed to a line when done.

Each running step shows its title, a timer and its last lines of output (five with one
step running, two each with several: stages building side by side).  The timer ticks
while a step runs, even one that prints nothing (``RUN sleep 60``): a ticker thread
redraws the live area every tenth of a second while any step runs, and stops when none
does, when the build ends or is interrupted (``close``).  A cache miss shows why on one
line under its step (``summary_text`` of its reason codes; build-arg values never
appear), live and when collapsed.

Everything from the Dockerfile or a step goes through ``textsafe.printable``; only
this module's own escapes (bold, dim, cursor up and clear) reach the terminal.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TextIO

from builder.engine.progress import Failure, Progress, RunningStep
from builder.textsafe import printable

_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"  # tests/security know these
_WIDTH = 160  # without a terminal to ask; a shown line is cut so the live area never wraps


def _terminal_width(stream: TextIO) -> int:
    """Columns of the terminal ``stream`` writes to, less one (the cursor's)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return _WIDTH
    return max(40, columns - 1) if columns > 0 else _WIDTH  # 0: a pty nobody sized


class _Ticker:
    """The thread that redraws the timers, and the event that stops it."""

    __slots__ = ("stop", "thread")

    def __init__(self, thread: threading.Thread, stop: threading.Event) -> None:
        self.thread, self.stop = thread, stop


class TtyProgress(Progress):
    """A live view: each running step with its last lines of output, collapsed when done."""

    _SHOWN = 5
    _SHOWN_EACH = 2
    _TICK = 0.1   # seconds between redraws: at most ten a second
    _UP_AND_CLEAR = "\x1b[{}F\x1b[J"

    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        super().__init__(stream, quiet)
        self._drawn = 0  # lines of the live area currently on screen
        self._ticker: _Ticker | None = None
        self._width = _terminal_width(self.stream)

    def close(self) -> None:
        with self._lock:
            ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.stop.set()
            ticker.thread.join(timeout=5)  # it waits for the lock at most one redraw

    # -- the ticker ---------------------------------------------------------------
    def _start_ticker(self) -> None:
        """Called with the lock held, when a step starts."""
        if self._ticker is not None or self.quiet:
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._tick, args=(stop,), name="progress-timer",
                                  daemon=True)  # never keeps an interrupted build alive
        self._ticker = _Ticker(thread, stop)
        thread.start()

    def _stop_ticker(self) -> None:
        """Called with the lock held, when the last running step ends."""
        if self._ticker is not None:
            self._ticker.stop.set()
            self._ticker = None

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self._TICK):
            with self._lock:
                if stop.is_set():
                    return
                if not self._running:
                    self._stop_ticker()
                    return
                self._flush(self._clear() + self._live())

    # -- drawing (with the lock held) ----------------------------------------------
    def _clear(self) -> list[str]:
        out = [self._UP_AND_CLEAR.format(self._drawn)] if self._drawn else []
        self._drawn = 0
        return out

    def _live(self) -> list[str]:
        out: list[str] = []
        shown = self._SHOWN if len(self._running) == 1 else self._SHOWN_EACH
        for step in self._running.values():
            elapsed = time.monotonic() - step.started
            out.append(f"{_BOLD}=>{_RESET} #{step.number} "
                       f"{printable(step.title)[:self._width - 20]}  {elapsed:.1f}s\n")
            out += self._why(step)
            out += [f"{_DIM}   {line[:self._width - 3]}{_RESET}\n"
                    for line in list(step.tail)[-shown:]]
        self._drawn = len(out)
        return out

    def _why(self, step: RunningStep) -> list[str]:
        """The reason of a cache miss, on one line."""
        if step.cached or not step.reasons:
            return []
        from builder.cache.reasons import summary_text

        return [f"{_DIM}   {printable(summary_text(step.reasons))[:self._width - 3]}{_RESET}\n"]

    def _flush(self, out: list[str]) -> None:
        if not self.quiet:
            self.stream.write("".join(out))
            self.stream.flush()

    def _started(self, step: RunningStep) -> None:
        self._flush(self._clear() + self._live())
        self._start_ticker()

    def _decided(self, step: RunningStep) -> None:
        self._flush(self._clear() + self._live())

    def _output(self, step: RunningStep, data: bytes) -> None:
        if self._lines(step, data):
            self._flush(self._clear() + self._live())

    def _finished(self, step: RunningStep, status: str) -> None:
        elapsed = time.monotonic() - step.started
        mark = "CACHED" if status == "CACHED" else f"{status} {elapsed:.1f}s"
        done = (f"{_BOLD}=>{_RESET} #{step.number} {printable(step.title)}  "
                f"{_DIM}{mark}{_RESET}\n")
        self._collapse([done, *self._why(step)])

    def _failed(self, step: RunningStep, failure: Failure) -> None:
        elapsed = time.monotonic() - step.started
        lines = [f"{_BOLD}=>{_RESET} #{step.number} {printable(step.title)}  "
                 f"{_BOLD}ERROR {elapsed:.1f}s{_RESET}\n", *self._why(step)]
        lines += [f"{_DIM}   {line[:self._width - 3]}{_RESET}\n" for line in step.tail]
        lines.append(f"{_BOLD}   {printable(failure.message)}{_RESET}\n")
        self._collapse(lines)

    def _collapse(self, lines: list[str]) -> None:
        """Replace the live area by a finished step's lines, then redraw the rest."""
        self._flush([*self._clear(), *lines, *self._live()])
        if not self._running:
            self._stop_ticker()

    def _message(self, text: str) -> None:
        self._flush([*self._clear(), printable(text, multiline=True) + "\n", *self._live()])
