"""What an attacker's review of explain and its neighbours found (each test failed before
its fix): short build-arg values in clear, an imported entry that crashed explain or
wrote the baseline of later misses, templates without limits, a live view that wrapped."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import struct
import termios
from pathlib import Path

import pytest
from helpers import run_cli

from builder.cache.importer import ImportedEntry
from builder.cache.keys import recorded_inputs
from builder.cli.gotemplate import TemplateError, execute, parse
from builder.engine.progress_tty import TtyProgress
from builder.errors import StoreError

PARENT = "sha256:" + "1" * 64


def test_short_build_arg_values_are_digested_wherever_they_stand() -> None:
    args = {"PIN": "k7q", "MODE": "750", "ONE": "1"}
    recorded = recorded_inputs(
        [("parent", PARENT), ("env", "X=k7q"), ("workdir", "/w/k7q"), ("chmod", "750"),
         ("dest", "/srv/v1/app"), ("env", "PATH=/bin")], args)
    text = json.dumps(recorded)
    assert "k7q" not in text and '"750"' not in text
    assert ["dest", "/srv/v1/app"] in json.loads(text)   # "1" inside a word: kept
    assert ["env", "PATH=/bin"] in json.loads(text)


def _entry(changes: dict) -> dict:
    return {"key": PARENT, "parent": "scratch", "slot": "x/Dockerfile:s:1",
            "created": "2024-01-01T00:00:00Z", "inputs": [], "changes": changes,
            "layers": []}


@pytest.mark.parametrize("changes", [{"bytes": 10 ** 4000}, {"added": 1 << 63},
                                     {"largest": [{"path": "/x", "size": -1, "kind": "added"}]}])
def test_an_imported_entry_with_impossible_counts_is_refused(changes: dict) -> None:
    with pytest.raises(StoreError):
        ImportedEntry.parse(_entry(changes), "entry")


@pytest.mark.root
@pytest.mark.overlay
def test_an_imported_entry_never_becomes_the_baseline_of_later_misses(
        tmp_path: Path, busybox_tar: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nCOPY a.txt /a\n")
    (context / "a.txt").write_text("one\n")
    cache, first, second = tmp_path / "cache", tmp_path / "one", tmp_path / "two"
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        for store in (first, second):
            run_cli("import", str(busybox_tar), "busybox", root=store)
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    run_cli("-q", "-t", "app", "--cache-to", f"type=local,dest={cache}", str(context),
            root=first)
    # The attacker rewrites the entry's recorded inputs (the key still matches).
    for blob in (cache / "blobs" / "sha256").iterdir():
        data = blob.read_bytes()
        if b'"entries"' in data:
            doc = json.loads(data)
            doc["entries"][0]["inputs"].append(["env", "FAKE=the attacker wrote this"])
            new = json.dumps(doc).encode()
            index = cache / "index.json"
            digest = hashlib.sha256(new).hexdigest()
            (cache / "blobs" / "sha256" / digest).write_bytes(new)
            for path in (cache / "blobs" / "sha256").iterdir():
                raw = path.read_bytes()
                if blob.name.encode() in raw and path != blob:
                    path.write_bytes(raw.replace(blob.name.encode(), digest.encode())
                                     .replace(str(len(data)).encode(), str(len(new)).encode()))
                    manifest = path
            mdigest = hashlib.sha256(manifest.read_bytes()).hexdigest()
            (cache / "blobs" / "sha256" / mdigest).write_bytes(manifest.read_bytes())
            idx = index.read_text().replace(manifest.name, mdigest)
            idx = idx.replace(f'"size": {len(raw)}', f'"size": {manifest.stat().st_size}')
            index.write_text(idx)
            break
    run_cli("-q", "-t", "app", "--cache-from", f"type=local,src={cache}", str(context),
            root=second)
    hit = json.loads(run_cli("explain", "--format", "json", "app", root=second).stdout)
    assert hit["steps"][0]["cache"] == "hit"   # the tampered entry was taken
    (context / "a.txt").write_text("two\n")
    run_cli("-q", "-t", "app", str(context), root=second)
    shown = run_cli("explain", "--format", "json", "app", root=second).stdout.decode()
    assert "FAKE" not in shown and "attacker" not in shown
    assert json.loads(shown)["steps"][0]["reasons"] == [
        {"code": "file-changed", "params": {"path": "a.txt"}}]


@pytest.mark.parametrize("template", ['{{printf "%1000001d" 1}}', '{{pad "x" 100000000 1}}',
                                      '{{range $a := .L}}{{range $b := $.L}}{{range $c := $.L}}'
                                      '{{printf "%900000d" 1}}{{end}}{{end}}{{end}}'])
def test_templates_have_limits(template: str) -> None:
    try:
        out = execute(parse(template), {"L": list(range(200))})
    except TemplateError as err:
        assert "at most" in str(err) or "MiB" in str(err)
    else:
        assert "BADWIDTH" in out and len(out) < 1 << 20


def test_the_live_view_fits_the_terminal() -> None:
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    stream = os.fdopen(side, "w")
    try:
        progress = TtyProgress(stream)
        progress.step("[stage-0 1/1] RUN " + "x" * 300)
        progress.output(b"y" * 300 + b"\n")
        lines = progress._live()
        progress.done()
        progress.close()
    finally:
        stream.close()
        os.close(main)
    visible = [line.replace("\x1b[1m", "").replace("\x1b[2m", "").replace("\x1b[0m", "")
               for line in lines]
    assert all(len(line.rstrip("\n")) <= 80 for line in visible), visible
