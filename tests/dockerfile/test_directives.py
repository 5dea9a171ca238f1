"""Every row of directive_cases.json, the check options, and directives in parse_text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.dockerfile import lint, parse_text
from builder.dockerfile.directives import (
    CheckConfig,
    DirectiveError,
    DirectiveParser,
    detect_syntax,
    parse_check_options,
    parse_directive,
)
from builder.errors import DockerfileError

DATA = Path(__file__).resolve().parents[2] / "testdata" / "buildkit" / "parser"
CASES = json.loads((DATA / "directive_cases.json").read_text(encoding="utf-8"))


def test_case_count() -> None:
    assert len(CASES) == 17


@pytest.mark.parametrize("row", CASES, ids=lambda r: r["id"])
def test_directive_case(row: dict) -> None:
    exp = row["expected"]
    if row["api"] == "DirectiveParser.ParseAll":
        found = DirectiveParser().parse_all(row["input"])
        assert len(found) == exp["count"]
        assert [{"name": d.name, "value": d.value} for d in found] == exp["directives"]
        return
    if row["api"] == "DetectSyntax":
        ref, cmdline, line, ok = detect_syntax(row["input"])
    else:
        assert row["api"] == "ParseDirective"
        ref, cmdline, line, ok = parse_directive(row["key"], row["input"])
    for what in row["asserts"]:
        if what == "ok":
            assert ok is exp["ok"]
        elif what == "ref":
            assert ref == exp["ref"]
        elif what == "cmdline":
            assert cmdline == exp["cmdline"]
        elif what == "location":
            assert [[line, line]] == exp["location"]


def test_repeated_directive_is_an_error() -> None:
    p = DirectiveParser()
    p.parse_line("# syntax=a")
    with pytest.raises(DirectiveError, match="only one syntax parser directive can be used"):
        p.parse_line("# syntax=b")


@pytest.mark.parametrize(
    ("text", "config"),
    [
        ("", CheckConfig()),
        ("skip=all", CheckConfig(skip_all=True)),
        ("skip=A, B;error=true", CheckConfig(skip=frozenset({"A", "B"}), error=True)),
        ("experimental=all;skip=X", CheckConfig(experimental_all=True, skip=frozenset({"X"}))),
    ],
)
def test_check_options(text: str, config: CheckConfig) -> None:
    assert parse_check_options(text) == config


@pytest.mark.parametrize("text", ["skip", "bogus=1", "error=maybe"])
def test_bad_check_options(text: str) -> None:
    with pytest.raises(DirectiveError):
        parse_check_options(text)


def test_directives_in_parse_text() -> None:
    df = parse_text("# syntax=docker/dockerfile:1.7 // x\n# ESCAPE = `\n# check=skip=all\nFROM a\n")
    assert df.directives == {
        "syntax": "docker/dockerfile:1.7 // x",
        "escape": "`",
        "check": "skip=all",
    }
    assert df.escape == "`"
    assert parse_text("# x\n# escape=`\nFROM a\n").escape == "\\"


def test_check_directive_after_shebang_is_read_as_upstream() -> None:
    text = "#!/usr/bin/env buildctl\n# check=skip=MaintainerDeprecated\nFROM a\nMAINTAINER me\n"
    df = parse_text(text)
    assert df.directives.get("check") == "skip=MaintainerDeprecated"
    assert [w.rule for w in lint(df)] == []


def test_bad_check_directive_fails_the_parse() -> None:
    with pytest.raises(DockerfileError, match="failed to parse check options"):
        parse_text("# check=skip\nFROM a\n")
