"""Workloads and measuring for bench_ci.py: contexts, the tools as users run them, rounds.

The tools, the private dockerd, the base-image tarball and ``timed()`` (wall time and
peak RSS under ``/usr/bin/time -v``) come from bench_builds.py; this module adds what
the CI paths need: large generated contexts, build arguments and ``-f``, rounds that
alternate between the tools (machine noise then hits them alike), the summed memory
of a build's whole process tree, the differential cases that build from local bases,
and a least-squares slope.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_builds import BASE, ROOT, Buildah, Buildkit, Pybuild, Tool, timed

DIFFERENTIAL = ROOT / "testdata" / "differential"
FILE_BYTES = 1024          # ~1 KB per context file: 100,000 files make 100 MB
FILES_PER_DIR = 1000
# Images a differential case may start FROM that this script can provide offline.
LOCAL_BASES = ("busybox", "debian", "scratch")
NOOP_DOCKERFILE = f"FROM {BASE}\nCOPY src/ /src/\n"
# ARG after the COPY: the COPY stays cached for every tool; only the RUN sees VALUE.
RUN_DOCKERFILE = f"FROM {BASE}\nCOPY src/ /src/\nARG VALUE\nRUN echo $VALUE > /value\n"
COLD_RUN_DOCKERFILE = (
    f"FROM {BASE}\nRUN head -c 512M /dev/urandom > /big && mkdir /files && cd /files && "
    "awk 'BEGIN { for (i = 0; i < 20000; i++) "
    "{ f = \"f\" i; print \"file \" i > f; close(f) } }'\n")
WARM_DOCKERFILE = f"FROM {BASE}\nRUN true\n"

CommandFor = Callable[[Tool, int], list[str]]


# ---------------------------------------------------------------- tools

class UserPybuild(Pybuild):
    """pybuild as a user runs it: the given executable (a ``pip install .`` venv's
    bin/pybuild), the bytecode its install compiled, PYTHONDONTWRITEBYTECODE unset."""

    def __init__(self, work: Path, exe: str):
        super().__init__(work)
        self.exe = exe
        self.env.pop("PYTHONPYCACHEPREFIX", None)  # bench_builds' private cache: not a user's


def _missing(name: str, pybuild_exe: str, docker_cli: str) -> list[str]:
    needs = {"pybuild": [pybuild_exe], "buildkit": ["dockerd", docker_cli],
             "buildah": ["buildah", "podman"]}
    if name not in needs:
        raise SystemExit(f"bench_ci.py: unknown tool {name!r} in --tools "
                         "(pybuild, buildkit, buildah)")
    return [prog for prog in needs[name] if shutil.which(prog) is None]


def add_tools(tools: dict[str, Tool], names: Sequence[str], work: Path, pybuild_exe: str,
              docker_cli: str) -> None:
    """Fill ``tools`` (the caller stops them, also when a later one fails to start)."""
    for name in names:
        missing = _missing(name, pybuild_exe, docker_cli)
        if missing:
            print(f"skipping {name}: {', '.join(missing)} not installed", file=sys.stderr)
        elif name == "pybuild":
            tools[name] = UserPybuild(work, pybuild_exe)
        elif name == "buildkit":
            tools[name] = Buildkit(work, None, docker_cli)  # private dockerd, stopped by PID
        else:
            tools[name] = Buildah(work)


def import_cmd(tool: Tool, tar: Path, ref: str) -> list[str]:
    """Import a rootfs tarball as ``ref`` (bench_builds' import_cmd names it bench-base)."""
    full = ref if ":" in ref else f"{ref}:latest"
    named = {"pybuild": ref, "buildkit": full, "buildah": f"localhost/{full}"}[tool.name]
    return [*tool.import_cmd(tar)[:-1], named]


def build_cmd(tool: Tool, ctx: Path, tag: str, no_cache: bool = False,
              extra: Sequence[str] = ()) -> list[str]:
    """bench_builds' build command with ``extra`` flags (-f, --build-arg) before CONTEXT."""
    cmd = tool.build_cmd(ctx, tag, no_cache)
    return [*cmd[:-1], *extra, cmd[-1]]


# ---------------------------------------------------------------- process-tree memory

def _process_table() -> dict[int, tuple[str, int]]:
    """pid -> (comm, ppid) of every process now."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited between the listing and the read
        close = text.rindex(")")
        table[int(entry.name)] = (text[text.index("(") + 1:close],
                                  int(text[close + 2:].split()[1]))
    return table


def _measured_pids() -> list[int]:
    """The processes under each ``/usr/bin/time`` this script runs: the measured build and
    everything it started (RUN's shell and commands included), never a daemon of ours."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid) in table.items():
        children.setdefault(ppid, []).append(pid)
    me = os.getpid()
    todo = [pid for pid in children.get(me, []) if table[pid][0] == "time"]
    found = []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _rss_pss_kib(pid: int) -> tuple[int, int]:
    values = {"Rss": 0, "Pss": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values["Rss"], values["Pss"]


class TreeSampler(threading.Thread):
    """The peak, over samples every ``interval`` s, of the summed memory of the measured
    process tree.  PSS shares a page among the processes mapping it, so the sum is the
    tree's own memory; the RSS sum counts shared pages once per process (an upper bound).
    ``/usr/bin/time -v`` only gives the largest single process."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval = interval
        self.done = threading.Event()
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0

    def run(self) -> None:
        while not self.done.wait(self.interval):
            sums = [_rss_pss_kib(pid) for pid in _measured_pids()]
            self.peak_rss_kib = max(self.peak_rss_kib, sum(s[0] for s in sums))
            self.peak_pss_kib = max(self.peak_pss_kib, sum(s[1] for s in sums))

    def finish(self) -> dict[str, float]:
        self.done.set()
        self.join()
        return {"tree_peak_pss_mb": round(self.peak_pss_kib * 1024 / 1e6, 1),
                "tree_peak_rss_mb": round(self.peak_rss_kib * 1024 / 1e6, 1)}


# ---------------------------------------------------------------- measuring

def measure(tool: Tool, cmd: list[str], log: Path, sample_tree: bool = False) -> dict:
    sampler = TreeSampler() if sample_tree else None
    if sampler:
        sampler.start()
    try:
        result = timed(cmd, tool.env, log, tool.daemon_pid)
    finally:
        tree = sampler.finish() if sampler else {}
    return {**result, **tree}


def summarize(runs: list[dict]) -> dict:
    """The median wall time of the runs; the worst of their memory figures."""
    walls = [r["wall_s"] for r in runs]
    out: dict = {"median_s": round(statistics.median(walls), 4), "walls_s": walls,
                 "ok": all(r["ok"] for r in runs),
                 "max_rss_mib": max(r["max_rss_mib"] for r in runs)}
    for key in ("daemon_peak_rss_mib", "daemon_rss_growth_mib", "tree_peak_pss_mb",
                "tree_peak_rss_mb"):
        values = [r[key] for r in runs if key in r]
        if values:
            out[key] = max(values)
    return out


def rounds_of(tools: dict[str, Tool], name: str, logs: Path, rounds: int,
              cmd_for: CommandFor, first_for: CommandFor | None = None,
              sample_tree: bool = False, settle: bool = False,
              drop_caches: bool = False) -> dict[str, dict]:
    """Each tool's first (untimed-in-the-median) build, then ``rounds`` timed builds,
    round by round alternating the tools.  A tool whose first build fails is left out.
    ``settle``: an untimed ``sync`` before each timed build, so that no build writes
    back what the one before it left in the page cache (pybuild syncs its layer
    before naming it, BuildKit and buildah do not); with ``drop_caches`` the page
    cache is emptied too (``settle_page_cache``)."""
    firsts: dict[str, dict] = {}
    if first_for:
        for tname, tool in tools.items():
            print(f"{name}: first build with {tname} ...", file=sys.stderr)
            firsts[tname] = measure(tool, first_for(tool, 0), logs / f"{name}-first-{tname}.log")
    runs: dict[str, list[dict]] = {t: [] for t in tools if firsts.get(t, {"ok": True})["ok"]}
    for i in range(rounds):
        print(f"{name}: round {i + 1}/{rounds} ...", file=sys.stderr)
        for tname in runs:
            tool = tools[tname]
            if settle:
                settle_page_cache(drop_caches)
            runs[tname].append(measure(tool, cmd_for(tool, i), logs / f"{name}-{tname}-{i}.log",
                                       sample_tree))
    results = {t: {"ok": False, "median_s": None, "first": firsts[t]}
               for t in tools if t not in runs}
    for tname, samples in runs.items():
        results[tname] = summarize(samples)
        if tname in firsts:
            results[tname]["first_s"] = firsts[tname]["wall_s"]
    return results


def settle_page_cache(drop: bool) -> None:
    """Write back what earlier builds left dirty; with ``drop``, also empty the page cache.

    Dropping it is for this VM (Firecracker, with free page reporting): a guest page
    the host has taken back costs about 10 us to touch again, 2.6 s a GiB.  A cold RUN
    that writes 512 MiB fills about 1 GiB of page cache (twice over, through the loop
    device); without a drop, the later rounds of every tool write into such pages, and
    their writes take up to twice as long, by how much depending on what the host took
    back when.  After a drop, a build reuses the pages just freed.  (Not for a cold
    COPY: there a drop also makes BuildKit's own copy of the last context cold, which
    it compares the new one against; benchmarks/README.md has the numbers.)
    """
    subprocess.run(["sync"], check=True)
    if drop:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def ratio(a: dict | None, b: dict | None, key: str = "median_s") -> float | None:
    if not a or not b or not a.get("ok") or not b.get("ok") or not b.get(key):
        return None
    return round(a[key] / b[key], 3)


def slope_ms_per_1k(points: dict[int, float]) -> float | None:
    """Least-squares slope of rebuild time (ms) over context size (thousands of files)."""
    if len(points) < 2:
        return None
    files = sorted(points)
    fit = statistics.linear_regression([n / 1000 for n in files],
                                       [points[n] * 1000 for n in files])
    return round(fit.slope, 3)


# ---------------------------------------------------------------- contexts

def file_context(work: Path, name: str, files: int) -> Path:
    """A context of ``files`` files of FILE_BYTES each under src/ (FILES_PER_DIR to a
    directory, every file's content distinct), with the no-op and the RUN Dockerfiles."""
    ctx = work / "ctx" / name
    print(f"making a {files}-file context ...", file=sys.stderr)
    for i in range(files):
        folder = ctx / "src" / f"d{i // FILES_PER_DIR:04d}"
        if i % FILES_PER_DIR == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i:07d}").write_bytes((f"{i:08d}" * (FILE_BYTES // 8)).encode())
    (ctx / "Dockerfile").write_text(NOOP_DOCKERFILE)
    (ctx / "Dockerfile.run").write_text(RUN_DOCKERFILE)
    return ctx


def dockerfile_context(work: Path, name: str, dockerfile: str) -> Path:
    ctx = work / "ctx" / name
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


# ---------------------------------------------------------------- differential cases

def _why_not_local(dockerfile: str) -> str | None:
    """Why a case cannot build offline from LOCAL_BASES, or None when it can."""
    if re.search(r"^\s*ADD\s.*https?://", dockerfile, re.MULTILINE | re.IGNORECASE):
        return "ADD from a URL (needs network)"
    stages: set[str] = set()
    for match in re.finditer(r"^\s*FROM\s+(.*)$", dockerfile, re.MULTILINE | re.IGNORECASE):
        words = [w for w in match.group(1).split() if not w.startswith("--")]
        image = words[0]
        if image.lower() not in stages and \
                re.split("[:@]", image)[0] not in LOCAL_BASES:
            return f"needs image {image}"
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2].lower())
    return None


def differential_cases() -> tuple[list[str], dict[str, str]]:
    """(cases that build from local bases, {skipped case: why})."""
    usable, skipped = [], {}
    for dockerfile in sorted(DIFFERENTIAL.glob("*/Dockerfile")):
        reason = _why_not_local(dockerfile.read_text())
        if reason:
            skipped[dockerfile.parent.name] = reason
        else:
            usable.append(dockerfile.parent.name)
    return usable, skipped


def import_differential_bases(tools: dict[str, Tool], work: Path, debian_tar: Path,
                              logs: Path) -> None:
    """The bases the differential tests give their cases: testdata/busybox-rootfs.sh's
    tarball as ``busybox`` and the Debian minbase as ``debian:bookworm``."""
    busybox_tar = work / "busybox.tar"
    subprocess.run([str(ROOT / "testdata" / "busybox-rootfs.sh"), str(busybox_tar)],
                   check=True)
    for tname, tool in tools.items():
        for tar, ref in ((busybox_tar, "busybox"), (debian_tar, "debian:bookworm")):
            result = measure(tool, import_cmd(tool, tar, ref),
                             logs / f"import-{ref.replace(':', '-')}-{tname}.log")
            if not result["ok"]:
                raise SystemExit(f"{tname}: importing {ref} failed: see {result['log']}")
