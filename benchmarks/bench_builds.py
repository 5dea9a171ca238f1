"""pybuild against Docker BuildKit and buildah on the same Dockerfiles, side by side.

    /work/venv/bin/python benchmarks/bench_builds.py [--out results.json] [--no-network]

As root, on a machine with kernel OverlayFS, dockerd (docker.io) and buildah (+ podman,
which imports the base image into buildah's store). Every tool gets a private store in a
temporary directory (a private dockerd too, unless --docker-host is given), the same base
image (a Debian bookworm minbase rootfs tarball, made with testdata/debian-rootfs.sh when
missing) and the same generated Dockerfiles and contexts:

  big      RUN head -c 1G /dev/urandom > /big                          (cold, --no-cache)
  small    RUN writing 100,000 small files                             (cold, --no-cache)
  cached   a 20-instruction Dockerfile built once, then rebuilt fully cached 5 times
           (timed: the median rebuild)
  nginx    RUN apt-get update; RUN apt-get install nginx; COPY app/    (cold; needs network)

For each build it records wall time and the peak RSS of the client process tree
(``/usr/bin/time -v``'s "Maximum resident set size": the largest single process among
the client and its waited-for descendants). Docker's client does no work, the daemon
does: for a dockerd this script started, it resets dockerd's RSS high-water mark
(/proc/PID/clear_refs) before each build and reports the daemon's peak RSS and its
growth over the RSS before the build. Prints a table and writes JSON (stdout, or --out).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Named as tests/conftest.py's debian_tar names it: after the script that makes it.
_SCRIPT_DIGEST = hashlib.sha256(
    (Path(__file__).resolve().parents[1] / "testdata" / "debian-rootfs.sh").read_bytes()
).hexdigest()[:12]
DEFAULT_BASE = Path(os.environ.get("PYBUILD_TEST_CACHE", "/var/cache/pybuild-tests")) \
    / f"bookworm-minbase-{_SCRIPT_DIGEST}.tar"
BASE = "bench-base"
TOOLS = ("pybuild", "buildkit", "buildah")
CASES = ("big", "small", "cached", "nginx")
MIB = 1024 * 1024
REBUILDS = 5  # cached rebuilds per tool; the median is reported


# ---------------------------------------------------------------- contexts

def ensure_base(base_tar: Path) -> None:
    """Make the Debian minbase tarball with testdata/debian-rootfs.sh if it is missing."""
    if not base_tar.exists():
        print(f"making {base_tar} with testdata/debian-rootfs.sh ...", file=sys.stderr)
        base_tar.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(ROOT / "testdata" / "debian-rootfs.sh"), str(base_tar)],
                       check=True)


def make_contexts(work: Path) -> dict[str, Path]:
    ctxs = {}

    def ctx(name: str, dockerfile: str) -> Path:
        d = work / "ctx" / name
        d.mkdir(parents=True)
        (d / "Dockerfile").write_text(dockerfile)
        ctxs[name] = d
        return d

    ctx("big", f"FROM {BASE}\nRUN head -c 1G /dev/urandom > /big\n")
    ctx("small", f"FROM {BASE}\n"
        "RUN mkdir /files && cd /files && awk 'BEGIN { for (i = 0; i < 100000; i++) "
        "{ f = \"f\" i; print \"file \" i > f; close(f) } }'\n")

    # 20 instructions (FROM included): RUN, COPY, ENV, ARG, WORKDIR, LABEL, USER, ...
    lines = [f"FROM {BASE}", "ARG FLAVOR=plain", "ENV APP_HOME=/app LANG=C.UTF-8",
             "LABEL org.opencontainers.image.title=bench", "WORKDIR /app",
             "COPY src/ /app/src/", "RUN echo one > /app/one", "COPY conf/ /app/conf/",
             "RUN mkdir -p /app/data && echo two > /app/data/two",
             "ENV STAGE=build", "RUN echo $FLAVOR > /app/flavor",
             "COPY Dockerfile /app/Dockerfile.copy",
             "RUN ls -R /app > /app/listing", "WORKDIR /app/src",
             "RUN cat /app/conf/* > /app/conf.all", "EXPOSE 8080",
             "RUN useradd -r -u 1000 app", "USER 1000",
             "ENTRYPOINT [\"/bin/sh\"]", "CMD [\"-c\", \"cat /app/one\"]"]
    assert len(lines) == 20, len(lines)
    d = ctx("cached", "\n".join(lines) + "\n")
    for i in range(500):
        sub = d / "src" / f"pkg{i % 20}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"mod{i}.py").write_text(f"# module {i}\nVALUE = {i}\n" * 20)
    (d / "conf").mkdir()
    for i in range(10):
        (d / "conf" / f"c{i}.conf").write_text(f"key{i} = value{i}\n")

    d = ctx("nginx", f"FROM {BASE}\nRUN apt-get update\n"
            "RUN apt-get install -y --no-install-recommends nginx\n"
            "COPY app/ /var/www/html/\nCMD [\"nginx\", \"-g\", \"daemon off;\"]\n")
    (d / "app").mkdir()
    (d / "app" / "index.html").write_text("<h1>bench</h1>\n")
    return ctxs


# ---------------------------------------------------------------- measuring

def parse_time_v(text: str) -> dict[str, float]:
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"max_rss_mib": int(rss.group(1)) / 1024 if rss else float("nan")}


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])  # kB
    return out


def timed(cmd: list[str], env: dict[str, str], log: Path,
          daemon_pid: int | None = None) -> dict:
    """Run cmd under /usr/bin/time -v; wall time, client peak RSS, optionally daemon RSS."""
    subprocess.run(["sync"], check=True)
    timefile = log.with_suffix(".time")
    before = None
    if daemon_pid:
        Path(f"/proc/{daemon_pid}/clear_refs").write_text("5")  # reset VmHWM to VmRSS
        before = proc_status(daemon_pid)["VmRSS"]
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.run(["/usr/bin/time", "-v", "-o", str(timefile), *cmd], env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    wall = time.monotonic() - start
    sync_start = time.monotonic()
    subprocess.run(["sync"], check=True)
    result = {"wall_s": round(wall, 3), "sync_after_s": round(time.monotonic() - sync_start, 3),
              "ok": proc.returncode == 0, "cmd": " ".join(cmd), "log": str(log)}
    result.update(parse_time_v(timefile.read_text()))
    if daemon_pid:
        status = proc_status(daemon_pid)
        result["daemon_peak_rss_mib"] = round(status["VmHWM"] / 1024, 1)
        result["daemon_rss_growth_mib"] = round((status["VmHWM"] - before) / 1024, 1)
    result["max_rss_mib"] = round(result["max_rss_mib"], 1)
    if not result["ok"]:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        print(f"  FAILED ({proc.returncode}): {' '.join(cmd)}\n    " + "\n    ".join(tail),
              file=sys.stderr)
    return result


# ---------------------------------------------------------------- tools

class Tool:
    name = ""
    daemon_pid: int | None = None

    def __init__(self, work: Path):
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)

    def import_cmd(self, tar: Path) -> list[str]:
        raise NotImplementedError

    def build_cmd(self, ctx: Path, tag: str, no_cache: bool) -> list[str]:
        raise NotImplementedError

    def stop(self) -> None:
        pass


class Pybuild(Tool):
    name = "pybuild"
    exe = str(Path(sys.executable).with_name("pybuild"))

    def __init__(self, work: Path):
        super().__init__(work)
        # An installed pybuild has its bytecode compiled (pip does it at install time).
        # With PYTHONDONTWRITEBYTECODE every run would compile ~50 modules first
        # (about 0.12 s); give it a bytecode cache of its own, outside the source
        # tree, which the import step warms.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(self.work / "pycache")

    def import_cmd(self, tar):
        return [self.exe, "--root", str(self.work / "store"), "import", str(tar), BASE]

    def build_cmd(self, ctx, tag, no_cache):
        return [self.exe, "--root", str(self.work / "store"), "build", "--network", "host",
                "--progress", "plain", *(["--no-cache"] if no_cache else []), "-t", tag,
                str(ctx)]


class Buildkit(Tool):
    """Docker's BuildKit, in dockerd. Debian's docker.io 20.10 client still builds with
    BuildKit without the buildx plugin (DOCKER_BUILDKIT=1); newer clients need buildx."""

    name = "buildkit"

    def __init__(self, work, docker_host: str | None, docker_cli: str):
        super().__init__(work)
        self.cli = docker_cli
        self.env["DOCKER_BUILDKIT"] = "1"
        self.daemon = None
        if docker_host:
            self.env["DOCKER_HOST"] = docker_host
            return
        self.log = open(self.work / "dockerd.log", "wb")  # noqa: SIM115 - closed in stop()
        sock = self.work / "docker.sock"
        self.daemon = subprocess.Popen(
            ["dockerd", "--iptables=false", "--bridge=none", f"--host=unix://{sock}",
             f"--data-root={self.work / 'data'}", f"--exec-root={self.work / 'exec'}",
             f"--pidfile={self.work / 'dockerd.pid'}"], stdout=self.log, stderr=self.log)
        self.daemon_pid = self.daemon.pid
        self.env["DOCKER_HOST"] = f"unix://{sock}"
        deadline = time.monotonic() + 60
        while subprocess.run([self.cli, "info"], env=self.env,
                             capture_output=True).returncode:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("dockerd did not start: see " + str(self.work / "dockerd.log"))
            time.sleep(0.5)

    def import_cmd(self, tar):
        return [self.cli, "import", str(tar), f"{BASE}:latest"]

    def build_cmd(self, ctx, tag, no_cache):
        return [self.cli, "build", "--network", "host", "--progress", "plain",
                *(["--no-cache"] if no_cache else []), "-t", tag, str(ctx)]

    def stop(self):
        if self.daemon is None:
            return
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(60)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()
        self.log.close()
        subprocess.run(["umount", "-R", str(self.work / "data")], capture_output=True)
        subprocess.run(["umount", "-R", str(self.work / "exec")], capture_output=True)
        self.daemon = None


class Buildah(Tool):
    """buildah bud --isolation chroot --layers; the base image goes in with podman import
    (buildah 1.28 has no import verb), into the same private containers-storage."""

    name = "buildah"

    def storage(self) -> list[str]:
        return ["--root", str(self.work / "root"), "--runroot", str(self.work / "run"),
                "--storage-driver", "overlay"]

    def import_cmd(self, tar):
        return ["podman", *self.storage(), "import", str(tar), f"localhost/{BASE}:latest"]

    def build_cmd(self, ctx, tag, no_cache):
        return ["buildah", *self.storage(), "bud", "--isolation", "chroot", "--layers",
                "--network", "host", *(["--no-cache"] if no_cache else []), "-t", tag,
                str(ctx)]

    def stop(self):
        subprocess.run(["umount", "-R", str(self.work / "root" / "overlay")],
                       capture_output=True)


# ---------------------------------------------------------------- main

def fmt_ratio(a: dict | None, b: dict | None, key: str) -> str:
    if not a or not b or not a.get("ok") or not b.get("ok") or not b.get(key):
        return "-"
    return f"{a[key] / b[key]:.2f}"


def table(results: dict) -> str:
    rows = [("case", "tool", "wall s", "client RSS MiB", "dockerd peak/growth MiB",
             "wall pb/x", "RSS pb/x")]
    for case, by_tool in results["builds"].items():
        pb = by_tool.get("pybuild")
        for tool, r in by_tool.items():
            daemon = (f"{r['daemon_peak_rss_mib']}/{r['daemon_rss_growth_mib']}"
                      if "daemon_peak_rss_mib" in r else "")
            wall = f"{r['wall_s']:.2f}" + ("" if r["ok"] else " FAILED")
            ratio_w = fmt_ratio(pb, r, "wall_s") if tool != "pybuild" else ""
            ratio_m = fmt_ratio(pb, r, "max_rss_mib") if tool != "pybuild" else ""
            rows.append((case, tool, wall, f"{r['max_rss_mib']:.1f}", daemon, ratio_w,
                         ratio_m))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdicts(results: dict) -> list[str]:
    out = []
    for case, by_tool in results["builds"].items():
        pb = by_tool.get("pybuild")
        others = [r for t, r in by_tool.items() if t != "pybuild" and r.get("ok")]
        if not pb or not pb.get("ok"):
            out.append(f"{case}: pybuild failed")
            continue
        if others:
            fastest = min(r["wall_s"] for r in others)
            out.append(f"{case}: wall {pb['wall_s']:.2f}s vs fastest other {fastest:.2f}s -> "
                       + ("MET" if pb["wall_s"] <= fastest else "MISSED")
                       + f"; peak RSS {pb['max_rss_mib']:.0f} MiB -> "
                       + ("MET" if pb["max_rss_mib"] < 200 else "MISSED") + " (< 200 MiB)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write JSON results here (default: stdout)")
    ap.add_argument("--no-network", action="store_true", help="skip the nginx case")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--base-tar", type=Path, default=DEFAULT_BASE)
    ap.add_argument("--docker-host", help="use this dockerd instead of starting one "
                    "(then the daemon's RSS is not measured)")
    ap.add_argument("--docker-cli", default="/usr/bin/docker" if Path("/usr/bin/docker")
                    .exists() else "docker", help="a docker client that builds with "
                    "BuildKit via DOCKER_BUILDKIT=1 (default: Debian's docker.io)")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"),
                    help="where the temporary stores go (default /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    if os.geteuid() != 0:
        raise SystemExit("bench_builds.py needs root")
    cases = [c for c in args.cases.split(",") if c and not (c == "nginx" and args.no_network)]
    names = [t for t in args.tools.split(",") if t]
    ensure_base(args.base_tar)

    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-", dir=args.workdir))
    ctxs = make_contexts(work)
    logs = work / "logs"
    logs.mkdir()
    results: dict = {"host": {"kernel": os.uname().release, "cpus": os.cpu_count(),
                              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                     "base_tar": str(args.base_tar), "workdir": str(work), "imports": {},
                     "builds": {}, "cached_first_builds": {}}
    tools: dict[str, Tool] = {}
    try:
        for name in names:
            if name == "pybuild":
                tools[name] = Pybuild(work)
            elif name == "buildkit":
                tools[name] = Buildkit(work, args.docker_host, args.docker_cli)
            elif name == "buildah":
                tools[name] = Buildah(work)
            else:
                raise SystemExit(f"unknown tool {name}")
        versions = {"pybuild": [Pybuild.exe, "--version"],
                    "buildkit": [args.docker_cli, "version", "--format",
                                 "client {{.Client.Version}}, dockerd {{.Server.Version}}"],
                    "buildah": ["buildah", "--version"]}
        results["versions"] = {
            n: subprocess.run(versions[n], env=t.env, capture_output=True, text=True)
            .stdout.strip() for n, t in tools.items()}

        for name, tool in tools.items():
            print(f"importing the base image into {name} ...", file=sys.stderr)
            results["imports"][name] = timed(tool.import_cmd(args.base_tar), tool.env,
                                             logs / f"import-{name}.log")
            if not results["imports"][name]["ok"]:
                raise SystemExit(f"{name}: importing the base image failed")

        for case in cases:
            results["builds"][case] = {}
            for name, tool in tools.items():
                tag = f"bench-{case}"
                if case == "cached":
                    print(f"{case}: first build with {name} ...", file=sys.stderr)
                    first = timed(tool.build_cmd(ctxs[case], tag, no_cache=True), tool.env,
                                  logs / f"{case}-first-{name}.log", tool.daemon_pid)
                    results["cached_first_builds"][name] = first
                    print(f"{case}: cached rebuild with {name} ({REBUILDS} times) ...",
                          file=sys.stderr)
                    # A rebuild takes a fraction of a second, so one sample is mostly
                    # noise on a shared machine: take the median run (max RSS of all).
                    runs = [timed(tool.build_cmd(ctxs[case], tag, no_cache=False), tool.env,
                                  logs / f"{case}-{name}-{i}.log", tool.daemon_pid)
                            for i in range(REBUILDS)]
                    r = dict(sorted(runs, key=lambda x: x["wall_s"])[REBUILDS // 2])
                    r["ok"] = all(x["ok"] for x in runs)
                    r["max_rss_mib"] = max(x["max_rss_mib"] for x in runs)
                    r["walls_s"] = [x["wall_s"] for x in runs]
                else:
                    print(f"{case}: cold build with {name} ...", file=sys.stderr)
                    r = timed(tool.build_cmd(ctxs[case], tag, no_cache=True), tool.env,
                              logs / f"{case}-{name}.log", tool.daemon_pid)
                results["builds"][case][name] = r
                print(f"  {r['wall_s']:.2f}s, {r['max_rss_mib']:.1f} MiB"
                      + ("" if r["ok"] else " FAILED"), file=sys.stderr)
    finally:
        for tool in tools.values():
            tool.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if results["cached_first_builds"]:
        results["builds"]["cached (first build)"] = results.pop("cached_first_builds")
        # Keep the cached rebuild last in the table.
        results["builds"]["cached"] = results["builds"].pop("cached")
    else:
        results.pop("cached_first_builds")
    results["builds"] = {"import": results.pop("imports"), **results["builds"]}
    results["verdicts"] = verdicts({"builds": {k: v for k, v in results["builds"].items()
                                               if k not in ("import", "cached (first build)")}})
    text = table(results)
    print(text, file=sys.stderr if not args.out else sys.stdout)
    for v in results["verdicts"]:
        print(v, file=sys.stderr if not args.out else sys.stdout)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    else:
        json.dump(results, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
