"""``--progress=json|rawjson|tty|quiet`` on real builds (issue 15 point 5).

rawjson is BuildKit's ``client.SolveStatus`` as Go's ``json.Encoder`` writes it
(moby/buildkit ``client/graph.go``): every line is checked against those field names
and types.  json events carry errors (step, exit code, last lines) and cache decisions
as reason codes.  The tty view is run on a real pseudo-terminal to see its timer tick
while a silent ``RUN sleep`` runs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import mounts_under, processes, run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]

DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
# Go's time.RFC3339Nano: fraction without trailing zeros, Z or an offset.
RFC3339NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?(Z|[+-]\d\d:\d\d)\Z")
VERTEX = {"digest": str, "inputs": list, "name": str, "started": str, "completed": str,
          "cached": bool, "error": str, "progressGroup": dict}
STATUS = {"id": str, "vertex": str, "name": str, "total": int, "current": int,
          "timestamp": str, "started": str, "completed": str}
LOG = {"vertex": str, "stream": int, "data": str, "timestamp": str}
WARNING = {"vertex": str, "level": int, "short": str, "detail": list, "url": str,
           "sourceInfo": dict, "range": list}
ZERO = (False, "", 0, None, [], {})  # what omitempty leaves out


def _context(tmp_path: Path, dockerfile: str, **files: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (context / name).write_text(text)
    return context


def _json_lines(stderr: bytes) -> list[dict[str, object]]:
    """Every stderr line up to the CLI's own ``pybuild: error`` message, parsed."""
    lines = stderr.decode().splitlines()
    assert lines, "no progress at all"
    end = next((n for n, line in enumerate(lines) if line.startswith("pybuild: ")), None)
    return [json.loads(line) for line in lines[:end]]


def _check_fields(item: dict[str, object], shape: dict[str, type],
                  required: tuple[str, ...]) -> None:
    assert set(item) <= set(shape), item
    for name in required:
        assert name in item, (name, item)
    for name, value in item.items():
        assert isinstance(value, shape[name]), (name, item)
        if name not in ("current", "timestamp", "data", "id"):  # always written
            assert value not in ZERO, (name, item)   # omitempty
        if name in ("started", "completed", "timestamp"):
            assert RFC3339NANO.match(str(value)), item
        if name in ("digest", "vertex"):
            assert DIGEST.match(str(value)), item


def _solve_statuses(stderr: bytes) -> list[dict[str, list[dict[str, object]]]]:
    """Parse and check every rawjson line: a SolveStatus and nothing else."""
    statuses = _json_lines(stderr)
    for status in statuses:
        assert status and set(status) <= {"vertexes", "statuses", "logs", "warnings"}, status
        for vertex in status.get("vertexes", []):
            _check_fields(vertex, VERTEX, ("digest", "name"))
        for item in status.get("statuses", []):
            _check_fields(item, STATUS, ("id", "current", "timestamp"))
        for log in status.get("logs", []):
            _check_fields(log, LOG, ("vertex", "data", "timestamp"))
            base64.b64decode(str(log["data"]), validate=True)
        for warning in status.get("warnings", []):
            _check_fields(warning, WARNING, ())
            base64.b64decode(str(warning["short"]), validate=True)
    return statuses  # type: ignore[return-value]


def _vertexes(statuses: list[dict[str, list[dict[str, object]]]]) -> dict[str, dict]:
    """Each vertex's last state (later updates carry the same digest)."""
    out: dict[str, dict] = {}
    for status in statuses:
        for vertex in status.get("vertexes", []):
            out.setdefault(str(vertex["digest"]), {}).update(vertex)
    return out


def test_rawjson_is_buildkit_solve_status(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM busybox\nRUN echo hello-out; echo hello-err >&2\n"
                                 "COPY a.txt /a.txt\n", **{"a.txt": "a\n"})
    first = run_cli("build", "--progress", "rawjson", "-t", "raw", str(context),
                    root=store.root)
    statuses = _solve_statuses(first.stderr)
    vertexes = _vertexes(statuses)
    by_name = {v["name"]: v for v in vertexes.values()}
    run = by_name["[stage-0 1/2] RUN echo hello-out; echo hello-err >&2"]
    assert "cached" not in run and "error" not in run
    assert run["started"] <= run["completed"]
    for vertex in vertexes.values():
        assert "completed" in vertex, vertex   # every vertex ends
    logs = b"".join(base64.b64decode(str(log["data"])) for status in statuses
                    for log in status.get("logs", []) if log["vertex"] == run["digest"])
    assert b"hello-out\n" in logs and b"hello-err\n" in logs
    assert all(log["vertex"] in vertexes for s in statuses for log in s.get("logs", []))
    assert "naming to raw" in {
        item["name"] for s in statuses for item in s.get("statuses", [])}

    again = run_cli("build", "--progress", "rawjson", "-t", "raw", str(context),
                    root=store.root)
    cached = _vertexes(_solve_statuses(again.stderr))
    # The same step has the same digest from one build to the next, and says cached.
    assert cached[str(run["digest"])]["cached"] is True
    assert cached[str(run["digest"])]["name"] == run["name"]


def test_rawjson_failing_step_has_its_error(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM busybox\nRUN echo going; exit 5\n")
    result = run_cli("build", "--progress", "rawjson", str(context), root=store.root,
                     check=False)
    assert result.returncode == 1
    failed = [v for v in _vertexes(_solve_statuses(result.stderr)).values() if "error" in v]
    assert len(failed) == 1, failed
    assert failed[0]["name"] == "[stage-0 1/1] RUN echo going; exit 5"
    assert "exit code: 5" in failed[0]["error"] and "completed" in failed[0]


def test_json_error_event_names_the_step_its_exit_code_and_last_lines(
        store, busybox, tmp_path: Path) -> None:
    lines = "; ".join(f"echo line-{n}" for n in range(15))
    context = _context(tmp_path, f"FROM busybox\nRUN {lines}; exit 7\n")
    result = run_cli("build", "--progress", "json", str(context), root=store.root,
                     check=False)
    assert result.returncode == 1
    assert "\npybuild: " in result.stderr.decode()
    events = _json_lines(result.stderr)
    step = next(e for e in events if e["event"] == "step"
                and str(e["name"]).startswith("[stage-0 1/1] RUN echo line-0"))
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1, errors
    error = errors[0]
    assert error["step"] == step["step"] and error["stage"] == "stage-0"
    assert error["name"] == step["name"]
    assert error["exit_code"] == 7
    assert "exit code: 7" in str(error["message"]) and "\n" not in str(error["message"])
    assert error["tail"] == [f"line-{n}" for n in range(5, 15)]  # the last ten lines
    done = [e for e in events if e["event"] == "done" and e["step"] == step["step"]]
    assert [d["status"] for d in done] == ["ERROR"]


def test_json_error_event_for_a_step_that_runs_nothing(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM busybox\nCOPY missing.txt /m\n")
    result = run_cli("build", "--progress", "json", str(context), root=store.root,
                     check=False)
    assert result.returncode == 1
    errors = [e for e in _json_lines(result.stderr) if e["event"] == "error"]
    assert len(errors) == 1, errors
    assert errors[0]["name"] == "[stage-0 1/1] COPY missing.txt /m"
    assert errors[0]["exit_code"] is None and "missing.txt" in str(errors[0]["message"])


def test_json_cache_events_carry_reason_codes(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM busybox\nRUN echo first > /first\n"
                                 "COPY app.txt /app.txt\nRUN cat /app.txt\n",
                       **{"app.txt": "one\n"})
    first = _json_lines(run_cli("build", "--progress", "json", str(context),
                                root=store.root).stderr)
    assert [e["cached"] for e in first if e["event"] == "cache"] == [False, False, False]
    (context / "app.txt").write_text("two\n")
    events = _json_lines(run_cli("build", "--progress", "json", str(context),
                                 root=store.root).stderr)
    names = {e["step"]: e["name"] for e in events if e["event"] == "step"}
    cache = {str(names[e["step"]]).partition("] ")[2]: e for e in events
             if e["event"] == "cache"}
    assert cache["RUN echo first > /first"]["cached"] is True
    assert cache["RUN echo first > /first"]["reasons"] == [{"code": "cache-hit", "params": {}}]
    copy = cache["COPY app.txt /app.txt"]
    assert copy["cached"] is False
    assert {"code": "file-changed", "params": {"path": "app.txt"}} in copy["reasons"], copy
    assert str(copy["summary"]).startswith("cache miss: ")
    below = cache["RUN cat /app.txt"]
    assert below["cached"] is False
    assert below["reasons"][0]["code"] == "parent-missed", below


def test_quiet_prints_nothing(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM busybox\nRUN echo quiet-please\n")
    result = run_cli("build", "--progress", "quiet", str(context), root=store.root)
    assert result.stderr == b""


def test_buildkit_progress_variable_picks_the_mode(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM busybox\nRUN echo env\n")
    env = {**os.environ, "BUILDKIT_PROGRESS": "rawjson"}
    result = subprocess.run([sys.executable, "-m", "builder", "--root", str(store.root),
                             "build", str(context)], capture_output=True, env=env,
                            timeout=300, check=True)
    assert _solve_statuses(result.stderr)
    env["BUILDKIT_PROGRESS"] = "fancy"
    bad = subprocess.run([sys.executable, "-m", "builder", "--root", str(store.root),
                          "build", str(context)], capture_output=True, env=env, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.decode().startswith("pybuild: BUILDKIT_PROGRESS: invalid progress mode")


def _run_on_pty(args: list[str], timeout: float = 300,
                interrupt: re.Pattern[str] | None = None) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal (``auto`` then draws the tty view);
    send it SIGINT once its output matches ``interrupt``."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "builder", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:   # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
            if interrupt is not None and interrupt.search(
                    b"".join(chunks).decode(errors="replace")):
                proc.send_signal(signal.SIGINT)
                interrupt = None
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        assert proc.stdout is not None
        proc.stdout.close()
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_tty_timer_ticks_while_a_silent_step_runs(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM busybox\nCOPY app.txt /app.txt\nRUN sleep 2\n",
                       **{"app.txt": "one\n"})
    code, shown = _run_on_pty(["--root", str(store.root), "build", str(context)])
    assert code == 0, shown
    title = re.escape("[stage-0 2/2] RUN sleep 2")
    ticks = [float(t) for t in re.findall(title + r"  (\d+\.\d)s\r?\n", shown)]
    # The step prints nothing: every redraw but the first came from the timer.
    assert len(set(ticks)) >= 5, ticks
    assert ticks == sorted(ticks) and ticks[-1] >= 1.5, ticks
    assert re.search(title + r"  \x1b\[2mDONE \d+\.\ds", shown), shown
    # A miss says why, on one line under its step.
    (context / "app.txt").write_text("two\n")
    code, shown = _run_on_pty(["--root", str(store.root), "build", "--progress", "tty",
                               str(context)])
    assert code == 0, shown
    assert re.search(r"COPY app\.txt /app\.txt  \x1b\[2mDONE [\d.]+s\x1b\[0m\r?\n"
                     r"\x1b\[2m   cache miss: file app\.txt changed\x1b\[0m", shown), shown


def test_tty_timer_stops_on_ctrl_c(store, busybox, tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM busybox\nRUN sleep 173\n")
    started = time.monotonic()
    code, shown = _run_on_pty(["--root", str(store.root), "build", "--progress", "tty",
                               str(context)], timeout=120,
                              interrupt=re.compile(r"RUN sleep 173  [1-9]\.\ds"))
    assert code == 130, shown
    assert time.monotonic() - started < 100
    # The last thing on the terminal is the CLI's message: no redraw after it.
    last = shown.rstrip().rpartition("\n")[2]
    assert last.startswith("pybuild: build interrupted (SIGINT)"), shown[-300:]
    assert "ERROR" not in shown and "exit code" not in shown  # killed, not failed
    assert processes([b"sleep", b"173"]) == []
    assert mounts_under(store.root) == []
