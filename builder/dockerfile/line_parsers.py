"""Argument rules per instruction, as BuildKit's ``parser/line_parsers.go``.

Each rule turns the text after the keyword and its ``--flags`` into the
argument list the node keeps: a JSON array or the raw shell string (RUN, CMD,
ENTRYPOINT, SHELL), a whitespace split (FROM, EXPOSE, and ADD/COPY/VOLUME in
shell form), quote-aware words (ARG), ``key value sep`` triples (ENV, LABEL).
Quotes and escapes stay in the arguments; removing them is expansion's job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from builder.dockerfile.directives import GO_SPACE, go_lower, go_trim_space

__all__ = [
    "KNOWN_INSTRUCTIONS",
    "NOT_STRING_ARRAY",
    "ParseError",
    "go_quote",
    "parse_json_array",
    "parse_name_val",
    "parse_words",
    "split_instruction",
]

NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"

_WS = re.compile(r"[\t\v\f\r ]+")
# Upstream loops over bytes here and calls unicode.IsSpace on each; ASCII is
# the only reading of that which does not split multi-byte characters.
_ASCII_SPACE = "\t\n\v\f\r "
_SURROGATE = re.compile("[\ud800-\udfff]")
_GO_SPACE_RUN = re.compile(f"[{re.escape(GO_SPACE)}]+")
_FLAG_WORD = re.compile(r"--[^\t\n\v\f\r ]*")


class ParseError(ValueError):
    """An argument-level parse failure (message only; callers add file and line)."""


_QUOTE_ESC = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote``: printable text raw, everything else escaped."""
    if s.isascii() and s.isprintable():
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    out = ['"']
    for c in s:
        esc = _QUOTE_ESC.get(c)
        if esc is not None:
            out.append(esc)
        elif c.isprintable():
            out.append(c)
        else:
            o = ord(c)
            if o < 0x20 or o == 0x7F:
                out.append(f"\\x{o:02x}")
            elif 0xDC80 <= o <= 0xDCFF:  # an undecodable byte (surrogateescape)
                out.append(f"\\x{o - 0xDC00:02x}")
            elif 0xD800 <= o <= 0xDFFF:
                out.append("\ufffd")
            elif o < 0x10000:
                out.append(f"\\u{o:04x}")
            else:
                out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def parse_words(rest: str, escape: str = "\\") -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escape pairs in the words."""
    if "'" not in rest and '"' not in rest and escape not in rest:
        return [w for w in _GO_SPACE_RUN.split(rest) if w]
    words: list[str] = []
    buf: list[str] = []
    in_word = in_quote = blank_ok = False
    quote = ""
    i, n = 0, len(rest)
    while i < n:
        ch = rest[i]
        i += 1
        if not in_word and not in_quote:
            if ch in GO_SPACE:
                continue
            in_word = True
        if in_word:
            if ch in GO_SPACE:
                in_word = False
                if blank_ok or buf:
                    words.append("".join(buf))
                buf.clear()
                blank_ok = False
                continue
            if ch in "'\"":
                quote, blank_ok, in_word, in_quote = ch, True, False, True
            if ch == escape:
                if i == n:
                    continue  # an escape at the very end is dropped
                buf.append(ch)
                ch = rest[i]
                i += 1
            buf.append(ch)
            continue
        # in a quote
        if ch == quote:
            in_quote, in_word = False, True
        if ch == escape and quote != "'":
            if i == n:
                in_quote, in_word = False, True
                continue
            buf.append(ch)
            ch = rest[i]
            i += 1
        buf.append(ch)
    if (in_word or in_quote) and (blank_ok or buf):
        words.append("".join(buf))
    return words


def parse_name_val(rest: str, key: str, escape: str = "\\") -> list[str]:
    """ENV/LABEL: ``k v`` (old form, one pair) or ``k=v ...`` → ``[k, v, sep, ...]``."""
    words = parse_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _WS.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ParseError(f"{key} must have two arguments")
        return [parts[0], parts[1], ""]
    out: list[str] = []
    for word in words:
        k, eq, v = word.partition("=")
        if not eq:
            raise ParseError(
                f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value"
            )
        out += (k, v, "=")
    return out


def _reject_constant(name: str) -> None:
    raise ValueError(name)


_JSON = json.JSONDecoder(parse_constant=_reject_constant)


class _NotJSON(Exception):
    pass


def parse_json_array(rest: str) -> list[str]:
    """A JSON array of strings. Raises _NotJSON (fall back to shell form) or
    ParseError (valid JSON that is not all strings)."""
    rest = rest.lstrip(GO_SPACE)
    if not rest.startswith("["):
        raise _NotJSON
    try:
        value = _JSON.decode(rest)
    except ValueError:
        raise _NotJSON from None
    except RecursionError:
        # Deeper than Python's stack allows: upstream (max depth 10000) would
        # report the nested arrays; an error is the safe answer.
        raise ParseError(NOT_STRING_ARRAY) from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ParseError(NOT_STRING_ARRAY)
    if not rest.isascii():
        # Go decodes invalid UTF-8 and lone surrogates to U+FFFD.
        value = [_SURROGATE.sub("\ufffd", v) for v in value]
    return value


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    try:
        return parse_json_array(rest), True
    except _NotJSON:
        return [rest], False


def _maybe_json_to_list(rest: str) -> tuple[list[str], bool]:
    try:
        return parse_json_array(rest), True
    except _NotJSON:
        return (_WS.split(rest) if rest else []), False


def _strings(rest: str) -> tuple[list[str], bool]:
    return (_WS.split(rest) if rest else []), False


def _string(rest: str) -> tuple[list[str], bool]:
    return ([rest] if rest else []), False


def _health(rest: str) -> tuple[list[str], bool]:
    sep = 0
    n = len(rest)
    while sep < n and rest[sep] not in _ASCII_SPACE:
        sep += 1
    nxt = sep
    while nxt < n and rest[nxt] in _ASCII_SPACE:
        nxt += 1
    if sep == 0:
        return [], False
    args, is_json = _maybe_json(rest[nxt:])
    return [rest[:sep], *args], is_json


_Dispatch = Callable[[str], tuple[list[str], bool]]
_DISPATCH: dict[str, _Dispatch] = {
    "add": _maybe_json_to_list,
    "cmd": _maybe_json,
    "copy": _maybe_json_to_list,
    "entrypoint": _maybe_json,
    "expose": _strings,
    "from": _strings,
    "healthcheck": _health,
    "maintainer": _string,
    "run": _maybe_json,
    "shell": _maybe_json,
    "stopsignal": _string,
    "user": _string,
    "volume": _maybe_json_to_list,
    "workdir": _string,
}
KNOWN_INSTRUCTIONS = frozenset({*_DISPATCH, "arg", "env", "label", "onbuild"})


def _extract_flags(line: str, escape: str) -> tuple[str, list[str]]:
    """Leading ``--flag`` words (quotes removed, escapes applied) and the rest."""
    words: list[str] = []
    pos, n = 0, len(line)
    # Fast path for the usual words without quotes or escapes.
    while line.startswith("--", pos):
        m = _FLAG_WORD.match(line, pos)
        assert m is not None
        word = m.group()
        if "'" in word or '"' in word or escape in word:
            return _extract_flags_slow(line, escape, pos, words)
        pos = m.end()
        if word == "--":
            return line[pos:], words
        words.append(word)
        while pos < n and line[pos] in _ASCII_SPACE:
            pos += 1
    return line[pos:], words


def _extract_flags_slow(
    line: str, escape: str, pos: int, words: list[str]
) -> tuple[str, list[str]]:
    """BuildKit's ``extractBuilderFlags`` from ``pos`` on, for words with quotes or escapes."""
    n = len(line)
    while True:
        while pos < n and line[pos] in _ASCII_SPACE:
            pos += 1
        if not line.startswith("--", pos):
            return line[pos:], words
        word, pos = _flag_word(line, escape, pos)
        if pos == n:  # the line ends in (or right after) this word: nothing is left
            if word != "--":
                words.append(word)
            return "", words
        if word == "--":
            return line[pos:], words
        words.append(word)


def _flag_word(line: str, escape: str, pos: int) -> tuple[str, int]:
    """One word from ``pos``: quotes removed, escapes applied; and where it ends
    (the blank after it, or the end of the line: an unclosed quote runs to it)."""
    buf: list[str] = []
    quote = ""  # the open quote character, "" outside quotes
    n = len(line)
    while pos < n:
        ch = line[pos]
        if quote and ch == quote:
            quote = ""
            pos += 1
            continue
        if not quote:
            if ch in _ASCII_SPACE:
                break
            if ch in "'\"":
                quote = ch
                pos += 1
                continue
        if ch == escape:
            pos += 1
            if pos == n:  # a trailing escape is dropped (and closes an open quote)
                break
            ch = line[pos]
        buf.append(ch)
        pos += 1
    return "".join(buf), pos


def split_instruction(line: str, escape: str) -> tuple[str, list[str], list[str], bool, str]:
    """One joined instruction line → ``(keyword as written, flags, args, is_json, onbuild_rest)``.

    ``onbuild_rest`` is the wrapped instruction's text for ONBUILD, else ``""``.
    Raises ParseError.
    """
    text = go_trim_space(line)
    m = _WS.search(text)
    if m is None:
        flags: list[str] = []
        cmd, rest = text, ""
    else:
        cmd, rest = text[: m.start()], text[m.end() :]
        if rest.startswith("--"):
            rest, flags = _extract_flags(rest, escape)
        else:
            flags = []
        rest = go_trim_space(rest)
    keyword = go_lower(cmd)
    fn = _DISPATCH.get(keyword)
    if fn is not None:
        args, is_json = fn(rest)
        return cmd, flags, args, is_json, ""
    if keyword in ("env", "label"):
        args = parse_name_val(rest, "ENV" if keyword == "env" else "LABEL", escape)
        return cmd, flags, args, False, ""
    if keyword == "arg":
        return cmd, flags, parse_words(rest, escape), False, ""
    if keyword == "onbuild":
        return cmd, flags, [], False, rest
    return cmd, flags, [""], False, ""  # upstream ignores an unknown instruction's arguments
