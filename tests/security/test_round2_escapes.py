"""Round 2, point 13: text from a Dockerfile or an image never reaches the terminal raw.

The attack, for real: a Dockerfile whose LABEL and instruction text hold escape
sequences (``ESC ] 0 ; pwned BEL`` sets the window title, ``ESC [ 2 J`` clears the
screen, ``ESC ] 52`` writes the clipboard), a RUN step that prints them, a loaded image
whose history, labels and tag carry them, and a COPY of a file named with them.
``explain``, ``history``, ``images``, plain and tty progress and the one-line errors
must show them escaped (``\\x1b``): no ESC, BEL, CR or other C0/C1 control but newline
and tab.  JSON output (``--progress json``, ``inspect``) keeps the exact strings.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from pathlib import Path

import pytest
from helpers import run_cli
from security.oracle import TarMaker, build

pytestmark = [
    pytest.mark.root, pytest.mark.overlay,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, overlay"),
]

TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"
CLIP = "\x1b]52;c;cHduZWQ=\x07"
EVIL = TITLE + CLEAR + CLIP + "\r\x9b6n"
# Raw escapes in the Dockerfile text (LABEL, so history and explain quote them), and a
# RUN step that prints them itself (printf turns \033 into ESC at run time).
DOCKERFILE = (f'FROM busybox\nLABEL evil="{EVIL}"\n'
              "RUN printf '\\033]0;pwned\\007\\033[2J\\033]52;c;cHduZWQ=\\007\\r\\n' "
              f"&& echo '{CLEAR}still here' && echo ok > /ok\n")
# Own sequences of the tty view: bold, dim, reset, and "up N lines, clear below".
_TTY_OWN = re.compile(r"\x1b\[[012]m|\x1b\[\d+F\x1b\[J")


def _controls(text: str) -> list[str]:
    """Control characters a terminal would act on: C0 but \\n and \\t, DEL, C1."""
    return sorted({repr(c) for c in text
                   if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F})


@pytest.fixture
def store(tmp_path: Path, busybox_tar: Path) -> Path:
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    return root


def test_plain_progress_explain_and_history_escape_controls(store, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    result = build(store, context, DOCKERFILE, None, "-t", "evil")
    progress = result.stderr.decode()
    assert _controls(progress) == [], progress
    assert "\\x1b]0;pwned\\x07" in progress  # shown, escaped: nothing is hidden
    assert "\\x1b[2Jstill here" in progress
    for command in (["explain", "evil"], ["explain", "--show-values", "evil"],
                    ["history", "evil"], ["images"]):
        out = run_cli(*command, root=store).stdout.decode()
        assert _controls(out) == [], (command, out)
    assert "\\x1b]0;pwned\\x07" in run_cli("history", "evil", root=store).stdout.decode()
    # JSON stays exact: the label as written.
    inspect = json.loads(run_cli("inspect", "evil", root=store).stdout)
    assert inspect[0]["Config"]["Labels"]["evil"] == EVIL


def test_tty_progress_shows_no_foreign_sequence_and_json_stays_exact(store, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    df = tmp_path / "Dockerfile"
    df.write_text(DOCKERFILE)
    result = run_cli("build", "--progress", "tty", "-f", str(df), str(context), root=store)
    shown = _TTY_OWN.sub("", result.stderr.decode())
    assert _controls(shown) == [], shown
    assert "\\x1b[2Jstill here" in shown
    # JSON events carry the exact text: json.dumps already escapes it.
    result = run_cli("build", "--no-cache", "--progress", "json", "-f", str(df), str(context),
                     root=store)
    events = [json.loads(line) for line in result.stderr.decode().splitlines()]
    printed = "".join(e["data"] for e in events if e["event"] == "output")
    assert TITLE + CLEAR + CLIP + "\r\n" in printed
    assert any(e["event"] == "step" and TITLE + CLEAR + CLIP in e["name"] for e in events)


def _hostile_archive(tag: str) -> bytes:
    """A ``docker save`` archive whose history, labels and file names carry escapes."""
    layer = TarMaker()
    layer.add(f"name{CLEAR}x", content=b"x")
    layer_tar = layer.data()
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Labels": {f"k{TITLE}": EVIL}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": f"2024-01-01T00:00:00Z{CLEAR}", "created_by": f"evil {EVIL}",
                     "comment": f"c {TITLE}"}],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id[7:] + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": [layer_name]}]).encode()
    out = TarMaker(tarfile.USTAR_FORMAT)
    for name, data in ((config_name, config), (layer_name, layer_tar),
                       ("manifest.json", manifest)):
        out.add(name, content=data)
    return out.data()


def test_a_loaded_image_history_and_labels_are_escaped(store, tmp_path):
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_hostile_archive("evil:1"))
    loaded = run_cli("load", "-i", str(archive), root=store)
    assert _controls(loaded.stdout.decode() + loaded.stderr.decode()) == []
    history = run_cli("history", "evil:1", root=store).stdout.decode()
    assert _controls(history) == [], history
    assert "evil \\x1b]0;pwned\\x07" in history
    inspect = json.loads(run_cli("inspect", "evil:1", root=store).stdout)
    assert inspect[0]["Config"]["Labels"][f"k{TITLE}"] == EVIL
    # A build on it: step output listing the file, and the explain table.
    context = tmp_path / "ctx"
    context.mkdir()
    result = build(store, context, "FROM busybox\nCOPY --from=evil:1 / /evil/\nRUN echo /evil/*\n",
                   None, "-t", "child")
    assert _controls(result.stderr.decode()) == [], result.stderr
    assert "name\\x1b[2Jx" in result.stderr.decode()
    assert _controls(run_cli("explain", "child", root=store).stdout.decode()) == []


def test_an_error_quoting_a_file_name_is_escaped(store, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    # No "[" in the name: a glob that matches nothing is not an error (as BuildKit).
    name = f"missing{TITLE}{CLIP}"
    result = build(store, context, f"FROM busybox\nCOPY {name} /x\n", None, check=False)
    assert result.returncode != 0
    err = result.stderr.decode()
    assert _controls(err) == [], err
    assert "Traceback" not in err and "missing\\x1b]0;pwned\\x07" in err, err
