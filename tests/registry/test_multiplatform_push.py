"""A build for two platforms pushed (issue 19, points 2 and 6): each manifest by digest,
its provenance attestation manifest, then the image index under the tag, which a
registry on 127.0.0.1 serves, skopeo reads raw and pybuild pulls by platform (never the
attestations' unknown/unknown); and ``docker load`` of one platform saved with
``save --platform``, run by Docker (arm64 through the machine's QEMU handler).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import docker_run, image_config, run_cli
from registry_server import skopeo, skopeo_args

pytestmark = [pytest.mark.root, pytest.mark.overlay]
DOCKERFILE = ("ARG TARGETARCH\nFROM bb-${TARGETARCH}\nARG TARGETPLATFORM\n"
              "RUN echo $TARGETPLATFORM $(uname -m) > /arch\n")


@pytest.fixture
def root(tmp_path: Path, two_arch_store: Path) -> Path:
    store = two_arch_store
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    return store


def test_push_puts_an_index_the_registry_serves_and_pull_selects(root: Path, tmp_path: Path,
                                                                 registry) -> None:  # type: ignore[no-untyped-def]
    name = f"{registry.host}/multi:1"
    run_cli("build", "-q", "--platform", "linux/amd64,linux/arm64", "-t", name, "--push",
            str(tmp_path / "ctx"), root=root)
    raw = skopeo(registry, "inspect", "--raw", *skopeo_args(registry), f"docker://{name}")
    assert raw.returncode == 0, raw.stderr
    index = json.loads(raw.stdout)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux"},
        {"architecture": "unknown", "os": "unknown"}, {"architecture": "unknown", "os": "unknown"}]
    assert [m.get("annotations", {}).get("vnd.docker.reference.digest")
            for m in index["manifests"][2:]] == [m["digest"] for m in index["manifests"][:2]]
    for entry in index["manifests"]:  # each manifest (attestations too) is served by digest
        one = skopeo(registry, "inspect", "--raw", *skopeo_args(registry),
                     f"docker://{registry.host}/multi@{entry['digest']}")
        assert one.returncode == 0 and json.loads(one.stdout)["layers"], one.stderr
    other = tmp_path / "other"
    run_cli("pull", "--platform", "linux/arm64", name, root=other)
    assert image_config(other, name)["architecture"] == "arm64"


def test_docker_loads_and_runs_one_saved_platform(root: Path, tmp_path: Path,
                                                  docker: dict[str, str]) -> None:
    run_cli("build", "-q", "--platform", "linux/amd64,linux/arm64", "-t", "pb-multi:1",
            str(tmp_path / "ctx"), root=root)
    saved = tmp_path / "arm64.tar"
    run_cli("save", "--platform", "linux/arm64", "-o", str(saved), "pb-multi:1", root=root)
    loaded = subprocess.run(["docker", "load", "-i", str(saved)], env=docker,
                            capture_output=True, text=True)
    assert loaded.returncode == 0 and "pb-multi:1" in loaded.stdout, loaded.stderr
    try:
        arch = subprocess.run(["docker", "image", "inspect", "-f", "{{.Architecture}}",
                               "pb-multi:1"], env=docker, capture_output=True, text=True,
                              check=True).stdout
        assert arch == "arm64\n"
        ran = docker_run(["--rm", "pb-multi:1", "cat", "/arch"], docker)
        assert ran.stdout == "linux/arm64 aarch64\n", ran.stderr
    finally:
        subprocess.run(["docker", "rmi", "-f", "pb-multi:1"], env=docker, capture_output=True)


def test_tag_and_push_take_every_platform(root: Path, tmp_path: Path,
                                          registry) -> None:  # type: ignore[no-untyped-def]
    """``tag`` of a name built for several platforms names them all (docker tag with the
    containerd store); ``push NAME`` pushes the index, as ``build --push`` does."""
    run_cli("build", "-q", "--platform", "linux/amd64,linux/arm64", "-t", "multi",
            str(tmp_path / "ctx"), root=root)
    run_cli("tag", "multi", "again", root=root)
    doc = json.loads(run_cli("inspect", "again", root=root).stdout)[0]
    assert [m["Platform"] for m in doc["Index"]] == ["linux/amd64", "linux/arm64"]
    target = f"{registry.host}/again:1"
    run_cli("push", "again", target, root=root)
    raw = skopeo(registry, "inspect", "--raw", *skopeo_args(registry), f"docker://{target}")
    assert [m["platform"]["architecture"] for m in json.loads(raw.stdout)["manifests"]] == \
        ["amd64", "arm64"], raw.stderr  # no provenance was kept under "again"
