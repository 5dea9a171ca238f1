"""pybuild's images in the tools people use: docker load/run, skopeo, umoci."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers import REPO, docker_run, run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_archive(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Path:
    root = tmp_path_factory.mktemp("store")
    run_cli("import", str(busybox_tar), "busybox", root=root)
    run_cli("-t", "pybuild-interop-demo:1", "-f", "Containerfile.example", ".", root=root,
            cwd=REPO)
    archive = root.parent / "demo.tar"
    run_cli("save", "-o", str(archive), "pybuild-interop-demo:1", root=root)
    return archive


def test_docker_loads_and_runs_the_image(docker: dict[str, str], demo_archive: Path) -> None:
    loaded = subprocess.run(["docker", "load", "-i", str(demo_archive)], env=docker,
                            capture_output=True, text=True, check=True)
    assert "pybuild-interop-demo:1" in loaded.stdout
    try:
        run = docker_run(["--rm", "pybuild-interop-demo:1"], docker)
        assert run.returncode == 0, run.stderr
        assert run.stdout == "hello from a pybuild RUN step\n"
        script = "id -u; test -e /etc/hostname.wh || echo ok; cat /etc/passwd | tail -1"
        probe = docker_run(["--rm", "pybuild-interop-demo:1", "sh", "-c", script], docker)
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.split("\n")[:3] == ["1000", "ok", "app:x:1000:1000:app:/app:/bin/false"]
        history = subprocess.run(["docker", "history", "--no-trunc", "--format",
                                  "{{.CreatedBy}}", "pybuild-interop-demo:1"], env=docker,
                                 capture_output=True, text=True, check=True).stdout
        assert "COPY example/ ./ # buildkit" in history
    finally:
        subprocess.run(["docker", "rmi", "-f", "pybuild-interop-demo:1"], env=docker,
                       capture_output=True)


def test_skopeo_reads_the_oci_archive(demo_archive: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed (apt-get install skopeo)")
    out = subprocess.run(["skopeo", "inspect", f"oci-archive:{demo_archive}"],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert info["Architecture"] == "amd64" and len(info["Layers"]) == 5
    assert info["Labels"] == {"org.opencontainers.image.title": "pybuild example"}


def test_umoci_unpacks_the_oci_layout(demo_archive: Path, tmp_path: Path) -> None:
    if shutil.which("umoci") is None:
        pytest.fail("umoci is not installed (apt-get install umoci)")
    layout = tmp_path / "layout"
    with tarfile.open(demo_archive) as archive:
        archive.extractall(layout, filter="data")
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:1", str(tmp_path / "bundle")],
                   check=True, capture_output=True)
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "app" / "greeting.txt").read_text() == "hello from a pybuild RUN step\n"
    assert not (rootfs / "etc" / "hostname").exists()
    assert (rootfs / "bin" / "busybox").exists()
