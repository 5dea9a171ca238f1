"""Progress of layer transfers: per-layer bytes and rate on a terminal, a line per layer in logs.

Modes: ``tty`` redraws one line per active layer (at most ten times a second);
``plain`` prints a line when each layer is done; ``quiet`` prints nothing.
Callbacks come from download threads, so state is behind a lock.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

import msgspec


class _Layer(msgspec.Struct):
    size: int
    done: int = 0
    started: float = msgspec.field(default_factory=time.monotonic)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


class TransferProgress:
    def __init__(self, mode: str = "plain", out: TextIO | None = None, verb: str = "pull"):
        self.out = out or sys.stderr
        if mode in ("auto", "tty"):
            mode = "tty" if mode == "tty" or self.out.isatty() else "plain"
        self.mode = mode
        self.verb = verb
        self._layers: dict[str, _Layer] = {}
        self._lock = threading.Lock()
        self._drawn = 0
        self._last = 0.0

    def start(self, digest: str, size: int) -> None:
        with self._lock:
            self._layers[digest] = _Layer(size)
        self._redraw()

    def advance(self, digest: str, n: int) -> None:
        with self._lock:
            layer = self._layers.get(digest)
            if layer is not None:
                layer.done += n
        self._redraw()

    def done(self, digest: str, note: str) -> None:
        with self._lock:
            layer = self._layers.pop(digest, None)
        if self.mode == "quiet":
            return
        line = f"{digest[:19]}: {note}"
        if layer is not None and layer.size:
            elapsed = max(time.monotonic() - layer.started, 1e-6)
            line += f" {_human(layer.size)} in {elapsed:.1f}s ({_human(layer.size / elapsed)}/s)"
        self._print(line)

    def message(self, text: str) -> None:
        if self.mode != "quiet":
            self._print(text)

    def _print(self, line: str) -> None:
        with self._lock:
            self._clear()
            self.out.write(line + "\n")
            self.out.flush()
        self._redraw(force=True)

    def _clear(self) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self, force: bool = False) -> None:
        if self.mode != "tty":
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < 0.1:
                return
            self._last = now
            self._clear()
            for digest, layer in self._layers.items():
                elapsed = max(now - layer.started, 1e-6)
                self.out.write(f"{digest[:19]}: {self.verb}ing {_human(layer.done)}/"
                               f"{_human(layer.size)} {_human(layer.done / elapsed)}/s\n")
            self._drawn = len(self._layers)
            self.out.flush()
