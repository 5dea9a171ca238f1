"""Driver contract tests, run against every snapshot driver (after containers/storage
``drivers/graphtest``): the same step over the same parent must give the same layer,
byte for byte, whichever driver ran it.

Each case builds one base layer, then runs one change step on top of it with each
driver in its own store, and checks that the committed layer has the same diff_id
(mtimes are clamped with SOURCE_DATE_EPOCH, so only the change itself counts), that
the change lists agree, and that a new snapshot over the result shows the change.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from snapshot_steps import look, step

from builder.layers.empty import EMPTY_DIFF_ID
from builder.snapshot import DRIVERS, open_driver
from builder.store import Store

pytestmark = [pytest.mark.root, pytest.mark.overlay]

T0 = 1_500_000_000


@pytest.fixture
def make_store(tmp_path: Path):
    stores: list[Store] = []

    def make(name: str) -> Store:
        stores.append(Store(tmp_path / name))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


def _base(root: str) -> None:
    """The base tree every case starts from; fixed times so both stores agree."""
    j = os.path.join
    os.makedirs(j(root, "etc/conf.d"))
    os.makedirs(j(root, "usr/bin"))
    os.makedirs(j(root, "var/lib/app/data"))
    for rel, body in (("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
                      ("etc/conf.d/a.conf", b"a=1\n"), ("usr/bin/tool", b"#!/bin/sh\n"),
                      ("var/lib/app/data/1", b"one"), ("var/lib/app/data/2", b"two"),
                      ("var/lib/app/state", b"s")):
        with open(j(root, rel), "wb") as f:
            f.write(body)
    os.chmod(j(root, "usr/bin/tool"), 0o755)
    os.symlink("tool", j(root, "usr/bin/alias"))
    os.link(j(root, "etc/passwd"), j(root, "etc/passwd.hard"))
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*dirnames, *filenames]:
            os.utime(j(dirpath, name), (T0, T0), follow_symlinks=False)
    os.utime(root, (T0, T0))


def _write(path: str, body: bytes) -> None:
    with open(path, "wb") as f:
        f.write(body)


def _append(path: str, body: bytes) -> None:
    with open(path, "ab") as f:
        f.write(body)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _opaque(root: str) -> None:
    shutil.rmtree(os.path.join(root, "var/lib/app"))
    os.mkdir(os.path.join(root, "var/lib/app"))
    _write(os.path.join(root, "var/lib/app/new"), b"fresh")


def _replace_with_symlink(root: str) -> None:
    os.unlink(os.path.join(root, "etc/conf.d/a.conf"))
    os.symlink("/dev/null", os.path.join(root, "etc/conf.d/a.conf"))


def _dir_replaces_file(root: str) -> None:
    os.unlink(os.path.join(root, "var/lib/app/state"))
    os.mkdir(os.path.join(root, "var/lib/app/state"))
    _write(os.path.join(root, "var/lib/app/state/x"), b"x")


def _mv_and_back(root: str) -> None:
    # The tar leaves out a copied-up entry equal to its lower one (buildkit#2480), so
    # the diff_ids agree; the explain change lists do not have to: overlay's upper
    # still holds the copy-up, vfs's tree diff never sees it.
    a, b = os.path.join(root, "etc/conf.d/a.conf"), os.path.join(root, "etc/conf.d/b")
    os.rename(a, b)
    os.rename(b, a)
    _write(os.path.join(root, "new-file"), b"so the step makes a layer")


CASES: dict[str, Callable[[str], None]] = {
    "create": lambda r: _write(os.path.join(r, "usr/bin/new"), b"new\n"),
    "create-deep": lambda r: (os.makedirs(os.path.join(r, "opt/a/b/c")),
                              _write(os.path.join(r, "opt/a/b/c/f"), b"f")),
    "modify": lambda r: _write(os.path.join(r, "etc/conf.d/a.conf"), b"a=2\n"),
    "append": lambda r: _append(os.path.join(r, "var/lib/app/data/1"), b"+"),
    "delete-file": lambda r: os.unlink(os.path.join(r, "usr/bin/tool")),
    "delete-dir": lambda r: shutil.rmtree(os.path.join(r, "var/lib/app/data")),
    "opaque-dir": _opaque,
    "dir-replaces-file": _dir_replaces_file,
    "symlink": lambda r: os.symlink("../usr/bin/tool", os.path.join(r, "etc/tool-link")),
    "file-to-symlink": _replace_with_symlink,
    "hardlink": lambda r: os.link(os.path.join(r, "usr/bin/tool"),
                                  os.path.join(r, "usr/bin/tool2")),
    # Not on etc/passwd: it is hardlinked in the base, and overlay (index=off) breaks a
    # lower hardlink on copy-up while a real tree changes both names; see
    # test_hardlinked_lower_diverges.
    "chmod": lambda r: os.chmod(os.path.join(r, "etc/conf.d/a.conf"), 0o600),
    "chown": lambda r: os.chown(os.path.join(r, "etc/conf.d"), 1000, 1000),
    "xattr": lambda r: os.setxattr(os.path.join(r, "usr/bin/tool"), "user.note", b"v"),
    "fifo-and-dev": lambda r: (os.mkfifo(os.path.join(r, "fifo")),
                               os.mknod(os.path.join(r, "null2"), stat.S_IFCHR | 0o666,
                                        os.makedev(1, 3))),
    "mv-and-back": _mv_and_back,
}


def _tree_listing(root: str) -> list[tuple]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            body = (os.readlink(path) if stat.S_ISLNK(st.st_mode) else
                    _read(path) if stat.S_ISREG(st.st_mode) else None)
            out.append((os.path.relpath(path, root), stat.filemode(st.st_mode), st.st_uid,
                        body))
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_layer_from_every_driver(make_store, case: str) -> None:
    results = {}
    for driver in DRIVERS:
        store = make_store(driver)
        base = step(store, driver, None, _base)
        assert base.chain_id
        top = step(store, driver, base.chain_id, CASES[case])
        assert top.chain_id != base.chain_id, f"{driver}: {case} made no layer"
        record = store.layer(top.chain_id)
        changes = top.changes
        view = look(store, driver, top.chain_id, _tree_listing)
        results[driver] = (store.layer(base.chain_id).diff_id, record.diff_id,
                           sorted(changes.added), sorted(changes.modified),
                           sorted(changes.deleted), view)
    overlay, vfs = results["overlay"], results["vfs"]
    assert vfs[0] == overlay[0], "base layers differ"
    assert vfs[5] == overlay[5], "merged views differ"
    assert vfs[1] == overlay[1], "layer diff_ids differ"
    if case != "mv-and-back":  # see _mv_and_back
        assert vfs[2:5] == overlay[2:5], "change lists differ"


@pytest.mark.parametrize("driver", DRIVERS)
def test_no_change_gives_the_empty_layer(make_store, driver: str) -> None:
    """A step that changes nothing commits the empty layer (BuildKit's, see
    builder/layers/empty.py): an empty dir with the empty tar's diff_id, on top of
    the parent; the same step again gives the same layer."""
    store = make_store(driver)
    base = step(store, driver, None, _base)
    again = step(store, driver, base.chain_id, lambda root: os.listdir(root))
    assert again.chain_id != base.chain_id
    record = store.layer(again.chain_id)
    assert (record.diff_id, record.parent) == (EMPTY_DIFF_ID, base.chain_id)
    assert os.listdir(store.layer_dir(again.chain_id)) == []
    twice = step(store, driver, base.chain_id, lambda root: None)
    assert twice.chain_id == again.chain_id
    assert list((store.root / "tmp").iterdir()) == []


@pytest.mark.parametrize("driver", DRIVERS)
def test_stacked_changes_read_back(make_store, driver: str) -> None:
    store = make_store(driver)
    chain = step(store, driver, None, _base).chain_id
    for case in ("create", "chmod", "delete-dir", "opaque-dir", "file-to-symlink"):
        chain = step(store, driver, chain, CASES[case]).chain_id
    listing = dict((p, rest) for p, *rest in look(store, driver, chain, _tree_listing))
    assert listing["usr/bin/new"][2] == b"new\n"
    assert "var/lib/app/data" not in listing and "var/lib/app/new" in listing
    assert listing["etc/conf.d/a.conf"][2] == "/dev/null"
    assert listing["etc/conf.d/a.conf"][0] == "lrwxrwxrwx"


def test_open_driver(make_store) -> None:
    store = make_store("s")
    assert open_driver(store, "auto").name == "overlay"
    assert open_driver(store, "vfs").name == "vfs"
    with pytest.raises(Exception, match="unknown storage driver"):
        open_driver(store, "zfs")


@pytest.mark.parametrize("driver", DRIVERS)
def test_run_step_leaves_no_stubs(store, busybox, driver: str) -> None:
    """A real RUN: the init layer's mount-point stubs never reach the layer."""
    from builder.run.sandbox import RunSpec, run_step
    from builder.snapshot import commit, prepare

    chain = store.image_top_chain(store.resolve_image(busybox))
    snapshot = prepare(store, chain, driver)
    try:
        output: list[bytes] = []
        code = run_step(snapshot, RunSpec(["/bin/sh", "-c", "echo hi > /made; cat /etc/hosts"]),
                        output.append)
        assert code == 0, b"".join(output)
        result = commit(snapshot, source_date_epoch=0)
    except BaseException:
        snapshot.release()
        raise
    assert result.changes.added == ["/made"]
    assert result.changes.modified in ([], ["/"])
    assert not result.changes.deleted


def test_hardlinked_lower_diverges(make_store) -> None:
    """The one known difference, kept visible: changing one name of a file that is
    hardlinked in a lower layer.  overlay with index=off copies up that name only
    (the link is broken, as in Docker's overlay2), and so does fuse-overlayfs; vfs runs
    on a real tree, where both names change.  Each driver's layer is right for what its
    step saw."""
    modes = {}
    for driver in DRIVERS:
        store = make_store(driver)
        base = step(store, driver, None, _base).chain_id
        top = step(store, driver, base, lambda r: os.chmod(os.path.join(r, "etc/passwd"), 0o600))
        listing = dict((p, rest) for p, *rest in look(store, driver, top.chain_id, _tree_listing))
        modes[driver] = listing["etc/passwd.hard"][0]
    assert modes == {"overlay": "-rw-r--r--", "fuse-overlayfs": "-rw-r--r--",
                     "vfs": "-rw-------"}
