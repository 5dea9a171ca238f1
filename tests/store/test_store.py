"""The local store: write-once verified blobs, layers committed by rename, crash cleanup."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from builder.errors import DigestMismatch, StoreError
from builder.store.store import Store, chain_id_of, normalize_tag


def test_blob_roundtrip_and_verification(store: Store) -> None:
    digest = store.put_blob(b"hello")
    assert digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert store.read_blob(digest) == b"hello"
    store.blob_path(digest).write_bytes(b"tampered")
    with pytest.raises(DigestMismatch):
        store.read_blob(digest)


def test_stream_blob_with_wrong_expected_digest_leaves_nothing(store: Store) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch):
        store.put_blob_stream(io.BytesIO(b"data"), expected=wrong)
    assert not store.has_blob(wrong)
    assert [p.name for p in (store.root / "blobs").iterdir()] == ["sha256"]
    assert list((store.root / "blobs" / "sha256").iterdir()) == []


@pytest.mark.parametrize("bad", ["sha256:../../etc/passwd", "sha256:ABC", "md5:" + "a" * 32,
                                 "sha256:" + "a" * 63, "sha256:" + "a" * 64 + "/"])
def test_invalid_digests_never_become_paths(store: Store, bad: str) -> None:
    with pytest.raises(StoreError):
        store.blob_path(bad)


def test_chain_id_follows_the_oci_definition() -> None:
    base = "sha256:" + "a" * 64
    top = "sha256:" + "b" * 64
    assert chain_id_of(None, base) == base
    expected = hashlib.sha256(f"{base} {top}".encode()).hexdigest()
    assert chain_id_of(base, top) == f"sha256:{expected}"


def test_commit_is_a_rename_and_deduplicates(store: Store) -> None:
    work = store.tmp_dir("t")
    (work.path / "diff").mkdir()
    (work.path / "diff" / "file").write_text("x")
    inode = os.stat(work.path / "diff" / "file").st_ino
    diff_id = "sha256:" + "1" * 64
    chain = store.commit_layer(None, work, diff_id, 10)
    assert os.stat(store.layer_dir(chain) / "file").st_ino == inode  # moved, not copied
    again = store.tmp_dir("t")
    (again.path / "diff").mkdir()
    assert store.commit_layer(None, again, diff_id, 10) == chain
    assert not again.path.exists()
    assert store.lower_dirs(chain) == [store.layer_dir(chain)]
    link = store.root / "l" / store.layer(chain).short
    assert link.resolve() == store.layer_dir(chain).resolve()


def test_tags_and_prefix_resolution(store: Store) -> None:
    image_id = store.put_image(b'{"rootfs":{"diff_ids":[]}}', None)
    store.tag("app", image_id)
    assert normalize_tag("app") == "app:latest"
    assert normalize_tag("localhost:5000/app") == "localhost:5000/app:latest"
    assert store.resolve_image("app:latest") == image_id
    assert store.resolve_image(image_id[7:19]) == image_id
    assert store.resolve_image("nope") is None
    from builder.store.remove import Record, remove_image

    assert remove_image(store, "app")[0] == Record("Untagged", "app:latest")
    assert store.resolve_image("app") is None


def test_half_done_work_of_a_dead_process_is_swept(tmp_path) -> None:
    """kill -9 during a commit: the next command cleans up, the store stays readable."""
    root = tmp_path / "store"
    script = textwrap.dedent(f"""
        import os, sys
        from builder.store.store import Store
        store = Store({str(root)!r})
        store.put_blob(b"keep")
        work = store.tmp_dir("commit")
        (work.path / "diff").mkdir()
        for i in range(100):
            (work.path / "diff" / str(i)).write_text("x")
        # an unrecorded layer dir, as if killed between rename and the database insert
        os.makedirs(store.root / "layers" / ("f" * 64) / "diff")
        print("ready", flush=True)
        sys.stdin.read()
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert any((root / "tmp").iterdir())
    store = Store(root)
    assert store.tags() == []  # any command opens the store, which sweeps
    assert store.read_blob("sha256:" + hashlib.sha256(b"keep").hexdigest()) == b"keep"
    assert list((root / "tmp").iterdir()) == []
    assert list((root / "layers").iterdir()) == []
    store.close()


def test_live_process_work_is_not_swept(store: Store) -> None:
    work = store.tmp_dir("busy")
    Store(store.root).sweep()
    assert work.path.exists()
    work.release()
    assert not work.path.exists()
