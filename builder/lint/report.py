"""How lint findings are shown: a build's summary, ``build --check`` and ``pybuild check``.

The build summary is buildx's (``N warnings found:`` then `` - Rule: message``), with
the file and line of each finding; ``build --check`` prints BuildKit's lint result
text (``frontend/subrequests/lint``: ``WARNING: Rule - URL``, the message, and the
Dockerfile lines around the instruction with ``>>>`` on it, as ``errdefs.Source``
prints them) and buildx's ``Check complete, …`` line.  Every line goes through
``textsafe.printable``: the Dockerfile's own bytes are quoted.
"""

from __future__ import annotations

from collections.abc import Sequence

from builder.dockerfile.parser import LintWarning
from builder.textsafe import printable

__all__ = ["check_text", "summary_lines"]


def summary_lines(path: str, warnings: Sequence[LintWarning]) -> list[str]:
    """The lines a build prints at its end (none when nothing was found)."""
    if not warnings:
        return []
    count = "1 warning found:" if len(warnings) == 1 else f"{len(warnings)} warnings found:"
    out = ["", " " + count]
    for warning in warnings:
        where = f"{path}:{warning.line}" if warning.line else path
        out.append(printable(f" - {warning.rule}: {warning.message} ({where})"))
    return out


def check_text(path: str, text: str, warnings: Sequence[LintWarning]) -> str:
    """``pybuild build --check``'s output."""
    if not warnings:
        return "Check complete, no warnings found.\n"
    count = ("1 warning has been found!" if len(warnings) == 1
             else f"{len(warnings)} warnings have been found!")
    lines = text.split("\n")
    out = [f"Check complete, {count}"]
    for warning in sorted(warnings, key=lambda w: w.line):
        out.append("")
        out.append(f"WARNING: {warning.rule}" + (f" - {warning.url}" if warning.url else ""))
        out.append(warning.message)
        out.extend(_source(path, lines, warning.line))
    return printable("\n".join(out), multiline=True) + "\n"


def _source(path: str, lines: list[str], line: int) -> list[str]:
    """The instruction's line with two lines each side, as BuildKit's ``Source.Print``."""
    if line < 1 or line > len(lines):
        return []
    start, end = max(1, line - 2), min(len(lines), line + 2)
    out = [f"{path}:{line}", "-" * 20]
    for number in range(start, end + 1):
        mark = ">>>" if number == line else "   "
        out.append(f" {number:3d} | {mark} {lines[number - 1]}")
    out.append("-" * 20)
    return out
