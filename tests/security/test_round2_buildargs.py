"""Round 2, point 8: build-arg values (often tokens) stay out of the store and the cache.

The attack, for real: a CI job passes a token with ``--build-arg`` and exports its cache
(``--cache-to``) to a shared directory; anyone who can read that directory, the
store's ``pybuild.db`` or ``pybuild explain``'s output must not learn the token.  Only
the image's own config and history carry it, as Docker's do.  A changed value still
misses the cache, and explain says ``arg TOKEN changed``; ``--show-values`` adds the
value the image itself holds.  A store written by an older pybuild (values in clear)
is cleaned the first time it is opened, freed pages and WAL included.  Builds warn,
like BuildKit's ``SecretsUsedInArgOrEnv``, when an ARG or ENV name looks like a secret.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from helpers import run_cli
from security.oracle import build

pytestmark = [
    pytest.mark.root, pytest.mark.overlay,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, overlay"),
]

TOKEN = "s3cr3t-value-xyz"
OTHER = "0ther-token-abc"
# The token reaches RUN twice: as the arg, and through an ENV made from it.  No step
# writes it into a layer (a layer is the step's own output, exported as it is).
DOCKERFILE = """\
FROM busybox
ARG TOKEN
ENV DERIVED=prefix-$TOKEN
RUN test -n "$TOKEN" && test -n "$DERIVED" && echo built > /out
RUN echo second > /second
"""


def _db_bytes(store: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(store.glob("pybuild.db*")) if p.is_file())


def _files_holding(top: Path, needle: bytes) -> list[str]:
    return [str(p) for p in sorted(top.rglob("*"))
            if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def _run_hit(result) -> list[bool]:  # type: ignore[no-untyped-def]
    """Whether each RUN step of a plain-progress build was a cache hit."""
    lines = result.stderr.decode(errors="replace").splitlines()
    numbers = [line.split()[0] for line in lines if "] RUN " in line]
    return [f"{n} CACHED" in lines for n in numbers]


def _import(root: Path, tarball: Path) -> None:
    """busybox with a fixed creation time: the same image ID in every store."""
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        run_cli("import", str(tarball), "busybox", root=root)
    finally:
        if saved is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = saved


@pytest.fixture
def store(tmp_path: Path, busybox_tar: Path) -> Path:
    root = tmp_path / "store"
    _import(root, busybox_tar)
    return root


def test_build_arg_value_not_in_db_cache_export_or_explain(store, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    cache = tmp_path / "ci-cache"
    first = build(store, context, DOCKERFILE, None, "-t", "app", "--build-arg",
                  f"TOKEN={OTHER}")
    assert _run_hit(first) == [False, False]
    second = build(store, context, DOCKERFILE, None, "-t", "app", "--build-arg",
                   f"TOKEN={TOKEN}", "--cache-to", f"type=local,dest={cache},mode=max")
    # A changed value still misses (the key sees the value), and only the steps it reaches.
    assert _run_hit(second) == [False, False]
    assert TOKEN.encode() not in second.stderr  # progress prints instructions unexpanded
    for value in (TOKEN, OTHER):
        assert value.encode() not in _db_bytes(store), value
        assert _files_holding(cache, value.encode()) == [], value
    explain = run_cli("explain", "app", root=store).stdout.decode()
    assert "arg TOKEN changed" in explain, explain
    assert TOKEN not in explain and OTHER not in explain, explain
    # --show-values: the value the image itself holds (its history), never the old one.
    shown = run_cli("explain", "--show-values", "app", root=store).stdout.decode()
    assert f"arg TOKEN changed (now '{TOKEN}')" in shown, shown
    assert OTHER not in shown
    # As Docker: the image's own history keeps the value (docs: use --secret for secrets).
    assert f"TOKEN={TOKEN}" in run_cli("history", "app", root=store).stdout.decode()
    # The same value again hits; explain's read of the store put no value in it either.
    again = build(store, context, DOCKERFILE, None, "-t", "app", "--build-arg", f"TOKEN={TOKEN}")
    assert _run_hit(again) == [True, True]
    assert TOKEN.encode() not in _db_bytes(store)


def test_exported_cache_still_hits_on_another_machine(store, tmp_path, busybox_tar):
    # Digests, not a per-store secret: the exported cache stays portable.
    context = tmp_path / "ctx"
    context.mkdir()
    cache = tmp_path / "ci-cache"
    build(store, context, DOCKERFILE, None, "--build-arg", f"TOKEN={TOKEN}",
          "--cache-to", f"type=local,dest={cache},mode=max")
    fresh = tmp_path / "fresh"
    _import(fresh, busybox_tar)
    result = build(fresh, context, DOCKERFILE, None, "--build-arg", f"TOKEN={TOKEN}",
                   "--cache-from", f"type=local,src={cache}")
    assert _run_hit(result) == [True, True]
    assert TOKEN.encode() not in _db_bytes(fresh)


def _plant_old_rows(store: Path) -> None:
    """Make the store look written by an older pybuild: the arg in clear in a cache
    entry's inputs and in an explain note, and no record that values were digested."""
    db = sqlite3.connect(store / "pybuild.db")
    for key, raw in db.execute("SELECT key, inputs FROM cache_entries").fetchall():
        inputs = [[n, v] for n, v in json.loads(raw) if n != "digested"]
        for pair in inputs:
            if pair[0] == "arg":
                pair[0], pair[1] = "env", f"{pair[1].split('=')[0]}={TOKEN}"
        db.execute("UPDATE cache_entries SET inputs = ? WHERE key = ?", (json.dumps(inputs), key))
    for image_id, raw in db.execute("SELECT image_id, steps FROM builds").fetchall():
        steps = json.loads(raw)
        steps[-1]["note"] = f"cache miss: env TOKEN: '{OTHER}' -> '{TOKEN}'"
        db.execute("UPDATE builds SET steps = ? WHERE image_id = ?", (json.dumps(steps), image_id))
    db.execute("DROP TABLE IF EXISTS value_digests")
    db.commit()
    db.execute("PRAGMA user_version = 0")  # as a store made before migrations existed
    db.close()
    assert TOKEN.encode() in _db_bytes(store)


def test_an_older_store_loses_its_plain_values_on_open(store, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    build(store, context, DOCKERFILE, None, "-t", "app", "--build-arg", f"TOKEN={TOKEN}")
    _plant_old_rows(store)
    run_cli("images", root=store)  # any command that opens the store
    data = _db_bytes(store)
    assert TOKEN.encode() not in data and OTHER.encode() not in data
    assert TOKEN not in run_cli("explain", "app", root=store).stdout.decode()
    # The entries keep their keys: the next build with the same value still hits.
    result = build(store, context, DOCKERFILE, None, "--build-arg", f"TOKEN={TOKEN}")
    assert _run_hit(result) == [True, True]


def test_an_entry_from_an_older_export_is_stored_digested(tmp_path):
    # A --cache-from written by an older pybuild carries values in clear: they are
    # digested as the entry is recorded locally.
    from builder.cache import CacheEntry, CacheStore
    from builder.layers.summary import ChangeSummary
    from builder.store import Store

    store = Store(tmp_path / "store")
    CacheStore(store).record(CacheEntry(
        key="sha256:" + "1" * 64, parent="image sha256:" + "2" * 64, slot="Dockerfile:x:1",
        inputs=[("parent", "image sha256:" + "2" * 64), ("instruction", "RUN"),
                ("env", f"TOKEN={TOKEN}"), ("workdir", f"/srv/{TOKEN}")],
        chain_id=None, created="", changes=ChangeSummary()))
    store.close()
    assert TOKEN.encode() not in _db_bytes(tmp_path / "store")


def test_secret_looking_arg_and_env_names_warn(store, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    df = "FROM busybox\nARG DB_PASSWORD\nENV API_TOKEN=abc\nARG PUBLIC_KEY\nRUN true\n"
    err = build(store, context, df).stderr.decode()
    assert ('SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data '
            '(ARG "DB_PASSWORD")') in err, err
    warnings = [line for line in err.splitlines() if line.startswith("WARNING:")]
    assert '(ENV "API_TOKEN")' in err and not any("PUBLIC_KEY" in w for w in warnings), err
    (context / "Dockerfile").write_text(df)
    checked = run_cli("check", str(context / "Dockerfile"), root=store, check=False)
    out = checked.stdout.decode()
    assert '(ARG "DB_PASSWORD")' in out and '(ENV "API_TOKEN")' in out, out
