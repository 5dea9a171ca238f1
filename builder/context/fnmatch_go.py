"""Go's path and pattern rules, as ``.dockerignore`` matching relies on them.

Upstream (moby/patternmatcher) checks a pattern with Go's ``filepath.Match``,
then turns it into a Go regular expression and matches paths with that. Both
steps have quirks that Python's ``fnmatch``/``re`` do not share, so this module
ports the pieces (Unix flavour: ``/`` separates, ``\\`` escapes):

* :func:`clean` and :func:`go_dir`: Go's ``filepath.Clean`` and ``filepath.Dir``;
* :func:`match`: Go's ``filepath.Match`` (``[^...]`` negates, ``[!...]`` does not);
* :func:`translate_regex`: a Go (RE2) regular expression of the shape
  patternmatcher builds, rewritten for ``re`` with the same meaning, or
  :class:`GoRegexError` where Go's compiler would reject it.
"""

from __future__ import annotations

import re
from functools import lru_cache

import msgspec

__all__ = ["FLAGS", "BadPattern", "GoRegexError", "Translation", "clean", "go_dir", "match",
           "translate_regex"]

_MAX_RUNE = 0x10FFFF
# Go's \b is an ASCII word boundary; nothing else translated depends on this.
FLAGS = re.ASCII


class BadPattern(ValueError):
    """Go's filepath.ErrBadPattern."""

    def __init__(self) -> None:
        super().__init__("syntax error in pattern")


class GoRegexError(ValueError):
    """Go's regexp.Compile would fail (or uses a feature not ported here)."""


def clean(path: str) -> str:
    """Go's filepath.Clean: the shortest equivalent path, lexically."""
    if not path:
        return "."
    rooted = path[0] == "/"
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue  # ".." at the root stays at the root
        parts.append(comp)
    joined = "/".join(parts)
    if rooted:
        return "/" + joined
    return joined or "."


def go_dir(path: str) -> str:
    """Go's filepath.Dir: everything before the last ``/``, cleaned."""
    return clean(path[:path.rfind("/") + 1])


# ---------------------------------------------------------------- filepath.Match

def match(pattern: str, name: str) -> bool:
    """Go's filepath.Match. Raises :class:`BadPattern` for a malformed pattern,
    even when the name fails to match early (Go checks the rest of the pattern)."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name  # a trailing * matches the rest of one segment
        rest = _match_chunk(chunk, name)
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        if star:
            found = False
            for i in range(len(name)):
                if name[i] == "/":
                    break
                rest = _match_chunk(chunk, name[i + 1:])
                if rest is not None:
                    if not pattern and rest:
                        continue  # the last chunk has to use up the name
                    name, found = rest, True
                    break
            if found:
                continue
        while pattern:
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return not name


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """Split off leading stars and the text up to the next star outside ``[]``."""
    stripped = pattern.lstrip("*")
    star = len(stripped) != len(pattern)
    in_range = False
    i = 0
    while i < len(stripped):
        ch = stripped[i]
        if ch == "\\":
            if i + 1 < len(stripped):
                i += 1
        elif ch == "[":
            in_range = True
        elif ch == "]":
            in_range = False
        elif ch == "*" and not in_range:
            break
        i += 1
    return star, stripped[:i], stripped[i:]


def _match_chunk(chunk: str, s: str) -> str | None:
    """The rest of ``s`` after ``chunk`` matched its start, or None. After the
    first mismatch the chunk is still read to the end, to check its syntax."""
    failed = False
    i = j = 0
    n = len(chunk)
    while i < n:
        if not failed and j >= len(s):
            failed = True
        ch = chunk[i]
        if ch == "[":
            rune = "" if failed else s[j]
            j += 0 if failed else 1
            i += 1
            negated = i < n and chunk[i] == "^"
            if negated:
                i += 1
            hit = False
            nrange = 0
            while True:
                if i < n and chunk[i] == "]" and nrange > 0:
                    i += 1
                    break
                lo, i = _get_esc(chunk, i)
                hi = lo
                if chunk[i] == "-":
                    hi, i = _get_esc(chunk, i + 1)
                if rune and lo <= rune <= hi:
                    hit = True
                nrange += 1
            if hit == negated:
                failed = True
        elif ch == "?":
            if not failed:
                failed = s[j] == "/"
                j += 1
            i += 1
        else:
            if ch == "\\":
                i += 1
                if i >= n:
                    raise BadPattern()
            if not failed:
                failed = chunk[i] != s[j]
                j += 1
            i += 1
    return None if failed else s[j:]


def _get_esc(chunk: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) class character; something must follow it."""
    if i >= len(chunk) or chunk[i] in "-]":
        raise BadPattern()
    if chunk[i] == "\\":
        i += 1
        if i >= len(chunk):
            raise BadPattern()
    i += 1
    if i >= len(chunk):
        raise BadPattern()
    return chunk[i - 1], i


# ------------------------------------------------------ Go regexp -> Python re

class Translation(msgspec.Struct, frozen=True):
    """``full``: a ``re`` source (compile with :data:`FLAGS`) with Go's meaning
    for ``regexp.MatchString`` (use ``search``). ``body``: the same without the
    final ``$``, to be followed by a lookahead, or None when the expression has
    other end anchors."""

    full: str
    body: str | None


class _Item(msgspec.Struct, frozen=True):
    py: str
    kind: str  # "char" (one character), "star" ([^/]*), "dstar" ((.*/)?), "end", "other"
    slash: bool = True  # a "char" that can match "/"


_Ranges = list[tuple[int, int]]
_DIGIT: _Ranges = [(0x30, 0x39)]
_PERL: dict[str, _Ranges] = {
    "d": _DIGIT,
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}
_POSIX: dict[str, _Ranges] = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": _DIGIT,
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}
_HEX = frozenset("0123456789abcdefABCDEF")
_C_ESCAPES = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
_NOT_SLASH: _Ranges = [(0, 0x2E), (0x30, _MAX_RUNE)]


def translate_regex(src: str) -> Translation:
    """Rewrite the Go regular expression ``src`` for Python's ``re``.

    Covers Go's syntax as patternmatcher can produce it from any pattern:
    literals, ``\\`` escapes (``\\d``, ``\\x41``, ``\\Q...\\E``...), classes with
    ranges and ``[:alpha:]`` names, groups, ``.``, ``^``, ``$`` and ``* + ?``.
    Unicode classes (``\\pL``) are not ported and raise :class:`GoRegexError`,
    as does anything Go's compiler rejects (``\\q``, ``[z-a]``, ``[[:foo:]]``)."""
    items = _optimise(_parse(src))
    full = "".join(item.py for item in items)
    ends = [item for item in items if item.kind == "end"]
    body = None
    if len(ends) == 1 and items[-1] is ends[0]:
        body = "".join(item.py for item in items[:-1])
    # Not compiled here: with thousands of patterns that dominates, and only the
    # slow path needs each one alone. What _parse accepts compiles: generated
    # constructs are never split by a class, a group or \Q...\E.
    return Translation(full, body)


def _parse(src: str) -> list[_Item]:
    items: list[_Item] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch == "[":
            ranges, i = _parse_class(src, i)
            items.append(_class_item(ranges))
            continue
        if ch == "\\":
            i = _parse_top_escape(src, i, items)
            continue
        i += 1
        if ch == "(":
            if src.startswith(".*/)?", i) and (i + 5 >= n or src[i + 5] not in "*+?{"):
                items.append(_Item("(?:.*/)?", "dstar"))
                i += 5
            elif src.startswith("?", i):
                raise GoRegexError("group flags are not supported")
            else:
                items.append(_Item("(?:", "other"))
        elif ch in ")|":
            items.append(_Item(ch, "other"))
        elif ch in "*+?":
            if (ch == "*" and items and items[-1].py == _NOT_SLASH_PY
                    and not (i < n and src[i] in "*+?")):
                items[-1] = _Item("[^/]*", "star")
            else:
                items.append(_Item(ch, "other"))
        elif ch == ".":
            items.append(_Item(".", "char"))
        elif ch == "^":
            items.append(_Item("^", "other"))
        elif ch == "$":
            items.append(_Item(r"\Z", "end"))  # Go's $ never matches before a final \n
        else:
            items.append(_char_item(ord(ch)))
    return items


def _parse_top_escape(src: str, i: int, items: list[_Item]) -> int:
    if i + 1 >= len(src):
        raise GoRegexError("trailing backslash at end of expression")
    kind = src[i + 1]
    if kind in "AbB":
        items.append(_Item("\\" + kind, "other"))
        return i + 2
    if kind == "z":
        items.append(_Item(r"\Z", "end"))
        return i + 2
    if kind == "Q":
        end = src.find("\\E", i + 2)
        literal = src[i + 2:] if end < 0 else src[i + 2:end]
        items.extend(_char_item(ord(c)) for c in literal)
        return len(src) if end < 0 else end + 2
    if kind in "pPC":
        raise GoRegexError(f"unsupported escape \\{kind}")
    if kind.lower() in _PERL:
        items.append(_class_item(_perl(kind)))
        return i + 2
    code, i = _parse_escape(src, i)
    items.append(_char_item(code))
    return i


def _perl(kind: str) -> _Ranges:
    ranges = _PERL[kind.lower()]
    return _complement(ranges) if kind.isupper() else ranges


def _parse_escape(src: str, i: int) -> tuple[int, int]:
    """Go's parseEscape: ``src[i]`` is a backslash. Returns (code point, next i)."""
    n = len(src)
    if i + 1 >= n:
        raise GoRegexError("trailing backslash at end of expression")
    ch = src[i + 1]
    i += 2
    if ord(ch) < 0x80 and not ch.isalnum():
        return ord(ch), i
    if ch in "01234567":
        if ch != "0" and not (i < n and src[i] in "01234567"):
            raise GoRegexError(f"invalid escape sequence \\{ch}")  # a backreference
        code = int(ch)
        for _ in range(2):
            if i < n and src[i] in "01234567":
                code = code * 8 + int(src[i])
                i += 1
        return code, i
    if ch == "x":
        if i < n and src[i] == "{":
            end = src.find("}", i + 1)
            digits = src[i + 1:end] if end > 0 else ""
            if digits and all(c in _HEX for c in digits):
                code = int(digits, 16)
                if code <= _MAX_RUNE:
                    return code, end + 1
        elif len(src[i:i + 2]) == 2 and all(c in _HEX for c in src[i:i + 2]):
            return int(src[i:i + 2], 16), i + 2
        raise GoRegexError("invalid escape sequence \\x")
    if ch in _C_ESCAPES:
        return _C_ESCAPES[ch], i
    raise GoRegexError(f"invalid escape sequence \\{ch}")


def _parse_class(src: str, i: int) -> tuple[_Ranges, int]:
    """Go's parseClass from ``src[i] == "["``; returns the ranges and next index."""
    n = len(src)
    j = i + 1
    negate = j < n and src[j] == "^"
    if negate:
        j += 1
    ranges: _Ranges = []
    first = True  # a ] right after [ or [^ is a literal
    while j >= n or src[j] != "]" or first:
        if j >= n:
            raise GoRegexError("missing closing ]")
        first = False
        if n - j > 2 and src[j] == "[" and src[j + 1] == ":":
            end = src.find(":]", j + 2)
            if end >= 0:
                name = src[j + 2:end]
                base = _POSIX.get(name.removeprefix("^"))
                if base is None:
                    raise GoRegexError(f"invalid character class range {src[j:end + 2]}")
                ranges.extend(_complement(base) if name.startswith("^") else base)
                j = end + 2
                continue
        if src[j] == "\\" and j + 1 < n:
            if src[j + 1] in "pP":
                raise GoRegexError(f"unsupported escape \\{src[j + 1]}")
            if src[j + 1].lower() in _PERL:
                ranges.extend(_perl(src[j + 1]))
                j += 2
                continue
        lo, j = _class_char(src, j)
        hi = lo
        if n - j >= 2 and src[j] == "-" and src[j + 1] != "]":
            hi, j = _class_char(src, j + 1)
            if hi < lo:
                raise GoRegexError("invalid character class range")
        ranges.append((lo, hi))
    return (_complement(ranges) if negate else ranges), j + 1


def _class_char(src: str, j: int) -> tuple[int, int]:
    if j >= len(src):
        raise GoRegexError("missing closing ]")
    if src[j] == "\\":
        return _parse_escape(src, j)
    return ord(src[j]), j + 1


def _normalise(ranges: _Ranges) -> _Ranges:
    merged: _Ranges = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _complement(ranges: _Ranges) -> _Ranges:
    out: _Ranges = []
    nxt = 0
    for lo, hi in _normalise(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= _MAX_RUNE:
        out.append((nxt, _MAX_RUNE))
    return out


def _esc(code: int) -> str:
    ch = chr(code)
    if ch.isascii() and ch.isalnum():
        return ch
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _emit_class(ranges: _Ranges) -> str:
    ranges = _normalise(ranges)
    if not ranges:
        return "(?!)"
    inverse = _complement(ranges)
    if not inverse:
        return r"[\s\S]"
    negate = len(inverse) < len(ranges)
    body = "".join(_esc(lo) if lo == hi else f"{_esc(lo)}-{_esc(hi)}"
                   for lo, hi in (inverse if negate else ranges))
    return f"[^{body}]" if negate else f"[{body}]"


_NOT_SLASH_PY = _emit_class(_NOT_SLASH)


def _class_item(ranges: _Ranges) -> _Item:
    slash = any(lo <= 0x2F <= hi for lo, hi in ranges)
    return _Item(_emit_class(ranges), "char", slash)


@lru_cache(maxsize=4096)
def _char_item(code: int) -> _Item:
    return _Item(re.escape(chr(code)), "char", code == 0x2F)


def _optimise(items: list[_Item]) -> list[_Item]:
    """Rewrite shapes that make ``re`` backtrack without bound, keeping the
    meaning: ``(.*/)?(.*/)?`` is ``(.*/)?``; and in ``[^/]*X[^/]*`` with ``X``
    fixed-width and slash-free the leftmost ``X`` always does, so the first star
    may commit to it (an atomic group) instead of retrying every position."""
    out: list[_Item] = []
    i = 0
    while i < len(items):
        item = items[i]
        if item.kind == "dstar" and out and out[-1].kind == "dstar":
            i += 1
            continue
        if item.kind == "star":
            j = i + 1
            while j < len(items) and items[j].kind == "char" and not items[j].slash:
                j += 1
            if j > i + 1 and j < len(items) and items[j].kind == "star":
                chunk = "".join(x.py for x in items[i + 1:j])
                out.append(_Item(f"(?>[^/]*?{chunk})", "other"))
                i = j
                continue
        out.append(item)
        i += 1
    return out
