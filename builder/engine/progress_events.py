"""Progress for machines: pybuild's JSON events, and BuildKit's ``SolveStatus`` stream.

Both write one JSON object per line to stderr and carry text exactly (``json.dumps``
escapes control characters; nothing is passed through ``textsafe``).  docs/progress.md
is the reference for both.

``--progress=json`` (``JsonProgress``): pybuild's own events, ``{"event": ...,
"step": N, "stage": ..., "time": seconds since the first event}``: ``step``,
``cache`` (the decision, its reason codes and parameters as ``explain --format json``
writes them), ``output``, ``done``, ``error`` (the message, a RUN's exit code and
the last lines of its output) and ``message``.

``--progress=rawjson`` (``RawJsonProgress``): what ``docker buildx build
--progress=rawjson`` prints, BuildKit's ``client.SolveStatus`` as Go's
``json.Encoder`` writes it (moby/buildkit ``client/graph.go``, printed by
``util/progress/progressui`` ``rawJSONDisplay``): ``vertexes`` (``digest``, ``name``,
``started``, ``completed``, ``cached``, ``error``), ``statuses``, ``logs`` (``vertex``,
``stream``, ``data`` in base64, ``timestamp``) and ``warnings`` (``vertex``, ``level``,
``short`` in base64); empty lists and Go's zero values left out as ``omitempty``
does; times in RFC 3339 with nanoseconds.  A step's vertex digest is the sha256 of
its title (stage, position and instruction), so it stays the same from one build
of the Dockerfile to the next.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import TextIO

from builder.engine.progress import Failure, Progress, RunningStep


class JsonProgress(Progress):
    """One pybuild event per line (docs/progress.md, "json")."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        super().__init__(stream, quiet)
        self._origin = time.monotonic()

    def _event(self, **fields: object) -> None:
        if not self.quiet:
            fields["time"] = round(time.monotonic() - self._origin, 3)
            self.stream.write(json.dumps(fields) + "\n")
            self.stream.flush()

    def _started(self, step: RunningStep) -> None:
        self._event(event="step", step=step.number, stage=step.stage, name=step.title)

    def _decided(self, step: RunningStep) -> None:
        from builder.cache.reasons import summary_text

        self._event(event="cache", step=step.number, stage=step.stage, cached=step.cached,
                    reasons=[reason.to_record() for reason in step.reasons],
                    summary=summary_text(step.reasons))

    def _output(self, step: RunningStep, data: bytes) -> None:
        step.tail.extend(self._split(step, data))   # exact lines, for an error event
        self._event(event="output", step=step.number, stage=step.stage,
                    data=data.decode(errors="replace"))

    def _finished(self, step: RunningStep, status: str) -> None:
        self._event(event="done", step=step.number, stage=step.stage, status=status,
                    seconds=round(time.monotonic() - step.started, 3))

    def _failed(self, step: RunningStep, failure: Failure) -> None:
        if step.partial:
            step.tail.extend(self._split(step, b"\n"))
        self._event(event="error", step=step.number, stage=step.stage, name=step.title,
                    message=failure.message, exit_code=failure.exit_code,
                    tail=list(step.tail))
        self._finished(step, "ERROR")

    structured = True

    def _message(self, text: str) -> None:
        if text.startswith(_WARNING):
            self._event(event="warning", text=text[len(_WARNING):])
        else:
            self._event(event="message", text=text)


def rfc3339(nanoseconds: int) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: trailing zeros of the fraction dropped."""
    seconds, nanos = divmod(nanoseconds, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def vertex_digest(title: str) -> str:
    return "sha256:" + hashlib.sha256(title.encode(errors="backslashreplace")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_STDOUT = 1  # VertexLog.stream; a RUN's stdout and stderr reach pybuild as one pipe
_WARNING = "WARNING: "


class RawJsonProgress(Progress):
    """BuildKit's ``SolveStatus``, one per line, as ``buildx --progress=rawjson`` prints."""

    structured = True

    def _status(self, **fields: list[dict[str, object]]) -> None:
        if not self.quiet:
            self.stream.write(json.dumps(fields, separators=(",", ":")) + "\n")
            self.stream.flush()

    def _vertex(self, step: RunningStep, **more: object) -> dict[str, object]:
        return {"digest": vertex_digest(step.title), "name": step.title,
                "started": rfc3339(step.wall), **more}

    def _started(self, step: RunningStep) -> None:
        self._status(vertexes=[self._vertex(step)])

    def _output(self, step: RunningStep, data: bytes) -> None:
        step.tail.extend(self._split(step, data))
        self._status(logs=[{"vertex": vertex_digest(step.title), "stream": _STDOUT,
                            "data": _b64(data), "timestamp": rfc3339(time.time_ns())}])

    def _finished(self, step: RunningStep, status: str) -> None:
        completed = rfc3339(time.time_ns())
        vertex = (self._vertex(step, completed=completed, cached=True) if status == "CACHED"
                  else self._vertex(step, completed=completed))
        self._status(vertexes=[vertex])

    def _failed(self, step: RunningStep, failure: Failure) -> None:
        self._status(vertexes=[self._vertex(step, completed=rfc3339(time.time_ns()),
                                            error=failure.message)])

    def _message(self, text: str) -> None:
        """A warning is a ``VertexWarning`` (of the running step, if one is); a note
        is a vertex of its own, named by its first line, its other lines statuses
        (as BuildKit's "exporting to image" carries "naming to ...")."""
        now = rfc3339(time.time_ns())
        if text.startswith(_WARNING):
            warning: dict[str, object] = {"level": 1, "short": _b64(
                text[len(_WARNING):].encode(errors="backslashreplace"))}
            step = self._current
            if step is not None:
                warning = {"vertex": vertex_digest(step.title), **warning}
            self._status(warnings=[warning])
            return
        first, *rest = text.splitlines() or [""]
        digest = vertex_digest(f"message {now} {text}")
        vertex: dict[str, object] = {"digest": digest, "name": first, "started": now,
                                     "completed": now}
        statuses: list[dict[str, object]] = [
            {"id": line, "vertex": digest, "name": line, "current": 0, "timestamp": now,
             "started": now, "completed": now} for line in rest]
        if statuses:
            self._status(vertexes=[vertex], statuses=statuses)
        else:
            self._status(vertexes=[vertex])
