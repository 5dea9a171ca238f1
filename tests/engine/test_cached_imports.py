"""The cached path's import budget (issue 17 point 1): a fully cached rebuild imports
nothing from the run, commit or export machinery, and creates no dataclass.

A guard, not a timing: it lists the modules the rebuild process loaded.  A module on
the forbidden list that a cached rebuild imports makes every CI rebuild pay for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]

# Every instruction kind a cached rebuild dispatches: layer steps (RUN, COPY, ADD,
# WORKDIR) and config-only ones.
DOCKERFILE = """\
FROM busybox AS base
ARG FLAVOR=plain
ENV APP_HOME=/app LANG=C.UTF-8
LABEL org.opencontainers.image.title=guard
WORKDIR /app
COPY src/ /app/src/
ADD conf.txt /app/conf.txt
RUN --mount=type=cache,target=/cache echo "$FLAVOR" > /app/flavor
RUN --mount=type=bind,source=src,target=/src cat /src/a.txt > /app/a.copy
USER 1000
EXPOSE 8080
VOLUME /data
HEALTHCHECK CMD true
STOPSIGNAL SIGTERM
SHELL ["/bin/sh", "-c"]
ENTRYPOINT ["/bin/sh"]
CMD ["-c", "cat /app/flavor"]

FROM busybox
COPY --from=base /app/flavor /flavor
"""

# The machinery a hit never needs: namespaces and sandboxes, snapshots, layer
# diffing/writing/extraction, image export and import, the store's export views,
# cache transfer, file copying.
FORBIDDEN_PACKAGES = ("builder.snapshot",)
FORBIDDEN = {
    *(f"builder.run.{m}" for m in ("child", "ctxmount", "mountpoints", "network", "nschild",
                                   "rootfs", "sandbox", "users")),
    *(f"builder.layers.{m}" for m in ("apply", "blob", "changes", "compress", "diff",
                                      "empty", "safeout", "safepath", "sha256_sink",
                                      "tar_read", "tar_write", "whiteout")),
    *(f"builder.image.{m}" for m in ("archive", "importer", "load_stdin", "loader")),
    *(f"builder.store.{m}" for m in ("exportview", "ingest", "gc", "remove", "doctor")),
    *(f"builder.engine.{m}" for m in ("copy", "add_url", "localtree")),
    "builder.cache.transfer", "builder.cache.difference",
    "tarfile", "zstandard", "gzip", "dataclasses", "lark",
    # Standard modules only a miss, a git source or an export needs (each 1-4 ms).
    "subprocess", "tempfile", "shutil", "csv", "ctypes", "pickle",
}

_PROBE = """\
import json, sys
from builder.cli import main
status = main(sys.argv[2:])
json.dump({"status": status, "modules": sorted(sys.modules)}, open(sys.argv[1], "w"))
"""


def test_a_cached_rebuild_imports_no_run_commit_or_export_machinery(
        tmp_path: Path, busybox_tar: Path) -> None:
    root, context = tmp_path / "store", tmp_path / "ctx"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    (context / "src").mkdir(parents=True)
    (context / "src" / "a.txt").write_text("a\n")
    (context / "conf.txt").write_text("conf\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    run_cli("build", "-q", "-t", "app", str(context), root=root)

    out = tmp_path / "modules.json"
    subprocess.run([sys.executable, "-c", _PROBE, str(out), "--root", str(root), "build",
                    "-q", "-t", "app", str(context)], check=True, capture_output=True)
    seen = json.loads(out.read_text())
    assert seen["status"] == 0
    modules = set(seen["modules"])
    loaded = sorted(m for m in modules
                    if m in FORBIDDEN or m.startswith(FORBIDDEN_PACKAGES))
    assert not loaded, f"a cached rebuild imported {loaded}"
    # The probe sees a real rebuild: the parser and the cache lookup ran.
    assert {"builder.dockerfile.parser", "builder.cache.keys"} <= modules


def test_the_guard_sees_a_miss_import_the_machinery(tmp_path: Path, busybox_tar: Path) -> None:
    """The same probe on a build that runs a step lists the sandbox: the guard can fail."""
    root, context = tmp_path / "store", tmp_path / "ctx"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo miss > /miss\n")
    out = tmp_path / "modules.json"
    subprocess.run([sys.executable, "-c", _PROBE, str(out), "--root", str(root), "build",
                    "-q", "-t", "app", str(context)], check=True, capture_output=True)
    modules = set(json.loads(out.read_text())["modules"])
    assert {"builder.run.sandbox", "builder.layers.tar_write"} & modules
    assert any(m.startswith(FORBIDDEN_PACKAGES) for m in modules)
