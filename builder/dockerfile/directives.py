"""Parser directives (``# syntax=``, ``# escape=``, ``# check=``) and Go text helpers.

BuildKit reads directives only from the comment lines at the very top of a
Dockerfile: the block ends at the first line that is not ``#name=value`` with a
known name (a blank line, an ordinary comment, an instruction). A name may
appear once. ``detect_syntax`` also accepts ``//syntax=`` and a whole-input
JSON object, as BuildKit's front-end selection does.

The helpers at the top reproduce Go's notion of whitespace and case, because
the reference parser uses ``unicode.IsSpace`` and ``strings.ToLower``; Python's
``str.isspace``/``str.strip`` also treat ``\\x1c``-``\\x1f`` as space, which
would change how some lines split.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import msgspec

__all__ = [
    "DIRECTIVE_NAMES",
    "GO_SPACE",
    "CheckConfig",
    "Directive",
    "DirectiveError",
    "DirectiveParser",
    "detect_syntax",
    "go_lower",
    "go_trim_space",
    "go_upper",
    "parse_check_options",
    "parse_directive",
]

# Go's unicode.IsSpace: ASCII \t \n \v \f \r space, NEL, NBSP and the Unicode
# White_Space characters above Latin-1.
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

DIRECTIVE_NAMES = frozenset({"syntax", "escape", "check"})

# Upstream's regexp is ``^(?i)([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$``, and Go RE2's \s
# is [\t\n\f\r ] (no \v).  Python's re backtracks on it (quadratic in a line of
# blanks, 64 KiB long: seconds in one uninterruptible call), so only the name and
# the "=" are a regex; _directive_value does the rest.
_RE2_SPACE = "\t\n\f\r "
_DIRECTIVE_HEAD = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=")


def _directive_value(rest: str) -> str | None:
    r"""What ``\s*(.+?)\s*$`` captures from the text after the "=", as RE2 would
    (``.`` never matches a newline), or None when it does not match."""
    core = rest.strip(_RE2_SPACE)
    if core:
        return None if "\n" in core else core
    # Only blanks: the lazy group takes the last one that is not a newline.
    last = max((i for i, ch in enumerate(rest) if ch != "\n"), default=-1)
    return None if last < 0 else rest[last]


def go_trim_space(s: str) -> str:
    """``strings.TrimSpace``."""
    return s.strip(GO_SPACE)


def go_lower(s: str) -> str:
    """``strings.ToLower``: per rune, never growing the string (unlike ``str.lower``)."""
    if s.isascii():
        return s.lower()
    return "".join(lc if len(lc := c.lower()) == 1 else c for c in s)


def go_upper(s: str) -> str:
    """``strings.ToUpper``, per rune like ``go_lower``."""
    if s.isascii():
        return s.upper()
    return "".join(uc if len(uc := c.upper()) == 1 else c for c in s)


class DirectiveError(ValueError):
    """A directive that is repeated or has a bad value (message only)."""


class Directive(msgspec.Struct, frozen=True):
    name: str  # lower case
    value: str
    line: int  # 1-based


class DirectiveParser(msgspec.Struct):
    """Feeds lines one at a time; stops for good at the first non-directive."""

    comment: str = "#"
    line: int = 0
    done: bool = False
    seen: set[str] = msgspec.field(default_factory=set)

    def parse_line(self, text: str) -> Directive | None:
        self.line += 1
        if self.done:
            return None
        if not text.startswith(self.comment):
            self.done = True
            return None
        body = text[len(self.comment) :].lstrip(GO_SPACE)
        m = _DIRECTIVE_HEAD.match(body)
        value = None if m is None else _directive_value(body[m.end():])
        if m is None or value is None:
            self.done = True
            return None
        name = m.group(1).lower()
        if name not in DIRECTIVE_NAMES:
            self.done = True
            return None
        if name in self.seen:
            raise DirectiveError(f"only one {name} parser directive can be used")
        self.seen.add(name)
        return Directive(name, value, self.line)

    def parse_all(self, text: str) -> list[Directive]:
        out: list[Directive] = []
        for line in _scan_lines(text):
            if self.done:
                break
            try:
                d = self.parse_line(line)
            except DirectiveError:
                break
            if d is not None:
                out.append(d)
        return out


def _scan_lines(text: str) -> Iterator[str]:
    # bufio.ScanLines: split on \n, drop one trailing \r, no empty final token.
    # A generator: directive parsing stops at the first non-directive line.
    pos, n = 0, len(text)
    while pos < n:
        end = text.find("\n", pos)
        if end < 0:
            end = n
        line = text[pos:end]
        yield line[:-1] if line.endswith("\r") else line
        pos = end + 1


def _reject_constant(name: str) -> None:
    raise ValueError(f"invalid JSON constant {name}")


_STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _find(key: str, text: str, any_format: bool) -> tuple[str, str, int | None, bool]:
    text = text.removeprefix("\ufeff")
    first, _, rest = text.partition("\n")
    line = 0
    if first.startswith("#!"):
        text, line = rest, 1
    formats = ("#", "//") if any_format else ("#",)
    for comment in formats:
        for d in DirectiveParser(comment=comment, line=line).parse_all(text):
            if d.name == key:
                return d.value.split(" ", 1)[0], d.value, d.line, True
    if any_format:
        try:
            obj = _STRICT_JSON.decode(text)
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get(key), str):
            return obj[key], obj[key], line, True
    return "", "", None, False


def detect_syntax(text: str) -> tuple[str, str, int | None, bool]:
    """The ``syntax`` directive: ``(ref, cmdline, line, found)``.

    ``ref`` is the value up to the first space, ``cmdline`` the whole value.
    Tries ``#syntax=``, then ``//syntax=``, then a JSON object holding the key.
    """
    return _find("syntax", text, True)


def parse_directive(key: str, text: str) -> tuple[str, str, int | None, bool]:
    """Like ``detect_syntax`` for any directive, ``#`` form only."""
    return _find(key, text, False)


class CheckConfig(msgspec.Struct, frozen=True):
    """The ``# check=`` directive: which lint rules to skip or enable."""

    skip_all: bool = False
    skip: frozenset[str] = frozenset()
    experimental_all: bool = False
    experimental: frozenset[str] = frozenset()
    error: bool = False

    def merged(self, other: CheckConfig) -> CheckConfig:
        return CheckConfig(
            skip_all=self.skip_all or other.skip_all,
            skip=self.skip | other.skip,
            experimental_all=self.experimental_all or other.experimental_all,
            experimental=self.experimental | other.experimental,
            error=self.error,
        )


_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def parse_check_options(value: str) -> CheckConfig:
    """``skip=A,B;error=true;experimental=all`` (at most three parts)."""
    value = go_trim_space(value)
    if not value:
        return CheckConfig()
    skip_all = exp_all = error = False
    skip: frozenset[str] = frozenset()
    exp: frozenset[str] = frozenset()
    for part in value.split(";", 2):
        k, eq, v = part.partition("=")
        if not eq:
            raise DirectiveError(f'invalid check option "{part}"')
        k, v = go_trim_space(k), go_trim_space(v)
        if k == "skip":
            if v == "all":
                skip_all = True
            else:
                skip = frozenset(go_trim_space(r) for r in v.split(","))
        elif k == "experimental":
            if v == "all":
                exp_all = True
            else:
                exp = frozenset(go_trim_space(r) for r in v.split(","))
        elif k == "error":
            if v not in _GO_BOOLS:
                raise DirectiveError(f'failed to parse check option "{part}"')
            error = _GO_BOOLS[v]
        else:
            raise DirectiveError(f'invalid check option "{k}"')
    return CheckConfig(skip_all, skip, exp_all, exp, error)
