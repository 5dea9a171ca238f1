"""The RUN shell grammar (``builder.lint.shell``): what it reads, and what it refuses."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.lint.argv import invocation, invocations
from builder.lint.shell import (
    MAX_SCRIPT,
    AndOr,
    Pipeline,
    Script,
    SimpleCommand,
    Subshell,
    parse_script,
    unquote,
)


def _words(text: str) -> list[tuple[str, ...]]:
    script = parse_script(text)
    assert script is not None, text
    return [c.words for c in script.simple_commands()]


def test_lists_pipelines_and_operators() -> None:
    script = parse_script("a 1 && b | c || ! d; e &\nf")
    assert script == Script((
        AndOr((Pipeline((SimpleCommand((), ("a", "1")),)),
               Pipeline((SimpleCommand((), ("b",)), SimpleCommand((), ("c",)))),
               Pipeline((SimpleCommand((), ("d",)),), negated=True)), ("&&", "||")),
        AndOr((Pipeline((SimpleCommand((), ("e",)),)),), ()),
        AndOr((Pipeline((SimpleCommand((), ("f",)),)),), ())))


@pytest.mark.parametrize(("text", "words"), [
    ("echo 'a;b' \"c|d\" e\\&f", [("echo", "'a;b'", '"c|d"', "e\\&f")]),
    ("echo a#b # a comment; not a command", [("echo", "a#b")]),
    ("echo ${A:-x y} $(echo $(date)) `id`", [("echo", "${A:-x y}", "$(echo $(date))", "`id`"),
                                             ("echo", "$(date)"), ("date",), ("id",)]),
    ("set -e; \\\n  apt-get update", [("set", "-e"), ("apt-get", "update")]),
    ("a &&\n  b |\n  c", [("a",), ("b",), ("c",)]),
    ("", []),
])
def test_words(text: str, words: list[tuple[str, ...]]) -> None:
    assert _words(text) == words


def test_assignments_and_redirections() -> None:
    (command,) = parse_script("A=1 B='x y' pip install C=2 2>&1 >/dev/null <<EOF").simple_commands()
    assert command.assignments == ("A=1", "B='x y'")
    assert command.words == ("pip", "install", "C=2")
    assert command.redirects == ("1", "/dev/null", "EOF")


def test_subshells_and_substitutions_are_read_inside() -> None:
    script = parse_script("(cd /x && make) || sh -c \"$(curl -s u)\"")
    assert script is not None
    assert isinstance(script.items[0].pipelines[0].commands[0], Subshell)
    assert [c.words[0] for c in script.simple_commands()] == ["cd", "make", "sh", "curl"]


@pytest.mark.parametrize("text", ["case $x in a) b;; esac", "echo 'unclosed", "a && && b",
                                  "x" * (MAX_SCRIPT + 1)])
def test_text_the_grammar_does_not_know(text: str) -> None:
    assert parse_script(text) is None


def test_unquote_and_invocation() -> None:
    assert unquote("'--no-install-recommends'") == "--no-install-recommends"
    assert unquote('"a\\"b"c\\ d') == 'a"bc d'
    call = invocation(parse_script("then sudo -u root env A=1 /usr/bin/apt-get -y "
                                   "install x").simple_commands()[0])
    assert call.argv == ("apt-get", "-y", "install", "x") and "A" in call.assigned
    assert call.operands() == ["install", "x"]
    assert [c.name for c in invocations(parse_script("busybox sh -c x; nice -n 5 make"))] == [
        "sh", "make"]


def test_lark_loads_on_the_first_parse_only() -> None:
    code = ("import sys\nimport builder.lint.shell, builder.lint.gate, builder.lint.findings\n"
            "assert 'lark' not in sys.modules\n"
            "builder.lint.shell.parse_script('a')\nassert 'lark' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab =|&;()<>'\"\\$`{}#!\n\t2-")), max_size=60))
def test_any_text_parses_or_is_refused(text: str) -> None:
    script = parse_script(text)
    assert script is None or isinstance(script, Script)
    if script is not None:
        for command in script.simple_commands():
            invocation(command)


def test_hostile_scripts_stay_bounded() -> None:
    import time

    from builder.dockerfile import parse_text
    from builder.lint.rules import lint_dockerfile

    assert parse_script("(" * 5000 + "a" + ")" * 5000) is None      # too deep: refused
    assert parse_script("(" * 40 + "a" + ")" * 40) is not None
    for chunk in ("${", "$(", "'a ", "a|", "a&&"):
        text = chunk * (MAX_SCRIPT // len(chunk) - 1)
        started = time.monotonic()
        parse_script(text)
        assert time.monotonic() - started < 20, chunk   # about 0.5 s unloaded
    dockerfile = ("FROM x\n" + ("RUN " + "a|" * 16000 + "a\n") * 300).encode()  # 9.6 MB
    started = time.monotonic()
    lint_dockerfile(parse_text(dockerfile, "Dockerfile"))
    assert time.monotonic() - started < 60   # about 3 s unloaded: the script budget
