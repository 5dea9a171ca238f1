"""Differential tests: pybuild against what Docker's BuildKit recorded for each case.

Each testdata/differential/<case>/ holds a Dockerfile, its context and expected.json
(written by tests/differential/record.py from `docker export` + `docker save`).  Here
the case is built with pybuild, saved, its layers applied in order into a directory,
and both sides are described by the same code (diffcommon.py).

Cases built on the Debian base (testdata/debian-rootfs.sh, imported as debian:bookworm
on both sides) record their rootfs as its difference from the base ("files_relative_to").
Not compared: mtimes; paths Docker adds on export (.dockerenv, /etc/hostname,
/etc/hosts, /etc/resolv.conf, /etc/mtab, and /dev, /proc, /sys with their contents).
History (created_by, empty_layer) and the layer count are compared strictly: a
RUN, COPY, ADD or WORKDIR (but ``WORKDIR /``) step that changes nothing has a
layer, the empty one, in both (tests/engine/test_empty_layers.py).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections.abc import Iterator
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
URL_PORT = 18765  # the differential_url_server fixture's (conftest.py)

# Cases pybuild is known to get wrong, with the reason (strict: they fail once fixed).
XFAIL: dict[str, str] = {}

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.slow]


@pytest.fixture(scope="module")
def diff_store(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Path:
    root = tmp_path_factory.mktemp("diffstore") / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    return root


def _scratch() -> Path:
    """A directory on tmpfs where there is one: unpacking the Debian base there takes
    a tenth of the time it takes on this machine's disk."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="pybuild-diff-", dir=shm if shm.is_dir() else None))


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = _scratch()
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def debian_files(diff_store: Path, debian_tar: Path) -> dict[str, Any]:
    """Import the Debian base for the cases that use it; describe its rootfs."""
    run_cli("import", str(debian_tar), common.DEBIAN, root=diff_store)
    work = _scratch()
    try:
        return common.describe_base(debian_tar, work / "rootfs")
    finally:
        shutil.rmtree(work)


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
    # History entries that current BuildKit words differently, by index.
    for index, created_by in override.get("history", {}).items():
        expected["config"]["history"][int(index)]["created_by"] = created_by


def _recorder_quirks(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Forgive what the recording BuildKit (v0.8, inside Debian's dockerd 20.10) does
    differently from current BuildKit, which pybuild follows."""
    # Only where the expectation is still v0.8's wording: an override.json "history"
    # entry in current BuildKit's wording is compared as it is.
    for got, want in zip(actual["history"], expected["history"], strict=False):
        # v0.8 left --chown/--chmod out of a COPY's history; current BuildKit keeps them.
        words = got["created_by"].split(" ")
        if words[0] in ("COPY", "ADD") and "--chown=" not in want["created_by"] \
                and "--chmod=" not in want["created_by"]:
            got["created_by"] = " ".join(
                w for w in words if not w.startswith(("--chown=", "--chmod=")))
        # v0.8 printed HEALTHCHECK and EXPOSE with Go's %v of other types than today.
        if words[0] in ("HEALTHCHECK", "EXPOSE") and \
                want["created_by"].startswith(("HEALTHCHECK &{", "EXPOSE map[")):
            got["created_by"] = want["created_by"]
    # v0.8 set WorkingDir "/" on an image without one when it ran COPY; current
    # BuildKit leaves it unset.
    if expected.get("WorkingDir") == "/" and actual.get("WorkingDir") is None:
        actual["WorkingDir"] = "/"


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=XFAIL[c])) if c in XFAIL
    else c for c in CASES])
def test_case_matches_buildkit(case: str, diff_store: Path, scratch: Path,
                               request: pytest.FixtureRequest) -> None:
    if f"127.0.0.1:{URL_PORT}" in (common.CASES / case / "Dockerfile").read_text():
        # Only the cases that ADD from it hold the fixed port: the other cases run on
        # any pytest-xdist worker, whether or not --dist loadgroup keeps them together.
        request.getfixturevalue("differential_url_server")
    expected = common.load_expected(case)
    base = request.getfixturevalue("debian_files") if common.needs_debian(case) else None
    _apply_override(case, expected)
    if "error" in expected:  # too new for the recorder, and not checked by hand
        pytest.skip(f"the recording BuildKit could not build it: {expected['error']}")
    context = common.CASES / case
    tag = f"diff-{case}"
    run_cli("-t", tag, "-f", str(context / "Dockerfile"), str(context), root=diff_store)
    archive = scratch / "image.tar"
    run_cli("save", "-o", str(archive), tag, root=diff_store)
    rootfs = scratch / "rootfs"
    config = common.describe_config(common.read_saved(archive, rootfs))
    files = common.describe_tree(rootfs)
    if expected.get("files_relative_to"):
        files = common.relative_to(files, base or {})
    # The base image came from `docker import` there and `pybuild import` here: the two
    # importers word their history entry differently.
    for entry in config["history"]:
        if entry["created_by"] == "pybuild import":
            entry["created_by"] = ""
    _recorder_quirks(config, expected["config"])
    want_config = dict(expected["config"])
    expected["files"] = {k: v for k, v in expected["files"].items() if not common.ignored(k)}
    assert config == want_config
    differing = {path: (files.get(path), expected["files"].get(path))
                 for path in sorted(set(files) | set(expected["files"]))
                 if files.get(path) != expected["files"].get(path)}
    assert differing == {}, "(pybuild, buildkit) per path"
