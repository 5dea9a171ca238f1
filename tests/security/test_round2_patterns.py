"""Security point 6: user-supplied patterns are matched in bounded time, and
SIGINT/SIGTERM stop a build within 2 s wherever it is.

* ``${VAR#pat}``, ``%``, ``/`` (builder/dockerfile/shell_pattern.py) give the
  match RE2 gives (checked against Python's ``re`` on the regex upstream builds,
  with hypothesis) without backtracking: ``${A#*a*a*a*a*a*a*a*a*a*b}`` over
  50 000 characters is instant, where ``re`` never ends.
* A signal during the parse phase or a step's expansion ends the build in 2 s
  with one line and exit 130/143, and leaves no process, mount or tmp dir.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.dockerfile.expand import ExpansionError, ShellLex

HOSTILE = "*a*a*a*a*a*a*a*a*a*b"
LONG = "a" * 50_000


# ---------------------------------------------------------------- the matcher

def _sp():  # imported late: the old main has no such module, and its other tests still run
    from builder.dockerfile import shell_pattern
    return shell_pattern


def _ref_trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    shell_pattern = _sp()
    found = re.compile(shell_pattern.shell_pattern_to_regex(pattern, greedy, True)).match(value)
    return value if found is None else value[found.end():]


def _ref_replace(pattern: str, value: str, repl: str, replace_all: bool) -> str:
    shell_pattern = _sp()
    regex = re.compile(shell_pattern.shell_pattern_to_regex(pattern, True, False))
    if not replace_all:
        found = regex.search(value)
        return value if found is None else value[:found.start()] + repl + value[found.end():]
    out, last, pos = [], 0, 0
    while pos <= len(value):  # Go's ReplaceAllString loop, over re's leftmost matches
        found = regex.search(value, pos)
        if found is None:
            break
        start, end = found.span()
        out.append(value[last:start])
        if end > last or start == 0:
            out.append(shell_pattern.go_template(repl, found.group()))
        last = end
        pos = pos + 1 if end <= pos else end
    out.append(value[last:])
    return "".join(out)


_PATTERN = st.lists(st.sampled_from(["a", "b", "*", "*", "?", "\n", "\\*", "\\?", "\\\\", "."]),
                    max_size=8).map("".join)
_VALUE = st.text(alphabet="ab\n*?.\\", max_size=14)


@settings(max_examples=2000, deadline=None)
@given(_PATTERN, _VALUE)
def test_matcher_agrees_with_the_regex_upstream_builds(pattern: str, value: str) -> None:
    shell_pattern = _sp()
    for greedy in (False, True):
        assert shell_pattern.trim_prefix(pattern, value, greedy) == \
            _ref_trim_prefix(pattern, value, greedy)
        reverse = shell_pattern.reverse_pattern(pattern)
        assert shell_pattern.trim_suffix(pattern, value, greedy) == \
            _ref_trim_prefix(reverse, value[::-1], greedy)[::-1]
    for replace_all in (False, True):
        assert shell_pattern.replace(pattern, value, "<$0>", replace_all, 1 << 20) == \
            _ref_replace(pattern, value, "<$0>", replace_all)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab?*", max_size=8), st.text(alphabet="ab", max_size=10))
def test_matcher_agrees_with_fnmatch_where_they_coincide(pattern: str, value: str) -> None:
    """A whole-value match (what fnmatch decides): stars and ``?`` never cross a
    newline, so ``pattern\n`` trims all of ``value\n`` exactly when it does."""
    import fnmatch

    shell_pattern = _sp()
    whole = shell_pattern.trim_prefix(pattern + "\n", value + "\n", False) == ""
    assert whole == fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


@pytest.mark.parametrize("word, expected", [
    ("${A#" + HOSTILE + "}", LONG),
    ("${A##" + HOSTILE + "}", LONG),
    ("${A%" + HOSTILE + "}", LONG),
    ("${A%%" + HOSTILE + "}", LONG),
    ("${A/" + HOSTILE + "/x}", LONG),
    ("${A//" + HOSTILE + "/x}", LONG),
    ("${A#" + "*a" * 9 + "}", "a" * (50_000 - 9)),
    ("${A##" + "*a" * 9 + "}", ""),
    ("${A%" + "a*" * 9 + "}", "a" * (50_000 - 9)),
    ("${A/" + "a*" * 9 + "/x}", "x"),
    ("${A//" + "?" * 7 + "b/x}", LONG),
])
def test_pathological_patterns_are_fast(word: str, expected: str) -> None:
    """In a child process: on the old main `re` never returns, and cannot be
    interrupted in this one."""
    code = ("import sys, time\nfrom builder.dockerfile.expand import ShellLex\n"
            "t = time.monotonic()\n"
            f"out = ShellLex().process_word({word!r}, {{'A': 'a' * 50_000}})\n"
            "print(time.monotonic() - t)\nsys.stdout.write(out)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20,
                            check=True, text=True)
    took, _, out = result.stdout.partition("\n")
    assert out == expected
    assert float(took) < 2


def test_costly_pattern_is_a_one_line_error() -> None:
    """`?` chunks cost len(value) x width even for RE2; past a cap it is an error."""
    value = "a" * (1 << 20)
    started = time.monotonic()
    with pytest.raises(ExpansionError, match="too costly to match"):
        ShellLex().process_word("${A//" + "?" * 20_000 + "b/x}", {"A": value})
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- whole builds

def _dockerfile(tail: int) -> str:
    lines = ["FROM busybox", f"ARG A={LONG}", f"ENV Y=${{A#{HOSTILE}}}",
             f"LABEL y=${{A%%{HOSTILE}}} z=${{A//{HOSTILE}/x}}"]
    # Legal but slow expansions keep the build in this phase long enough to be hit.
    lines += ["ENV X=${A//a/bb}"] * tail
    return "\n".join(lines) + "\n"


def test_hostile_expansion_finishes(tmp_path: Path, bstore: Path) -> None:
    """On the old main `re` backtracks for ever here (the subprocess timeout fires)."""
    from security.oracle import build

    result = build(bstore, tmp_path, _dockerfile(1), None, "-t", "patterns", timeout=60)
    assert result.returncode == 0
    inspect = subprocess.run([sys.executable, "-m", "builder", "--root", str(bstore),
                              "inspect", "patterns"], capture_output=True, check=True)
    assert f"Y={LONG}".encode() in inspect.stdout


def _session_left(sid: int) -> list[str]:
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            left.append(stat.parent.name)
    return left


def _interrupt(root: Path, context: Path, signum: int, *, after_line: str | None,
               after_seconds: float) -> tuple[subprocess.CompletedProcess, float]:
    """Start the real CLI in its own session (its id is the pid), wait for
    ``after_line`` on stderr, then ``after_seconds``, and send ``signum``; returns
    the result and how long the process took to exit after the signal."""
    quiet = ["--progress", "plain"] if after_line else ["-q"]
    argv = [sys.executable, "-m", "builder", "--root", str(root), "build", *quiet, str(context)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    err_lines: list[str] = []
    try:
        if after_line:
            assert proc.stderr is not None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = proc.stderr.readline().decode(errors="replace")
                assert line, "the build ended before the phase under test:\n" + "".join(err_lines)
                err_lines.append(line)
                if after_line in line:
                    break
        time.sleep(after_seconds)
        assert proc.poll() is None, "the build ended before the signal"
        proc.send_signal(signum)
        sent = time.monotonic()
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"{signal.Signals(signum).name} did not stop the build in 20 s")
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    result = subprocess.CompletedProcess(proc.pid, proc.returncode, out,
                                         "".join(err_lines).encode() + err)
    return result, took


def _assert_stopped(result: subprocess.CompletedProcess, took: float, signum: int,
                    root: Path) -> None:
    assert took < 2, f"took {took:.1f} s to stop"
    assert result.returncode == 128 + signum, result.stderr.decode(errors="replace")[-2000:]
    lines = [line for line in result.stderr.decode(errors="replace").splitlines()
             if line.startswith("pybuild:")]
    assert len(lines) == 1, lines
    assert "interrupted" in lines[0] and signal.Signals(signum).name in lines[0], lines
    assert "Traceback" not in result.stderr.decode(errors="replace")
    time.sleep(0.2)
    assert _session_left(result.args) == []
    assert list((root / "tmp").iterdir()) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(root) not in mounts


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_expansion(tmp_path: Path, bstore: Path, signum: int) -> None:
    """The steps after the hostile ones take seconds (legal work); the signal lands
    there.  On the old main the hostile step never ends and the signal waits
    behind an uninterruptible regex."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(_dockerfile(400))
    result, took = _interrupt(bstore, context, signum, after_line="ENV Y=", after_seconds=1.0)
    _assert_stopped(result, took, signum, bstore)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_parse(tmp_path: Path, bstore: Path, signum: int) -> None:
    """A 100 000-instruction Dockerfile takes seconds to parse; a signal then stops
    it at once (on the old main SIGTERM killed the process with no message)."""
    context = tmp_path / "ctx"
    context.mkdir()
    body = "".join(f"LABEL k{i % 10}=v{i} o=p q=r s=t u=v w=x\n" for i in range(99_990))
    (context / "Dockerfile").write_text("FROM busybox\n" + body)
    result, took = _interrupt(bstore, context, signum, after_line=None, after_seconds=2.0)
    _assert_stopped(result, took, signum, bstore)


# ------------------------------------------------- .dockerignore and the parser

_GLOB_TOKENS = ["a", "b", "/", "*", "**", "?", "[ab]", "[^a]", "\\a", "\\d", "^", ".", "[*]"]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_GLOB_TOKENS), min_size=1, max_size=6).map("".join),
       st.lists(st.text(alphabet="ab/1_\n.", max_size=10), min_size=1, max_size=5))
def test_linear_regex_agrees_with_re(glob: str, paths: list[str]) -> None:
    """The automaton means what re means, for every regex a pattern can give,
    including the parent-directory prefixes it answers from its cache."""
    from builder.context.fnmatch_go import FLAGS, BadPattern, GoRegexError, translate_regex
    from builder.context.fnmatch_go import match as go_match
    from builder.context.ignore import _classify
    from builder.context.linear_re import LinearRegex

    try:
        go_match(glob, ".")
        _kind, go_regex = _classify(glob)
        source = translate_regex(go_regex).full if go_regex else None
        regex = re.compile(source, FLAGS) if source else None
    except (BadPattern, GoRegexError, re.error):
        return
    if source is None or regex is None:
        return
    linear = LinearRegex(source, FLAGS)
    for path in paths:
        assert linear.search(path) == (regex.search(path) is not None), (source, path)
        for i, ch in enumerate(path):
            if ch == "/":
                assert linear.search(path[:i]) == (regex.search(path[:i]) is not None)


def _timed_build(root: Path, context: Path, dockerfile: str) -> tuple[float, str]:
    from security.oracle import build

    started = time.monotonic()
    result = build(root, context, dockerfile, None, timeout=60, check=False)
    return time.monotonic() - started, result.stderr.decode(errors="replace")


def test_dockerignore_pattern_that_backtracks(tmp_path: Path, bstore: Path) -> None:
    """``**/a/**/a/**/a/**/a/**/b`` against a path 300 directories deep: re needs
    hours (the old main hits the 60 s timeout), the automaton a millisecond."""
    context = tmp_path / "ctx"
    deep = context.joinpath(*["a"] * 300)
    deep.mkdir(parents=True)
    (deep / "c").write_text("kept\n")
    (deep / "b").write_text("ignored\n")
    (context / ".dockerignore").write_text("**/a/**/a/**/a/**/a/**/b\n")
    took, err = _timed_build(bstore, context, "FROM busybox\nCOPY . /ctx\nRUN test -f /ctx/"
                             + "a/" * 300 + "c && ! test -e /ctx/" + "a/" * 300 + "b\n")
    assert "Traceback" not in err
    assert "ERROR" not in err and "pybuild:" not in err, err[-2000:]
    assert took < 45


def test_directive_line_of_blanks_is_linear(tmp_path: Path, bstore: Path) -> None:
    """``# syntax=x<60 000 blanks>y``: the old directive regex is quadratic in the
    blanks (half a minute in one uninterruptible call)."""
    context = tmp_path / "ctx"
    context.mkdir()
    took, err = _timed_build(bstore, context,
                             "# check=x" + " " * 60_000 + "y\nFROM busybox\nLABEL a=b\n")
    assert "Traceback" not in err
    assert took < 15, f"{took:.1f} s"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_context_hashing(tmp_path: Path, bstore: Path, signum: int) -> None:
    """A 64 GiB sparse file in the context takes many seconds to hash (a stage
    thread, which no signal handler runs in); the build stops within 2 s.  On the
    old main the stage hashed on to the end of the file before the build stopped."""
    context = tmp_path / "ctx"
    context.mkdir()
    with open(context / "big", "wb") as f:
        f.truncate(64 << 30)
    (context / "Dockerfile").write_text("FROM busybox\nCOPY big /big\n")
    result, took = _interrupt(bstore, context, signum, after_line="COPY big", after_seconds=1.0)
    _assert_stopped(result, took, signum, bstore)


# ------------------------------------------------------------ registry I/O

class _Trickle:
    """A registry whose one layer blob never finishes: a byte every 20 ms
    (``trickle``), nothing at all after the headers (``stall``), or no headers
    either (``silent``: the download waits for the response)."""

    def __init__(self, mode: str) -> None:
        import gzip
        import hashlib
        import io
        import json
        import tarfile
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        def sha(data: bytes) -> str:
            return "sha256:" + hashlib.sha256(data).hexdigest()

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as out:
            info = tarfile.TarInfo("hello")
            info.size = 6
            out.addfile(info, io.BytesIO(b"hello\n"))
        blob = gzip.compress(buf.getvalue(), mtime=0)
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers",
                                        "diff_ids": [sha(buf.getvalue())]}}).encode()
        size = 10 << 20  # what the manifest claims: the download never ends
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha(blob + b"x"), "size": size}]}).encode()
        routes = {"/v2/": b"{}", "/v2/t/manifests/1": manifest,
                  f"/v2/t/manifests/{sha(manifest)}": manifest,
                  f"/v2/t/blobs/{sha(config)}": config}
        self.stop_event = threading.Event()
        self.blob_requested = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path in routes:
                    body = routes[path]
                    self.send_response(200)
                    if "manifests" in path:
                        self.send_header("Content-Type", json.loads(body)["mediaType"])
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if "/blobs/" not in path:
                    self.send_error(404)
                    return
                outer.blob_requested.set()
                if mode == "silent":
                    outer.stop_event.wait(120)  # bounded; ends long after any test
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                for _ in range(size):  # bounded; ends long after any test
                    if outer.stop_event.wait(0.02):
                        break
                    try:
                        if mode == "trickle":
                            self.wfile.write(b"\0")
                        self.wfile.flush()
                    except OSError:
                        break
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode", ["trickle", "stall", "silent"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_registry_download(tmp_path: Path, signum: int, mode: str) -> None:
    """``pybuild pull`` from a registry that trickles a layer, stalls after the
    headers, or never answers (downloads run on worker threads): the signal stops
    it within 2 s.  On the old main the worker sat in a 1 MiB read for hours or in
    a receive for the 60 s socket timeout (SIGINT), or the process died
    unannounced (SIGTERM); and a download waiting for the response, its connection
    shut down by the stop, sent the request again on a fresh connection and waited
    there for the socket timeout."""
    server = _Trickle(mode)
    root = tmp_path / "store"
    try:
        # -X faulthandler: SIGABRT prints every thread's stack, for a failure message.
        proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "builder",
                                 "--root", str(root), "pull", f"{server.host}/t:1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            assert server.blob_requested.wait(60), "the pull never asked for the layer"
            time.sleep(0.5)
            assert proc.poll() is None
            proc.send_signal(signum)
            sent = time.monotonic()
            try:
                out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGABRT)
                stacks = proc.communicate(timeout=20)[1].decode(errors="replace")[-8000:]
                pytest.fail(f"{signal.Signals(signum).name} did not stop the pull in 20 s; "
                            f"its threads then:\n{stacks}")
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()  # reaped, and its pipes closed (no ResourceWarning later)
    finally:
        server.stop()
    result = subprocess.CompletedProcess(proc.pid, proc.returncode, out, err)
    _assert_stopped(result, took, signum, root)
