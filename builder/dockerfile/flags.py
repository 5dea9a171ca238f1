"""Instruction flags (``--from=...``) and the Go value syntaxes they use.

``BFlags`` follows BuildKit's ``instructions/bflag.go``: each instruction
declares its flags, then ``parse`` checks the ``--name[=value]`` words the
parser split off. Unknown flags get a "did you mean" suggestion computed the
way BuildKit's ``util/suggest`` does (Levenshtein distance below 3).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

__all__ = [
    "BFlags",
    "Flag",
    "InstructionError",
    "parse_go_bool",
    "parse_go_duration",
    "parse_go_int",
    "suggest",
    "with_suggestion",
]


class InstructionError(ValueError):
    """A bad instruction (message only; the caller adds file and line)."""


def _levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _match_case(val: str, orig: str) -> str:
    if orig == orig.lower():
        return val.lower()
    if orig == orig.upper():
        return val.upper()
    return val


def suggest(value: str, options: Iterable[str], case_sensitive: bool = True) -> str | None:
    """The closest option within edit distance 2, or None (also for an exact match)."""
    orig = value
    if not case_sensitive:
        value = value.lower()
    best, best_dist = None, 3
    # Upstream iterates a Go map (random order); sorting makes ties stable.
    for opt in sorted(options):
        cmp = opt if case_sensitive else opt.lower()
        if cmp == value:
            return None
        if len(value) > 64 or len(cmp) > 64:
            continue  # no sensible suggestion, and the distance is quadratic
        dist = _levenshtein(value, cmp)
        if dist < best_dist:
            best = cmp if case_sensitive else _match_case(cmp, orig)
            best_dist = dist
    return best


def with_suggestion(message: str, value: str, options: Iterable[str],
                    case_sensitive: bool = True) -> str:
    match = suggest(value, options, case_sensitive)
    return f"{message} (did you mean {match}?)" if match else message


_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def parse_go_bool(value: str) -> bool:
    """``strconv.ParseBool``."""
    try:
        return _GO_BOOLS[value]
    except KeyError:
        raise ValueError(f'strconv.ParseBool: parsing "{value}": invalid syntax') from None


def parse_go_int(value: str, bits: int = 64, base: int = 10, unsigned: bool = False) -> int:
    """``strconv.ParseInt``/``ParseUint`` with an explicit base (no prefixes)."""
    fn = "ParseUint" if unsigned else "ParseInt"
    digits = "01234567" if base == 8 else "0123456789"
    body = value[1:] if not unsigned and value[:1] in ("+", "-") else value
    if not body or any(c not in digits for c in body):
        raise ValueError(f'strconv.{fn}: parsing "{value}": invalid syntax')
    n = int(value, base)
    lo, hi = (0, (1 << bits) - 1) if unsigned else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if not lo <= n <= hi:
        raise ValueError(f'strconv.{fn}: parsing "{value}": value out of range')
    return n


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def parse_go_duration(text: str) -> int:
    """``time.ParseDuration`` → nanoseconds (``1h30m``, ``1.5s``, ``-2ms``, ``0``)."""
    orig = text
    neg = text.startswith("-")
    text = text.removeprefix("-") if neg else text.removeprefix("+")
    if text == "0":
        return 0
    if not text:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0
    pos = 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        assert m is not None  # the pattern matches the empty string
        whole, frac, unit = m.groups()
        if not whole and not frac:
            raise ValueError(f'time: invalid duration "{orig}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{orig}"')
        if unit not in _DURATION_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{orig}"')
        scale = _DURATION_UNITS[unit]
        value = int(whole or "0") * scale
        if frac:
            value += int(frac) * scale // 10 ** len(frac)
        total += value
        if total > (1 << 63) - 1 + neg:
            raise ValueError(f'time: invalid duration "{orig}"')
        pos = m.end()
    return -total if neg else total


class Flag(msgspec.Struct):
    name: str
    kind: str  # "bool", "string" or "strings"
    value: str = ""
    values: list[str] = msgspec.field(default_factory=list)
    used: bool = False

    @property
    def is_true(self) -> bool:
        return self.value == "true"


class BFlags:
    """The flags one instruction accepts, and the ``--flag`` words it was given."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.flags: dict[str, Flag] = {}
        self._used: list[str] = []

    def add_bool(self, name: str, default: bool = False) -> Flag:
        return self._add(Flag(name, "bool", "true" if default else "false"))

    def add_string(self, name: str, default: str = "") -> Flag:
        return self._add(Flag(name, "string", default))

    def add_strings(self, name: str) -> Flag:
        return self._add(Flag(name, "strings"))

    def _add(self, flag: Flag) -> Flag:
        if flag.name in self.flags:
            raise InstructionError(f"error setting up flags: Duplicate flag defined: {flag.name}")
        self.flags[flag.name] = flag
        return flag

    def used(self) -> list[str]:
        return list(self._used)

    def parse(self) -> None:
        for arg in self.args:
            if arg == "--":
                return  # POSIX: the rest are operands
            if not arg.startswith("--"):
                raise InstructionError(f"arg should start with -- : {arg}")
            flag_name, has_value, value = arg.partition("=")
            name = flag_name[2:]
            flag = self.flags.get(name)
            if flag is None:
                raise InstructionError(
                    with_suggestion(f"unknown flag: {flag_name}", name, self.flags, True)
                )
            if flag.used and flag.kind != "strings":
                raise InstructionError(f"duplicate flag specified: {flag_name}")
            if not flag.used:
                self._used.append(name)
            flag.used = True
            if flag.kind == "bool":
                if has_value and value == "":
                    raise InstructionError(f"missing a value on flag: {flag_name}")
                low = value.lower()
                if low in ("true", ""):
                    flag.value = "true"
                elif low == "false":
                    flag.value = "false"
                else:
                    raise InstructionError(
                        f"expecting boolean value for flag {flag_name}, not: {value}"
                    )
            elif not has_value:
                raise InstructionError(f"missing a value on flag: {flag_name}")
            elif flag.kind == "string":
                flag.value = value
            else:
                flag.values.append(value)
