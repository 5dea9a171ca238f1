"""Deep stacks: an overlay snapshot over 120 and 400 layers mounts, and a RUN-like
write lands in the upper dir.

Lower dirs are named by their 10-hex short links under ``l/``, 11 bytes each with
the separator, so a legacy mount(2) option string fits about 370 layers in its one
page; past that ``Snapshot.mount`` switches to fsopen/fsconfig("lowerdir+"), which
has no total limit (Linux 6.8+).
"""

from __future__ import annotations

import errno
import os

import pytest
from snapshot_steps import EPOCH

from builder.errors import SandboxError
from builder.layers.tar_write import layer_diff_id
from builder.run.child import in_mount_namespace
from builder.snapshot import commit, prepare
from builder.store import Store

pytestmark = [pytest.mark.root, pytest.mark.overlay]


def _stack(store: Store, depth: int) -> str | None:
    """``depth`` one-file layers: layer i adds /layers/<i> and rewrites /top."""
    chain: str | None = None
    for i in range(depth):
        work = store.tmp_dir("deep")
        diff = work.path / "diff"
        (diff / "layers").mkdir(parents=True)
        (diff / "layers" / f"{i:04d}").write_text(str(i))
        (diff / "top").write_text(str(i))
        lowers = store.lower_dirs(chain)
        diff_id, size = layer_diff_id(diff, lowers=lowers)
        chain = store.commit_layer(chain, work, diff_id, size)
    return chain


def _run_like(snapshot, depth: int) -> tuple[str, int, bool]:
    merged = str(snapshot.work.path / "merged")
    os.makedirs(merged, exist_ok=True)
    snapshot.mount(merged)
    with open(os.path.join(merged, "top")) as f:
        top = f.read()
    seen = len(os.listdir(os.path.join(merged, "layers")))
    with open(os.path.join(merged, "written-by-run"), "w") as f:
        f.write("ok")
    os.unlink(os.path.join(merged, "layers", "0000"))
    legacy = True
    try:
        snapshot.mount_options()
    except SandboxError:
        legacy = False
    return top, seen, legacy


@pytest.mark.parametrize("depth", [120, 400])
def test_deep_stack_mounts_and_writes(store, depth: int) -> None:
    chain = _stack(store, depth)
    snapshot = prepare(store, chain)
    try:
        top, seen, legacy = in_mount_namespace(_run_like, snapshot, depth)
        assert (top, seen) == (str(depth - 1), depth)
        assert legacy == (depth == 120)
        result = commit(snapshot, source_date_epoch=EPOCH)
    except BaseException:
        snapshot.release()
        raise
    assert result.chain_id
    assert result.changes.added == ["/written-by-run"]
    assert result.changes.deleted == ["/layers/0000"]
    assert len(store.chain(result.chain_id)) == depth + 1


def test_deep_stack_read_only_view(store) -> None:
    chain = _stack(store, 400)
    view = prepare(store, chain)

    def look(snapshot) -> int:
        merged = str(snapshot.work.path / "merged")
        os.makedirs(merged, exist_ok=True)
        snapshot.mount(merged, readonly=True)
        with pytest.raises(OSError) as info:
            os.open(os.path.join(merged, "x"), os.O_CREAT | os.O_WRONLY)
        assert info.value.errno == errno.EROFS
        return len(os.listdir(os.path.join(merged, "layers")))

    try:
        assert in_mount_namespace(look, view) == 400
    finally:
        view.release()
