"""A regular-expression matcher that never backtracks, for ``.dockerignore``
patterns whose regex would make Python's ``re`` take exponential time.

``**/a/**/a/**/a/**/b`` becomes ``^(?:.*/)?a/(?:.*/)?a/(?:.*/)?b$``: on a path
300 directories deep ``re`` needs seconds, with five ``**`` hours, all in one C
call that holds the GIL (no Ctrl-C, no other thread).  Upstream's Go regexp is
an automaton and never has that problem.  :func:`risky` picks the patterns whose
backtracking can blow up; :class:`LinearRegex` matches those with a Thompson
automaton (a set of positions in the pattern, advanced one character at a time:
O(len(path) x len(pattern))), built lazily into a DFA so that a path costs a dict
lookup per character once its states have been seen.

The pattern is read with ``re``'s own parser (``re._parser``, the module ``re``
compiles from; CPython-internal, so any node it does not know is refused rather
than guessed), so both engines agree on what the source means.
"""

from __future__ import annotations

from re import _constants as C  # type: ignore[attr-defined, unused-ignore]
from re import _parser  # type: ignore[attr-defined, unused-ignore]

import msgspec

__all__ = ["LinearRegex", "UnsupportedRegex", "risky"]

# Choices a backtracking match may try, multiplied over the repeats that are not
# inside an atomic group: past this, re may take seconds on a long path.
_MAX_BACKTRACK_PRODUCT = 1 << 21
_PATH_SPAN = 4096  # what an unbounded repeat that can match "/" may try
_SEGMENT_SPAN = 256  # what a repeat that cannot (one path component) may try
_MAX_DFA_STATES = 10_000
_MAX_PROGRAM = 100_000
_WORD = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
_SLASH = ord("/")


class UnsupportedRegex(ValueError):
    """A construct this matcher does not implement (never produced from a glob)."""


# ----------------------------------------------------------------- risk

def risky(source: str, flags: int) -> bool:
    """Could ``re`` backtrack for long on ``source`` (compiled with ``flags``)?"""
    return _backtrack_product(_parser.parse(source, flags), False) > _MAX_BACKTRACK_PRODUCT


def _backtrack_product(tree: object, atomic: bool) -> int:
    product = 1
    for op, arg in _nodes(tree):
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi = _ints(arg, 2)
            body = _member(arg, 2)
            if not atomic:
                if hi == C.MAXREPEAT:
                    product *= _SEGMENT_SPAN if _never_slash(body) else _PATH_SPAN
                else:
                    product *= max(1, hi - lo + 1)
            product *= _backtrack_product(body, atomic)
        elif op == C.ATOMIC_GROUP:
            product *= _backtrack_product(arg, True)
        elif op == C.SUBPATTERN:
            product *= _backtrack_product(_member(arg, 3), atomic)
        elif op == C.BRANCH:
            total = 0
            for alt in _member(arg, 1):  # type: ignore[attr-defined]
                total += _backtrack_product(alt, atomic)
            product *= total
        if product > _MAX_BACKTRACK_PRODUCT:
            return product
    return product


def _nodes(tree: object) -> list[tuple[object, object]]:
    """The (opcode, argument) pairs of a parse-tree node list, checked."""
    out: list[tuple[object, object]] = []
    for node in tree:  # type: ignore[attr-defined]
        if not (isinstance(node, tuple) and len(node) == 2):
            raise UnsupportedRegex("unexpected parse tree")
        out.append((node[0], node[1]))
    return out


def _ints(arg: object, count: int) -> tuple[int, ...]:
    """The first ``count`` members of a node argument, which must be ints."""
    if not (isinstance(arg, tuple) and len(arg) >= count
            and all(isinstance(x, int) for x in arg[:count])):
        raise UnsupportedRegex("unexpected parse tree")
    return tuple(arg[:count])


def _member(arg: object, index: int) -> object:
    if not (isinstance(arg, tuple) and len(arg) > index):
        raise UnsupportedRegex("unexpected parse tree")
    return arg[index]


def _never_slash(body: object) -> bool:
    """A repeated single character that can never be "/"."""
    nodes = list(_nodes(body))
    if len(nodes) != 1:
        return False
    op, arg = nodes[0]
    if op == C.NOT_LITERAL:
        return arg == _SLASH
    if op == C.LITERAL:
        return arg != _SLASH
    if op == C.IN:
        return not _class_has(arg, "/")
    return False


# ----------------------------------------------------------------- program

class _Char(msgspec.Struct, frozen=True):
    """Consume one character that passes the parse-tree node (``op``, ``arg``)."""

    op: object
    arg: object
    next: int


class _Split(msgspec.Struct, frozen=True):
    """Go on at both ``first`` and ``second``."""

    first: int
    second: int


class _Assert(msgspec.Struct, frozen=True):
    """Go on at ``next`` if the position satisfies ``kind`` (``^``, ``$``, ``\\b``)."""

    kind: object
    next: int


class _Match(msgspec.Struct, frozen=True):
    """The pattern matched."""


class _Fail(msgspec.Struct, frozen=True):
    """A dead end: ``(?!)``."""


_Instruction = _Char | _Split | _Assert | _Match | _Fail


class _Program(msgspec.Struct):
    code: list[_Instruction] = msgspec.field(default_factory=list)

    def emit(self, ins: _Instruction) -> int:
        if len(self.code) >= _MAX_PROGRAM:
            raise UnsupportedRegex("pattern too large")
        self.code.append(ins)
        return len(self.code) - 1


def _compile(tree: object, prog: _Program, nxt: int) -> int:
    """Compile ``tree`` so that it continues at ``nxt``; returns its entry."""
    for op, arg in reversed(list(_nodes(tree))):
        nxt = _compile_node(op, arg, prog, nxt)
    return nxt


def _compile_node(op: object, arg: object, prog: _Program, nxt: int) -> int:
    if op in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
        return prog.emit(_Char(op, arg, nxt))
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
        lo, hi = _ints(arg, 2)
        return _compile_repeat(lo, hi, _member(arg, 2), prog, nxt)
    if op == C.SUBPATTERN:
        if _member(arg, 1) or _member(arg, 2):
            raise UnsupportedRegex("inline flags")
        return _compile(_member(arg, 3), prog, nxt)
    if op == C.ATOMIC_GROUP:
        # Only _optimise's (?>[^/]*?X), which it adds without changing what
        # matches; as a plain group it means the same.
        return _compile(arg, prog, nxt)
    if op == C.BRANCH:
        alts = [_compile(alt, prog, nxt) for alt in _member(arg, 1)]  # type: ignore[attr-defined]
        entry = alts[-1]
        for alt in reversed(alts[:-1]):
            entry = prog.emit(_Split(alt, entry))
        return entry
    if op == C.AT:
        return prog.emit(_Assert(arg, nxt))
    if op == C.ASSERT_NOT and not _nodes(_member(arg, 1)):
        return prog.emit(_Fail())  # (?!) never matches
    raise UnsupportedRegex(f"unsupported construct {op}")


def _compile_repeat(lo: int, hi: int, body: object, prog: _Program, nxt: int) -> int:
    if lo > 1000 or (hi != C.MAXREPEAT and hi > 1000):
        raise UnsupportedRegex("counted repetition too large")
    if hi == C.MAXREPEAT:
        loop = prog.emit(_Split(-1, nxt))  # patched below: body, or leave
        entry = _compile(body, prog, loop)
        prog.code[loop] = _Split(entry, nxt)
        nxt = loop
    else:
        for _ in range(hi - lo):
            nxt = prog.emit(_Split(_compile(body, prog, nxt), nxt))
    for _ in range(lo):
        nxt = _compile(body, prog, nxt)
    return nxt


def _class_has(items: object, ch: str) -> bool:
    code = ord(ch)
    negate = False
    hit = False
    for op, arg in _nodes(items):
        if op == C.NEGATE:
            negate = True
        elif op == C.LITERAL:
            hit = hit or arg == code
        elif op == C.RANGE:
            lo, hi = _ints(arg, 2)
            hit = hit or lo <= code <= hi
        elif op == C.CATEGORY:
            hit = hit or _category(arg, ch)
        else:
            raise UnsupportedRegex(f"unsupported class item {op}")
    return hit != negate


def _category(kind: object, ch: str) -> bool:
    # Compiled with re.ASCII: \d, \s and \w are the ASCII sets.
    if kind in (C.CATEGORY_DIGIT, C.CATEGORY_NOT_DIGIT):
        yes = "0" <= ch <= "9"
        return yes if kind == C.CATEGORY_DIGIT else not yes
    if kind in (C.CATEGORY_SPACE, C.CATEGORY_NOT_SPACE):
        yes = ch in " \t\n\r\f\v"
        return yes if kind == C.CATEGORY_SPACE else not yes
    if kind in (C.CATEGORY_WORD, C.CATEGORY_NOT_WORD):
        yes = ch in _WORD
        return yes if kind == C.CATEGORY_WORD else not yes
    raise UnsupportedRegex(f"unsupported category {kind}")


def _char_test(op: object, arg: object, ch: str) -> bool:
    if op == C.LITERAL:
        return ord(ch) == arg
    if op == C.NOT_LITERAL:
        return ord(ch) != arg
    if op == C.ANY:
        return ch != "\n"  # no DOTALL
    return _class_has(arg, ch)


# ----------------------------------------------------------------- matching

# Where a position is, for the assertions: the previous character (None at the
# start) and the next one (None at the end).
_Prev = int  # 0: start of text, 1: after a word character, 2: after another


class LinearRegex:
    """``re.search`` semantics for ``source``, in O(len(text) x len(source)).

    Remembers the last text scanned: asking about a prefix of it that ends just
    before a "/" (a parent directory, as ``.dockerignore`` matching does for each
    path) costs nothing more."""

    def __init__(self, source: str, flags: int) -> None:
        prog = _Program()
        match = prog.emit(_Match())
        self._code = prog.code
        self._start = _compile(_parser.parse(source, flags), prog, match)
        # The lazy DFA: a set of program positions is a state number; a step is
        # one dict lookup once its (state, previous class, character) was seen.
        self._ids: dict[frozenset[int], int] = {}
        self._sets: list[frozenset[int]] = []
        self._dfa: dict[tuple[int, _Prev, str | None], tuple[int, bool]] = {}
        self._last = ""
        self._last_first_match = -1  # position of the first match in _last; -1: none
        self._last_ends: dict[int, bool] = {}  # "/" positions of _last -> prefix matches

    def search(self, text: str) -> bool:
        n = len(text)
        if n < len(self._last) and self._last[n] == "/" and self._last.startswith(text):
            if 0 <= self._last_first_match < n:
                return True
            if n in self._last_ends:
                return self._last_ends[n]
        return self._scan(text)

    def _scan(self, text: str) -> bool:
        self._last, self._last_first_match, self._last_ends = text, -1, {}
        dfa, step = self._dfa, self._step
        state = self._id(frozenset())
        prev: _Prev = 0
        for i, ch in enumerate(text):
            if ch == "/":
                self._last_ends[i] = (dfa.get((state, prev, None))
                                      or step(state, prev, None))[1]
            state, matched = dfa.get((state, prev, ch)) or step(state, prev, ch)
            if matched:
                self._last_first_match = i
                return True
            prev = 1 if ch in _WORD else 2
        return (dfa.get((state, prev, None)) or step(state, prev, None))[1]

    def _id(self, states: frozenset[int]) -> int:
        number = self._ids.get(states)
        if number is None:
            number = self._ids[states] = len(self._sets)
            self._sets.append(states)
        return number

    def _step(self, state: int, prev: _Prev, ch: str | None) -> tuple[int, bool]:
        """Add a thread starting here (search), follow the empty moves at this
        position (next character ``ch``; None at the end), report whether the
        match state was reached, and consume ``ch``."""
        current = self._sets[state]
        if len(self._dfa) > _MAX_DFA_STATES:
            # Bounded memory; each step stays O(len(pattern)).  The caller goes on
            # with the state number returned here, so old numbers may go.
            self._dfa.clear()
            self._ids.clear()
            self._sets.clear()
        closure = self._closure(current | {self._start}, prev, ch)
        matched = 0 in closure  # instruction 0 is _Match
        following: set[int] = set()
        if ch is not None:
            for pc in closure:
                ins = self._code[pc]
                if isinstance(ins, _Char) and _char_test(ins.op, ins.arg, ch):
                    following.add(ins.next)
        result = (self._id(frozenset(following)), matched)
        self._dfa[(state, prev, ch)] = result
        return result

    def _closure(self, states: frozenset[int], prev: _Prev, ch: str | None) -> set[int]:
        seen: set[int] = set()
        todo = list(states)
        while todo:
            pc = todo.pop()
            if pc in seen:
                continue
            seen.add(pc)
            ins = self._code[pc]
            if isinstance(ins, _Split):
                todo += (ins.first, ins.second)
            elif isinstance(ins, _Assert) and _holds(ins.kind, prev, ch):
                todo.append(ins.next)
        return seen


def _holds(kind: object, prev: _Prev, ch: str | None) -> bool:
    if kind in (C.AT_BEGINNING, C.AT_BEGINNING_STRING):
        return prev == 0
    if kind == C.AT_END_STRING:
        return ch is None
    if kind in (C.AT_BOUNDARY, C.AT_NON_BOUNDARY):
        boundary = (prev == 1) != (ch is not None and ch in _WORD)
        return boundary if kind == C.AT_BOUNDARY else not boundary
    raise UnsupportedRegex(f"unsupported assertion {kind}")
