"""COPY's chunks of files copied in worker processes, so that no copy waits for the GIL.

``copy_pool``'s threads each hand their chunks to a process of their own, forked
from the copy (the COPY's helper child, in its mount namespace) before any of the
pool's threads exists, and wait for the results.  Copying a small file is about eight
system calls, each releasing and taking the GIL: with the copying on two threads,
each thread spent about half a cold COPY of 100,000 files waiting for the GIL (perf:
about 1.5 futex waits per file copied; the CPU 30% idle).  A worker copies with the
same ``copy_at`` on the same directories: the two directory fds travel with the chunk
(SCM_RIGHTS), so nothing is resolved by path again (catalogue C03); the results
(content digest and source stat per file), or the error, come back pickled, in the
order of the names.  Only the copy's own process ever talks to a worker.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import traceback
from collections.abc import Callable, Sequence

from builder import errors, syscalls

_LENGTH = struct.Struct("!Q")
# The chunk function a worker runs: (src dir fd, dst dir fd, names, wheres, metadata).
Chunk = Callable[[int, int, Sequence[str], Sequence[str], object], object]


def _receive_exactly(sock: socket.socket, size: int, start: bytes = b"") -> bytes:
    """``size`` bytes from ``sock``, ``start`` already read (the end of a stream
    between messages is ``_receive``'s to see)."""
    parts = [start]
    left = size - len(start)
    while left:
        part = sock.recv(min(left, 1 << 20))
        if not part:
            raise EOFError("the other end closed in the middle of a message")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _send(sock: socket.socket, payload: bytes, fds: Sequence[int] = ()) -> None:
    """A length-prefixed message; ``fds`` ride with its header."""
    header = _LENGTH.pack(len(payload))
    if fds:
        sent = socket.send_fds(sock, [header], list(fds))
        if sent < len(header):
            sock.sendall(header[sent:])
    else:
        sock.sendall(header)
    sock.sendall(payload)


def _receive(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """A message and the fds that came with it; None at the end of the stream."""
    first, fds, _, _ = socket.recv_fds(sock, _LENGTH.size, 2)
    if not first:
        return None
    try:
        header = _receive_exactly(sock, _LENGTH.size, first)
        payload = _receive_exactly(sock, _LENGTH.unpack(header)[0])
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return payload, fds


def _picklable(err: BaseException) -> BaseException:
    """``err``, or an internal error that carries its traceback when it cannot travel."""
    try:
        pickle.dumps(err)
        return err
    except Exception:
        return errors.PybuildError(f"internal error in a copy worker: {type(err).__name__}: "
                                   f"{err}\n{traceback.format_exc()}")


def _serve(sock: socket.socket, chunk: Chunk) -> None:
    """The worker: one chunk at a time until the copy closes its end."""
    while (message := _receive(sock)) is not None:
        payload, fds = message
        if len(fds) != 2:
            raise EOFError("a chunk without its two directories")
        names, wheres, meta = pickle.loads(payload)
        try:
            reply: tuple[str, object] = ("ok", chunk(fds[0], fds[1], names, wheres, meta))
        except Exception as err:
            reply = ("err", _picklable(err))
        _send(sock, pickle.dumps(reply))


class CopyWorker:
    """One worker process and the copy's end of its socket; one thread at a time."""

    def __init__(self, chunk: Chunk, others: Sequence[CopyWorker] = ()) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the worker; it never returns into the copy's code
            status = 0
            try:
                ours.close()
                for other in others:  # else an earlier worker never sees its end
                    other._sock.close()
                # The copy it works for ended (a stop, an error): so does the worker.
                syscalls.set_parent_death_signal(signal.SIGKILL)
                _serve(theirs, chunk)
            except BaseException:
                status = 1
            os._exit(status)
        theirs.close()
        self._sock: socket.socket = ours
        self._pid = pid

    def run(self, src_dir: int, dst_dir: int, names: Sequence[str], wheres: Sequence[str],
            meta: object) -> object:
        """``chunk(src_dir, dst_dir, names, wheres, meta)`` in the worker.  Closes the
        two fds (the worker has its own copies, and closes them)."""
        try:
            _send(self._sock, pickle.dumps((list(names), list(wheres), meta)),
                  (src_dir, dst_dir))
        finally:
            os.close(src_dir)
            os.close(dst_dir)
        message = _receive(self._sock)
        if message is None:
            raise errors.PybuildError("a copy worker died in the middle of a chunk")
        kind, value = pickle.loads(message[0])
        if kind == "err":
            raise value
        return value

    def close(self) -> None:
        """End the worker (at the end of its socket) and reap it."""
        self._sock.close()
        os.waitpid(self._pid, 0)
