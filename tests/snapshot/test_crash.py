"""kill -9 in the middle of a real commit, then open the store again.

A helper process prepares an overlay snapshot over a base layer, writes a big
file through a real overlay mount (in its own mount namespace), and commits.  It
announces the moment we want on stdout (hooks installed only in that process)
and we SIGKILL it there:

* ``hashing``   while ``layer_diff_id`` streams the 512 MiB upper dir;
* ``renamed``   after the upper dir was renamed into ``layers/`` and its short
                link made, before the SQLite insert (the store lock held);
* ``mounted``   while a step's overlay is mounted and in use.

Afterwards no process has a mount under the store, the next ``Store`` open sweeps
tmp/, unrecorded layers and dangling links, the database passes its integrity
check, and a new step commits on top of the base.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import mounts_under
from snapshot_steps import step

from builder.store import Store

pytestmark = [pytest.mark.root, pytest.mark.overlay]

_HELPER = textwrap.dedent("""
    import os, sys, time
    from builder.run.child import in_mount_namespace
    from builder.snapshot import commit, prepare
    from builder.store import Store
    import builder.layers.tar_write as tar_write

    root, parent, moment = sys.argv[1], sys.argv[2], sys.argv[3]

    def say(word):
        sys.stdout.write(word + "\\n")
        sys.stdout.flush()

    def write_big(snapshot):
        merged = str(snapshot.work.path / "merged")
        os.makedirs(merged, exist_ok=True)
        snapshot.mount(merged)
        chunk = os.urandom(1 << 20)
        with open(os.path.join(merged, "big"), "wb") as f:
            for _ in range(512):
                f.write(chunk)
        if moment == "mounted":
            say("mounted")
            time.sleep(120)

    real_diff_id = tar_write.layer_diff_id
    def hashing(*args, **kwargs):
        if moment == "hashing":
            say("hashing")
        return real_diff_id(*args, **kwargs)
    tar_write.layer_diff_id = hashing

    real_symlink = os.symlink
    def symlink(*args, **kwargs):
        real_symlink(*args, **kwargs)
        if moment == "renamed":
            say("renamed")
            time.sleep(120)
    os.symlink = symlink

    store = Store(root)
    snapshot = prepare(store, parent)
    in_mount_namespace(write_big, snapshot)
    commit(snapshot, source_date_epoch=0)
    say("done")
""")


@pytest.mark.parametrize("moment", ["hashing", "renamed", "mounted"])
def test_kill_during_commit(tmp_path: Path, moment: str) -> None:
    root = tmp_path / "store"
    store = Store(root)
    base = step(store, "overlay", None,
                lambda r: Path(r, "base-file").write_text("base")).chain_id
    store.close()

    helper = subprocess.Popen([sys.executable, "-c", _HELPER, str(root), base, moment],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = helper.stdout.readline().strip()
        assert line == moment, f"helper said {line!r}: {helper.stderr.read()}"
        helper.send_signal(signal.SIGKILL)
    finally:
        if helper.poll() is None:
            helper.kill()
        helper.communicate(timeout=30)
    assert helper.returncode == -signal.SIGKILL

    # The setup child dies with its parent (PR_SET_PDEATHSIG), and its mounts with it.
    deadline = time.monotonic() + 5
    while mounts_under(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mounts_under(root) == []
    findmnt = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True)
    assert str(root) not in findmnt.stdout

    if moment == "renamed":  # half-committed: a layer dir and its link, no record
        assert len(list((root / "layers").iterdir())) == 2
        assert len(list((root / "l").iterdir())) == 2
    else:  # the snapshot's work dir, its lock no longer held
        assert list((root / "tmp").iterdir()), "nothing was left to sweep"

    store = Store(root)
    try:
        assert store.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert list((root / "tmp").iterdir()) == []
        known = {r[0].split(":", 1)[1] for r in store.db.execute("SELECT chain_id FROM layers")}
        assert {p.name for p in (root / "layers").iterdir()} == known == {base.split(":")[1]}
        assert all(link.exists() for link in (root / "l").iterdir())
        assert len(list((root / "l").iterdir())) == 1
        after = step(store, "overlay", base, lambda r: Path(r, "after").write_text("x"))
        assert store.chain(after.chain_id)[0].chain_id == base
    finally:
        store.close()
