"""The parser against BuildKit's vectors: testfiles, negative files, line numbers,
and the parser rows of instruction_cases.json (words, JSON, name/value, warnings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.dockerfile import debug_parse, parse_text
from builder.dockerfile.line_parsers import (
    NOT_STRING_ARRAY,
    ParseError,
    go_quote,
    parse_json_array,
    parse_name_val,
    parse_words,
)
from builder.dockerfile.parser import MAX_INSTRUCTIONS, dump, parse
from builder.errors import DockerfileError

DATA = Path(__file__).resolve().parents[2] / "testdata" / "buildkit" / "parser"
CASES = json.loads((DATA / "instruction_cases.json").read_text(encoding="utf-8"))


def cases(api: str) -> list[dict]:
    return [c for c in CASES if c["api"] == api]


def ids(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows]


POSITIVE = sorted(p.name for p in (DATA / "testfiles").iterdir())
NEGATIVE = sorted(p.name for p in (DATA / "testfiles-negative").iterdir())


def test_vector_counts() -> None:
    assert len(POSITIVE) == 33
    assert len(NEGATIVE) == 4


@pytest.mark.parametrize("name", POSITIVE)
def test_testfiles_dump(name: str) -> None:
    data = (DATA / "testfiles" / name / "Dockerfile").read_bytes()
    expected = (DATA / "testfiles" / name / "result").read_bytes().decode("utf-8")
    # upstream compares Dump() + "\n" with the file
    assert debug_parse(data) + "\n" == expected


@pytest.mark.parametrize("name", POSITIVE)
def test_testfiles_debug_parse_from_path(name: str) -> None:
    path = DATA / "testfiles" / name / "Dockerfile"
    expected = (DATA / "testfiles" / name / "result").read_text("utf-8")
    assert debug_parse(path) + "\n" == expected


@pytest.mark.parametrize("name", NEGATIVE)
def test_testfiles_negative(name: str) -> None:
    with pytest.raises(DockerfileError):
        parse((DATA / "testfiles-negative" / name / "Dockerfile").read_bytes())


def test_line_numbers() -> None:
    (case,) = [c for c in CASES if c["id"] == "TestParseIncludesLineNumbers"]
    result = parse((DATA.parent / case["dockerfile_file"].removeprefix("buildkit/")).read_bytes())
    exp = case["expected"]
    assert (result.start_line, result.end_line) == (exp["start_line"], exp["end_line"])
    assert len(result.nodes) == exp["children_count"]
    assert [[n.start_line, n.end_line] for n in result.nodes] == exp["children_lines"]


def test_empty_continuation_warnings() -> None:
    (case,) = [c for c in CASES if c["id"] == "TestParseWarnsOnEmptyContinutationLine"]
    result = parse(case["dockerfile"])
    exp = case["expected"]
    assert len(result.warnings) == exp["warnings_count"]
    for warning, needles in zip(result.warnings, exp["warning_short_contains"], strict=True):
        for needle in needles:
            assert needle in warning.message
    assert exp["warning0_detail0_contains"] in result.warnings[0].description
    assert result.warnings[0].rule == "NoEmptyContinuation"


def test_scanner_error() -> None:
    (case,) = [c for c in CASES if c["id"] == "TestParseReturnsScannerErrors"]
    b = case["dockerfile_build"]
    text = b["prefix"] + b["repeat"] * b["count"] + b["suffix"]
    with pytest.raises(DockerfileError) as info:
        parse(text)
    assert info.value.message == case["error_equals"]


@pytest.mark.parametrize(("size", "ok"), [(65535, True), (65536, False)])
@pytest.mark.parametrize("newline", ["\n", ""])
def test_max_line_boundary(size: int, ok: bool, newline: str) -> None:
    text = "FROM a\nLABEL x=" + "b" * (size - len("LABEL x=")) + newline
    if ok:
        assert len(parse(text).nodes) == 2
    else:
        with pytest.raises(DockerfileError, match="max allowed size of 65535"):
            parse(text)


def test_max_line_counts_bytes_not_characters() -> None:
    line = "LABEL x=" + "é" * 32764  # 8 + 65528 bytes = 65536
    with pytest.raises(DockerfileError) as info:
        parse("FROM a\n" + line + "\n")
    assert info.value.line == 2


@pytest.mark.parametrize("row", cases("parseWords"), ids=ids(cases("parseWords")))
def test_parse_words(row: dict) -> None:
    assert parse_words(row["input"], row["escape"]) == row["expected"]


@pytest.mark.parametrize("row", cases("parseJSON"), ids=ids(cases("parseJSON")))
def test_parse_json(row: dict) -> None:
    if row["error"]:
        with pytest.raises(ParseError) as info:
            parse_json_array(row["input"])
        assert row["error_kind"] == "errDockerfileNotStringArray"
        assert str(info.value) == row["error_message"] == NOT_STRING_ARRAY
    else:
        assert parse_json_array(row["input"]) == row["expected"]


@pytest.mark.parametrize("row", cases("parseNameVal"), ids=ids(cases("parseNameVal")))
def test_parse_name_val(row: dict) -> None:
    if row["error"]:
        with pytest.raises(ParseError) as info:
            parse_name_val(row["input"], row["key"])
        assert str(info.value) == row["upstream_error_message_text"]
    else:
        assert parse_name_val(row["input"], row["key"]) == row["expected"]


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", '"plain"'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
        ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),
        ("♥ ☃", '"♥ ☃"'),
        ("\u00a0\u200b", '"\\u00a0\\u200b"'),
        ("\U000e0001", '"\\U000e0001"'),
        (b"\xff\xfe".decode("utf-8", "surrogateescape"), '"\\xff\\xfe"'),
    ],
)
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


def test_unknown_instruction_dump_and_typed_error() -> None:
    assert debug_parse("FROM a\nFOO bar baz\n") == '(from "a")\n(foo "")'
    with pytest.raises(DockerfileError) as info:
        parse_text("FROM a\nFOO bar baz\n")
    assert info.value.line == 2
    assert info.value.message == "unknown instruction: FOO (did you mean FROM?)"
    assert str(info.value) == "Dockerfile:2: unknown instruction: FOO (did you mean FROM?)"


def test_flags_quotes_and_escapes_are_processed() -> None:
    assert debug_parse('COPY --x="a b" --y=c\\ d s d\n') == '(copy ["--x=a b" "--y=c d"] "s" "d")'


def test_exec_and_shell_form_kept_apart() -> None:
    nodes = parse('CMD ["/usr/sbin/nginx"]\nCMD /usr/sbin/nginx\n').nodes
    assert dump_lines(nodes) == ['(cmd "/usr/sbin/nginx")', '(cmd "/usr/sbin/nginx")']
    assert [n.json for n in nodes] == [True, False]


def dump_lines(nodes: list) -> list[str]:
    from builder.dockerfile.parser import dump_node

    return [f"({dump_node(n)})" for n in nodes]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM a\r\nRUN b \\\r\n c\r\n", '(from "a")\n(run "b  c")\n'),
        ("\ufeffFROM a\n", '(from "a")\n'),
        (b"\xef\xbb\xbf# escape=`\nFROM a\nRUN b `\n c\n", '(from "a")\n(run "b  c")\n'),
        ("FROM a\rRUN b\r", '(from "a" "RUN" "b")\n'),
        ("FROM a\x00b\n", '(from "a\\x00b")\n'),
        ("  FROM a\n\t# c\n  RUN x\n", '(from "a")\n(run "x")\n'),
        ("FROM a\nRUN \\\n", '(from "a")\n(run)\n'),
        (b"FROM \xff\n", '(from "\\xff")\n'),
    ],
)
def test_line_endings_bom_nul(text: str | bytes, expected: str) -> None:
    assert debug_parse(text) + "\n" == expected


def test_escape_directive_backtick_and_errors() -> None:
    got = debug_parse("# escape=`\nFROM a\nRUN c:\\x `\n y\n")
    assert got == '(from "a")\n(run "c:\\\\x  y")'
    with pytest.raises(DockerfileError, match="only one escape parser directive"):
        parse("# escape=`\n# escape=\\\nFROM a\n")
    with pytest.raises(DockerfileError, match="invalid escape token 'x' does not match ` or \\\\"):
        parse("# escape=x\nFROM a\n")
    assert parse("# syntax=docker/dockerfile:1\n# check=skip=all\nFROM a\n").directives[1].name == (
        "check"
    )


def test_instruction_count_limit() -> None:
    with pytest.raises(DockerfileError, match="more than 100000 instructions"):
        parse("FROM a\n" + "RUN x\n" * MAX_INSTRUCTIONS)


def test_size_limit() -> None:
    with pytest.raises(DockerfileError, match="limit"):
        parse(b"FROM a\n" + b"#" * (10 * 1024 * 1024))


def test_continuation_join_is_linear() -> None:
    import time

    text = "FROM a\nRUN x \\\n" + "  y \\\n" * 60000 + "  z\n"
    start = time.perf_counter()
    node = parse(text).nodes[1]
    assert time.perf_counter() - start < 2
    assert node.end_line == 60003
    assert dump(parse("FROM a\n")) == '(from "a")'


def test_import_is_light_and_exports_are_functions() -> None:
    import subprocess
    import sys

    code = (
        "import sys, builder.dockerfile\n"
        "heavy = {'lark', 'dockerfile_parse', 'hypothesis', 'builder.dockerfile.parser'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
        "import builder.dockerfile.linter, builder.dockerfile.renderer\n"
        "from builder.dockerfile import lint, render, parse_text\n"
        "assert callable(lint) and callable(render) and callable(parse_text)\n"
        "assert not {'lark', 'dockerfile_parse', 'hypothesis'} & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
