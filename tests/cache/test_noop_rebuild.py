"""The CI path (issue 17 points 2 and 3): a no-op rebuild writes nothing to the store,
and the context's stat cache is read in one query, not once per file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from helpers import run_cli

from builder.cache import CacheStore
from builder.context.checksum import checksum_sources
from builder.store import records
from builder.store.store import Store

DOCKERFILE = """\
FROM busybox
ENV GREETING=hello
WORKDIR /app
COPY src/ /app/src/
RUN cat /app/src/* > /app/all
CMD ["cat", "/app/all"]
"""


def _database_state(root: Path) -> dict[str, tuple[int, str]]:
    """Size and content digest of the database and its journal files."""
    state = {}
    for path in sorted(root.glob("pybuild.db*")):
        data = path.read_bytes()
        state[path.name] = (len(data), hashlib.sha256(data).hexdigest())
    return state


@pytest.mark.root
@pytest.mark.overlay
def test_a_no_op_rebuild_writes_nothing_to_the_store(tmp_path: Path, busybox_tar: Path) -> None:
    root, context = tmp_path / "store", tmp_path / "ctx"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    (context / "src").mkdir(parents=True)
    for i in range(20):
        (context / "src" / f"f{i}.txt").write_text(f"file {i}\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    run_cli("build", "-q", "-t", "app", "-t", "app:v1", str(context), root=root)
    # The first rebuild records that every step hit (explain shows this build's story).
    run_cli("build", "-q", "-t", "app", "-t", "app:v1", str(context), root=root)
    before = _database_state(root)
    blobs_before = sorted(os.listdir(root / "blobs" / "sha256"))

    run_cli("build", "-q", "-t", "app", "-t", "app:v1", str(context), root=root)

    assert _database_state(root) == before
    assert sorted(os.listdir(root / "blobs" / "sha256")) == blobs_before
    explained = run_cli("explain", "--format", "json", "app", root=root).stdout
    assert b'"cache-hit"' in explained
    # A change is still written: a new tag points at the same image.
    run_cli("build", "-q", "-t", "app:v2", str(context), root=root)
    assert _database_state(root) != before
    assert run_cli("images", root=root).stdout.count(b"app ") == 3


def test_the_stat_cache_is_read_in_one_query(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    context = tmp_path / "ctx"
    (context / "sub").mkdir(parents=True)
    for i in range(50):
        (context / "sub" / f"f{i}").write_text(str(i))
    (tmp_path / "ctx-other").mkdir()  # a sibling whose name extends the prefix
    (tmp_path / "ctx-other" / "x").write_text("x")
    store = Store(tmp_path / "store")
    try:
        first = CacheStore(store)
        digest = checksum_sources([(".", str(context))], cache=first).digest
        checksum_sources([(".", str(tmp_path / "ctx-other"))], cache=first)
        first.flush_stats()

        def per_file_query(*args: object) -> None:
            raise AssertionError("a per-file stat cache query")

        monkeypatch.setattr(records, "stat_digest", per_file_query)
        again = CacheStore(store)
        result = checksum_sources([(".", str(context))], cache=again)
        assert result.digest == digest
        assert result.read_bytes == 0  # every file's digest came from the preloaded rows
        assert not any(path.startswith(str(tmp_path / "ctx-other"))
                       for path in again._stats)
    finally:
        store.close()
