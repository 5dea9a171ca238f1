"""Issue 17, "faster than BuildKit on every CI path": pybuild, BuildKit and buildah, same run.

    python benchmarks/bench_ci.py --pybuild /venv/bin/pybuild [--cases LIST] [--tools LIST]
        [--rounds 5] [--files 100000] [--scaling 1000,10000,100000,1000000] [--out F.json]

As root, with kernel OverlayFS; BuildKit is Debian's dockerd (docker.io, client
/usr/bin/docker with DOCKER_BUILDKIT=1), buildah runs with --isolation chroot --layers.
A tool that is not installed is skipped with a message.  Every tool gets a private
store (and a private dockerd, started once, warmed by one throwaway build, stopped by
its PID) and the same Debian minbase imported as bench-base (bench_builds.py).
pybuild runs as users run it: the --pybuild executable (a ``pip install .`` venv's
bin/pybuild), PYTHONDONTWRITEBYTECODE unset.  Cases (--cases):

  cached     fully cached rebuild of bench_builds.py's 20-instruction Dockerfile
  noop       no-op rebuild of a --files-file context (~1 KB a file) under one COPY
  run        that context, COPY cached, one RUN changed by --build-arg VALUE=<round>
  cold-copy  that COPY with --no-cache
  cold-run   RUN writing 512 MiB + 20,000 files, --no-cache; also the peak summed
             memory (PSS) of pybuild's whole process tree (target: under 150 MB)
  diff       every testdata/differential case that builds offline from busybox,
             debian:bookworm or scratch: built once, then rebuilt cached; the median
             over cases of each case's median rebuild, and the median per-case ratio
  scaling    no-op rebuilds of --scaling contexts, pybuild and BuildKit, with each
             tool's least-squares slope in ms per 1,000 files

Cached and no-op cases report the median of --rounds rebuilds (after one first build),
cold cases the median of --cold-rounds builds; the rounds alternate between the tools.
Before each timed cold build, what earlier builds left dirty is written back, untimed;
before each timed cold RUN the page cache is dropped too (--keep-page-cache: not;
bench_workloads.settle_page_cache says why).
The cached case also guards pybuild's imports (import_guard.py, python -X importtime
over --rounds cached rebuilds): a module off the fast path, or pybuild's own import
time over its budget, and the script says so loudly and exits 1.
Prints a table (workload, pybuild, BuildKit, buildah, pybuild/BuildKit, target, met)
and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_workloads as wl
import import_guard
from bench_builds import DEFAULT_BASE, Tool, ensure_base, make_contexts

CASES = ("cached", "noop", "run", "cold-copy", "cold-run", "diff", "scaling")
TOOLS = ("pybuild", "buildkit", "buildah")
MEMORY_TARGET_MB = 150
# Issue 17's targets: the largest pybuild/BuildKit ratio each workload may have.
TARGETS = {"cached": 0.7, "noop": 0.5, "run": 0.5, "cold-copy": 0.4, "cold-run": 0.6,
           "diff": 1.0, "slope": 1.0}
SCALING_TOOLS = ("pybuild", "buildkit")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pybuild", default="pybuild",
                    help="the pybuild executable (default: pybuild on PATH)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"from {','.join(CASES)}")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--rounds", type=int, default=5, help="timed rebuilds per tool (median)")
    ap.add_argument("--cold-rounds", type=int, default=1, help="timed cold builds (median)")
    ap.add_argument("--files", type=int, default=100_000, help="context size for noop, "
                    "run and cold-copy (~1 KB a file)")
    ap.add_argument("--scaling", default="1000,10000,100000,1000000",
                    help="context sizes (files) for the scaling table")
    ap.add_argument("--out", type=Path, help="write the JSON results here")
    ap.add_argument("--base-tar", type=Path, default=DEFAULT_BASE)
    ap.add_argument("--docker-cli", default="/usr/bin/docker")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"),
                    help="where the temporary stores and contexts go")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--keep-page-cache", action="store_true",
                    help="cold RUN: only sync before each timed build, do not drop the "
                         "page cache (bench_workloads.settle_page_cache says why it does)")
    ap.add_argument("--report", type=Path, metavar="JSON",
                    help="print the tables of an earlier run's --out file, run nothing")
    args = ap.parse_args()
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = set(args.cases) - set(CASES)
    if unknown:
        ap.error(f"--cases: unknown {', '.join(sorted(unknown))} (from {', '.join(CASES)})")
    args.tools = [t for t in args.tools.split(",") if t]
    args.scaling = [int(n) for n in args.scaling.split(",") if n]
    return args


def prepare(tools: dict[str, Tool], args: argparse.Namespace, work: Path,
            logs: Path) -> dict:
    """Import the base into every tool, warm each with one throwaway build; versions."""
    versions = {"pybuild": [args.pybuild, "--version"],
                "buildkit": [args.docker_cli, "version", "--format",
                             "client {{.Client.Version}}, dockerd {{.Server.Version}}"],
                "buildah": ["buildah", "--version"]}
    warm = wl.dockerfile_context(work, "warm", wl.WARM_DOCKERFILE)
    for name, tool in tools.items():
        print(f"importing the base image into {name}, one throwaway build ...",
              file=sys.stderr)
        for cmd, what in ((tool.import_cmd(args.base_tar), "import"),
                          (wl.build_cmd(tool, warm, "ci-warm", no_cache=True), "warm-up")):
            result = wl.measure(tool, cmd, logs / f"{what}-{name}.log")
            if not result["ok"]:
                raise SystemExit(f"{name}: {what} failed: see {result['log']}")
    return {n: subprocess.run(versions[n], env=t.env, capture_output=True, text=True)
            .stdout.strip() for n, t in tools.items()}


def run_simple_cases(tools: dict[str, Tool], args: argparse.Namespace, work: Path,
                     logs: Path) -> dict[str, dict]:
    """Cases cached, noop, run, cold-copy and cold-run: {case: {tool: summary}}."""
    out: dict[str, dict] = {}
    rounds, cold = args.rounds, args.cold_rounds
    if "cached" in args.cases:
        ctx = make_contexts(work / "bench_builds")["cached"]
        out["cached"] = wl.rounds_of(
            tools, "cached", logs, rounds, lambda t, i: wl.build_cmd(t, ctx, "ci-cached"),
            first_for=lambda t, i: wl.build_cmd(t, ctx, "ci-cached", no_cache=True))
        if "pybuild" in tools:
            cmd = wl.build_cmd(tools["pybuild"], ctx, "ci-cached")
            out["cached"]["pybuild"]["imports"] = import_guard.measure(
                Path(cmd[0]), cmd[1:], tools["pybuild"].env, rounds)
    if {"noop", "run", "cold-copy"} & set(args.cases):
        big = wl.file_context(work, "files", args.files)
        if "noop" in args.cases:
            out["noop"] = noop_rebuilds(tools, big, "noop", logs, rounds)
        if "run" in args.cases:
            run_file = ["-f", str(big / "Dockerfile.run")]
            out["run"] = wl.rounds_of(
                tools, "run", logs, rounds,
                lambda t, i: wl.build_cmd(t, big, "ci-run",
                                          extra=[*run_file, "--build-arg", f"VALUE={i + 1}"]),
                first_for=lambda t, i: wl.build_cmd(t, big, "ci-run",
                                                    extra=[*run_file, "--build-arg", "VALUE=0"]))
        if "cold-copy" in args.cases:
            out["cold-copy"] = wl.rounds_of(
                tools, "cold-copy", logs, cold,
                lambda t, i: wl.build_cmd(t, big, "ci-cold-copy", no_cache=True), settle=True)
    if "cold-run" in args.cases:
        ctx = wl.dockerfile_context(work, "cold-run", wl.COLD_RUN_DOCKERFILE)
        out["cold-run"] = wl.rounds_of(
            tools, "cold-run", logs, cold,
            lambda t, i: wl.build_cmd(t, ctx, "ci-cold-run", no_cache=True), sample_tree=True,
            settle=True, drop_caches=not args.keep_page_cache)
    return out


def noop_rebuilds(tools: dict[str, Tool], ctx: Path, name: str, logs: Path,
                  rounds: int) -> dict[str, dict]:
    tag = f"ci-{name}"
    return wl.rounds_of(tools, name, logs, rounds, lambda t, i: wl.build_cmd(t, ctx, tag),
                        first_for=lambda t, i: wl.build_cmd(t, ctx, tag, no_cache=True))


def run_differential(tools: dict[str, Tool], args: argparse.Namespace, work: Path,
                     logs: Path) -> dict:
    """Each offline differential case built once, then rebuilt cached --rounds times."""
    cases, skipped = wl.differential_cases()
    for case, why in skipped.items():
        print(f"diff: skipping {case}: {why}", file=sys.stderr)
    wl.import_differential_bases(tools, work, args.base_tar, logs)
    per_case: dict[str, dict] = {}
    for case in cases:
        ctx = wl.DIFFERENTIAL / case
        flags = ["-f", str(ctx / "Dockerfile")]
        tag = f"ci-diff-{case.replace('_', '-')}"
        per_case[case] = wl.rounds_of(
            tools, f"diff-{case}", logs, args.rounds,
            lambda t, i, ctx=ctx, tag=tag, flags=flags: wl.build_cmd(t, ctx, tag, extra=flags),
            first_for=lambda t, i, ctx=ctx, tag=tag, flags=flags: wl.build_cmd(
                t, ctx, tag, no_cache=True, extra=flags))
    summary: dict[str, dict] = {}
    for tname in tools:
        medians = [r[tname]["median_s"] for r in per_case.values() if r[tname]["ok"]]
        summary[tname] = {"ok": bool(medians),
                          "median_s": round(statistics.median(medians), 4) if medians else None,
                          "cases_ok": len(medians), "failed": sorted(
                              c for c, r in per_case.items() if not r[tname]["ok"])}
    ratios = [r for r in (wl.ratio(c.get("pybuild"), c.get("buildkit"))
                          for c in per_case.values()) if r is not None]
    return {"cases": per_case, "skipped": skipped, "summary": summary,
            "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
            "ratios": ratios}


def run_scaling(tools: dict[str, Tool], args: argparse.Namespace, work: Path,
                logs: Path) -> dict:
    """No-op rebuild time per context size, pybuild and BuildKit, and each one's slope."""
    chosen = {n: t for n, t in tools.items() if n in SCALING_TOOLS}
    points: dict[str, dict[int, float]] = {n: {} for n in chosen}
    raw: dict[int, dict] = {}
    if "pybuild" in chosen:
        # pybuild refuses a context of more than 1,000,000 entries by default (docs/
        # limits.md; directories count): the scaling table's largest point needs more.
        chosen["pybuild"].env["PYBUILD_MAX_CONTEXT_FILES"] = str(2 * max(args.scaling))
    for files in args.scaling:
        ctx = wl.file_context(work, f"scale-{files}", files)
        raw[files] = noop_rebuilds(chosen, ctx, f"scale-{files}", logs, args.rounds)
        shutil.rmtree(ctx)  # a 1,000,000-file context takes ~4 GB of disk
        for tname, result in raw[files].items():
            if result["ok"]:
                points[tname][files] = result["median_s"]
    slopes = {n: wl.slope_ms_per_1k(p) for n, p in points.items()}
    return {"points": raw, "seconds": points, "slope_ms_per_1k": slopes}


# ---------------------------------------------------------------- report

def _cell(result: dict | None, key: str = "median_s", unit: str = "s") -> str:
    if not result:
        return "-"
    if not result.get("ok") or result.get(key) is None:
        return "FAILED"
    return f"{result[key]:.3f} {unit}" if unit == "s" else f"{result[key]:.1f} {unit}"


def _met(value: float | None, limit: float, strict: bool = False) -> str:
    if value is None:
        return "-"
    return "yes" if (value < limit if strict else value <= limit) else "no"


def rows(results: dict, files: int) -> list[tuple[str, ...]]:
    """Table rows: workload, pybuild, BuildKit, buildah, ratio, target, met."""
    names = {"cached": "cached rebuild, 20 instructions",
             "noop": f"no-op rebuild, {files:,} files", "run": f"one RUN changed, {files:,} files",
             "cold-copy": f"cold COPY, {files:,} files",
             "cold-run": "cold RUN, 512 MiB + 20,000 files"}
    out = []
    for case, label in names.items():
        by_tool = results["cases"].get(case)
        if by_tool is None:
            continue
        r = wl.ratio(by_tool.get("pybuild"), by_tool.get("buildkit"))
        out.append((label, *(_cell(by_tool.get(t)) for t in TOOLS),
                    "-" if r is None else f"{r:.2f}", f"<= {TARGETS[case]:.2f}",
                    _met(r, TARGETS[case])))
        imports = by_tool.get("pybuild", {}).get("imports")
        if case == "cached" and imports and "own_median_ms" in imports:
            out.append(("  imports, pybuild's own (-X importtime)",
                        f"{imports['own_median_ms']:.1f} ms", "", "", "",
                        f"<= {imports['own_budget_ms']:.0f} ms",
                        _met(imports["own_median_ms"], imports["own_budget_ms"])))
            out.append(("  modules off the cached fast path", str(len(imports["off_fast_path"])),
                        "", "", "", "0", _met(len(imports["off_fast_path"]), 0)))
            out.append(("  imports with the interpreter's and wrapper's",
                        f"{imports['median_ms']:.1f} ms", "", "", "", "", ""))
        if case == "cold-run" and by_tool.get("pybuild", {}).get("tree_peak_pss_mb"):
            mem = by_tool["pybuild"]["tree_peak_pss_mb"]
            out.append(("  peak memory, pybuild's process tree (PSS)",
                        _cell(by_tool["pybuild"], "tree_peak_pss_mb", "MB"), "", "", "",
                        f"< {MEMORY_TARGET_MB} MB", _met(mem, MEMORY_TARGET_MB, strict=True)))
    diff = results.get("diff")
    if diff:
        r = diff["median_ratio"]
        out.append((f"differential cached rebuild (median of {len(diff['cases'])} cases)",
                    *(_cell(diff["summary"].get(t)) for t in TOOLS),
                    "-" if r is None else f"{r:.2f}", f"<= {TARGETS['diff']:.2f}",
                    _met(r, TARGETS["diff"])))
    scaling = results.get("scaling")
    if scaling:
        slopes = scaling["slope_ms_per_1k"]
        pb, bk = slopes.get("pybuild"), slopes.get("buildkit")
        r = round(pb / bk, 3) if pb is not None and bk else None
        out.append(("no-op rebuild slope (ms per 1,000 files)",
                    *("-" if slopes.get(t) is None else f"{slopes[t]:.2f}" for t in TOOLS),
                    "-" if r is None else f"{r:.2f}", f"< {TARGETS['slope']:.2f}",
                    _met(r, TARGETS["slope"], strict=True)))
    return out


def scaling_rows(scaling: dict) -> list[tuple[str, ...]]:
    out = []
    for key, by_tool in scaling["points"].items():
        files = int(key)  # a str when read back from --out's JSON
        r = wl.ratio(by_tool.get("pybuild"), by_tool.get("buildkit"))
        cells = [_cell(by_tool.get(t)) for t in SCALING_TOOLS]
        per_k = [f"{by_tool[t]['median_s'] * 1e6 / files:.2f}"
                 if by_tool.get(t, {}).get("ok") else "-" for t in SCALING_TOOLS]
        out.append((f"{files:,}", *cells, "-" if r is None else f"{r:.2f}", *per_k))
    return out


def render(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    table = [header, *body]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(results: dict, files: int) -> str:
    text = render(("workload", "pybuild", "BuildKit", "buildah", "pybuild/BuildKit",
                   "target", "met"), rows(results, files))
    if results.get("scaling"):
        text += "\n\nno-op rebuild by context size\n" + render(
            ("files", "pybuild", "BuildKit", "pybuild/BuildKit", "pybuild ms/1k files",
             "BuildKit ms/1k files"), scaling_rows(results["scaling"]))
    return text


# ---------------------------------------------------------------- main

def workdir_filesystem(path: Path) -> str:
    """The filesystem under ``path``, and for ext4 whether it has a journal.  ext4
    without one does not reuse an inode freed in the last 60 s (300 s while its inode
    table block is dirty) and scans past each such inode on every file it creates
    (fs/ext4/ialloc.c, recently_deleted): after any tool deletes a big tree, the next
    cold COPY of 100,000 files can take 8x as long, whichever tool runs it."""
    st = os.stat(path)
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    kind = "unknown"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[2] == device:   # optional fields end at "-"; the type follows it
            kind = fields[fields.index("-") + 1]
    if kind != "ext4":
        return kind
    name = Path(f"/sys/dev/block/{device}").resolve().name
    journaled = Path(f"/proc/fs/jbd2/{name}-8").exists()
    return "ext4" if journaled else "ext4 without a journal"


def run_all(tools: dict[str, Tool], args: argparse.Namespace, work: Path) -> dict:
    logs = work / "logs"
    logs.mkdir()
    filesystem = workdir_filesystem(work)
    if filesystem == "ext4 without a journal":
        print(f"warning: {work} is on ext4 without a journal: cold builds swing with what "
              "was deleted in the last minutes (see benchmarks/README.md)", file=sys.stderr)
    results: dict = {"host": {"kernel": os.uname().release, "cpus": os.cpu_count(),
                              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "workdir_filesystem": filesystem},
                     "args": {k: str(v) for k, v in vars(args).items()}}
    wl.add_tools(tools, args.tools, work, args.pybuild, args.docker_cli)
    if not tools:
        raise SystemExit("bench_ci.py: none of --tools is installed")
    results["versions"] = prepare(tools, args, work, logs)
    results["cases"] = run_simple_cases(tools, args, work, logs)
    if "diff" in args.cases:
        results["diff"] = run_differential(tools, args, work, logs)
    if "scaling" in args.cases:
        results["scaling"] = run_scaling(tools, args, work, logs)
    return results


def main() -> int:
    args = parse_args()
    if args.report:
        earlier = json.loads(args.report.read_text())
        print(report(earlier, int(earlier["args"]["files"])))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("bench_ci.py needs root")
    if not Path("/usr/bin/time").exists():
        raise SystemExit("bench_ci.py needs GNU time at /usr/bin/time (apt-get install time)")
    ensure_base(args.base_tar)
    work = Path(tempfile.mkdtemp(prefix="pybuild-ci-", dir=args.workdir))
    tools: dict[str, Tool] = {}
    try:
        results = run_all(tools, args, work)
    finally:
        for tool in tools.values():
            tool.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(report(results, args.files))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    imports = results["cases"].get("cached", {}).get("pybuild", {}).get("imports")
    loud = import_guard.failures(imports) if imports else []
    for line in loud:
        print(line, file=sys.stderr)
    return 1 if loud else 0


if __name__ == "__main__":
    sys.exit(main())
