"""Outputs and archives: save/load round trips, -o local/tar, hostile archives refused."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from helpers import REPO, run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]


@pytest.fixture
def built(tmp_path: Path, busybox_tar: Path) -> tuple[Path, str]:
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    image_id = run_cli("-q", "-t", "demo", "-f", "Containerfile.example",
                       "-o", f"type=local,dest={tmp_path / 'rootfs'}",
                       "-o", f"type=tar,dest={tmp_path / 'rootfs.tar'}",
                       "-o", f"type=oci,dest={tmp_path / 'layout'},tar=false",
                       ".", root=root, cwd=REPO).stdout.decode().strip()
    return root, image_id


def test_local_and_tar_outputs_hold_the_merged_filesystem(built, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    assert (rootfs / "app" / "greeting.txt").read_text() == "hello from a pybuild RUN step\n"
    assert not (rootfs / "etc" / "hostname").exists()  # whited out in a later layer
    assert (rootfs / "app").stat().st_uid == 0
    with tarfile.open(tmp_path / "rootfs.tar") as archive:
        names = archive.getnames()
    assert "./app/greeting.txt" in names and "./etc/hostname" not in names
    assert not any(".wh." in name for name in names)
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == \
        "docker.io/library/demo:latest"


def test_save_then_load_into_a_fresh_store_keeps_the_image_id(built, tmp_path: Path) -> None:
    root, image_id = built
    archive = tmp_path / "demo.tar"
    run_cli("save", "-o", str(archive), "demo", root=root)
    fresh = tmp_path / "fresh"
    out = run_cli("load", "-i", str(archive), root=fresh).stdout.decode()
    assert out == "Loaded image: demo:latest\n"
    inspect = json.loads(run_cli("inspect", "demo", root=fresh).stdout)
    assert inspect[0]["Id"] == image_id
    # The loaded image is a base like any other, and saves to the same bytes.
    again = tmp_path / "again.tar"
    run_cli("save", "-o", str(again), "demo", root=fresh)
    assert again.read_bytes() == archive.read_bytes()


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("members, message", [
    ({"manifest.json": b'[{"Config":"../../etc/passwd","Layers":[]}]'}, b"refusing member"),
    ({"manifest.json": b"not json"}, b"not valid JSON"),
    ({"index.json": b'{"manifests":[{"digest":"sha256:../../x"}]}'}, b"invalid digest"),
    ({"other": b""}, b"neither an OCI layout"),
])
def test_hostile_or_broken_archives_are_refused_cleanly(tmp_path: Path, members, message) -> None:
    archive = tmp_path / "bad.tar"
    archive.write_bytes(_tar(members))
    root = tmp_path / "store"
    result = run_cli("load", "-i", str(archive), root=root, check=False)
    assert result.returncode == 1
    assert message in result.stderr and b"Traceback" not in result.stderr
    assert run_cli("images", "-q", root=root).stdout == b""


def test_layer_with_wrong_digest_is_refused(built, tmp_path: Path) -> None:
    root, _ = built
    archive = tmp_path / "demo.tar"
    run_cli("save", "-o", str(archive), "demo", root=root)
    with tarfile.open(archive) as original:
        members = {m.name: original.extractfile(m).read() for m in original.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members["manifest.json"])[0]
    members[manifest["Layers"][-1]] = _tar({"evil": b"x"})
    tampered = tmp_path / "tampered.tar"
    tampered.write_bytes(_tar(members))
    fresh = tmp_path / "fresh"
    result = run_cli("load", "-i", str(tampered), root=fresh, check=False)
    assert result.returncode == 1 and b"expected sha256:" in result.stderr
    assert run_cli("images", "-q", root=fresh).stdout == b""
