"""The shell of a RUN step, read with a Lark grammar into a small typed model.

The grammar covers the POSIX shell subset Dockerfiles use: simple commands with
their assignments, words and redirections; pipelines (``a | b``, ``! a``); lists
joined by ``&&``, ``||``, ``;``, ``&`` and newlines; subshells ``( … )``; quoting
(``'…'``, ``"…"``, ``\\x``), parameter expansions ``${…}`` and command substitutions
``$(…)`` / `` `…` `` kept inside their word.  Reserved words (``if``, ``then``,
``do``, ``{``, …) are ordinary words here: ``skip_reserved`` drops them from the
front of a command, so ``if [ -f x ]; then apt-get install y; fi`` still shows the
``apt-get`` command, which is all the lint rules need.  ``case … esac`` and other
text the grammar does not know give ``None``: the rules then say nothing about
that RUN rather than guess.

Lark is imported on the first parse only (about 100 ms): a build whose lint
results are cached never gets here (``builder.lint.gate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from lark import Lark, Token, Tree

__all__ = ["AndOr", "Pipeline", "Script", "SimpleCommand", "Subshell", "parse_script",
           "skip_reserved", "unquote"]

# Word characters are anything but blanks and the operators; quotes, escapes,
# ${…}, $(…) (one level of nested parentheses), `…` and <(…) are parts of a word.
# A "#" starts a comment only where a word would start, as in sh.  Every part starts
# with a character no other part (nor the plain class) starts with, and ${…} stops at
# "$", "{" and newlines, so a failed part costs at most one scan to its end: the lexer
# stays linear on hostile input ("${${${…" would be quadratic otherwise).
_PARTS = (r"""\\[^\r\n]|'[^']*'|"(?:[^"\\]|\\[\s\S])*"|\$\((?:[^()]|\([^()]*\))*\)"""
          r"|\$\{[^{}$\n]*\}|\$|`[^`]*`|<\((?:[^()]|\([^()]*\))*\)")
_WORD = (r"(?:[^\s;&|()<>'\"\\`$#]|" + _PARTS + r")(?:[^\s;&|()<>'\"\\`$]|"
         + _PARTS + ")*")

_GRAMMAR = rf"""
start: _terms? (and_or (_terms and_or)* _terms?)?
_terms: (SEMI | AMP | _NL)+
and_or: pipeline (ANDOR _NL* pipeline)*
pipeline: BANG? command (PIPE _NL* command)*
?command: simple | subshell
subshell: "(" start ")" redirect*
simple: (ASSIGN | WORD | redirect)+
redirect: IO_NUMBER? REDIR WORD

ANDOR: "&&" | "||"
PIPE: "|"
SEMI: ";"
AMP: "&"
BANG.3: /!(?=[ \t])/
IO_NUMBER.3: /[0-9]+(?=[<>])/
REDIR: /<<-|<<|>>|<&|>&|<>|>\||&>>|&>|<|>/
ASSIGN.2: /[A-Za-z_][A-Za-z0-9_]*=(?:{_WORD})?/
WORD: /{_WORD}/
_NL: /\r?\n/
COMMENT: /#[^\n]*/
%ignore /[ \t]+/
%ignore /\\\r?\n/
%ignore COMMENT
"""

_RESERVED = frozenset({"!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done",
                       "while", "until", "time"})
# More than this many characters is not a Dockerfile's RUN line: no parse, no finding.
# Lark's LALR parser takes about 30 µs a token here, so this also bounds a hostile
# line to about half a second.
MAX_SCRIPT = 32 * 1024
# Subshells nested deeper than this are refused (the model is built recursively).
MAX_DEPTH = 50


class SimpleCommand(msgspec.Struct, frozen=True):
    """``A=1 cmd arg 2>/dev/null``: assignments before the name, then the words
    (name first) as written, quotes kept; redirection targets apart."""

    assignments: tuple[str, ...]
    words: tuple[str, ...]
    redirects: tuple[str, ...] = ()


class Subshell(msgspec.Struct, frozen=True):
    script: Script


Command = SimpleCommand | Subshell


class Pipeline(msgspec.Struct, frozen=True):
    commands: tuple[Command, ...]
    negated: bool = False


class AndOr(msgspec.Struct, frozen=True):
    """Pipelines joined by ``&&``/``||``; ``operators[i]`` joins pipeline i and i+1."""

    pipelines: tuple[Pipeline, ...]
    operators: tuple[str, ...]


class Script(msgspec.Struct, frozen=True):
    """Lists separated by ``;``, ``&`` or newlines."""

    items: tuple[AndOr, ...]

    def simple_commands(self) -> list[SimpleCommand]:
        """Every simple command, subshells and ``$(…)`` substitutions included, in order."""
        out: list[SimpleCommand] = []
        for item in self.items:
            for pipeline in item.pipelines:
                for command in pipeline.commands:
                    _collect(command, out)
        return out

    def pipelines(self) -> list[Pipeline]:
        """Every pipeline, those in subshells and substitutions included."""
        out: list[Pipeline] = []
        for item in self.items:
            for pipeline in item.pipelines:
                out.append(pipeline)
                for command in pipeline.commands:
                    for inner in _inner_scripts(command):
                        out.extend(inner.pipelines())
        return out


def _collect(command: Command, out: list[SimpleCommand]) -> None:
    if isinstance(command, SimpleCommand):
        out.append(command)
    for inner in _inner_scripts(command):
        out.extend(inner.simple_commands())


def _inner_scripts(command: Command) -> list[Script]:
    """A subshell's script, and those of the command substitutions in a command's words."""
    if isinstance(command, Subshell):
        return [command.script]
    scripts = []
    for word in (*command.assignments, *command.words):
        for body in substitutions(word):
            inner = parse_script(body)
            if inner is not None:
                scripts.append(inner)
    return scripts


def substitutions(word: str) -> list[str]:
    """The bodies of ``$(…)``, `` `…` `` and ``<(…)`` in a word (not in single quotes)."""
    out: list[str] = []
    i, n, quote = 0, len(word), ""
    while i < n:
        ch = word[i]
        if ch == "\\" and quote != "'":
            i += 2
            continue
        if ch == "'" and quote != '"':
            quote = "" if quote == "'" else "'"
        elif ch == '"' and quote != "'":
            quote = "" if quote == '"' else '"'
        elif quote != "'" and (word.startswith("$(", i) or word.startswith("<(", i)):
            end = _closing(word, i + 2)
            out.append(word[i + 2:end])
            i = end
        elif quote != "'" and ch == "`":
            end = word.find("`", i + 1)
            end = n if end < 0 else end
            out.append(word[i + 1:end])
            i = end
        i += 1
    return out


def _closing(word: str, start: int) -> int:
    depth = 1
    for j in range(start, len(word)):
        if word[j] == "(":
            depth += 1
        elif word[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return len(word)


def unquote(word: str) -> str:
    """The word with its quotes and backslashes removed, variables left as written:
    ``'--no-install-recommends'`` and ``--no-install-recommends`` read the same."""
    out: list[str] = []
    i, n, quote = 0, len(word), ""
    while i < n:
        ch = word[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                out.append(ch)
        elif ch == "\\" and i + 1 < n:
            out.append(word[i + 1])
            i += 1
        elif ch in "'\"" and (not quote or quote == ch):
            quote = "" if quote else ch
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def skip_reserved(words: tuple[str, ...]) -> tuple[str, ...]:
    """The words from the first that is not a reserved word (``then apt-get …``)."""
    i = 0
    while i < len(words) and words[i] in _RESERVED:
        i += 1
    return words[i:]


_parser: Lark | None = None


def _lark() -> Lark:
    global _parser
    if _parser is None:
        from lark import Lark

        _parser = Lark(_GRAMMAR, parser="lalr", lexer="contextual", maybe_placeholders=False)
    return _parser


def parse_script(text: str) -> Script | None:
    """The script's model, or None when the grammar does not know the text."""
    if len(text) > MAX_SCRIPT:
        return None
    from lark.exceptions import LarkError

    if _depth(text) > MAX_DEPTH:
        return None
    try:
        tree = _lark().parse(text)
    except (LarkError, RecursionError):
        return None
    return _script(tree)


def _depth(text: str) -> int:
    """An upper bound of the subshell nesting (quotes not considered)."""
    depth = deepest = 0
    for ch in text:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth = max(0, depth - 1)
    return deepest


def _script(tree: Tree[Token]) -> Script:
    return Script(tuple(_and_or(child) for child in tree.children
                        if not isinstance(child, str)))


def _and_or(tree: Tree[Token]) -> AndOr:
    pipelines, operators = [], []
    for child in tree.children:
        if isinstance(child, str):
            operators.append(str(child))
        else:
            pipelines.append(_pipeline(child))
    return AndOr(tuple(pipelines), tuple(operators))


def _pipeline(tree: Tree[Token]) -> Pipeline:
    commands: list[Command] = []
    negated = False
    for child in tree.children:
        if isinstance(child, str):
            negated = negated or child.type == "BANG"
        elif child.data == "subshell":
            commands.append(Subshell(_script(child.children[0])))  # type: ignore[arg-type]
        else:
            commands.append(_simple(child))
    return Pipeline(tuple(commands), negated)


def _simple(tree: Tree[Token]) -> SimpleCommand:
    assignments: list[str] = []
    words: list[str] = []
    redirects: list[str] = []
    for child in tree.children:
        if not isinstance(child, str):   # a redirect: its target is the last token
            redirects.append(str(child.children[-1]))
        elif child.type == "ASSIGN" and not words:
            assignments.append(str(child))
        else:
            words.append(str(child))
    return SimpleCommand(tuple(assignments), tuple(words), tuple(redirects))
