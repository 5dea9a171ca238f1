"""Corruption and leftovers in a store: detected on use, reported by digest, repaired
(catalogue REL-5, REL-6, R18) by ``pybuild doctor [--repair] [--deep]``."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers import run_cli
from relcommon import assert_store_clean, build, doctor, make_context, mounts_under, new_store

pytestmark = [pytest.mark.root, pytest.mark.overlay]


def _flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def _db(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / "pybuild.db")


@pytest.fixture
def built(tmp_path: Path, busybox_tar: Path) -> tuple[Path, Path, Path, str]:
    """(store root, context, the build's OCI archive, image ID)."""
    root = new_store(tmp_path / "store", busybox_tar)
    context = make_context(tmp_path / "ctx")
    out = tmp_path / "first.tar"
    return root, context, out, build(root, context, out)


def _built_layer_blob(root: Path) -> str:
    """The gzip blob of the image's top layer (made by the first export)."""
    with _db(root) as db:
        top = db.execute("SELECT top_chain FROM images i JOIN tags t ON t.image_id = i.id "
                         "WHERE t.name = 'rel:latest'").fetchone()[0]
        diff_id = db.execute("SELECT diff_id FROM layers WHERE chain_id = ?",
                             (top,)).fetchone()[0]
        return db.execute("SELECT digest FROM layer_blobs WHERE diff_id = ? AND "
                          "compression = 'gzip'", (diff_id,)).fetchone()[0]


def _blob(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.split(":", 1)[1]


def test_clean_store_is_ok(built: tuple[Path, Path, Path, str]) -> None:
    root = built[0]
    result = doctor(root, "--deep")
    assert result.returncode == 0
    assert b"store ok" in result.stdout


def test_corrupt_built_blob_is_made_again_on_export(built: tuple[Path, Path, Path, str],
                                                   tmp_path: Path) -> None:
    root, context, first, image_id = built
    digest = _built_layer_blob(root)
    _flip_byte(_blob(root, digest))
    again = tmp_path / "again.tar"
    result = run_cli("save", "--format", "oci", "-o", str(again), "rel", root=root)
    assert f"blob {digest}".encode() in result.stderr and b"corrupt" in result.stderr
    # Made again from the layer dir: the same bytes as before, so the same archive.
    assert _blob(root, digest).read_bytes() and run_cli("doctor", root=root).returncode == 0
    build_again = tmp_path / "build-again.tar"
    assert build(root, context, build_again) == image_id
    assert build_again.read_bytes() == first.read_bytes()


def test_corrupt_imported_blob_fails_naming_it(built: tuple[Path, Path, Path, str],
                                              tmp_path: Path, busybox_tar: Path) -> None:
    root, context, first, image_id = built
    with _db(root) as db:
        digest = db.execute("SELECT digest FROM layer_blobs WHERE compression = 'none'"
                            ).fetchone()[0]
    _flip_byte(_blob(root, digest))
    out = tmp_path / "bad.tar"
    result = run_cli("save", "-o", str(out), "busybox", root=root, check=False)
    assert result.returncode == 1
    assert digest.encode() in result.stderr and b"corrupt" in result.stderr
    assert b"Traceback" not in result.stderr
    assert not out.exists(), "a half archive was left behind"
    # The layer's directory (what builds use) is intact: a build on it still works,
    # and importing the image again brings the blob back.
    run_cli("import", str(busybox_tar), "busybox", root=root)
    run_cli("save", "-o", str(out), "busybox", root=root)
    assert build(root, context, tmp_path / "again.tar") == image_id
    assert (tmp_path / "again.tar").read_bytes() == first.read_bytes()


def test_corrupt_config_blob_is_reported_by_digest(built: tuple[Path, Path, Path, str]) -> None:
    root, _context, _out, image_id = built
    _flip_byte(_blob(root, image_id), 5)
    result = run_cli("inspect", "rel", root=root, check=False)
    assert result.returncode == 1 and image_id.encode() in result.stderr
    assert b"Traceback" not in result.stderr


def test_doctor_finds_and_drops_a_corrupt_blob(built: tuple[Path, Path, Path, str]) -> None:
    root = built[0]
    digest = _built_layer_blob(root)
    _flip_byte(_blob(root, digest))
    result = doctor(root)
    assert result.returncode == 1
    assert f"blob: {digest}: content does not match".encode() in result.stdout
    assert doctor(root, "--repair").returncode == 0
    assert not _blob(root, digest).exists()
    assert_store_clean(root)


def test_doctor_repairs_a_missing_layer_dir(built: tuple[Path, Path, Path, str],
                                            tmp_path: Path) -> None:
    root, context, first, image_id = built
    with _db(root) as db:
        top = db.execute("SELECT top_chain FROM images WHERE id = ?", (image_id,)).fetchone()[0]
    subprocess.run(["rm", "-rf", str(root / "layers" / top.split(":")[1])], check=True)
    result = doctor(root)
    text = result.stdout.decode()
    assert result.returncode == 1
    assert f"layer: {top}: directory" in text and "missing" in text
    assert "cache: " in text and "names a missing or broken layer" in text
    assert f"image: {image_id} (rel:latest)" in text
    assert doctor(root, "--repair").returncode == 0
    assert_store_clean(root)
    # The cache entry is gone with the layer: the step runs again and the image comes back.
    out = tmp_path / "rebuilt.tar"
    assert build(root, context, out) == image_id
    assert out.read_bytes() == first.read_bytes()


def test_doctor_deep_finds_a_changed_layer(built: tuple[Path, Path, Path, str]) -> None:
    root, _context, _out, image_id = built
    with _db(root) as db:
        top = db.execute("SELECT top_chain FROM images WHERE id = ?", (image_id,)).fetchone()[0]
    changed = root / "layers" / top.split(":")[1] / "diff" / "c.txt"
    changed.write_text("tampered\n")
    assert doctor(root).returncode == 0  # the quick check does not read layer contents
    result = doctor(root, "--deep")
    assert result.returncode == 1
    assert f"layer: {top}: contents differ from blob".encode() in result.stdout
    assert b": c.txt: " in result.stdout
    assert doctor(root, "--deep", "--repair").returncode == 0
    assert doctor(root, "--deep").returncode == 0


def test_doctor_deep_checks_an_imported_layer_against_its_blob(
        built: tuple[Path, Path, Path, str]) -> None:
    root = built[0]
    with _db(root) as db:
        base = db.execute("SELECT chain_id FROM layers WHERE parent IS NULL").fetchone()[0]
    passwd = root / "layers" / base.split(":")[1] / "diff" / "etc" / "passwd"
    passwd.write_text(passwd.read_text().replace("root:x:0:0", "root::0:0"))
    result = doctor(root, "--deep")
    assert result.returncode == 1
    assert f"layer: {base}: contents differ from blob".encode() in result.stdout
    assert b"etc/passwd: " in result.stdout


def test_doctor_drops_cache_entries_of_missing_layers(
        built: tuple[Path, Path, Path, str]) -> None:
    root = built[0]
    ghost = "sha256:" + "ab" * 32
    with _db(root) as db:
        db.execute("INSERT INTO cache_entries VALUES ('sha256:ghost', 'p', 's', '[]', ?, "
                   "'', '{}', 0)", (ghost,))
    result = doctor(root)
    assert result.returncode == 1 and b"cache: sha256:ghost" in result.stdout
    assert doctor(root, "--repair").returncode == 0
    with _db(root) as db:
        assert db.execute("SELECT 1 FROM cache_entries WHERE key = 'sha256:ghost'"
                          ).fetchone() is None


def test_leftovers_of_dead_processes_are_swept(built: tuple[Path, Path, Path, str]) -> None:
    root = built[0]
    dead = root / "tmp" / "snap-999999999-0123456789ab"
    (dead / "diff").mkdir(parents=True)
    (root / "tmp" / f"{dead.name}.lock").touch()
    incoming = root / "blobs" / ".incoming-999999999-0123456789ab"
    incoming.write_bytes(b"half a blob")
    result = doctor(root)
    assert result.returncode == 0
    assert f"tmp: {dead}".encode() in result.stdout and b"[repaired]" in result.stdout
    assert not dead.exists() and not incoming.exists()


def test_stale_mount_is_detached_and_never_deleted_through(
        built: tuple[Path, Path, Path, str], tmp_path: Path) -> None:
    """A mount left under the store (by hand or by a bug) is detached by doctor, and the
    sweep never deletes through one into what is mounted there (R18)."""
    root = built[0]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    inside = root / "tmp" / "work-999999999-aaaaaaaaaaaa"  # unlocked: the sweep removes it
    inside.mkdir()
    layer_mount = root / "l" / "mnt"
    layer_mount.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(victim), str(inside)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(layer_mount)], check=True)
        result = doctor(root)
        assert result.returncode == 1
        assert f"mount: {layer_mount}: stale mount".encode() in result.stdout
        assert (victim / "precious").read_text() == "keep me"  # the open's sweep kept it
        assert not inside.exists()
        assert doctor(root, "--repair").returncode == 0
        # Two CI runs (of many) saw the detached tmpfs listed again here, with a parent
        # mount that is not the host's root: another test's namespace, not pybuild's.
        # A second repair must then detach it too; what is listed says where it was.
        for _attempt in range(2):
            if not mounts_under(root):
                break
            assert doctor(root, "--repair").returncode == 0
        assert mounts_under(root) == [], (os.readlink("/proc/self/ns/mnt"), [
            line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(tmp_path) in line or line.split()[0] in ("1", "27")])
        layer_mount.rmdir()
        assert_store_clean(root)
    finally:
        for target in (inside, layer_mount):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)
    assert (victim / "precious").read_text() == "keep me"


def test_unreadable_database_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "pybuild.db").write_bytes(b"this is not a database" * 100)
    result = doctor(root)
    assert result.returncode == 1
    assert b"database:" in result.stdout or b"pybuild:" in result.stderr
    assert b"Traceback" not in result.stderr
