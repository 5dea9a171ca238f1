"""Heredocs: ``RUN <<EOF``, ``COPY <<-'EOF' /dest`` and their bodies.

Finding heredoc words needs BuildKit's shell lexer in modes the build-time
expander never uses: quotes and escapes kept raw, unset variables left as
written, and ``<<`` glued to the spaces after it (so ``<<  EOF`` is one word
but ``<<- EOF`` is two and is not a heredoc). The environment is always empty
here, so a small lexer of our own covers it without depending on
``builder.dockerfile.expand``.
"""

from __future__ import annotations

import re

import msgspec

from builder.dockerfile.directives import GO_SPACE

__all__ = [
    "Heredoc",
    "HeredocError",
    "chomp_heredoc_content",
    "heredocs_from_line",
    "parse_heredoc",
]

# Upstream: ``^(\d*)<<(-?)\s*([^<]*)$``.  Only the head is a regex here: Python's re
# backtracks between ``\s*`` and ``[^<]*`` (quadratic in a word of blanks).
_HEREDOC_HEAD = re.compile(r"([0-9]*)<<(-?)")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_MAX_FD = (1 << 64) - 1


class HeredocError(ValueError):
    """A heredoc word that cannot be lexed (e.g. an unterminated quote)."""


class Heredoc(msgspec.Struct):
    """One heredoc, like BuildKit's ``parser.Heredoc``.

    ``content`` is the raw body, each line with its newline; ``<<-`` only sets
    ``chomp`` (COPY strips the tabs, RUN hands them to the shell). ``expand``
    is false when any part of the delimiter word was quoted.
    """

    name: str
    content: str = ""
    expand: bool = True
    chomp: bool = False
    file_descriptor: int = 0


def chomp_heredoc_content(src: str) -> str:
    """Remove leading tabs from every line."""
    return _LEADING_TABS.sub("", src)


class _Lex:
    """BuildKit's shell word lexer with an empty environment and SkipUnsetEnv."""

    __slots__ = ("pos", "raw_escapes", "raw_quotes", "src")

    def __init__(self, src: str, raw_quotes: bool, raw_escapes: bool) -> None:
        self.src = src
        self.pos = 0
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes

    def _peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else ""

    def _next(self) -> str:
        ch = self._peek()
        if ch:
            self.pos += 1
        return ch

    def words(self) -> list[str]:
        return self._stop_on("", self.raw_escapes)[1]

    def _stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._stop_on_inner(stop)
        finally:
            self.raw_escapes = saved

    def _stop_on_inner(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words: list[str] = []
        word: list[str] = []
        in_word = False

        def add_char(c: str) -> None:
            nonlocal in_word
            if c in GO_SPACE:
                if in_word and any(word):
                    words.append("".join(word))
                    word.clear()
                    in_word = False
            else:
                word.append(c)
                in_word = True

        while self.pos < len(self.src):
            ch = self.src[self.pos]
            if stop and ch == stop:
                self.pos += 1
                if any(word):
                    words.append("".join(word))
                return "".join(result), words
            if ch in "$<'\"":
                tmp = self._special(ch)
                result.append(tmp)
                if ch == "$":
                    for c in tmp:
                        add_char(c)
                else:
                    word.append(tmp)
                    in_word = True
                continue
            self.pos += 1
            if ch == "\\":
                if self.raw_escapes:
                    word.append(ch)
                    in_word = True
                    result.append(ch)
                ch = self._next()
                if not ch:
                    break
                word.append(ch)
                in_word = True
            else:
                add_char(ch)
            result.append(ch)
        if stop:
            raise HeredocError(f"unexpected end of statement while looking for matching {stop}")
        if any(word):
            words.append("".join(word))
        return "".join(result), words

    def _special(self, ch: str) -> str:
        if ch == "$":
            return self._dollar()
        if ch == "<":
            return self._possible_heredoc()
        if ch == "'":
            return self._single_quote()
        return self._double_quote()

    def _single_quote(self) -> str:
        self.pos += 1
        end = self.src.find("'", self.pos)
        if end < 0:
            raise HeredocError(
                "unexpected end of statement while looking for matching single-quote"
            )
        body = self.src[self.pos : end]
        self.pos = end + 1
        return f"'{body}'" if self.raw_quotes else body

    def _double_quote(self) -> str:
        self.pos += 1
        out = ['"'] if self.raw_quotes else []
        while True:
            ch = self._peek()
            if not ch:
                raise HeredocError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.pos += 1
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            self.pos += 1
            if ch == "\\":
                if self.raw_escapes:
                    out.append(ch)
                nxt = self._peek()
                if not nxt:
                    continue
                if nxt in '"$\\':
                    ch = self._next()
            out.append(ch)

    def _name(self) -> str:
        start = self.pos
        src = self.src
        if start < len(src) and src[start].isdecimal():
            while self.pos < len(src) and src[self.pos].isdecimal():
                self.pos += 1
            return src[start : self.pos]
        if start < len(src) and src[start] in "@*#?-$!":
            self.pos += 1
            return src[start]
        while self.pos < len(src) and (
            src[self.pos].isalpha() or src[self.pos].isdecimal() or src[self.pos] == "_"
        ):
            self.pos += 1
        return src[start : self.pos]

    def _dollar(self) -> str:
        self.pos += 1
        if self._peek() != "{":
            name = self._name()
            return "$" + name if name else "$"
        self.pos += 1
        ch = self._peek()
        if not ch:
            raise HeredocError("syntax error: missing '}'")
        if ch in "{}:":
            raise HeredocError("syntax error: bad substitution")
        name = self._name()
        ch = self._next()
        if ch == "}":
            return "${" + name + "}"
        if ch and ch in ":+-?#%":
            chs = ch
            if ch == ":":
                ch = self._next()
                chs += ch
                if ch in ("#", "%"):
                    raise HeredocError(f"unsupported modifier ({chs}) in substitution")
            word, _ = self._stop_on_brace(ch in ("#", "%"))
            return "${" + name + chs + word + "}"
        if ch == "/":
            if self._peek() == "/":
                self.pos += 1
            pattern, _ = self._stop_on_brace(True, "/")
            replacement, _ = self._stop_on_brace(True)
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        bad = ch or "\ufffd"
        raise HeredocError(f"unsupported modifier ({bad}) in substitution")

    def _stop_on_brace(self, raw_escapes: bool, stop: str = "}") -> tuple[str, list[str]]:
        try:
            return self._stop_on(stop, raw_escapes)
        except HeredocError:
            if not self._peek():
                raise HeredocError(f"syntax error: missing '{stop}'") from None
            raise

    def _possible_heredoc(self) -> str:
        self.pos += 1
        if self._peek() != "<":
            return "<"
        self.pos += 1
        start = self.pos
        while self._peek() in ("\t", "\r", " "):
            self.pos += 1
        return "<<" + self.src[start : self.pos]


def _words(src: str, raw_quotes: bool, raw_escapes: bool) -> list[str]:
    try:
        return _Lex(src, raw_quotes, raw_escapes).words()
    except RecursionError:  # ${a:-${b:-...}} nested past Python's stack
        raise HeredocError("heredoc word nested too deeply") from None


def parse_heredoc(src: str) -> Heredoc | None:
    """One word such as ``<<-"EOF"`` → a Heredoc (empty content), or None.

    Raises HeredocError when the delimiter has an unterminated quote.
    """
    m = _HEREDOC_HEAD.match(src)
    if m is None or "<" in src[m.end():]:
        return None
    fd_text, dash = m.groups()
    rest = src[m.end():].lstrip("\t\n\f\r ")
    if not rest:
        return None
    words = _words(rest, raw_quotes=False, raw_escapes=False)
    if len(words) != 1:
        return None
    raw = _words(rest, raw_quotes=True, raw_escapes=False)
    if len(raw) != 1:
        raise HeredocError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    word = words[0]
    quotes = word.count("'") + word.count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    fd = min(int(fd_text), _MAX_FD) if fd_text else 0
    return Heredoc(name=word, expand=quotes == raw_quotes, chomp=dash == "-", file_descriptor=fd)


def heredocs_from_line(line: str) -> list[Heredoc]:
    """Every heredoc word of an instruction line, in order (bodies still empty).

    A line the lexer cannot split (an open quote) has no heredocs, as upstream.
    """
    try:
        words = _words(line, raw_quotes=True, raw_escapes=True)
    except HeredocError:
        return []
    docs = []
    for word in words:
        doc = parse_heredoc(word)
        if doc is not None:
            docs.append(doc)
    return docs
