"""A build-wide stop request, for loops that run outside the main thread.

Python runs signal handlers only in the main thread, between bytecodes.  While
a build runs its stages on other threads, Ctrl-C or SIGTERM reaches the main
thread, which asks the stages to stop (build/engine); a stage busy in a long
loop (hashing a large context, extracting a layer, copying a tree) must notice
within a fraction of a second.  Such loops call :func:`check` once per entry or
chunk: a flag lookup when nothing is asked.

A leaf module (layer 0): anything may import it.
"""

from __future__ import annotations

import threading

__all__ = ["Stopped", "check", "clear", "request", "requested"]

_stop = threading.Event()


class Stopped(BaseException):
    """Raised by :func:`check` once a stop was requested.  A BaseException so that
    no ``except Exception`` turns it into an ordinary failure; every ``finally``
    on the way out still runs (temp dirs, locks)."""


def request() -> None:
    """Ask every loop that calls :func:`check` to stop (the engine, on a signal)."""
    _stop.set()


def clear() -> None:
    """Forget a request once every stage has stopped (a process may build again)."""
    _stop.clear()


def requested() -> bool:
    return _stop.is_set()


def check() -> None:
    """Raise :class:`Stopped` if a stop was requested."""
    if _stop.is_set():
        raise Stopped()
