"""Differential tests: pybuild against what Docker's BuildKit recorded for each case.

Each testdata/differential/<case>/ holds a Dockerfile, its context and expected.json
(written by tests/differential/record.py from `docker export` + `docker save`).  Here
the case is built with pybuild, saved, its layers applied in order into a directory,
and both sides are described by the same code (diffcommon.py).

Not compared: mtimes; paths Docker adds on export (.dockerenv, /etc/hostname,
/etc/hosts, /etc/resolv.conf, /etc/mtab, and /dev, /proc, /sys with their contents).
History is compared with pybuild's one deliberate deviation applied: a step that
changes nothing makes no layer and is recorded ``empty_layer: true``.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

_spec = importlib.util.spec_from_file_location(
    "diffcommon", Path(__file__).with_name("diffcommon.py"))
assert _spec and _spec.loader
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

CASES = sorted(p.parent.name for p in common.CASES.glob("*/Dockerfile"))
URL_PORT = 18765

# Cases pybuild is known to get wrong, with the reason (strict: they fail once fixed).
XFAIL: dict[str, str] = {}

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.slow]


@pytest.fixture(scope="module")
def url_server():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(common.CASES / "add_url"))

    class Quiet(http.server.ThreadingHTTPServer):
        pass

    handler_cls: Any = handler
    try:
        server = Quiet(("127.0.0.1", URL_PORT), handler_cls)
    except OSError as err:
        pytest.skip(f"port {URL_PORT} for add_url is taken: {err}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def diff_store(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Path:
    root = tmp_path_factory.mktemp("diffstore") / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    return root


def _history(expected: dict[str, Any], actual: dict[str, Any]) -> list[dict[str, Any]]:
    """BuildKit's history with pybuild's no-empty-layer rule applied: a step that
    BuildKit gave a layer may be empty in pybuild only if pybuild says so."""
    result = []
    for want, got in zip(expected["history"], actual["history"], strict=False):
        want = dict(want)
        if got["empty_layer"] and not want["empty_layer"] and \
                want["created_by"].split(" ", 1)[0] in ("RUN", "WORKDIR", "COPY", "ADD",
                                                          "|1", "|2", "|3", "/bin/sh"):
            want["empty_layer"] = True
        result.append(want)
    return result + expected["history"][len(result):]


def _apply_override(case: str, expected: dict[str, Any]) -> None:
    """<case>/override.json corrects a recording where the recording BuildKit is older
    than the behaviour pybuild follows; each says why."""
    path = common.CASES / case / "override.json"
    if not path.exists():
        return
    override = json.loads(path.read_text())
    assert override.get("reason"), f"{path}: an override must say why"
    for name, entry in override.get("files", {}).items():
        if entry is None:
            expected["files"].pop(name, None)
        else:
            expected["files"][name] = entry


def _recorder_quirks(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Forgive what the recording BuildKit (v0.8, inside Debian's dockerd 20.10) does
    differently from current BuildKit, which pybuild follows."""
    for entry in actual["history"]:
        # v0.8 left --chown/--chmod out of a COPY's history; current BuildKit keeps them.
        words = entry["created_by"].split(" ")
        if words[0] in ("COPY", "ADD"):
            entry["created_by"] = " ".join(
                w for w in words if not w.startswith(("--chown=", "--chmod=")))
    # v0.8 printed HEALTHCHECK and EXPOSE with Go's %v of other types than today.
    for got, want in zip(actual["history"], expected["history"], strict=False):
        word = got["created_by"].split(" ", 1)[0]
        if word in ("HEALTHCHECK", "EXPOSE") and want["created_by"].startswith(word):
            got["created_by"] = want["created_by"]
    # v0.8 set WorkingDir "/" on an image without one when it ran COPY; current
    # BuildKit leaves it unset.
    if expected.get("WorkingDir") == "/" and actual.get("WorkingDir") is None:
        actual["WorkingDir"] = "/"


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=XFAIL[c])) if c in XFAIL
    else c for c in CASES])
def test_case_matches_buildkit(case: str, diff_store: Path, tmp_path: Path,
                               url_server: None) -> None:
    expected = common.load_expected(case)
    _apply_override(case, expected)
    if "error" in expected:  # too new for the recorder, and not checked by hand
        pytest.skip(f"the recording BuildKit could not build it: {expected['error']}")
    context = common.CASES / case
    tag = f"diff-{case}"
    run_cli("-t", tag, "-f", str(context / "Dockerfile"), str(context), root=diff_store)
    archive = tmp_path / "image.tar"
    run_cli("save", "-o", str(archive), tag, root=diff_store)
    rootfs = tmp_path / "rootfs"
    config = common.describe_config(common.read_saved(archive, rootfs))
    files = common.describe_tree(rootfs)
    # The base image came from `docker import` there and `pybuild import` here: the two
    # importers word their history entry differently.
    for entry in config["history"]:
        if entry["created_by"] == "pybuild import":
            entry["created_by"] = ""
    _recorder_quirks(config, expected["config"])
    want_config = dict(expected["config"])
    want_config["history"] = _history(want_config, config)
    empty = sum(1 for h in want_config["history"] if h["empty_layer"]) - sum(
        1 for h in expected["config"]["history"] if h["empty_layer"])
    expected["files"] = {k: v for k, v in expected["files"].items() if not common.ignored(k)}
    want_config["layers"] -= empty
    assert config == want_config
    differing = {path: (files.get(path), expected["files"].get(path))
                 for path in sorted(set(files) | set(expected["files"]))
                 if files.get(path) != expected["files"].get(path)}
    assert differing == {}, "(pybuild, buildkit) per path"
