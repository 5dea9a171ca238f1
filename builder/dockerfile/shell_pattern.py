"""The globs of ``${VAR#pat}``, ``%``, ``##``, ``%%``, ``/`` and ``//``, matched
in time linear in the value (catalogue D, security point 6).

BuildKit (``shell/lex.go``) turns such a pattern into a Go regular expression
(``*`` is ``.*`` or ``.*?``, ``?`` is ``.``, everything else literal) and lets
RE2 find the leftmost-first match.  Python's ``re`` backtracks on the same
expression: ``${A#*a*a*a*a*a*a*a*a*b}`` over a long value never ends, and a
regex call cannot be interrupted by Ctrl-C.  This module computes the very match
RE2 reports, without a regex engine, from the structure of the pattern:

* ``.`` and ``.*`` never match a newline, so a pattern is a list of *pieces*
  split at its literal newlines, and each piece lies within one line of the
  value: a middle piece spans a whole line, the last one a prefix of its line.
* Within a line a piece is fixed-width *chunks* (literal characters and ``?``)
  joined by stars.  Whether the rest of a piece fits after a position only gets
  easier the earlier that position is, so the earliest placement of each chunk
  decides whether the piece matches at all, lazy stars take exactly those
  earliest places, and greedy stars end the match at the last occurrence of
  the final chunk in the line (placing the chunks from the right).

Every step is a ``str.find``/``rfind`` or a fixed-width regex over a bounded
slice, so the work is O(len(value) x len(pattern)) in the worst case and linear
for the common shapes.  Whoever calls these functions from Python between
matches can be interrupted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cached_property, lru_cache

import msgspec

__all__ = ["PatternError", "ResultTooLarge", "go_template", "replace", "reverse_pattern",
           "shell_pattern_to_regex", "trim_prefix", "trim_suffix"]

# A pattern with literal newlines is checked line by line from every line of the
# value, and a ``?`` chunk is tried at every position of the value: each costs
# about len(value) x len(pattern), which is capped (in characters compared, a
# second or so) so that no value and pattern make a build hang.  Upstream's RE2
# is no better on these (O(len(value) x len(pattern)) too); real patterns
# are orders of magnitude below the cap.
MAX_MATCH_WORK = 100_000_000
# What a line check costs on top of its characters (the Python around it).
_CHECK_COST = 512
_ANY = ""  # the item for '?': one character other than a newline


class PatternError(ValueError):
    """The pattern is malformed (or too costly to match); the message is upstream's."""


class ResultTooLarge(ValueError):
    """A replacement grew the value past the caller's limit."""


def _tokens(pattern: str) -> list[str | None]:
    """Upstream's tokenizer: ``None`` is a star, ``_ANY`` a ``?``, else a literal
    character.  Go's text/scanner drops a leading byte-order mark."""
    out: list[str | None] = []
    i, n = (1 if pattern.startswith("\ufeff") else 0), len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(None)
        elif ch == "?":
            out.append(_ANY)
        elif ch == "\\":
            nxt = pattern[i] if i < n else ""
            if nxt in ("}", "/") and nxt:
                continue  # `\}` and `\/` only protected the delimiter
            if nxt not in ("*", "?", "\\") or not nxt:
                raise PatternError(f"invalid escape '\\{nxt or chr(0xFFFD)}'")
            out.append(nxt)
            i += 1
        else:
            out.append(ch)
    return out


def shell_pattern_to_regex(pattern: str, greedy: bool, anchored: bool) -> str:
    """The Go regular expression upstream builds (kept for its test vectors and
    as the reference the matcher is tested against)."""
    star = ".*" if greedy else ".*?"
    out = ["^"] if anchored else []
    for token in _tokens(pattern):
        if token is None:
            out.append(star)
        elif token == _ANY:
            out.append(".")
        elif token in "[]{}.+()|^$*?\\":
            out.append("\\" + token)
        else:
            out.append(token)
    return "".join(out)


class _Chunk(msgspec.Struct, frozen=True, dict=True):  # dict: for the cached properties
    """Fixed-width text between stars: literal characters and ``?`` items."""

    items: tuple[str, ...]

    @property
    def width(self) -> int:
        return len(self.items)

    @cached_property
    def literal(self) -> str | None:
        return None if _ANY in self.items else "".join(self.items)

    @cached_property
    def regex(self) -> re.Pattern[str]:
        # Fixed width, no repetition: one attempt costs O(width), never more.
        return re.compile("".join(re.escape(c) if c else "." for c in self.items))

    @cached_property
    def reversed_regex(self) -> re.Pattern[str]:
        return re.compile("".join(re.escape(c) if c else "." for c in reversed(self.items)))

    def at(self, text: _Text, i: int, end: int) -> bool:
        if i + self.width > end:
            return False
        if self.literal is not None:
            return text.value.startswith(self.literal, i)
        return self.regex.match(text.value, i, i + self.width) is not None

    def find(self, text: _Text, lo: int, hi: int) -> int:
        """First start in ``[lo, hi)`` of an occurrence inside ``[lo, hi)``; -1 if none."""
        if self.literal is not None:
            return text.value.find(self.literal, lo, hi)
        found = self.regex.search(text.value, lo, hi)
        return -1 if found is None else found.start()

    def rfind(self, text: _Text, lo: int, hi: int) -> int:
        """Last start of an occurrence inside ``[lo, hi)``; -1 if none."""
        if self.literal is not None:
            return text.value.rfind(self.literal, lo, hi)
        n = len(text.value)
        found = self.reversed_regex.search(text.reversed, n - hi, n - lo)
        return -1 if found is None else n - found.start() - self.width


class _Piece(msgspec.Struct, frozen=True):
    """One line's part of the pattern: ``chunks[0] * chunks[1] * ... chunks[-1]``."""

    chunks: tuple[_Chunk, ...]

    def place_forward(self, text: _Text, start: int, end: int) -> int:
        """The earliest placement of every chunk from ``start`` (the first one
        exactly there) inside ``[start, end)``: the end of the last, or -1."""
        return self.placement(text, start, end)[0]

    def placement(self, text: _Text, start: int, end: int) -> tuple[int, int]:
        """place_forward, and on failure the index of the chunk that did not fit."""
        first = self.chunks[0]
        if not first.at(text, start, end):
            return -1, 0
        pos = start + first.width
        for index in range(1, len(self.chunks)):
            chunk = self.chunks[index]
            found = chunk.find(text, pos, end)
            if found < 0:
                return -1, index
            pos = found + chunk.width
        return pos, -1

    def prefix_end(self, text: _Text, start: int, end: int, greedy: bool) -> int:
        """Where RE2's preferred match of this piece from ``start`` ends, or -1."""
        lazy_end = self.place_forward(text, start, end)
        if lazy_end < 0 or not greedy or len(self.chunks) == 1:
            return lazy_end
        # Feasible, so the last occurrence of the final chunk in the line is where
        # right-to-left placement (what greedy stars prefer) puts it.
        last = self.chunks[-1]
        return last.rfind(text, start, end) + last.width

    def full_match(self, text: _Text, start: int, end: int) -> bool:
        """Does the piece match exactly ``[start, end)``?"""
        if len(self.chunks) == 1:
            return self.chunks[0].width == end - start and self.chunks[0].at(text, start, end)
        last = self.chunks[-1]
        tail = end - last.width
        if tail < start or not last.at(text, tail, end):
            return False
        body = _Piece(self.chunks[:-1])
        return body.place_forward(text, start, tail) >= 0

    def leftmost_suffix_start(self, text: _Text, lo: int, end: int) -> int:
        """The first ``s >= lo`` where the piece matches exactly ``[s, end)``, or -1.
        Only the first occurrence of the leading chunk can be it: a later start
        leaves strictly less room for the rest."""
        first = self.chunks[0]
        if len(self.chunks) == 1:
            start = end - first.width
            return start if start >= lo and first.at(text, start, end) else -1
        start = first.find(text, lo, end)
        return start if start >= 0 and self.full_match(text, start, end) else -1


class _Text:
    """The value being matched, with its reversal made only if needed."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.work = 0

    @cached_property
    def reversed(self) -> str:
        return self.value[::-1]

    def eol(self, pos: int) -> int:
        found = self.value.find("\n", pos)
        return len(self.value) if found < 0 else found

    def charge(self, work: int) -> None:
        self.work += work
        if self.work > MAX_MATCH_WORK:
            raise PatternError(f"too costly to match against a value of {len(self.value)} "
                               f"characters (over {MAX_MATCH_WORK} steps)")


class _Pattern(msgspec.Struct, frozen=True):
    pieces: tuple[_Piece, ...]

    def start(self, value: str) -> _Text:
        """The value to match, charged for what ``?`` chunks may cost over it (a
        fixed-width regex tried at each position costs its width there)."""
        text = _Text(value)
        text.charge(len(value) * sum(chunk.width for piece in self.pieces
                                     for chunk in piece.chunks if chunk.literal is None))
        return text

    def anchored_end(self, text: _Text, start: int, greedy: bool) -> int:
        """The end of RE2's preferred match starting exactly at ``start``, or -1."""
        end = text.eol(start)
        for piece in self.pieces[:-1]:
            text.charge(end - start + _CHECK_COST)
            if end >= len(text.value) or not piece.full_match(text, start, end):
                return -1
            start = end + 1
            end = text.eol(start)
        return self.pieces[-1].prefix_end(text, start, end, greedy)

    def search(self, text: _Text, pos: int) -> tuple[int, int] | None:
        """RE2's leftmost-first match (greedy stars) starting at ``pos`` or later."""
        if len(self.pieces) == 1:
            return _search_piece(self.pieces[0], text, pos)
        n = len(text.value)
        first, tail = self.pieces[0], _Pattern(self.pieces[1:])
        while pos < n:
            end = text.eol(pos)
            if end >= n:
                return None  # the pattern needs a newline after this line
            start = first.leftmost_suffix_start(text, pos, end)
            text.charge(end - pos + _CHECK_COST)
            if start >= 0:
                # The other lines do not depend on where this one starts.
                tail_end = tail.anchored_end(text, end + 1, True)
                if tail_end >= 0:
                    return start, tail_end
            pos = end + 1
        return None


def _search_piece(piece: _Piece, text: _Text, pos: int) -> tuple[int, int] | None:
    """The leftmost match of a one-line pattern at ``pos`` or later.  In each
    line only one start can be it: the first occurrence of the leading chunk
    (a later one leaves strictly less room), or the line's start when the
    pattern begins with a star; lines without the first non-empty chunk are
    skipped by one ``find``."""
    chunks, value = piece.chunks, text.value
    n = len(value)
    anchor = chunks[0] if chunks[0].width or len(chunks) == 1 else chunks[1]
    while pos <= n:
        hit = anchor.find(text, pos, n)
        if hit < 0:
            return None
        if len(chunks) == 1:
            return hit, hit + anchor.width  # no stars: the occurrence is the match
        end = text.eol(hit)
        start = hit if anchor is chunks[0] else max(pos, value.rfind("\n", pos, hit) + 1)
        match_end, failed = piece.placement(text, start, end)
        if match_end >= 0:
            return start, piece.prefix_end(text, start, end, True)
        pos = end + 1
        if failed > 0:
            # A line can only match if it holds the chunk that did not fit here.
            nxt = chunks[failed].find(text, pos, n)
            if nxt < 0:
                return None
            pos = max(pos, value.rfind("\n", pos, nxt) + 1)
    return None


@lru_cache(maxsize=256)
def _compile(pattern: str) -> _Pattern:
    pieces: list[_Piece] = []
    chunks: list[_Chunk] = []
    items: list[str] = []
    for token in _tokens(pattern):
        if token is None:
            chunks.append(_Chunk(tuple(items)))
            items = []
        elif token == "\n":
            chunks.append(_Chunk(tuple(items)))
            pieces.append(_Piece(_merge_stars(chunks)))
            chunks, items = [], []
        else:
            items.append(token)
    chunks.append(_Chunk(tuple(items)))
    pieces.append(_Piece(_merge_stars(chunks)))
    return _Pattern(tuple(pieces))


def _merge_stars(chunks: list[_Chunk]) -> tuple[_Chunk, ...]:
    """``a**b`` is ``a*b``: an empty chunk between two stars adds no choice that
    changes where a match ends (either star may take the characters)."""
    merged = chunks[:1]
    for chunk in chunks[1:-1]:
        if chunk.width:
            merged.append(chunk)
    if len(chunks) > 1:
        merged.append(chunks[-1])
    return tuple(merged)


def trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    """``${value#pattern}`` (``##`` when greedy)."""
    compiled = _compile(pattern)
    end = compiled.anchored_end(compiled.start(value), 0, greedy)
    return value if end < 0 else value[end:]


def reverse_pattern(pattern: str) -> str:
    """Upstream's reversePattern: by character, keeping each ``\\x`` pair in order."""
    tokens: list[str] = []
    i, last = 0, len(pattern) - 1
    while i <= last:
        if pattern[i] == "\\" and i != last:
            tokens.append(pattern[i:i + 2])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    return "".join(reversed(tokens))


def trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    """``${value%pattern}``: as upstream, a prefix trim of the reversed value by
    the reversed pattern."""
    return trim_prefix(reverse_pattern(pattern), value[::-1], greedy)[::-1]


def replace(pattern: str, value: str, replacement: str, replace_all: bool,
            limit: int) -> str:
    """``${value/pattern/replacement}`` and ``//``: RE2's leftmost-first match
    with greedy stars; ``//`` as Go's ReplaceAllString (``$0`` expands)."""
    compiled = _compile(pattern)
    text = compiled.start(value)
    if not replace_all:
        found = compiled.search(text, 0)
        if found is None:
            return value
        # A single replacement is literal; only ReplaceAllString expands `$`.
        result = value[:found[0]] + replacement + value[found[1]:]
        if len(result) > limit:
            raise ResultTooLarge()
        return result
    pieces = compiled.pieces
    if len(pieces) == 1 and len(pieces[0].chunks) == 1 and pieces[0].chunks[0].width:
        return _replace_fixed(pieces[0].chunks[0], value, replacement, limit)
    return _go_replace_all(lambda pos: compiled.search(text, pos), value, replacement, limit)


def _replace_fixed(chunk: _Chunk, value: str, template: str, limit: int) -> str:
    """``//`` with a pattern without stars: its matches never overlap and are
    never empty, so the regex's own scan (one fixed-width attempt per position)
    finds what Go's loop would."""
    out: list[str] = []
    size = last_end = 0
    for found in chunk.regex.finditer(value):
        start, end = found.span()
        piece = go_template(template, found.group())
        out += (value[last_end:start], piece)
        size += start - last_end + len(piece)
        if size > limit:
            raise ResultTooLarge()
        last_end = end
    out.append(value[last_end:])
    if size + len(value) - last_end > limit:
        raise ResultTooLarge()
    return "".join(out)


def _go_replace_all(search: Callable[[int], tuple[int, int] | None], value: str,
                    template: str, limit: int) -> str:
    """Go's Regexp.ReplaceAllString: no empty match right after a previous
    match, and ``$`` in the template expanded."""
    out: list[str] = []
    size = 0
    last_end = pos = 0
    n = len(value)
    while pos <= n:
        found = search(pos)
        if found is None:
            break
        start, end = found
        out.append(value[last_end:start])
        size += start - last_end
        if end > last_end or start == 0:
            piece = go_template(template, value[start:end])
            out.append(piece)
            size += len(piece)
            if size > limit:
                raise ResultTooLarge()
        last_end = end
        width = 1 if pos < n else 0
        if pos + width > end:
            pos += width
        elif pos + 1 > end:
            pos += 1
        else:
            pos = end
    out.append(value[last_end:])
    if size + n - last_end > limit:
        raise ResultTooLarge()
    return "".join(out)


def go_template(template: str, whole: str) -> str:
    """Go's Regexp.Expand for a pattern without groups: ``$$`` is ``$``,
    ``$0``/``${0}`` the match, any other ``$name`` empty, a malformed ``$`` kept."""
    if "$" not in template:
        return template
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            break
        out.append(template[i:j])
        i = j + 1
        if i < n and template[i] == "$":
            out.append("$")
            i += 1
            continue
        brace = i < n and template[i] == "{"
        k = i + 1 if brace else i
        start = k
        while k < n and (template[k].isalpha() or template[k].isdecimal() or template[k] == "_"):
            k += 1
        name = template[start:k]
        if not name or (brace and (k >= n or template[k] != "}")):
            out.append("$")
            continue
        i = k + 1 if brace else k
        if name == "0":
            out.append(whole)
    out.append(template[i:])
    return "".join(out)
