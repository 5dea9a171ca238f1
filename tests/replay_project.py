"""The replay tests' project (``builder.replay``): a context over an imported busybox,
built through a probe that says whether the run was replayed.  A replay never imports
``builder.cli``; a build, even a fully cached one, always does.

Not a conftest.py: a second conftest module would shadow the suite's (see
tests/snapshot/snapshot_steps.py).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from helpers import run_cli

_PROBE = """\
import json, sys
from builder.entry import main
status = main(sys.argv[2:])
sys.stdout.flush(); sys.stderr.flush()
json.dump({"status": status, "replayed": "builder.cli" not in sys.modules},
          open(sys.argv[1], "w"))
raise SystemExit(status)
"""


class Project:
    def __init__(self, tmp_path: Path, busybox_tar: Path, dockerfile: str) -> None:
        self.tmp, self.root, self.context = tmp_path, tmp_path / "store", tmp_path / "ctx"
        run_cli("import", str(busybox_tar), "busybox", root=self.root)
        self.context.mkdir()
        (self.context / "Dockerfile").write_text(dockerfile)

    def argv(self, *extra: str, progress: str = "plain") -> list[str]:
        return ["--root", str(self.root), "build", "--progress", progress, "-t", "app",
                *extra, str(self.context)]

    def probe(self, *extra: str, progress: str = "plain", env: dict[str, str] | None = None,
              **popen: object) -> tuple[dict[str, object], subprocess.CompletedProcess[bytes]]:
        """(what the probe saw, the process); the probe is {} if it never got to say."""
        out = self.tmp / "probe.json"
        out.unlink(missing_ok=True)
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        result = subprocess.run([sys.executable, "-c", _PROBE, str(out),
                                 *self.argv(*extra, progress=progress)],
                                env=env, **popen)  # type: ignore[call-overload]
        probe = json.loads(out.read_text()) if out.exists() else {}
        return probe, result

    def build(self, *extra: str, env: dict[str, str] | None = None
              ) -> tuple[bool, subprocess.CompletedProcess[bytes]]:
        """(replayed?, the process) of a build that must succeed."""
        probe, result = self.probe(*extra, env=env)
        assert result.returncode == 0, result.stderr.decode()
        return bool(probe["replayed"]), result

    def cached(self, *extra: str, progress: str = "plain",
               env: dict[str, str] | None = None, recorded: bool = True
               ) -> subprocess.CompletedProcess[bytes] | None:
        """Build until the build is recorded (the first fully cached build); that normal
        build.  ``recorded=False``: never recording such a build is a fix too."""
        for _ in range(3):
            probe, result = self.probe(*extra, progress=progress, env=env)
            assert result.returncode == 0, result.stderr.decode()
            assert not probe["replayed"]
            if self.records(valid=True):
                return result
        assert not recorded, "never recorded"
        return None

    def records(self, valid: bool = False) -> int:
        """How many records the store keeps (``valid``: at its current generation)."""
        query = "SELECT count(*) FROM replays" + (
            " r JOIN store_generation g ON r.generation = g.n" if valid else "")
        with sqlite3.connect(self.root / "pybuild.db") as db:
            return int(db.execute(query).fetchone()[0])

    def reference(self, *extra: str) -> subprocess.CompletedProcess[bytes]:
        """The normal path's build (builder.cli, never a replay)."""
        return subprocess.run([sys.executable, "-c",
                               "import sys; from builder.cli import main; "
                               "raise SystemExit(main(sys.argv[1:]))", *self.argv(*extra)],
                              capture_output=True)

    def db_state(self) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.root.glob("pybuild.db*"))}
