"""``pybuild explain --format json|yaml``: the same data as the table and more, in a
versioned schema (docs/explain.schema.json) that every output here validates against."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "explain.schema.json").read_text())

DOCKERFILE = """\
FROM busybox
ARG TOKEN=first
ENV MODE=a
COPY app/ /app/
RUN head -c 300000 /dev/zero > /big && echo "$TOKEN" > /token-used && touch '/\033]0;x\007'
RUN rm /big
"""


def _explain(root: Path, *args: str) -> dict:
    document = json.loads(run_cli("explain", "--format", "json", *args, root=root).stdout)
    jsonschema.validate(document, SCHEMA)
    return document


@pytest.fixture
def built(tmp_path: Path, busybox_tar: Path) -> tuple[Path, Path]:
    root, context = tmp_path / "store", tmp_path / "ctx"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    (context / "app").mkdir(parents=True)
    (context / "app" / "main.sh").write_text("echo main\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    run_cli("-q", "-t", "app", str(context), root=root)
    return root, context


def test_json_of_a_real_build_validates_and_carries_the_table(built) -> None:
    root, _ = built
    document = _explain(root, "app")
    assert document["schemaVersion"] == 1
    assert document["image"].startswith("sha256:")
    steps = {step["index"]: step for step in document["steps"]}
    assert [steps[i]["kind"] for i in (1, 2, 3, 4, 5)] == \
        ["config", "config", "layer", "layer", "layer"]
    run = steps[4]
    assert run["cache"] == "miss" and run["reasons"] == [
        {"code": "not-built-before", "params": {}}]
    assert run["layer"]["diffId"].startswith("sha256:") and run["layer"]["size"] > 300000
    assert run["changes"]["added"] == 3 and run["changes"]["bytes"] >= 300000
    assert run["changes"]["largest"][0] == {"path": "/big", "size": 300000, "kind": "added"}
    assert run["wasted"] == 300000 and document["summary"]["wasted"] == 300000
    assert run["line"] == 5 and run["stage"] == "stage-0"
    assert document["summary"] == {"steps": 5, "layers": 3, "emptyLayers": 0, "hits": 0,
                                   "misses": 3, "wasted": 300000}
    # The instruction's escape sequence is JSON-escaped, never raw.
    raw = run_cli("explain", "--format", "json", "app", root=root).stdout
    assert b"\x1b" not in raw and "\\u001b" in raw.decode()


def test_yaml_is_the_same_document(built) -> None:
    root, _ = built
    as_yaml = yaml.safe_load(run_cli("explain", "--format", "yaml", "app", root=root).stdout)
    assert as_yaml == _explain(root, "app")
    assert b"\x1b" not in run_cli("explain", "--format", "yaml", "app", root=root).stdout


def test_a_rebuild_reports_hits_and_a_changed_arg_by_name_only(built) -> None:
    root, context = built
    run_cli("-q", "-t", "app", str(context), root=root)
    assert all(step["cache"] in ("hit", "none") for step in _explain(root, "app")["steps"])
    run_cli("-q", "-t", "app", "--build-arg", "TOKEN=s3cr3t-value", str(context), root=root)
    document = _explain(root, "app")
    run = document["steps"][3]
    assert run["reasons"] == [{"code": "arg-changed",
                               "params": {"name": "TOKEN", "change": "changed"}}]
    assert "s3cr3t-value" not in json.dumps(document)
    shown = _explain(root, "--show-values", "app")  # the image's own value, on request
    assert shown["steps"][3]["reasons"][0]["params"]["now"] == "s3cr3t-value"


def test_a_changed_base_image_is_named_with_both_digests(built, busybox_tar: Path) -> None:
    root, context = built
    os.environ["SOURCE_DATE_EPOCH"] = "1600000000"  # another image ID for the same files
    try:
        run_cli("import", str(busybox_tar), "busybox", root=root)
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    run_cli("-q", "-t", "app", str(context), root=root)
    copy = _explain(root, "app")["steps"][2]
    assert copy["reasons"][0]["code"] == "base-changed"
    params = copy["reasons"][0]["params"]
    assert params["base"] == "busybox" and params["old"] != params["new"]
    assert params["old"].startswith("sha256:") and params["new"].startswith("sha256:")
    text = run_cli("explain", "app", root=root).stdout.decode()
    assert f"base image busybox changed: {params['old']} -> {params['new']}" in text


def test_against_compares_with_another_image(built) -> None:
    root, context = built
    first = run_cli("images", "-q", root=root).stdout.decode()
    assert first
    (context / "app" / "main.sh").write_text("echo two\n")
    run_cli("-q", "-t", "two", str(context), root=root)
    (context / "app" / "main.sh").write_text("echo main\n")
    run_cli("-q", "-t", "app", str(context), root=root)  # all hits: like the first build
    assert _explain(root, "app")["steps"][2]["cache"] == "hit"
    against = _explain(root, "app", "--against", "two")
    assert against["against"].startswith("sha256:")
    codes = [[r["code"] for r in step["reasons"]] for step in against["steps"]]
    assert codes[2] == ["file-changed"] and codes[3][0] == "parent-differs"
    text = run_cli("explain", "app", "--against", "two", root=root).stdout.decode()
    assert "against the baseline: file app/main.sh changed" in text
    assert against["steps"][2]["reasons"][0]["params"] == {"path": "app/main.sh"}
    same = _explain(root, "app", "--against", "app")
    assert [step["reasons"][0]["code"] for step in same["steps"][2:]] == ["same"] * 3


def test_an_image_not_built_here_is_one_line(built) -> None:
    root, _ = built
    result = run_cli("explain", "--format", "json", "busybox", root=root, check=False)
    assert result.returncode != 0
    assert result.stderr.decode().count("\n") == 1 and b"nothing to explain" in result.stderr
