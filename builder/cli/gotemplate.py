"""The part of Go's text/template that ``--format`` users write, as docker runs it.

``{{.Field.Sub}}``, ``{{.}}``, ``{{$}}``, pipelines (``{{.X | json}}``), parenthesised
calls, string and number literals, ``{{if}}``/``{{else}}``/``{{range}}``/``{{with}}``
blocks, ``{{- trim -}}`` markers, comments, and docker's functions (``json``, ``join``,
``split``, ``upper``, ``lower``, ``title``, ``pad``, ``truncate``) with text/template's
own (``index``, ``len``, ``printf``, ``print``, ``println``, ``eq``, ``ne``, ``not``,
``and``, ``or``), and variables declared with ``:=`` (``{{range $k, $v := .Labels}}``,
``{{$x := .Id}}``) in scope up to their block's ``{{end}}``; assigning with ``=`` is not
supported: a one-line error says so.

Image metadata is untrusted.  Every value read from the data is a ``Value`` marked
``trusted=False``; such a value goes through ``textsafe.printable`` whenever it is
printed or handed to a text function, and ``json`` escapes control characters as
``\\uXXXX`` (still valid JSON).  Only the template's own literals and what functions
compute from escaped inputs are printed as they are.  A template that does not parse
or that fails on the data raises ``TemplateError``: one line, naming the field.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

import msgspec

from builder.cli.gofuncs import (
    FUNCTIONS,
    NAVIGATING,
    RAW,
    TEXT,
    Row,
    TemplateError,
    Value,
    Zero,
    go_print,
    sanitize,
    truth,
)


class Field(msgspec.Struct, frozen=True):
    base: str             # "" for ``.A``, "$" for ``$.A``, "$x" for ``$x.A``
    names: tuple[str, ...]


class Literal(msgspec.Struct, frozen=True):
    value: object


class Function(msgspec.Struct, frozen=True):
    name: str


class Sub(msgspec.Struct, frozen=True):
    pipeline: Pipeline


Arg = Field | Literal | Function | Sub
Pipeline = tuple[tuple[Arg, ...], ...]  # commands; each one's result is the next one's last arg


class BlockKind(enum.Enum):
    IF = "if"
    RANGE = "range"
    WITH = "with"


class Text(msgspec.Struct, frozen=True):
    text: str


class Action(msgspec.Struct, frozen=True):
    pipeline: Pipeline
    declares: tuple[str, ...] = ()  # ``{{$x := ...}}``: prints nothing, names the value


class Block(msgspec.Struct, frozen=True):
    kind: BlockKind
    pipeline: Pipeline
    declares: tuple[str, ...]  # ``range $i, $v := ...``, ``with $x := ...``
    body: tuple[Node, ...]
    otherwise: tuple[Node, ...]


Node = Text | Action | Block

# One token inside {{ }}: strings, raw strings, fields, $, numbers, names, | ( ).
_TOKEN = re.compile(r"""\s*(?:
    (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<field>(?:\$[A-Za-z_0-9]*|)(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.|\$[A-Za-z_0-9]*)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[|(),]|:=)
  | (?P<other>\S)
)""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "a": "\a", "b": "\b",
            "f": "\f", "v": "\v", "0": "\0"}
_CONSTANTS: dict[str, object] = {"true": True, "false": False, "nil": None}


def _unquote(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "xuU" and int(code[1:], 16) <= 0x10FFFF:
            return chr(int(code[1:], 16))
        if code not in _ESCAPES:
            raise TemplateError(f"unknown escape sequence \\{code} in {text}")
        return _ESCAPES[code]
    return re.sub(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", one, text[1:-1])


def _tokens(action: str) -> list[tuple[str, str]]:
    out = []
    for match in _TOKEN.finditer(action):
        kind = match.lastgroup
        if kind is None:
            continue
        text = match.group(kind)
        if kind == "other":
            if text == "=":
                raise TemplateError(f"{{{{{action.strip()}}}}}: assigning to a variable "
                                    "is not supported")
            raise TemplateError(f"unexpected {text!r} in {{{{{action.strip()}}}}}")
        out.append((kind, text))
    return out


class _Parser:
    """Recursive descent over the token list of one action."""

    def __init__(self, action: str):
        self.action = action
        self.tokens = _tokens(action)
        self.at = 0

    def fail(self, why: str) -> TemplateError:
        return TemplateError(f"{{{{{self.action.strip()}}}}}: {why}")

    def declarations(self, most: int) -> tuple[str, ...]:
        """``$a, $b :=`` at the start (at most ``most`` names), or nothing."""
        texts = [text for _, text in self.tokens]
        if ":=" not in texts:
            return ()
        names, at = tuple(texts[:texts.index(":=")][::2]), texts.index(":=")
        separators = texts[1:at:2]
        if (not 0 < len(names) <= most or any(sep != "," for sep in separators)
                or not all(re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", n) for n in names)):
            raise self.fail("bad variable declaration")
        self.at = at + 1
        return names

    def pipeline(self, closing: str | None = None) -> Pipeline:
        commands: list[tuple[Arg, ...]] = []
        args: list[Arg] = []
        while self.at < len(self.tokens):
            kind, text = self.tokens[self.at]
            self.at += 1
            if text == "|" and kind == "punct":
                if not args:
                    raise self.fail("missing command before |")
                commands.append(tuple(args))
                args = []
            elif text == ")" and kind == "punct":
                if closing != ")":
                    raise self.fail("unexpected )")
                closing = None
                break
            elif text == "(" and kind == "punct":
                args.append(Sub(self.pipeline(")")))
            else:
                args.append(self.operand(kind, text))
        if closing is not None:
            raise self.fail("unclosed (")
        if not args:
            raise self.fail("missing value")
        commands.append(tuple(args))
        return tuple(commands)

    def operand(self, kind: str, text: str) -> Arg:
        if kind == "string":
            return Literal(_unquote(text))
        if kind == "raw":
            return Literal(text[1:-1])
        if kind == "number":
            return Literal(float(text) if "." in text else int(text))
        if kind == "field":
            base, *names = text.split(".")
            return Field(base, tuple(name for name in names if name))
        if text in (",", ":="):
            raise self.fail(f"unexpected {text}")
        if text in _CONSTANTS:
            return Literal(_CONSTANTS[text])
        if text not in FUNCTIONS:
            raise self.fail(f'function "{text}" not defined')
        return Function(text)


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


def parse(template: str) -> tuple[Node, ...]:
    """The template's nodes, or ``TemplateError``."""
    pieces: list[tuple[str, str]] = []  # ("text", ...) or ("action", ...)
    pos = 0
    for match in _ACTION.finditer(template):
        text = template[pos:match.start()]
        pieces.append(("text", text.rstrip() if match.group(1) else text))
        pieces.append(("action", match.group(2)))
        pos = match.end()
        if match.group(3):  # "-}}": trim the whitespace that follows
            pos += len(template[pos:]) - len(template[pos:].lstrip())
    tail = template[pos:]
    if "{{" in tail:
        raise TemplateError(f"unclosed action in {tail!r}")
    pieces.append(("text", tail))
    try:
        nodes, _ = _nodes(pieces, 0, top=True)
    except RecursionError:  # blocks or parentheses nested a thousand deep
        raise TemplateError("template nested too deeply") from None
    return nodes


def _keyword(action: str) -> tuple[str, str]:
    word, _, rest = action.strip().partition(" ")
    return word, rest


def _nodes(pieces: list[tuple[str, str]], at: int, *, top: bool
           ) -> tuple[tuple[Node, ...], int]:
    """Nodes from ``pieces[at]`` to the ``{{end}}``/``{{else}}`` that closes them."""
    nodes: list[Node] = []
    while at < len(pieces):
        kind, text = pieces[at]
        word, rest = _keyword(text) if kind == "action" else ("", "")
        if kind == "text":
            if text:
                nodes.append(Text(text))
        elif text.strip().startswith("/*"):
            pass  # a comment
        elif word in ("end", "else"):
            if top:
                raise TemplateError(f"unexpected {{{{{text.strip()}}}}}")
            return tuple(nodes), at
        elif word in ("if", "range", "with"):
            block, at = _block(pieces, at, BlockKind(word), rest)
            nodes.append(block)
        else:
            parser = _Parser(text)
            declares = parser.declarations(1)
            nodes.append(Action(parser.pipeline(), declares))
        at += 1
    if not top:
        raise TemplateError("unexpected EOF: missing {{end}}")
    return tuple(nodes), at


def _block(pieces: list[tuple[str, str]], at: int, kind: BlockKind, rest: str
           ) -> tuple[Block, int]:
    """The block opened at ``pieces[at]``; the index of its ``{{end}}``."""
    if not rest.strip():
        raise TemplateError(f"missing value for {kind.value}")
    parser = _Parser(rest)
    declares = parser.declarations(2 if kind is BlockKind.RANGE else 1)
    pipeline = parser.pipeline()
    body, at = _nodes(pieces, at + 1, top=False)
    word, after = _keyword(pieces[at][1])
    otherwise: tuple[Node, ...] = ()
    if word == "else" and after.strip().startswith("if ") and kind is BlockKind.IF:
        nested, at = _block(pieces, at, BlockKind.IF, after.strip()[3:])
        return Block(kind, pipeline, declares, body, (nested,)), at
    if word == "else":
        if after.strip():
            raise TemplateError(f"unexpected {{{{{pieces[at][1].strip()}}}}}")
        otherwise, at = _nodes(pieces, at + 1, top=False)
        word, _ = _keyword(pieces[at][1])
    if word != "end":
        raise TemplateError(f"expected {{{{end}}}}, got {{{{{pieces[at][1].strip()}}}}}")
    return Block(kind, pipeline, declares, body, otherwise), at


# -- execution ------------------------------------------------------------------------

# What one template may print and do: a user's own template, but a typo in a nested
# range must end in a one-line error, not in gigabytes of output.
MAX_OUTPUT = 64 << 20
MAX_STEPS = 10_000_000


class _Budget:
    __slots__ = ("chars", "steps")

    def __init__(self) -> None:
        self.chars = self.steps = 0

    def spend(self, chars: int) -> None:
        self.chars += chars
        self.steps += 1
        if self.chars > MAX_OUTPUT or self.steps > MAX_STEPS:
            raise TemplateError(f"the template prints more than {MAX_OUTPUT >> 20} MiB or "
                                f"runs more than {MAX_STEPS} actions")


class _Run(msgspec.Struct):
    root: Value    # what ``$`` is
    header: bool   # a table's header row: docker's text functions pass the header on
    variables: dict[str, Value]  # in scope: a block's own end with its {{end}}
    budget: _Budget                # shared by the blocks of one execute()

    def inner(self) -> _Run:
        return _Run(self.root, self.header, dict(self.variables), self.budget)


# Docker's HeaderFunctions: in a table's header row these hand back their first argument.
_HEADER_FUNCTIONS = frozenset({"json", "title", "lower", "upper", "split", "join",
                               "truncate", "pad"})


def execute(nodes: tuple[Node, ...], data: object, *, header: bool = False) -> str:
    """The template's output for ``data`` (untrusted); ``TemplateError`` on a bad field.
    ``header``: ``data`` is a ``Row`` of column headers, as docker's table header."""
    root = Value(data, trusted=header)
    out: list[str] = []
    try:
        try:
            _run(nodes, root, _Run(root, header, {"$": root}, _Budget()), out)
        except RecursionError:
            raise TemplateError("template nested too deeply") from None
    except TemplateError:
        if not header:
            raise
        # Docker ignores a header's error and prints what came before it: the rows,
        # run first, already failed on anything that is really wrong.
    return "".join(out)


def _emit(run: _Run, out: list[str], text: str) -> None:
    run.budget.spend(len(text))
    out.append(text)


def _run(nodes: tuple[Node, ...], dot: Value, run: _Run, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, Text):
            _emit(run, out, node.text)
        elif isinstance(node, Action):
            value = _pipeline(node.pipeline, dot, run)
            if node.declares:
                run.budget.spend(0)
                run.variables[node.declares[0]] = value
            else:
                _emit(run, out, _text(value))
        else:
            run.budget.spend(0)
            _run_block(node, dot, run, out)


def _run_block(block: Block, dot: Value, run: _Run, out: list[str]) -> None:
    value = _pipeline(block.pipeline, dot, run)
    inner = run.inner()
    if block.kind is BlockKind.RANGE:
        items = _range_items(value)
        for key, item in items:
            # ``range $v := `` names the element; ``range $k, $v :=`` the key too.
            named = (key, item) if len(block.declares) == 2 else (item,)
            inner.variables.update(zip(block.declares, named, strict=False))
            _run(block.body, item, inner, out)
        if not items:
            _run(block.otherwise, dot, inner, out)
        return
    inner.variables.update(dict.fromkeys(block.declares, value))
    if truth(value.obj):
        _run(block.body, value if block.kind is BlockKind.WITH else dot, inner, out)
    else:
        _run(block.otherwise, dot, inner, out)


def _range_items(value: Value) -> list[tuple[Value, Value]]:
    """(key or index, element) of what ``range`` walks."""
    obj = value.obj
    if isinstance(obj, Mapping):  # Go ranges over a map in key order
        return [(Value(key, value.trusted), Value(obj[key], value.trusted))
                for key in sorted(obj, key=str)]
    if isinstance(obj, list | tuple):
        return [(Value(at, trusted=True), Value(item, value.trusted))
                for at, item in enumerate(obj)]
    if obj is None or isinstance(obj, Zero):
        return []
    raise TemplateError(f"range can't iterate over {go_print(sanitize(obj))}")


def _text(value: Value) -> str:
    obj = value.obj if value.trusted else sanitize(value.obj)
    return go_print(obj, top=True)


def _pipeline(pipeline: Pipeline, dot: Value, run: _Run) -> Value:
    result: Value | None = None
    for command in pipeline:
        result = _command(command, dot, run, result)
    assert result is not None  # the parser never makes an empty pipeline
    return result


def _command(command: tuple[Arg, ...], dot: Value, run: _Run, piped: Value | None
             ) -> Value:
    head, *rest = command
    if isinstance(head, Function):
        args = [_arg(arg, dot, run) for arg in rest]
        args += [piped] if piped is not None else []
        if run.header and head.name in _HEADER_FUNCTIONS and args:
            if not isinstance(args[0].obj, str):
                raise TemplateError(f"{head.name}: a header is a string")
            return args[0]
        return call(head.name, args)
    if rest or piped is not None:
        raise TemplateError(f"can't give argument to non-function {_shown(head)}")
    return _arg(head, dot, run)


def _shown(arg: Arg) -> str:
    if isinstance(arg, Field):
        return arg.base + ("." + ".".join(arg.names) if arg.names else ("" if arg.base else "."))
    return repr(arg.value) if isinstance(arg, Literal) else "(...)"


def _arg(arg: Arg, dot: Value, run: _Run) -> Value:
    if isinstance(arg, Literal):
        return Value(arg.value, trusted=True)
    if isinstance(arg, Sub):
        return _pipeline(arg.pipeline, dot, run)
    if isinstance(arg, Function):
        return call(arg.name, [])
    if arg.base and arg.base not in run.variables:
        raise TemplateError(f"undefined variable: {arg.base}")
    value = run.variables[arg.base] if arg.base else dot
    for at, name in enumerate(arg.names):
        value = Value(_field(value.obj, name, arg.names[:at]), value.trusted)
    return value


def _field(obj: object, name: str, before: tuple[str, ...]) -> object:
    where = "." + ".".join((*before, name))
    if isinstance(obj, Row):
        if name not in obj.fields:
            raise TemplateError(f"can't evaluate field {name} (in {where}): the fields are "
                                + ", ".join(f".{known}" for known in obj.fields))
        return obj.fields[name]
    if isinstance(obj, Mapping):
        if name not in obj:  # docker runs inspect templates with missingkey=error
            raise TemplateError(f'map has no entry for key "{name}" (in {where})')
        return obj[name]
    if obj is None or isinstance(obj, Zero):
        raise TemplateError(f"nil pointer evaluating {where}")
    kind = {str: "string", int: "int", float: "float64", bool: "bool", list: "slice"}
    raise TemplateError(f"can't evaluate field {name} (in {where}) in type "
                        f"{kind.get(type(obj), type(obj).__name__)}")


def call(name: str, args: list[Value]) -> Value:
    """Run the function ``name``; its result is trusted unless it only navigated."""
    if name in NAVIGATING:  # index, and, or: they hand back (part of) an argument
        return NAVIGATING[name](args)
    if name in RAW:  # json, len, eq, ...: read the data as it is, print nothing of it raw
        return Value(RAW[name]([arg.obj for arg in args]), trusted=True)
    safe = [arg.obj if arg.trusted else sanitize(arg.obj) for arg in args]
    return Value(TEXT[name](safe), trusted=True)
