"""Parsed Dockerfile → canonical Dockerfile text.

One instruction per line (keywords as written), no comments or continuations,
single spaces between words, exec forms as JSON, heredoc bodies after their
instruction. Parsing the output gives the same instructions again (the
round-trip property the tests check).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from builder.dockerfile.directives import go_lower, go_trim_space

if TYPE_CHECKING:
    from builder.dockerfile.parser import Node
    from builder.dockerfile.stages import Dockerfile

__all__ = ["render", "render_node"]

_SPLIT = frozenset({"from", "expose", "add", "copy", "volume"})
_JSONABLE = frozenset({"run", "cmd", "entrypoint", "shell", "add", "copy", "volume"})
_FLAG_SPECIAL = frozenset(" \t\v\f\r\n'\"")


def _flag(flag: str, escape: str) -> str:
    body = flag[2:]
    if not any(c in _FLAG_SPECIAL or c == escape for c in body):
        return flag
    quoted = body.replace(escape, escape + escape).replace('"', escape + '"')
    return '--"' + quoted + '"'


def _words(args: list[str]) -> str:
    text = " ".join(args)
    if text.startswith("["):
        try:
            json.loads(text)
        except ValueError:
            return text
        # The words only looked unlike JSON because of a \v or \f between them.
        return "\v".join(args)
    return text


def _args(node: Node, escape: str) -> str:
    kw = go_lower(node.value)
    args = node.args
    if kw == "onbuild":
        # The trigger as written (what ONBUILD keeps and re-parses with the default
        # escape): a re-render of its node could end in that escape, as ``RUN \`` of
        # ``RUN \<NBSP>``, and turn into a line continuation.
        from builder.dockerfile.instructions import onbuild_trigger

        trigger = onbuild_trigger(node.original)
        if trigger:
            return trigger
        return render_node(node.child, escape) if node.child is not None else ""
    if node.json and kw in _JSONABLE:
        return json.dumps(args)
    if kw == "healthcheck":
        if not args:
            return ""
        rest = json.dumps(args[1:]) if node.json else " ".join(args[1:])
        return f"{args[0]} {rest}".rstrip()
    if kw in ("env", "label"):
        triples = [args[i : i + 3] for i in range(0, len(args), 3)]
        return " ".join(k + (sep or " ") + v for k, v, sep in triples)
    if kw in _SPLIT:
        return _words(args)
    if kw == "arg":
        return " ".join(args)
    return args[0] if args else ""


def render_node(node: Node, escape: str = "\\") -> str:
    """One instruction line (without heredoc bodies)."""
    if node.heredocs or (go_lower(node.value) in _SPLIT and any("<<" in a for a in node.args)):
        # Heredoc words are found by a different word splitter (quote-aware, and
        # glueing "<<" to the blanks after it): only the line as written is safe.
        return go_trim_space(node.original)
    parts = [node.value]
    parts.extend(_flag(f, escape) for f in node.flags)
    rest = _args(node, escape)
    if rest.startswith("--"):
        parts.append("--")  # keep text that looks like a flag out of the flags
    if rest:
        parts.append(rest)
    line = " ".join(parts)
    if line.endswith(escape):
        # An argument that ended in a (trimmed) no-break space: keep one so the
        # escape is not read as a line continuation.
        line += "\u00a0"
    return line


def render(df: Dockerfile) -> str:
    """The whole Dockerfile, directives first."""
    out = []
    for name in ("syntax", "escape", "check"):
        if name in df.directives:
            out.append(f"# {name}={df.directives[name]}\n")
    for node in df.nodes:
        out.append(render_node(node, df.escape) + "\n")
        for doc in node.heredocs:
            out.append(doc.content + doc.name + "\n")
    return "".join(out)
