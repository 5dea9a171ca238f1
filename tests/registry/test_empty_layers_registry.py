"""Empty layers through a real registry: push, pull, build on the pulled image.

A step that changed nothing has BuildKit's empty layer (tests/engine/test_empty_layers.py):
its gzip blob ``sha256:4f4fb700...`` is named once per empty layer in the manifest,
uploaded once, and a pull records the same chain (an empty dir per empty layer).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import run_cli

# Written out here, not imported: the test states BuildKit's values on its own.
EMPTY_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
EMPTY_GZIP_DIGEST = "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1"
EMPTY_GZIP = bytes.fromhex("1f8b08000000000000ff621805a360148c5800080000ffff2eafb5ef00040000")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds mount overlay"),
]


def test_push_and_pull_an_image_with_empty_layers(tmp_path: Path, registry,
                                                  busybox_tar: Path) -> None:
    pusher = tmp_path / "pusher"
    run_cli("import", str(busybox_tar), "busybox", root=pusher)
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nWORKDIR /bin\nRUN true\n"
                                        "COPY nomatch* /\nRUN echo hi > /hi\n")
    ref = f"{registry.host}/a-empty:1"
    run_cli("-t", "a-empty", str(context), root=pusher)
    run_cli("push", "a-empty", ref, root=pusher)

    status, _, body = registry.request(
        "GET", "/v2/a-empty/manifests/1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 200
    layers = json.loads(body)["layers"]
    assert [d["digest"] for d in layers[1:-1]] == [EMPTY_GZIP_DIGEST] * 3
    status, _, blob = registry.request("GET", f"/v2/a-empty/blobs/{EMPTY_GZIP_DIGEST}")
    assert (status, blob) == (200, EMPTY_GZIP)

    puller = tmp_path / "puller"
    run_cli("pull", ref, root=puller)
    want = json.loads(run_cli("inspect", "a-empty", root=pusher).stdout)[0]
    got = json.loads(run_cli("inspect", ref, root=puller).stdout)[0]
    assert got["Id"] == want["Id"]
    assert got["RootFS"]["Layers"][1:-1] == [EMPTY_DIFF_ID] * 3
    # Built on: the packed empty layers are extracted (empty dirs) and mounted.
    (context / "Dockerfile").write_text(f"FROM {ref}\nRUN test -f /hi && true\n")
    run_cli("-t", "a-on-top", str(context), root=puller)
    on_top = json.loads(run_cli("inspect", "a-on-top", root=puller).stdout)[0]
    assert on_top["RootFS"]["Layers"] == [*got["RootFS"]["Layers"], EMPTY_DIFF_ID]
    assert b"store ok" in run_cli("doctor", "--deep", root=puller).stdout
