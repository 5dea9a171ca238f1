"""Build progress: plain lines for logs and CI, JSON events for machines, a live tty view.

Every reporter has the same four calls: ``step`` (a step starts), ``output``
(bytes the step printed), ``done`` (it ended) and ``message`` (a warning or
note).  Reporters write to stderr, as BuildKit's do, so stdout stays free for
``-q`` (the image ID) and ``-o -``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from typing import TextIO

_TAIL = 10


class Progress:
    """Plain progress, one line per event, like ``--progress plain``."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._number = 0
        self._started = 0.0
        self._partial = b""
        self.tail: deque[str] = deque(maxlen=_TAIL)

    def _write(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text + "\n")
            self.stream.flush()

    def step(self, title: str) -> None:
        self._number += 1
        self._started = time.monotonic()
        self.tail.clear()
        self._partial = b""
        self._write(f"#{self._number} {title}")

    def output(self, data: bytes) -> None:
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").rstrip("\r")
            self.tail.append(line)
            self._write(f"#{self._number} {time.monotonic() - self._started:.3f} {line}")

    def cached(self) -> None:
        """The running step was a cache hit: ``done`` will say CACHED."""
        self._cached = True

    def done(self, status: str = "DONE") -> None:
        if getattr(self, "_cached", False):
            status, self._cached = "CACHED", False
        if self._partial:
            self.output(b"\n")
        elapsed = time.monotonic() - self._started
        self._write(f"#{self._number} {status}" if status == "CACHED"
                    else f"#{self._number} {status} {elapsed:.1f}s")

    def message(self, text: str) -> None:
        self._write(text)


class JsonProgress(Progress):
    """One JSON object per line: ``{"event": ..., "step": N, ...}``."""

    def _event(self, **fields: object) -> None:
        if not self.quiet:
            self.stream.write(json.dumps(fields) + "\n")
            self.stream.flush()

    def step(self, title: str) -> None:
        self._number += 1
        self._started = time.monotonic()
        self.tail.clear()
        self._event(event="step", step=self._number, name=title)

    def output(self, data: bytes) -> None:
        text = data.decode(errors="replace")
        self.tail.extend(text.splitlines())
        self._event(event="output", step=self._number, data=text)

    def done(self, status: str = "DONE") -> None:
        if getattr(self, "_cached", False):
            status, self._cached = "CACHED", False
        self._event(event="done", step=self._number, status=status,
                    seconds=round(time.monotonic() - self._started, 3))

    def message(self, text: str) -> None:
        self._event(event="message", text=text)


class TtyProgress(Progress):
    """A live view: the running step with its last lines of output, collapsed when done."""

    _SHOWN = 5
    _UP_AND_CLEAR = "\x1b[{}F\x1b[J"

    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        super().__init__(stream, quiet)
        self._title = ""
        self._drawn = 0  # lines drawn for the running step, header included

    def _redraw(self, status: str = "") -> None:
        if self.quiet:
            return
        out = [self._UP_AND_CLEAR.format(self._drawn)] if self._drawn else []
        elapsed = time.monotonic() - self._started
        if status:
            mark = "CACHED" if status == "CACHED" else f"{status} {elapsed:.1f}s"
            out.append(f"\x1b[1m=>\x1b[0m {self._title}  \x1b[2m{mark}\x1b[0m\n")
            self._drawn = 0
        else:
            tail = list(self.tail)[-self._SHOWN:]
            out.append(f"\x1b[1m=>\x1b[0m {self._title}  {elapsed:.1f}s\n")
            out += [f"\x1b[2m   {line[:160]}\x1b[0m\n" for line in tail]
            self._drawn = 1 + len(tail)
        self.stream.write("".join(out))
        self.stream.flush()

    def step(self, title: str) -> None:
        self._number += 1
        self._started = time.monotonic()
        self.tail.clear()
        self._partial = b""
        self._title = f"#{self._number} {title}"
        self._drawn = 0
        self._redraw()

    def output(self, data: bytes) -> None:
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        self.tail.extend(raw.decode(errors="replace").rstrip("\r") for raw in lines)
        if lines:
            self._redraw()

    def done(self, status: str = "DONE") -> None:
        if getattr(self, "_cached", False):
            status, self._cached = "CACHED", False
        self._redraw(status)

    def message(self, text: str) -> None:
        self._drawn = 0
        self._write(text)


def make_progress(mode: str, quiet: bool = False) -> Progress:
    """``plain`` lines; ``json`` events; ``tty`` (and ``auto`` on a terminal) a live view."""
    if mode == "json":
        return JsonProgress(quiet=quiet)
    if mode == "tty" or (mode == "auto" and sys.stderr.isatty()):
        return TtyProgress(quiet=quiet)
    return Progress(quiet=quiet)
