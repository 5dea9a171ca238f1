"""Word expansion against BuildKit's own vectors (testdata/buildkit/shell)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.dockerfile.expand import (
    MAX_EXPANSION,
    ExpandResult,
    ExpansionError,
    ShellLex,
    build_envs,
)
from builder.dockerfile.shell_pattern import PatternError, reverse_pattern, shell_pattern_to_regex

SHELL = Path(__file__).resolve().parents[2] / "testdata" / "buildkit" / "shell"
# The environment upstream's TestShellParser4EnvVars uses.
ENV_VAR_TEST_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_lines() -> list:
    params = []
    with open(SHELL / "envVarTest", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("#"):
                continue
            line = line.strip()
            if not line:
                continue
            fields = line.split("|")
            assert len(fields) == 3, f"envVarTest:{number}: {line!r}"
            platform, word, expected = (x.strip() for x in fields)
            marks = []
            if platform == "W":
                marks.append(pytest.mark.skip(
                    reason="Windows-only line: variable names are case-insensitive there"))
            params.append(pytest.param(word, expected, id=f"L{number}", marks=marks))
    return params


def _words_lines() -> list:
    # Each ENV line adds to the environment every later line sees.
    params = []
    env: dict[str, str] = {}
    with open(SHELL / "wordsTest", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.removesuffix("\n")
            if line.startswith("#"):
                continue
            if line.startswith("ENV "):
                name, _, value = line[4:].lstrip(" ").partition("=")
                env[name] = value
                continue
            fields = line.split("|")
            assert len(fields) == 2, f"wordsTest:{number}: {line!r}"
            expected = fields[1].lstrip(" ").split(",")
            params.append(pytest.param(fields[0].strip(), expected, dict(env),
                                       id=f"L{number}"))
    return params


def _lex_cases() -> list:
    cases = json.loads((SHELL / "lex_cases.json").read_text(encoding="utf-8"))
    return [pytest.param(c, id=c["id"]) for c in cases]


ENV_VAR_LINES = _env_var_lines()
WORDS_LINES = _words_lines()
LEX_CASES = _lex_cases()


def test_vector_counts() -> None:
    # Guards against a truncated copy: 226 A + 2 U + 2 W lines, 24 word lines.
    assert len(ENV_VAR_LINES) == 230
    assert len(WORDS_LINES) == 24
    assert len(LEX_CASES) == 77


@pytest.mark.parametrize(("word", "expected"), ENV_VAR_LINES)
def test_env_var_test(word: str, expected: str) -> None:
    lex = ShellLex("\\")
    if expected == "error":
        with pytest.raises(ExpansionError):
            lex.process_word(word, ENV_VAR_TEST_ENV)
    else:
        assert lex.process_word(word, ENV_VAR_TEST_ENV) == expected


@pytest.mark.parametrize(("word", "expected", "env"), WORDS_LINES)
def test_words_test(word: str, expected: list[str], env: dict[str, str]) -> None:
    lex = ShellLex("\\")
    if expected == ["error"]:
        with pytest.raises(ExpansionError):
            lex.process_words(word, env)
    else:
        assert lex.process_words(word, env) == expected


@pytest.mark.parametrize("case", LEX_CASES)
def test_lex_cases(case: dict) -> None:
    api, asserts = case["api"], case["asserts"]
    if api in ("ProcessWordWithMatches", "ProcessWord"):
        lex = ShellLex(case["escape"])
        if case["error"]:
            with pytest.raises(ExpansionError) as info:
                lex.process_word_with_matches(case["input"], case["env"])
            if "error_contains" in asserts:
                assert case["error_contains"] in str(info.value)
            return
        result = lex.process_word_with_matches(case["input"], case["env"])
        assert isinstance(result, ExpandResult)
        if "result" in asserts:
            assert result.result == case["expected"]
            assert lex.process_word(case["input"], case["env"]) == case["expected"]
        if "matches" in asserts:
            assert result.matched == set(case["matches"])
        if "unmatched" in asserts:
            assert result.unmatched == set(case["unmatched"])
    elif api == "getEnv":
        assert build_envs(case["env_list"]).get(case["input"], "") == case["expected"]
    elif api == "convertShellPatternToRegex":
        options = case["options"]
        if case["error"]:
            with pytest.raises(PatternError):
                shell_pattern_to_regex(case["input"], options["greedy"], options["anchored"])
        else:
            got = shell_pattern_to_regex(case["input"], options["greedy"], options["anchored"])
            assert got == case["expected"]
    elif api == "reversePattern":
        assert reverse_pattern(case["input"]) == case["expected"]
    elif api == "reverseString":
        # Go's rune-wise reverse; shell_pattern.trim_suffix reverses with [::-1].
        assert case["input"][::-1] == case["expected"]
    else:
        pytest.fail(f"unknown api {api}")


# ------------------------------------------------------------ beyond the vectors

def test_error_message_names_the_word() -> None:
    with pytest.raises(ExpansionError) as info:
        ShellLex().process_word("${VAR:?message here$ARG}", {"ARG": "x"})
    assert str(info.value) == 'failed to process "${VAR:?message here$ARG}": VAR: message herex'
    with pytest.raises(ExpansionError, match="VAR: is not allowed to be unset"):
        ShellLex().process_word("${VAR?}", {})
    with pytest.raises(ExpansionError, match="unsupported modifier"):
        ShellLex().process_word("${VAR=x}", {})


def test_backtick_escape_token() -> None:
    lex = ShellLex("`")
    assert lex.process_word(r"C:\path\$HOME", {"HOME": "h"}) == r"C:\path\h"
    assert lex.process_word("`$HOME", {"HOME": "h"}) == "$HOME"
    assert lex.process_word('"a`"b"', {}) == 'a"b'
    assert lex.process_words("a` b c", {}) == ["a b", "c"]


def test_quotes_and_escapes_kept_raw() -> None:
    # The mode heredoc bodies are expanded in.
    lex = ShellLex(raw_quotes=True, raw_escapes=True)
    assert lex.process_word("""'$A' "$A" \\$A $A""", {"A": "x"}) == """'$A' "x" \\$A x"""


def test_skip_unset_env_keeps_references() -> None:
    lex = ShellLex(skip_unset_env=True)
    assert lex.process_word("$A ${B} ${C:-d} ${D/x/y} $E", {"E": "e"}) == \
        "$A ${B} ${C:-d} ${D/x/y} e"


def test_words_from_variables_split_but_quoted_do_not() -> None:
    env = {"V": " a  b "}
    assert ShellLex().process_words("x${V}y", env) == ["x", "a", "b", "y"]
    assert ShellLex().process_words('x"${V}"y', env) == ["x a  b y"]
    assert ShellLex().process_words('"" a', {}) == ["a"]  # an empty word is never emitted
    # Go's unicode.IsSpace: U+00A0 splits, U+001F (a Python isspace char) does not.
    assert ShellLex().process_words("a\u00a0b\x1fc", {}) == ["a", "b\x1fc"]


def test_matched_sets_count_words_inside_operators() -> None:
    result = ShellLex().process_word_with_matches("${A:-$B}${C#$D}${E/$F/$G}", {"B": "1"})
    assert result.matched == {"B"}
    assert result.unmatched == {"A", "C", "D", "E", "F", "G"}
    assert result.words == ["1"]


def test_replace_all_follows_go_not_python() -> None:
    lex = ShellLex()
    # Go's ReplaceAllString skips an empty match right after a match; re.sub does not.
    assert lex.process_word("${A//*/x}", {"A": "abc"}) == "x"
    assert lex.process_word("${A//$E/-}", {"A": "ab", "E": ""}) == "-a-b-"
    # ... and expands $ in the replacement ($0 is the match, $$ a dollar).
    assert lex.process_word(r"${A//o/[\$0]}", {"A": "foo"}) == r"f[\o][\o]"
    assert lex.process_word("${A//o/$R}", {"A": "foo", "R": "$$"}) == "f$$"
    assert lex.process_word("${A/o/$R}", {"A": "foo", "R": "$0"}) == "f$0o"  # literal once


def test_patterns_are_globs_not_regexes() -> None:
    env = {"A": "a.b.c", "N": "x\ny"}
    lex = ShellLex()
    assert lex.process_word("${A%.*}", env) == "a.b"
    assert lex.process_word("${A%%.*}", env) == "a"
    assert lex.process_word("${A#*.}", env) == "b.c"
    assert lex.process_word("${A##*.}", env) == "c"
    assert lex.process_word("${A/[ab]/z}", env) == "a.b.c"  # no bracket classes
    assert lex.process_word("${N#*y}", env) == "x\ny"  # like Go's ".", * stops at \n
    with pytest.raises(ExpansionError, match="invalid pattern"):
        lex.process_word(r"${A#\x}", env)


def test_blow_up_is_capped() -> None:
    lex = ShellLex()
    env = {"A": "x"}
    start = time.monotonic()
    with pytest.raises(ExpansionError, match="larger than"):
        for _ in range(40):  # ENV A=$A$A$A$A, forty times over
            env["A"] = lex.process_word("$A$A$A$A", env)
    assert time.monotonic() - start < 5
    assert len(env["A"]) <= MAX_EXPANSION
    big = {"B": "y" * (MAX_EXPANSION // 2 + 1)}
    with pytest.raises(ExpansionError, match="larger than"):
        lex.process_word('"$B$B"', big)
    with pytest.raises(ExpansionError, match="larger than"):
        lex.process_word("${B//y/yy}", big)
    with pytest.raises(ExpansionError, match="larger than"):
        lex.process_word("${X:-$B$B}", big)


def test_deep_nesting_is_a_clean_error() -> None:
    lex = ShellLex()
    assert lex.process_word("${A:-" * 50 + "x" + "}" * 50, {}) == "x"
    for depth in (150, 5000):
        with pytest.raises(ExpansionError, match="nested"):
            lex.process_word("${A:-" * depth + "x" + "}" * depth, {})


def test_leading_bom_dropped_like_go_scanner() -> None:
    assert ShellLex().process_word("\ufeff$A", {"A": "1"}) == "1"


_SPECIALS = [*"${}:-+?#%/\\'\"` abcAB_01*.\t\n@!", "${", "}", "\\\\", "\ufeff"]


@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    word=st.one_of(st.lists(st.sampled_from(_SPECIALS), max_size=40).map("".join),
                   st.text(max_size=40)),
    escape=st.sampled_from(["\\", "`"]),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
)
def test_fuzz_only_expansion_errors(word: str, escape: str,
                                    flags: tuple[bool, bool, bool, bool]) -> None:
    raw_quotes, raw_escapes, skip_quotes, skip_unset = flags
    lex = ShellLex(escape, raw_quotes=raw_quotes, raw_escapes=raw_escapes,
                   skip_process_quotes=skip_quotes, skip_unset_env=skip_unset)
    env = {"a": "x y", "A": "*", "b": "", "AB": "a\\b$0", "_": "${a}"}
    try:
        result = lex.process_word_with_matches(word, env)
    except ExpansionError:
        return
    assert isinstance(result.result, str)
    assert all(isinstance(w, str) and w for w in result.words)
    assert result.matched <= set(env)
    assert not result.unmatched & set(env)
