"""Issue 18: pybuild rootless against pybuild as root and rootless buildah, same run.

    python benchmarks/bench_rootless.py --pybuild /root-venv/bin/pybuild --user NAME
        --user-pybuild ~NAME/venv/bin/pybuild [--rounds 5] [--cold-rounds 5] [--out F.json]

As root (it runs the rootless tools as the user through ``setpriv``).  NAME is an ordinary user
with subordinate ids (Debian's useradd gives them) and its own ``pip install .`` of
pybuild, with the same interpreter as the root venv's, for a fair comparison:

    useradd -m pbbench
    git -C CHECKOUT archive --prefix=src/ HEAD | runuser -u pbbench -- tar -x -C ~pbbench
    runuser -u pbbench -- /usr/bin/python3 -m venv ~pbbench/venv
    runuser -u pbbench -- ~pbbench/venv/bin/pip install ~pbbench/src
    /usr/bin/python3 -m venv /var/tmp/venv-root && /var/tmp/venv-root/bin/pip install CHECKOUT

Tools: ``pybuild`` (root, a private store), ``pybuild-rootless`` (the user's default
store, ~/.local/share/pybuild, emptied first), ``buildah-rootless`` (buildah bud
--isolation chroot --layers as the user, its own containers-storage with the overlay
driver, the base imported with podman).  Everything as users run it: bytecode
cached, PYTHONDONTWRITEBYTECODE unset.  Cases, on the Debian minbase as bench-base:

  cold    bench_builds.py's 20-instruction Dockerfile (COPY of 510 files, six RUN
          steps, useradd) with --no-cache
  cold-files  bench_builds.py's RUN writing 100,000 small files, --no-cache
  cached  the 20-instruction build fully cached (a rebuild users repeat in CI)

Prints the medians, each rootless tool's ratio to pybuild as root, and the targets
(pybuild rootless within 10% of root), and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_workloads as wl
from bench_builds import BASE, DEFAULT_BASE, Tool, ensure_base, make_contexts

TARGET = 1.10  # pybuild rootless / pybuild as root, at most


class AsUser(Tool):
    """A tool run as ``user``, with a user's plain environment."""

    def __init__(self, work: Path, name: str, user: str):
        self.name = name
        super().__init__(work)
        entry = pwd.getpwnam(user)
        self.home = Path(entry.pw_dir)
        shutil.chown(self.work, entry.pw_uid, entry.pw_gid)
        # setpriv, not runuser: a CI job's user is logged in already, so a PAM session
        # per build (~30 ms) would be the benchmark's, not the tool's.
        self.prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                       "--init-groups", "env", "-i", f"HOME={self.home}",
                       "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]


class RootlessPybuild(AsUser):
    def __init__(self, work: Path, user: str, exe: str):
        super().__init__(work, "pybuild-rootless", user)
        self.exe = exe
        shutil.rmtree(self.home / ".local" / "share" / "pybuild", ignore_errors=True)

    def import_cmd(self, tar: Path) -> list[str]:
        return [*self.prefix, self.exe, "import", str(tar), BASE]

    def build_cmd(self, ctx: Path, tag: str, no_cache: bool) -> list[str]:
        return [*self.prefix, self.exe, "build", "--network", "host", "--progress", "plain",
                *(["--no-cache"] if no_cache else []), "-t", tag, str(ctx)]


class RootlessBuildah(AsUser):
    def __init__(self, work: Path, user: str):
        super().__init__(work, "buildah-rootless", user)

    def storage(self) -> list[str]:
        # Rootless podman takes a run root of at most 50 characters.
        return ["--root", str(self.work / "root"), "--runroot", f"/tmp/rlrun-{os.getpid()}",
                "--storage-driver", "overlay"]

    def import_cmd(self, tar: Path) -> list[str]:
        return [*self.prefix, "podman", *self.storage(), "import", str(tar),
                f"localhost/{BASE}:latest"]

    def build_cmd(self, ctx: Path, tag: str, no_cache: bool) -> list[str]:
        return [*self.prefix, "buildah", *self.storage(), "bud", "--isolation", "chroot",
                "--layers", "--network", "host", *(["--no-cache"] if no_cache else []),
                "-t", tag, str(ctx)]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pybuild", required=True, help="root's pybuild (a pip install . venv)")
    ap.add_argument("--user", required=True, help="the user the rootless tools run as")
    ap.add_argument("--user-pybuild", required=True, help="that user's pybuild executable")
    ap.add_argument("--rounds", type=int, default=5, help="timed cached rebuilds (median)")
    ap.add_argument("--cold-rounds", type=int, default=5, help="timed cold builds (median)")
    ap.add_argument("--no-buildah", action="store_true")
    ap.add_argument("--cases", default="cold,cold-files,cached",
                    help="from cold, cold-files, cached")
    ap.add_argument("--base-tar", type=Path, default=DEFAULT_BASE)
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    ap.add_argument("--out", type=Path)
    return ap.parse_args()


def run(tools: dict[str, Tool], args: argparse.Namespace, work: Path) -> dict:
    logs = work / "logs"
    logs.mkdir()
    contexts = make_contexts(work / "contexts")
    ctx, files = contexts["cached"], contexts["small"]
    for name, tool in tools.items():
        print(f"importing the base into {name} ...", file=sys.stderr)
        done = wl.measure(tool, tool.import_cmd(args.base_tar), logs / f"import-{name}.log")
        if not done["ok"]:
            raise SystemExit(f"{name}: import failed: see {done['log']}")
    commands: dict[str, tuple[int, wl.CommandFor, wl.CommandFor | None]] = {
        "cold": (args.cold_rounds,
                 lambda t, i: wl.build_cmd(t, ctx, "rl-cold", no_cache=True), None),
        "cold-files": (args.cold_rounds,
                       lambda t, i: wl.build_cmd(t, files, "rl-files", no_cache=True), None),
        "cached": (args.rounds, lambda t, i: wl.build_cmd(t, ctx, "rl-cached"),
                   lambda t, i: wl.build_cmd(t, ctx, "rl-cached", no_cache=True)),
    }
    cases = {name: wl.rounds_of(tools, name, logs, rounds, command, first_for=first)
             for name, (rounds, command, first) in commands.items()
             if name in args.cases.split(",")}
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kernel": os.uname().release, "cases": cases}


def report(results: dict) -> str:
    lines = ["| workload | pybuild (root) | pybuild rootless | buildah rootless | "
             "rootless / root | pybuild rootless / buildah rootless | within 10% |",
             "|---|---|---|---|---|---|---|"]
    for case, found in results["cases"].items():
        root, mine, theirs = (found.get(t) for t in ("pybuild", "pybuild-rootless",
                                                     "buildah-rootless"))
        own = wl.ratio(mine, root)
        cell = [f"{r['median_s']:.3f} s" if r and r.get("ok") else "-"
                for r in (root, mine, theirs)]
        lines.append(f"| {case} | {' | '.join(cell)} | {own or '-'} | "
                     f"{wl.ratio(mine, theirs) or '-'} | "
                     f"{'yes' if own is not None and own <= TARGET else 'no'} |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_rootless.py needs root (it runs the user's tools with setpriv)")
    ensure_base(args.base_tar)
    work = Path(tempfile.mkdtemp(prefix="pybuild-rootless-", dir=args.workdir))
    work.chmod(0o755)  # the user reads the contexts
    tools: dict[str, Tool] = {}
    try:
        tools["pybuild"] = wl.UserPybuild(work, args.pybuild)
        tools["pybuild-rootless"] = RootlessPybuild(work, args.user, args.user_pybuild)
        if not args.no_buildah:
            tools["buildah-rootless"] = RootlessBuildah(work, args.user)
        for tool in tools.values():
            tool.env.pop("PYTHONDONTWRITEBYTECODE", None)
        results = run(tools, args, work)
    finally:
        for tool in tools.values():
            tool.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(report(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
