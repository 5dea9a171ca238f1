"""Variable expansion and word splitting, as BuildKit's shell lexer does it.

This follows the shape of BuildKit's ``frontend/dockerfile/shell/lex.go``:
quote removal, escapes (``\\`` or the ``# escape=`` token), ``$name`` and
``${name...}`` with the ``:-  -  :+  +  :?  ?  #  ##  %  %%  /  //`` modifiers,
and ``process_words`` field splitting. It is not a POSIX shell: no command
substitution, arithmetic, ``${#name}`` or ``${name:=x}`` (an error, as upstream).

Every failure is an :class:`ExpansionError` carrying a message only; callers add
the Dockerfile path and line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

import msgspec

from builder.limits import get as _get_limits

__all__ = ["MAX_EXPANSION", "ExpandResult", "ExpansionError", "ShellLex", "build_envs"]

# Upper bound on the characters any one expansion may produce. ``ENV A=$A$A`` run
# a few dozen times would otherwise grow without bound.
# builder/limits.py: 1 MiB by default, PYBUILD_MAX_EXPANSION raises it.
MAX_EXPANSION = _get_limits().max_expansion
# ``${a:-${b:-${c...}}}`` recurses once per level; Python's stack is far smaller
# than Go's, so deep nesting gets a clean error instead of a RecursionError.
_MAX_NESTING = 100
# Go's unicode.IsSpace (Python's str.isspace also accepts U+001C..U+001F).
_GO_SPACES = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SPACE_SPLIT = re.compile(f"([{_GO_SPACES}]+)")
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_MODIFIERS = frozenset("+-?#%")


class ExpansionError(Exception):
    """A word that cannot be expanded (bad syntax, ``${x:?}`` on unset ``x``...)."""


class _FatalError(ExpansionError):
    """Size and nesting limits: never rewritten into a syntax message."""


class ExpandResult(msgspec.Struct):
    """``result``: the word as one string; ``words``: it split as ``process_words``
    does; ``matched``/``unmatched``: variable names looked up and found / not found."""

    result: str
    words: list[str]
    matched: set[str] = msgspec.field(default_factory=set)
    unmatched: set[str] = msgspec.field(default_factory=set)


def build_envs(items: Iterable[str]) -> dict[str, str]:
    """``["k=v", "bare"]`` to a mapping as BuildKit's BuildEnvs: a bare name is set
    to ``""`` and a later duplicate wins."""
    env: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        env[key] = value
    return env


class ShellLex:
    """BuildKit's ``shell.Lex``. The keyword options match its ``RawQuotes``,
    ``RawEscapes``, ``SkipProcessQuotes`` and ``SkipUnsetEnv`` fields (heredoc
    bodies are expanded with quotes and escapes kept raw); all default off."""

    def __init__(self, escape: str = "\\", *, raw_quotes: bool = False,
                 raw_escapes: bool = False, skip_process_quotes: bool = False,
                 skip_unset_env: bool = False) -> None:
        if len(escape) != 1:
            raise ValueError(f"escape token must be one character, not {escape!r}")
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand ``word`` as one word: spaces, even from variables, are kept."""
        return self.process_word_with_matches(word, env).result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand ``word`` and split it on unquoted whitespace, including
        whitespace that comes from unquoted variable values."""
        return self.process_word_with_matches(word, env).words

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> ExpandResult:
        """Expand ``word`` and report which variables it looked up."""
        state = _Word(self, word, env)
        try:
            result, words = state.process_stop_on("", state.raw_escapes)
        except ExpansionError as err:
            raise ExpansionError(f"failed to process {_go_quote(word)}: {err}") from None
        except RecursionError:
            raise ExpansionError(
                f"failed to process {_go_quote(word)}: nested too deeply") from None
        return ExpandResult(result, words, state.matched, state.unmatched)


class _Words:
    """Field splitting as BuildKit's wordsStruct: text from variables and plain
    characters splits on whitespace; quoted and escaped text never does. An
    empty word (``""``) is never emitted, and does not stop a space from
    ending nothing (upstream's inWord flag only matters with a non-empty word)."""

    __slots__ = ("cur", "words")

    def __init__(self) -> None:
        self.words: list[str] = []
        self.cur: list[str] = []

    def add_raw(self, text: str) -> None:
        if text:
            self.cur.append(text)

    def add_string(self, text: str) -> None:
        for i, part in enumerate(_SPACE_SPLIT.split(text)):
            if i % 2 == 0:
                self.add_raw(part)
            else:
                self.finish()

    def finish(self) -> list[str]:
        if self.cur:
            self.words.append("".join(self.cur))
            self.cur = []
        return self.words


@lru_cache(maxsize=64)
def _plain_run(specials: str) -> re.Pattern[str]:
    """Runs of characters that need no special handling, consumed in one step."""
    return re.compile(f"[^{re.escape(specials)}]+")


class _Word:
    """One expansion in progress: BuildKit's shellWord over a position in ``text``."""

    def __init__(self, lex: ShellLex, text: str, env: Mapping[str, str]) -> None:
        # Go's text/scanner drops a byte-order mark at the very start.
        self.text = text[1:] if text.startswith("\ufeff") else text
        self.pos = 0
        self.n = len(self.text)
        self.env = env
        self.lex = lex
        self.esc = lex.escape
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()
        self.depth = 0

    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Expand up to ``stop`` (consumed) or, when ``stop`` is "", the end."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _stop_on(self, stop: str) -> tuple[str, list[str]]:
        text, esc, lex = self.text, self.esc, self.lex
        quotes = "" if lex.skip_process_quotes else "'\""
        plain = _plain_run("$" + esc + stop + quotes)
        out: list[str] = []
        size = 0
        words = _Words()
        while self.pos < self.n:
            ch = text[self.pos]
            if ch == stop:
                self.pos += 1
                return "".join(out), words.finish()
            if ch == "$":
                piece = self.process_dollar()
                words.add_string(piece)
            elif ch in quotes:
                piece = self.single_quote() if ch == "'" else self.double_quote()
                words.add_raw(piece)
            elif ch == esc:
                self.pos += 1
                if self.raw_escapes:
                    words.add_raw(esc)
                    out.append(esc)
                    size += 1
                if self.pos >= self.n:
                    break  # a trailing escape is dropped
                piece = text[self.pos]
                self.pos += 1
                words.add_raw(piece)
            else:
                match = plain.match(text, self.pos)
                assert match is not None  # `ch` itself is a plain character
                piece = match.group()
                self.pos = match.end()
                words.add_string(piece)
            out.append(piece)
            size += len(piece)
            if size > MAX_EXPANSION:
                raise _too_large()
        if stop:
            raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), words.finish()

    def single_quote(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            self.pos = self.n
            raise ExpansionError(
                "unexpected end of statement while looking for matching single-quote")
        body = self.text[self.pos + 1:end]
        self.pos = end + 1
        return f"'{body}'" if self.lex.raw_quotes else body

    def double_quote(self) -> str:
        text, esc = self.text, self.esc
        plain = _plain_run('"$' + esc)
        out = ['"'] if self.lex.raw_quotes else []
        size = 0
        self.pos += 1
        while True:
            if self.pos >= self.n:
                raise ExpansionError(
                    "unexpected end of statement while looking for matching double-quote")
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                if self.lex.raw_quotes:
                    out.append('"')
                return "".join(out)
            if ch == "$":
                piece = self.process_dollar()
            elif ch == esc:
                self.pos += 1
                if self.raw_escapes:
                    out.append(esc)
                if self.pos >= self.n:
                    continue  # unterminated: reported on the next turn
                piece = esc
                # Only these can be escaped inside double quotes; before any
                # other character the escape stays (twice with raw escapes, as
                # upstream writes it once for "raw" and once as the character).
                if text[self.pos] in ('"', "$", esc):
                    piece = text[self.pos]
                    self.pos += 1
            else:
                match = plain.match(text, self.pos)
                assert match is not None
                piece = match.group()
                self.pos = match.end()
            out.append(piece)
            size += len(piece)
            if size > MAX_EXPANSION:
                raise _too_large()

    def process_dollar(self) -> str:
        self.depth += 1
        try:
            if self.depth > _MAX_NESTING:
                raise _FatalError(f"variable references nested more than {_MAX_NESTING} deep")
            return self._dollar()
        finally:
            self.depth -= 1

    def _peek(self) -> str:
        """The next character; "" at the end (Go's scanner.EOF)."""
        return self.text[self.pos] if self.pos < self.n else ""

    def _bare_variable(self) -> str:
        """``$NAME`` (no braces); a lone ``$`` stays as it is."""
        name = self.process_name()
        if not name:
            return "$"
        value, found = self.get_env(name)
        if not found and self.lex.skip_unset_env:
            return "$" + name
        return value

    def _dollar(self) -> str:
        self.pos += 1  # the '$'
        if self._peek() != "{":
            return self._bare_variable()
        self.pos += 1
        ch = self._peek()
        if not ch:
            raise ExpansionError("syntax error: missing '}'")
        if ch in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.process_name()
        ch = self._peek()
        self.pos += 1  # past the end is harmless: everything checks pos < n
        chs = ch or "\ufffd"  # Go formats scanner.EOF as the replacement character
        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch == "/":
            return self._replace(name)
        null_is_unset = ch == ":"
        if null_is_unset:
            ch = self._peek()
            self.pos += 1
            chs += ch or "\ufffd"
        elif ch not in _MODIFIERS:
            raise ExpansionError(f"unsupported modifier ({chs}) in substitution")
        # Patterns of # and % keep their escapes so `\*` reaches the glob as a
        # literal star; the other modifiers' words are ordinary expanded text.
        raw = ch in ("#", "%")
        if null_is_unset and raw:
            raise ExpansionError(f"unsupported modifier ({chs}) in substitution")
        word = self._until("}", raw, "syntax error: missing '}'")
        value, is_set = self.get_env(name)
        if self.lex.skip_unset_env and not is_set:
            return "${" + name + chs + word + "}"
        empty = not is_set or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if not is_set:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
            if empty:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in ("#", "%"):
            greedy = word.startswith(ch)
            word = word[1:] if greedy else word
            from builder.dockerfile import shell_pattern  # only ${V#p}-style words need it

            trim = shell_pattern.trim_suffix if ch == "%" else shell_pattern.trim_prefix
            return _matched(word, lambda: trim(word, value, greedy))
        raise ExpansionError(f"unsupported modifier ({chs}) in substitution")

    def _until(self, stop: str, raw: bool, eof_message: str) -> str:
        try:
            return self.process_stop_on(stop, raw)[0]
        except _FatalError:
            raise
        except ExpansionError:
            # Upstream reports any failure that ran off the end as the missing
            # delimiter, whatever went wrong inside.
            if self.pos >= self.n:
                raise ExpansionError(eof_message) from None
            raise

    def _replace(self, name: str) -> str:
        replace_all = self._peek() == "/"
        if replace_all:
            self.pos += 1
        pattern = self._until("/", True, "syntax error: missing '/' in ${}")
        replacement = self._until("}", True, "syntax error: missing '}'")
        value, is_set = self.get_env(name)
        if self.lex.skip_unset_env and not is_set:
            return "${" + name + "/" + pattern + "/" + replacement + "}"  # "/" even for "//"
        from builder.dockerfile import shell_pattern

        return _matched(pattern, lambda: shell_pattern.replace(
            pattern, value, replacement, replace_all, MAX_EXPANSION))

    def process_name(self) -> str:
        text, start = self.text, self.pos
        if start >= self.n:
            return ""
        ch = text[start]
        end = start + 1
        if ch.isdecimal():  # positional parameter: all the digits, nothing else
            while end < self.n and text[end].isdecimal():
                end += 1
        elif ch in _SPECIAL_PARAMS:
            pass
        elif ch.isalpha() or ch == "_":
            while end < self.n and (text[end].isalpha() or text[end].isdecimal()
                                    or text[end] == "_"):
                end += 1
        else:
            return ""
        self.pos = end
        return text[start:end]

    def get_env(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
        return "", False


def _too_large() -> ExpansionError:
    return _FatalError(f"expanded value is larger than {MAX_EXPANSION} characters"
                       " (raise it with PYBUILD_MAX_EXPANSION)")


def _matched(pattern: str, match: Callable[[], str]) -> str:
    """Run one of shell_pattern's matchers, with upstream's error messages."""
    from builder.dockerfile.shell_pattern import PatternError, ResultTooLarge

    try:
        return match()
    except PatternError as err:
        raise ExpansionError(f"invalid pattern ({pattern}) in substitution: {err}") from None
    except ResultTooLarge:
        raise _too_large() from None


_C_ESCAPES = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f",
              "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _go_quote(text: str) -> str:
    """Go's %q, for error messages that read like BuildKit's."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
