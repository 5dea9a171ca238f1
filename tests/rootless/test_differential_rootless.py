"""Every differential case (testdata/differential, compared with BuildKit by
tests/differential) gives the same image digest built rootless as built as root
(issue 18): the bases loaded from one archive saved by root, SOURCE_DATE_EPOCH fixing
every time, so the digest covers every layer byte and the whole config.  Docker
loads and runs a rootless image.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
from helpers import docker_run, run_cli
from nonroot import User

_spec = importlib.util.spec_from_file_location(
    "diffcommon", Path(__file__).parents[1] / "differential" / "diffcommon.py")
assert _spec and _spec.loader
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

CASES = sorted(p.parent.name for p in common.CASES.glob("*/Dockerfile"))
URL_PORT = 18765  # the differential_url_server fixture's (conftest.py)

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.slow]


@pytest.fixture(scope="module")
def root_store(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path,
               debian_tar: Path, user: User) -> Path:
    """Root's store, and the user's loaded from root's bases (same image IDs)."""
    root = tmp_path_factory.mktemp("root") / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    run_cli("import", str(debian_tar), common.DEBIAN, root=root)
    archive = user.home / "bases.tar"
    run_cli("save", "-o", str(archive), "busybox", common.DEBIAN, root=root)
    user.own(archive)
    loaded = user.run("load", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr.decode()
    return root


@pytest.mark.parametrize("case", CASES)
def test_case_gives_roots_image(case: str, user: User, root_store: Path,
                                request: pytest.FixtureRequest,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    if "error" in common.load_expected(case):
        pytest.skip("the case does not build (tests/differential says why)")
    if f"127.0.0.1:{URL_PORT}" in (common.CASES / case / "Dockerfile").read_text():
        request.getfixturevalue("differential_url_server")
    context = common.CASES / case
    args = ("build", "-q", "-t", f"diff-{case}", "-f", str(context / "Dockerfile"),
            str(context))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    as_root = run_cli(*args, root=root_store).stdout.decode().strip()
    rootless = user.run(*args)
    assert rootless.returncode == 0, rootless.stderr.decode()
    assert rootless.stdout.decode().strip() == as_root


@pytest.mark.docker
def test_docker_runs_a_rootless_image(user: User, root_store: Path,
                                      docker: dict[str, str]) -> None:
    ctx = user.home / "runme"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN mkdir /srv && echo ok > /srv/f && "
                                    "chown -R 1000:1000 /srv\nCMD [\"stat\", \"-c\", "
                                    "\"%u:%g %n\", \"/srv/f\"]\n")
    for path in (ctx, ctx / "Dockerfile"):
        user.own(path)
    archive = user.home / "runme.tar"
    for args in (("build", "-t", "runme:rootless", str(ctx)),
                 ("save", "-o", str(archive), "runme:rootless")):
        done = user.run(*args)
        assert done.returncode == 0, done.stderr.decode()
    try:
        subprocess.run(["docker", "load", "-i", str(archive)], env=docker, check=True,
                       capture_output=True)
        ran = docker_run(["--rm", "--network", "none", "runme:rootless"], docker)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "1000:1000 /srv/f"
    finally:
        subprocess.run(["docker", "rmi", "-f", "runme:rootless"], env=docker,
                       capture_output=True)
