"""A COPY writes the contents of the directories it makes straight into the overlay's
upper dir, once the overlay is unmounted (builder.engine.copier, ``defer_fresh``).

The layer must be byte for byte the one a copy through the mount writes: each test
copies the same context both ways, onto the same image, and compares the diff_ids
(every mtime clamped, so two runs give one tar)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from snapshot.snapshot_steps import EPOCH, step

from builder.context.checksum import EntryDigest, checksum_sources, kind_of
from builder.engine.copy_plan import CopyRequest
from builder.engine.copy_records import ContentRecords
from builder.engine.copy_step import _copy_in_child
from builder.errors import BuildError
from builder.run.child import in_mount_namespace
from builder.snapshot import Commit, commit, overlay, prepare
from builder.store import Store

pytestmark = [pytest.mark.root, pytest.mark.overlay]

OLD = 1_000_000_000     # source times, below EPOCH: the layer keeps them


def _image(root: str) -> None:
    """The base: /out and /out/old exist; /out/y is a link to x, which does not."""
    os.makedirs(os.path.join(root, "out", "old"))
    Path(root, "out", "keep").write_text("keep")
    os.symlink("x", os.path.join(root, "out", "y"))


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _context(root: Path) -> Path:
    """New directories (nested, set-gid, with their own modes and times), a symlink,
    and hard links: across two new directories, and both ways between a new directory
    and one the image has (old/ is copied after the new a/ and before the new z/)."""
    src = root / "context" / "src"
    for index in range(40):
        _write(src / "a" / f"f{index:02d}", f"a{index}\n" * index)
    _write(src / "a" / "b" / "deep", "deep\n", 0o600)
    _write(src / "c" / "only", "c\n", 0o755)
    _write(src / "old" / "g3", "g3\n")
    _write(src / "top.txt", "top\n")
    (src / "z").mkdir()
    os.link(src / "a" / "f02", src / "c" / "h")       # a new directory -> a new one
    os.link(src / "a" / "f01", src / "old" / "g")     # a new one -> the image's
    os.link(src / "old" / "g3", src / "z" / "k")      # the image's -> a new one
    os.symlink("f01", src / "a" / "link")
    os.chmod(src / "a" / "b", 0o2775)
    for folder in ("a", "c", "old", "z"):
        os.chmod(src / folder, 0o750)
    for number, path in enumerate(sorted(src.rglob("*"), reverse=True)):
        os.utime(path, ns=(OLD * 10**9, (OLD + number) * 10**9), follow_symlinks=False)
    return src.parent


def _copy(store: Store, parent: str, context: Path, request: CopyRequest) -> Commit:
    snapshot = prepare(store, parent, "overlay")
    try:
        in_mount_namespace(_copy_in_child, snapshot, None, True, str(context), request)
        return commit(snapshot, source_date_epoch=EPOCH)
    except BaseException:
        snapshot.release()
        raise


def _request(context: Path) -> CopyRequest:
    expected = checksum_sources([("src", str(context / "src"))]).digest
    return CopyRequest(sources=["src"], dest="/out/", workdir="/", expected_content=expected)


@pytest.fixture
def offline_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Logs what each copy's ``offline_upper`` gave (the copy runs in a forked child)."""
    log = tmp_path / "offline.log"
    original = overlay.Snapshot.offline_upper

    def logged(self: overlay.Snapshot, target: str) -> str | None:
        upper = original(self, target)
        with open(log, "a") as out:
            out.write(f"{upper}\n")
        return upper
    monkeypatch.setattr(overlay.Snapshot, "offline_upper", logged)
    return log


def _through_the_mount(monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy as before: every entry through the mount, in the walk's order."""
    monkeypatch.setattr(overlay.Snapshot, "has_offline_upper", False)


def test_new_directories_written_offline_make_the_same_layer(
        store: Store, tmp_path: Path, offline_log: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = step(store, "overlay", None, _image).chain_id
    context = _context(tmp_path)
    offline = _copy(store, base, context, _request(context))
    written = offline_log.read_text().split()
    assert written and written[0].endswith("/diff"), written   # it did go offline
    _through_the_mount(monkeypatch)
    mounted = _copy(store, base, context, _request(context))
    assert offline.chain_id == mounted.chain_id
    layer = store.layer_dir(offline.chain_id)
    a_f01, old_g = os.stat(layer / "out/a/f01"), os.stat(layer / "out/old/g")
    assert a_f01.st_ino == old_g.st_ino and a_f01.st_nlink == 2
    assert os.stat(layer / "out/z/k").st_ino == os.stat(layer / "out/old/g3").st_ino
    assert os.stat(layer / "out/c/h").st_ino == os.stat(layer / "out/a/f02").st_ino
    assert os.stat(layer / "out/a/b").st_mode & 0o7777 == 0o2775


def test_a_link_in_the_image_into_a_new_directory_keeps_the_copy_order(
        store: Store, tmp_path: Path, offline_log: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's /out/y links to x, which the copy makes (empty, its contents left
    for later); src/y is then copied through the link into x.  The deferred x is
    written first, so y's f replaces x's, as in the copy's order; deferred, x's files
    would be created after y's (EEXIST) or over them."""
    base = step(store, "overlay", None, _image).chain_id
    src = tmp_path / "context" / "src"
    _write(src / "x" / "f", "from x\n")
    _write(src / "x" / "only", "only x\n")
    _write(src / "y" / "f", "from y\n")
    for path in src.rglob("*"):
        os.utime(path, ns=(OLD * 10**9, OLD * 10**9))
    offline = _copy(store, base, src.parent, _request(src.parent))
    layer = store.layer_dir(offline.chain_id)
    assert (layer / "out/x/f").read_text() == "from y\n"
    assert (layer / "out/x/only").read_text() == "only x\n"
    _through_the_mount(monkeypatch)
    assert _copy(store, base, src.parent, _request(src.parent)).chain_id == offline.chain_id


def _image_with(links: dict[str, str]) -> Callable[[str], None]:
    def make(root: str) -> None:
        os.makedirs(os.path.join(root, "out"))
        for name, target in links.items():
            os.symlink(target, os.path.join(root, "out", name))
    return make


def test_a_link_in_the_image_to_a_parent_of_a_new_directory_keeps_the_copy_order(
        store: Store, tmp_path: Path, offline_log: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's /out/self links to /out itself, so src/self/a/ lands in /out/a, the
    directory the copy made for src/a/ and left for later.  Following the link writes
    the deferred directories first: self/a's x replaces a's, and /out/a gets self/a's
    mode and times, as in the copy's order (deferred, x is made twice: EEXIST)."""
    base = step(store, "overlay", None, _image_with({"self": "."})).chain_id
    src = tmp_path / "context" / "src"
    _write(src / "a" / "x", "from a\n")
    _write(src / "self" / "a" / "x", "from self/a\n")
    os.chmod(src / "a", 0o750)
    os.chmod(src / "self" / "a", 0o700)
    for number, path in enumerate(sorted(src.rglob("*"))):
        os.utime(path, ns=(OLD * 10**9, (OLD + number) * 10**9))
    offline = _copy(store, base, src.parent, _request(src.parent))
    layer = store.layer_dir(offline.chain_id)
    assert (layer / "out/a/x").read_text() == "from self/a\n"
    assert os.stat(layer / "out/a").st_mode & 0o7777 == 0o700
    _through_the_mount(monkeypatch)
    assert _copy(store, base, src.parent, _request(src.parent)).chain_id == offline.chain_id


def test_a_new_directory_cannot_turn_a_resolved_path_into_a_way_out(
        store: Store, tmp_path: Path, offline_log: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack: the image's /out/zlink points at a/b/t, which does not exist yet;
    the context has src/a/b, a link to a host directory, and src/zlink/x.  Resolving
    zlink before the deferred a/ is written would make real directories a/b/t, which
    a/'s write then replaces with the link: x and zlink's times and owner would go to
    the host's directory.  The deferred directories are written before the link is
    followed, so it is resolved inside the root, as in the copy's order."""
    host = tmp_path / "host"
    (host / "t").mkdir(parents=True)    # where x would land
    before = os.stat(host / "t")
    base = step(store, "overlay", None, _image_with({"zlink": "a/b/t"})).chain_id
    src = tmp_path / "context" / "src"
    (src / "a").mkdir(parents=True)
    os.symlink(str(host), src / "a" / "b")
    _write(src / "zlink" / "x", "x\n")
    offline = _copy(store, base, src.parent, _request(src.parent))
    assert list((host / "t").iterdir()) == []
    after = os.stat(host / "t")
    assert (after.st_mtime_ns, after.st_mode) == (before.st_mtime_ns, before.st_mode)
    layer = store.layer_dir(offline.chain_id)
    assert (layer / str(host).lstrip("/") / "t" / "x").read_text() == "x\n"
    _through_the_mount(monkeypatch)
    assert _copy(store, base, src.parent, _request(src.parent)).chain_id == offline.chain_id


def test_a_file_changed_after_the_checksum_is_refused(store: Store, tmp_path: Path,
                                                      offline_log: Path) -> None:
    """The records of the deferred directories still make up the digest compared with
    the key's (catalogue K), in the copy's order."""
    base = step(store, "overlay", None, _image).chain_id
    context = _context(tmp_path)
    request = _request(context)
    (context / "src" / "c" / "only").write_text("changed after the checksum\n")
    with pytest.raises(BuildError, match="changed while it was being copied"):
        _copy(store, base, context, request)
    assert offline_log.read_text().split()[0].endswith("/diff")


def _offline_when_busy(snapshot: overlay.Snapshot) -> tuple[str | None, bool, str | None,
                                                             bool]:
    merged = str(snapshot.work.path / "merged")
    os.makedirs(merged)
    snapshot.mount(merged)
    held = os.open(merged, os.O_RDONLY | os.O_DIRECTORY)
    busy = snapshot.offline_upper(merged)
    still_mounted = os.path.ismount(merged)
    os.close(held)
    upper = snapshot.offline_upper(merged)
    return busy, still_mounted, upper, os.path.ismount(merged)


def test_offline_upper_unmounts_only_an_unused_overlay(store: Store) -> None:
    """A mount still in use is kept (the copy goes on through it); otherwise it is
    unmounted, and only then is the upper dir given out."""
    snapshot = prepare(store, None, "overlay")
    try:
        assert isinstance(snapshot, overlay.Snapshot)
        busy, still_mounted, upper, mounted_after = in_mount_namespace(
            _offline_when_busy, snapshot)
    finally:
        snapshot.release()
    assert busy is None and still_mounted
    assert upper == str(snapshot.upper) and not mounted_after


def test_records_of_a_later_written_subtree_keep_their_place() -> None:
    """The digest of records made out of order, a deferred subtree's last, equals the
    digest of the same records in the copy's order."""
    st_dir, st_file = os.stat("/"), os.stat(__file__)
    in_order = EntryDigest()
    for rel, st in (("src", st_dir), ("src/a", st_dir), ("src/a/f", st_file),
                    ("src/b", st_file), ("src/c", st_dir), ("src/c/g", st_file)):
        in_order.add(rel, kind_of(st.st_mode), stat.S_IMODE(st.st_mode), "sha256:x")
    records = ContentRecords()
    records.add(records.walk, "src", st_dir, "sha256:x")
    records.add(records.walk, "src/a", st_dir, "sha256:x")
    first = records.reserve()       # src/a's contents, written later
    records.add(records.walk, "src/b", st_file, "sha256:x")
    records.add(records.walk, "src/c", st_dir, "sha256:x")
    second = records.reserve()      # src/c's
    records.add(second, "src/c/g", st_file, "sha256:x")
    records.close(second)
    records.add(first, "src/a/f", st_file, "sha256:x")
    records.close(first)
    assert records.digest() == in_order.digest()
