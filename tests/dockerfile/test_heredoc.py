"""Every row of heredoc_cases.json, plus heredoc edge cases of our own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.dockerfile import CopyCommand, RunCommand, parse_text
from builder.dockerfile.heredoc import (
    HeredocError,
    chomp_heredoc_content,
    heredocs_from_line,
    parse_heredoc,
)
from builder.dockerfile.instructions import parse_instruction
from builder.dockerfile.parser import parse
from builder.errors import DockerfileError

DATA = Path(__file__).resolve().parents[2] / "testdata" / "buildkit" / "parser"
CASES = json.loads((DATA / "heredoc_cases.json").read_text(encoding="utf-8"))


def rows(api: str) -> list[dict]:
    return [c for c in CASES if c["api"] == api]


def test_case_count() -> None:
    assert len(CASES) == 48
    known = {"Parse", "ChompHeredocContent", "ParseHeredoc", "heredocsFromLine", "ParseInstruction"}
    assert {c["api"] for c in CASES} == known


@pytest.mark.parametrize("row", rows("Parse"), ids=lambda r: r["id"])
def test_parse_extracts_heredocs(row: dict) -> None:
    assert row["asserts"] == ["no_error", "children_heredocs"]
    nodes = parse(row["dockerfile"]).nodes
    assert len(nodes) >= row["min_children"]
    for child in row["children"]:
        node = nodes[child["index"]]
        assert node.value == child["instruction"]
        assert node.original == child["original"]
        got = [
            {
                "name": h.name,
                "file_descriptor": h.file_descriptor,
                "expand": h.expand,
                "chomp": h.chomp,
                "content": h.content,
            }
            for h in node.heredocs
        ]
        assert got == (child["heredocs"] or [])


@pytest.mark.parametrize("row", rows("ChompHeredocContent"), ids=lambda r: r["id"])
def test_chomp(row: dict) -> None:
    assert chomp_heredoc_content(row["input"]) == row["expected"]


@pytest.mark.parametrize("row", rows("ParseHeredoc"), ids=lambda r: r["id"])
def test_parse_heredoc(row: dict) -> None:
    if "error" in row["asserts"]:
        with pytest.raises(HeredocError):
            parse_heredoc(row["input"])
        return
    doc = parse_heredoc(row["input"])
    if "is_none" in row["asserts"]:
        assert doc is None
    else:
        assert doc is not None and doc.name == row["expected"]["name"]


@pytest.mark.parametrize("row", rows("heredocsFromLine"), ids=lambda r: r["id"])
def test_heredocs_from_line(row: dict) -> None:
    names = [h.name for h in heredocs_from_line(row["input"])]
    assert names == row.get("upstream_returns", row["expected_names"])
    # What upstream asserts: each returned name matches the listed one.
    assert all(n == e for n, e in zip(names, row["expected_names"], strict=False))


@pytest.mark.parametrize("row", rows("ParseInstruction"), ids=lambda r: r["id"])
def test_parse_instruction(row: dict) -> None:
    nodes = parse(row["dockerfile"]).nodes  # parse_ok
    node = nodes[row["child"]]
    if row["error"]:
        with pytest.raises(DockerfileError) as info:
            parse_instruction(node)
        assert row["error_contains"] in info.value.message
        return
    cmd = parse_instruction(node)
    exp = row["expected"]
    if "sources_and_dest" in row["asserts"]:
        assert isinstance(cmd, CopyCommand)
        assert cmd.dest == exp["dest_path"]
        assert cmd.sources == exp["source_paths"]
        got = [{"path": h.name, "data": h.content, "expand": h.expand} for h in cmd.source_heredocs]
        assert got == exp["source_contents"]
    else:
        assert isinstance(cmd, RunCommand)
        assert cmd.shell_form == exp["prepend_shell"]
        assert cmd.cmd == exp["cmd_line"]
        got = [{"name": h.name, "data": h.content, "chomp": h.chomp} for h in cmd.heredocs]
        assert got == exp["files"]


def test_unterminated_heredoc() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("FROM a\nRUN <<EOF\necho hi\n")
    assert info.value.message == "unterminated heredoc"
    assert info.value.line == 2


def test_several_heredocs_and_crlf() -> None:
    df = parse_text("FROM a\r\nRUN <<A cat - <<B\r\none\r\nA\r\ntwo\r\nB\r\nRUN x\r\n")
    run = df.stages[0].commands[0]
    assert isinstance(run, RunCommand)
    assert [(h.name, h.content) for h in run.heredocs] == [("A", "one\r\n"), ("B", "two\r\n")]
    assert run.end_line == 6
    assert df.stages[0].commands[1].line == 7


def test_quoted_delimiter_turns_off_expansion() -> None:
    df = parse_text("FROM a\nCOPY <<'EOF' <<\"E2\" <<E3 /d/\n$X\nEOF\n$Y\nE2\n$Z\nE3\n")
    copy = df.stages[0].commands[0]
    assert isinstance(copy, CopyCommand)
    assert [(h.name, h.expand) for h in copy.source_heredocs] == [
        ("EOF", False),
        ("E2", False),
        ("E3", True),
    ]


def test_onbuild_heredoc_and_expression() -> None:
    df = parse_text("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n")
    (cmd,) = df.stages[0].commands
    assert cmd.expression == "RUN <<EOF\necho hi\nEOF"  # type: ignore[attr-defined]


def test_heredoc_not_in_json_or_other_instructions() -> None:
    df = parse_text('FROM a\nRUN ["<<EOF"]\nUSER <<EOF\n', "x")
    assert len(df.stages[0].commands) == 2
    assert df.stages[0].commands[0].heredocs == []  # type: ignore[attr-defined]
    with pytest.raises(DockerfileError, match="unknown instruction: EOF"):
        parse_text("FROM a\nUSER <<EOF\nEOF\n")
