"""Dockerfile text → a flat list of instruction nodes, as BuildKit's parser does.

This mirrors ``frontend/dockerfile/parser``: lines are joined on the escape
character, comments and directives are dropped, each instruction is split
into keyword, ``--flags`` and arguments by a per-instruction rule (JSON or
shell form, whitespace list, ``key=value`` words, ...), and heredoc bodies are
attached. Arguments are kept raw: quote removal and ``$VAR`` expansion happen
at build time. ``dump`` renders the tree in the format of BuildKit's parser
test vectors (``testdata/buildkit/parser/testfiles/*/result``).

Written by hand rather than with lark or dockerfile-parse (both are
dependencies of the project; ``benchmarks/bench_parse.py`` measures them):
dockerfile-parse keeps raw text and has its own continuation and comment
rules, so it splits only 20 of the 33 upstream vectors into the same
instructions, exposes no JSON/shell form, flag or ENV-pair structure, and
rejects none of the 4 invalid files. A lark grammar cannot express the mode
switches (the escape directive changes tokenisation mid-file, heredoc bodies
depend on words of the previous line, invalid JSON falls back to shell form);
even a grammar that only splits lines is slower than this whole parser.
"""

from __future__ import annotations

import itertools

import msgspec

from builder.dockerfile.directives import (
    GO_SPACE,
    Directive,
    DirectiveError,
    DirectiveParser,
    go_lower,
    go_trim_space,
)
from builder.dockerfile.heredoc import Heredoc, HeredocError, heredocs_from_line
from builder.dockerfile.line_parsers import ParseError, go_quote, split_instruction
from builder.errors import DockerfileError
from builder.limits import env_name
from builder.limits import get as _get_limits

__all__ = [
    "MAX_DOCKERFILE_BYTES",
    "MAX_INSTRUCTIONS",
    "MAX_LINE_BYTES",
    "LintWarning",
    "Node",
    "ParseResult",
    "decode_source",
    "dump",
    "dump_node",
    "parse",
]

# bufio.Scanner's token limit: a line of 65,536 bytes or more (newline not
# counted) fails upstream, so it fails here too.
# Our own bounds (upstream has none): they cap memory and time for hostile
# input, heredoc bodies included, since a body is a slice of the file.  All
# three are builder/limits.py defaults a user can raise (PYBUILD_MAX_*).
_LIMITS = _get_limits()
MAX_LINE_BYTES = _LIMITS.max_line_bytes  # 65535 by default
MAX_DOCKERFILE_BYTES = _LIMITS.max_dockerfile_bytes
MAX_INSTRUCTIONS = _LIMITS.max_instructions

EMPTY_CONTINUATION_URL = "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"
EMPTY_CONTINUATION_DETAIL = "Empty continuation lines will become errors in a future release"

_HEREDOC_KEYWORDS = frozenset({"add", "copy", "run"})


class LintWarning(msgspec.Struct, frozen=True):
    """A warning with its rule name, like a BuildKit lint result."""

    rule: str
    line: int
    message: str
    url: str = ""
    description: str = ""

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.rule}: {self.message}{where}"


class Node:
    """One instruction: BuildKit's ``parser.Node`` with the ``Next`` chain as a list.

    ``value`` is the keyword as written; ``args`` the argument chain (for ENV
    and LABEL flattened ``key, value, sep`` triples); ``child`` the wrapped
    instruction of an ONBUILD; ``json`` is BuildKit's ``json`` attribute.
    """

    __slots__ = (
        "args",
        "child",
        "comments",
        "end_line",
        "flags",
        "heredocs",
        "json",
        "original",
        "start_line",
        "value",
    )

    def __init__(
        self,
        value: str,
        args: list[str] | None = None,
        *,
        flags: list[str] | None = None,
        json: bool = False,
        original: str = "",
        child: Node | None = None,
        start_line: int = 0,
        end_line: int = 0,
        comments: list[str] | None = None,
    ) -> None:
        self.value = value
        self.args = args if args is not None else []
        self.flags = flags if flags is not None else []
        self.json = json
        self.original = original
        self.child = child
        self.heredocs: list[Heredoc] = []
        self.start_line = start_line
        self.end_line = end_line
        self.comments = comments if comments is not None else []

    @property
    def keyword(self) -> str:
        return go_lower(self.value)

    def all_args(self) -> list[str]:
        """BuildKit's ``nodeArgs``: an ONBUILD's args are the wrapped keyword and its args."""
        out = list(self.args)
        node = self.child
        while node is not None:  # a loop: ONBUILD ONBUILD ... may nest thousands deep
            out.append(node.value)
            out.extend(node.args)
            node = node.child
        return out

    def can_contain_heredoc(self) -> bool:
        node = self.child if self.keyword == "onbuild" and self.child is not None else self
        return node.keyword in _HEREDOC_KEYWORDS and not node.json

    def __repr__(self) -> str:
        return f"Node({dump_node(self)!r}, lines={self.start_line}-{self.end_line})"


class ParseResult(msgspec.Struct):
    nodes: list[Node]
    escape: str = "\\"
    directives: list[Directive] = msgspec.field(default_factory=list)
    warnings: list[LintWarning] = msgspec.field(default_factory=list)

    @property
    def start_line(self) -> int:
        return self.nodes[0].start_line

    @property
    def end_line(self) -> int:
        return self.nodes[-1].end_line


def _byte_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogateescape"))


def decode_source(source: str | bytes, path: str) -> str:
    """Bytes → text, keeping undecodable bytes (they dump as ``\\xNN``, as in Go)."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > MAX_DOCKERFILE_BYTES:
            raise DockerfileError(
                f"Dockerfile is {len(data)} bytes, more than the limit of {MAX_DOCKERFILE_BYTES}"
                f" (raise it with {env_name('max_dockerfile_bytes')})",
                path,
            )
        return data.decode("utf-8", "surrogateescape")
    if len(source) > MAX_DOCKERFILE_BYTES // 4 and _byte_len(source) > MAX_DOCKERFILE_BYTES:
        raise DockerfileError(
            f"Dockerfile is more than the limit of {MAX_DOCKERFILE_BYTES} bytes"
            f" (raise it with {env_name('max_dockerfile_bytes')})", path
        )
    return source


def _new_node(line: str, escape: str, comments: list[str] | None) -> Node:
    chain: list[Node] = []
    text = line
    while True:  # iterative: ONBUILD nesting is bounded only by the line length
        cmd, flags, args, is_json, rest = split_instruction(text, escape)
        chain.append(Node(cmd, args, flags=flags, json=is_json, original=text))
        if not rest:
            break
        text = rest
    for parent, child in itertools.pairwise(chain):
        parent.child = child
    chain[0].comments = comments if comments is not None else []
    return chain[0]


# --- the scanner (BuildKit's Parse) ----------------------------------------------


def _continuation(line: str, escape: str) -> tuple[str, bool]:
    """Strip a trailing escape (plus blanks): ``(line, is_end_of_instruction)``."""
    body = line.rstrip(" \t")
    if not body.endswith(escape):
        return line, True
    if len(body) == 1:
        return "", False
    if body[-2] == escape:  # an escaped escape does not continue the line
        return line, True
    return body[:-1], False


def parse(source: str | bytes, path: str = "Dockerfile") -> ParseResult:
    """Parse Dockerfile text into nodes. Raises DockerfileError(message, path, line)."""
    return _Scanner(_source_lines(source, path), path).run()


def _source_lines(source: str | bytes, path: str) -> list[str]:
    """The file's lines without their newline, after the size checks and without a BOM."""
    lines = decode_source(source, path).split("\n")
    if lines[-1] == "":  # the file ends with a newline
        lines.pop()
    if lines and max(map(len, lines)) > MAX_LINE_BYTES // 4:
        for i, ln in enumerate(lines):
            if len(ln) > MAX_LINE_BYTES // 4 and _byte_len(ln) > MAX_LINE_BYTES:
                raise DockerfileError(
                    # BuildKit's exact text (differential tests); docs/limits.md
                    # names PYBUILD_MAX_LINE_BYTES.
                    f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}",
                    path,
                    i + 1,
                )
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines


class _Scanner:
    """One pass over the lines: ``pos`` is the number of lines consumed, so it is
    also the 1-based number of the line just read (what errors report)."""

    __slots__ = ("comments", "directives", "dparser", "escape", "lines", "nodes", "path",
                 "pos", "warnings")

    def __init__(self, lines: list[str], path: str) -> None:
        self.lines = lines
        self.path = path
        self.pos = 0
        self.escape = "\\"
        self.dparser = DirectiveParser()
        self.directives: list[Directive] = []
        self.warnings: list[LintWarning] = []
        self.nodes: list[Node] = []
        self.comments: list[str] = []  # the comment block right above the next instruction

    def run(self) -> ParseResult:
        lines, n = self.lines, len(self.lines)
        while self.pos < n:
            raw = lines[self.pos]
            self.pos += 1
            token = raw.rstrip("\r\n").lstrip(GO_SPACE)
            is_comment = token.startswith("#")
            if is_comment:
                # raw[1:], not the trimmed text: an indented "  # x" keeps "# x".
                comment = go_trim_space(raw[1:])
                if comment:
                    self.comments.append(comment)
                else:
                    self.comments = []
            if not self.dparser.done:
                self._directive(token)
            if is_comment:
                continue
            start = self.pos
            line = self._join_continuations(token)
            if line is not None:
                self._instruction(line, start)
        if not self.nodes:
            raise DockerfileError("file with no instructions", self.path, n or None)
        return ParseResult(self.nodes, self.escape, self.directives, self.warnings)

    def _directive(self, token: str) -> None:
        """A ``# name=value`` line at the top of the file (``escape`` changes how the
        rest of the file is read)."""
        try:
            directive = self.dparser.parse_line(token)
        except DirectiveError as err:
            raise DockerfileError(str(err), self.path, self.pos) from None
        if directive is None:
            return
        if directive.name == "escape":
            if directive.value not in ("\\", "`"):
                raise DockerfileError(
                    f"invalid escape token '{directive.value}' does not match ` or \\",
                    self.path, self.pos,
                )
            self.escape = directive.value
        self.directives.append(directive)
        if self.comments:  # a directive is not part of the next instruction's comment
            self.comments.pop()

    def _join_continuations(self, token: str) -> str | None:
        """The instruction that starts with ``token``, its continuation lines joined
        (comment lines inside it skipped); None for a lone escape."""
        body, end = _continuation(token, self.escape)
        if end and not body:
            return None
        lines, n = self.lines, len(self.lines)
        parts = [body]
        empty_continuation = False
        while not end and self.pos < n:
            raw = lines[self.pos]
            self.pos += 1
            if raw.lstrip(GO_SPACE).startswith("#"):
                continue
            tok = raw.rstrip("\r\n")
            if not tok.lstrip(GO_SPACE):
                empty_continuation = True
                continue
            body, end = _continuation(tok, self.escape)
            parts.append(body)
        line = "".join(parts)
        if empty_continuation:
            self.warnings.append(LintWarning(
                "NoEmptyContinuation", self.pos, "Empty continuation line found in: " + line,
                EMPTY_CONTINUATION_URL, EMPTY_CONTINUATION_DETAIL,
            ))
        return line

    def _instruction(self, line: str, start: int) -> None:
        """Split ``line`` into a node, read its heredoc bodies, and keep it."""
        try:
            node = _new_node(line, self.escape, self.comments)
            heredocs = (
                heredocs_from_line(line)
                if "<<" in line and node.can_contain_heredoc()
                else []
            )
        except (ParseError, HeredocError) as err:
            raise DockerfileError(str(err), self.path, start) from None
        for doc in heredocs:
            self._heredoc_body(doc, start)
            node.heredocs.append(doc)
        node.start_line, node.end_line = start, self.pos
        self.nodes.append(node)
        if len(self.nodes) > MAX_INSTRUCTIONS:
            raise DockerfileError(
                f"Dockerfile has more than {MAX_INSTRUCTIONS} instructions"
                f" (raise it with {env_name('max_instructions')})", self.path, start
            )
        self.comments = []

    def _heredoc_body(self, doc: Heredoc, start: int) -> None:
        """Read the lines up to ``doc``'s terminator into ``doc.content``."""
        lines, n = self.lines, len(self.lines)
        body_lines: list[str] = []
        while self.pos < n:
            raw = lines[self.pos]
            self.pos += 1
            cand = raw.rstrip("\r\n")
            if doc.chomp:
                cand = cand.lstrip("\t")
            if cand == doc.name:
                break
            body_lines.append(raw)
        else:
            raise DockerfileError("unterminated heredoc", self.path, start)
        if body_lines:
            doc.content = "\n".join(body_lines) + "\n"


# --- the dump (BuildKit's Node.Dump) -------------------------------------------


def _dump_one(node: Node) -> str:
    parts = [go_lower(node.value)]
    if node.flags:
        parts.append("[" + " ".join(go_quote(f) for f in node.flags) + "]")
    parts.extend(go_quote(a) for a in node.args)
    return " ".join(parts)


def dump_node(node: Node) -> str:
    chain = [node]
    child = node.child
    while child is not None:
        chain.append(child)
        child = child.child
    pieces = [_dump_one(n) for n in chain[:-1]]
    pieces.append(go_trim_space(_dump_one(chain[-1])))
    return go_trim_space(" (".join(pieces) + ")" * (len(chain) - 1))


def dump(result: ParseResult) -> str:
    """The tree as BuildKit's ``Dump``: one line per instruction, no final newline
    (a vector's ``result`` file is this plus ``"\\n"``)."""
    return "\n".join(f"({dump_node(node)})" for node in result.nodes)
