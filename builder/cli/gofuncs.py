"""Values and functions of the ``--format`` templates, printed as Go prints them.

``go_print`` is ``fmt``'s ``%v`` (``[a b]``, ``map[k:v]``, ``<no value>``), ``go_json``
is the ``json`` function docker adds (compact; map keys sorted; control characters,
DEL, C1 and bidi controls as ``\\uXXXX``), ``sanitize`` makes data printable with
``textsafe``.  The functions come in three kinds, by what they may do with untrusted
data: ``NAVIGATING`` ones hand back part of an argument (still untrusted), ``RAW``
ones read it but print none of it raw, ``TEXT`` ones only ever see escaped text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence

import msgspec

from builder.errors import UsageError
from builder.textsafe import printable


class TemplateError(UsageError):
    """A template that does not parse, or that fails on the data."""


class Value(msgspec.Struct, frozen=True):
    """A value during execution; ``trusted`` is False for anything read from the data."""

    obj: object
    trusted: bool


class Row(msgspec.Struct, frozen=True):
    """One row of ``images`` or ``history``: docker's formatter context, whose fields
    are all strings, whose unknown fields are errors and whose ``json`` is its
    ``MarshalJSON`` (keys sorted, ``<>&`` escaped as Go's ``json.Marshal`` does)."""

    fields: dict[str, str]


class Zero(msgspec.Struct, frozen=True):
    """A field docker's typed struct always has and the image leaves out: it prints as
    Go's zero value (``""``, ``[]``, ``map[]``, ``<nil>``), is false, and a JSON object
    leaves it out (the field's ``omitempty``)."""

    shown: str
    json: str


class GoMap(dict[str, object]):
    """A JSON object that is a map in Go (labels, ports, volumes): printed and encoded in
    key order.  Any other object is a struct: encoded in its own order."""


def sanitize(obj: object) -> object:
    """``obj`` with every string in it (keys too) made printable."""
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, Row):
        return Row({key: printable(value) for key, value in obj.fields.items()})
    if isinstance(obj, Mapping):
        items = {printable(str(key)): sanitize(value) for key, value in obj.items()}
        return GoMap(items) if isinstance(obj, GoMap) else items
    if isinstance(obj, list | tuple):
        return [sanitize(item) for item in obj]
    return obj


def go_float(number: float) -> str:
    """Go's ``%v`` of a float64: ``%g`` with the shortest digits (``1e+06``, ``0.5``)."""
    if math.isnan(number) or math.isinf(number):
        return "NaN" if math.isnan(number) else ("+Inf" if number > 0 else "-Inf")
    if number == 0:
        return "-0" if math.copysign(1, number) < 0 else "0"
    from decimal import Decimal  # only a float in an image's config gets here

    sign = "-" if number < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(number))).as_tuple()
    assert isinstance(exponent, int)  # a finite number
    point = len(digit_tuple) + exponent  # where the decimal point sits in the digits
    digits = "".join(map(str, digit_tuple)).lstrip("0").rstrip("0")
    point -= len(digit_tuple) - len("".join(map(str, digit_tuple)).lstrip("0"))
    if not -4 <= point - 1 < 6:  # strconv's rule for the shortest %g
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'+' if point > 0 else '-'}{abs(point - 1):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def go_print(obj: object, *, top: bool = False) -> str:
    """``fmt``'s ``%v``; a nil action result prints ``<no value>``, as text/template."""
    if obj is None:
        return "<no value>" if top else "<nil>"
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, float):
        return go_float(obj)
    if isinstance(obj, str | int):
        return str(obj)
    if isinstance(obj, Zero):
        return obj.shown
    if isinstance(obj, Row):
        return "{" + " ".join(obj.fields.values()) + "}"
    if isinstance(obj, GoMap):
        return "map[" + " ".join(f"{go_print(key)}:{go_print(obj[key])}"
                                 for key in sorted(obj, key=str)) + "]"
    if isinstance(obj, Mapping):  # a struct: its values, in order
        return "{" + " ".join(go_print(value) for value in obj.values()) + "}"
    if isinstance(obj, list | tuple):
        return "[" + " ".join(go_print(item) for item in obj) + "]"
    return str(obj)


# What JSON text must not carry raw to a terminal: DEL, C1, the bidi controls, lone
# surrogates (C0 is already escaped by json.dumps), and U+2028/9 as Go escapes them.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                          "\u2066-\u2069\ud800-\udfff]")
_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def _encodable(obj: object) -> object:
    """``obj`` as ``json.dumps`` should write it: maps sorted, zero fields left out."""
    if isinstance(obj, Zero):
        return json.loads(obj.json)
    if isinstance(obj, Row):
        return dict(sorted(obj.fields.items()))
    if isinstance(obj, Mapping):
        keys = sorted(obj, key=str) if isinstance(obj, GoMap) else list(obj)
        return {key: _encodable(obj[key]) for key in keys if not isinstance(obj[key], Zero)}
    if isinstance(obj, list | tuple):
        return [_encodable(item) for item in obj]
    return obj


def go_json(obj: object) -> str:
    """Docker's ``json`` template function: compact JSON, safe on a terminal."""
    html = isinstance(obj, Row)
    text = json.dumps(_encodable(obj), separators=(",", ":"), ensure_ascii=False,
                      default=str)
    text = _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    # A Row's MarshalJSON is json.Marshal, which escapes HTML; the function's own
    # encoder does not.  Outside strings, JSON has none of these three characters.
    return re.sub("[<>&]", lambda m: _HTML[m.group()], text) if html else text


def truth(obj: object) -> bool:
    """Go's truth: false, 0, nil and empty strings, lists and maps are false."""
    return bool(obj) if obj is not None and not isinstance(obj, Zero) else False


def _type_name(obj: object) -> str:
    names = {str: "string", int: "int", float: "float64", bool: "bool", list: "slice",
             dict: "map", type(None): "nil"}
    return names.get(type(obj), type(obj).__name__)


def _index(args: list[Value]) -> Value:
    container = args[0]
    obj = container.obj
    for key in (arg.obj for arg in args[1:]):
        if isinstance(obj, Row):
            obj = obj.fields
        if isinstance(obj, Zero):
            raise TemplateError(f"error calling index: index of nil: {go_print(key)}")
        if isinstance(obj, Mapping):
            obj = obj.get(key)
        elif isinstance(obj, list | tuple | str) and isinstance(key, int) \
                and not isinstance(key, bool):
            if not -1 < key < len(obj):
                raise TemplateError(f"error calling index: index out of range: {key}")
            obj = obj[key]
        else:
            raise TemplateError(f"error calling index: can't index item of type "
                                f"{_type_name(obj)} with {go_print(sanitize(key))}")
    return Value(obj, container.trusted and all(arg.trusted for arg in args))


def _and(args: list[Value]) -> Value:
    return next((arg for arg in args if not truth(arg.obj)), args[-1])


def _or(args: list[Value]) -> Value:
    return next((arg for arg in args if truth(arg.obj)), args[-1])


def _len(args: list[object]) -> int:
    obj = args[0]
    if isinstance(obj, Zero):
        return 0
    if not isinstance(obj, str | list | tuple | Mapping):
        raise TemplateError(f"error calling len: len of type {_type_name(obj)}")
    return len(obj)


def _string(obj: object, name: str) -> str:
    if not isinstance(obj, str):
        raise TemplateError(f"wrong type for value in {name}: expected string; got "
                            f"{_type_name(obj)}")
    return obj


def _join(args: list[object]) -> str:
    items, sep = args
    if not isinstance(items, list | tuple):
        raise TemplateError(f"wrong type for value in join: expected []string; got "
                            f"{_type_name(items)}")
    return _string(sep, "join").join(go_print(item) for item in items)


def _split(args: list[object]) -> list[str]:
    text, sep = (_string(arg, "split") for arg in args)
    return list(text) if sep == "" else text.split(sep)


def _title(args: list[object]) -> str:
    return re.sub(r"(?<!\w)\w", lambda m: m.group().upper(), _string(args[0], "title"))


MAX_WIDTH = 1_000_000  # Go's fmt refuses wider widths and precisions (%!(BADWIDTH))


def _pad(args: list[object]) -> str:
    text, before, after = args
    if not isinstance(before, int) or not isinstance(after, int):
        raise TemplateError("wrong type for value in pad: expected int")
    if not (0 <= before <= MAX_WIDTH and 0 <= after <= MAX_WIDTH):
        raise TemplateError(f"pad: a width of at most {MAX_WIDTH}")
    return " " * before + _string(text, "pad") + " " * after


def _truncate(args: list[object]) -> str:
    text, length = _string(args[0], "truncate"), args[1]
    if not isinstance(length, int):
        raise TemplateError("wrong type for value in truncate: expected int")
    return text if len(text) < length else text[:length]


def _sprint(args: list[object]) -> str:
    """``fmt.Sprint``: a space between operands when neither is a string."""
    out = ""
    for at, arg in enumerate(args):
        if at and not isinstance(arg, str) and not isinstance(args[at - 1], str):
            out += " "
        out += go_print(arg)
    return out


_VERB = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d+))?([a-zA-Z%])")


def _printf(args: list[object]) -> str:
    """``fmt.Sprintf`` for the verbs templates use: %s %v %d %q %t %f %x %%."""
    template, values = _string(args[0], "printf"), list(args[1:])

    def one(match: re.Match[str]) -> str:
        flags, width, precision, verb = match.groups()
        if verb == "%":
            return "%"
        if int(width or 0) > MAX_WIDTH:
            return f"%!{verb}(BADWIDTH)"
        if int(precision or 0) > MAX_WIDTH:
            return f"%!{verb}(BADPREC)"
        if not values:
            return f"%!{verb}(MISSING)"
        value = values.pop(0)
        if verb in "sv" or (verb == "d" and not isinstance(value, int)):
            text = go_print(value)[:int(precision)] if precision else go_print(value)
        elif verb == "q":
            text = json.dumps(go_print(value), ensure_ascii=False)
        elif verb in "dxXf" and isinstance(value, int | float):
            spec = f".{precision}" if precision else ""
            text = format(value, f"{spec}{verb if verb != 'f' or precision else '.6f'}")
        else:
            text = go_print(value)
        pad = int(width or 0) - len(text)
        if pad <= 0:
            return text
        if "-" in flags:
            return text + " " * pad
        return ("0" if "0" in flags and verb in "dxXf" else " ") * pad + text
    return _VERB.sub(one, template)


def _arity(low: int, high: int | None, function: Callable[[list[object]], object]
           ) -> Callable[[list[object]], object]:
    def checked(args: list[object]) -> object:
        if len(args) < low or (high is not None and len(args) > high):
            want = str(low) if low == high else f"at least {low}"
            raise TemplateError(f"wrong number of args: want {want} got {len(args)}")
        return function(args)
    return checked


NAVIGATING: dict[str, Callable[[list[Value]], Value]] = {
    "index": lambda args: _index(_need(args, 1, "index")),
    "and": lambda args: _and(_need(args, 1, "and")),
    "or": lambda args: _or(_need(args, 1, "or")),
}
RAW: dict[str, Callable[[list[object]], object]] = {
    "json": _arity(1, 1, lambda args: go_json(args[0])),
    "len": _arity(1, 1, _len),
    "eq": _arity(2, None, lambda args: any(args[0] == other for other in args[1:])),
    "ne": _arity(2, 2, lambda args: args[0] != args[1]),
    "not": _arity(1, 1, lambda args: not truth(args[0])),
}
TEXT: dict[str, Callable[[list[object]], object]] = {
    "join": _arity(2, 2, _join),
    "split": _arity(2, 2, _split),
    "upper": _arity(1, 1, lambda args: _string(args[0], "upper").upper()),
    "lower": _arity(1, 1, lambda args: _string(args[0], "lower").lower()),
    "title": _arity(1, 1, _title),
    "pad": _arity(3, 3, _pad),
    "truncate": _arity(2, 2, _truncate),
    "printf": _arity(1, None, _printf),
    "print": _arity(0, None, _sprint),
    "println": _arity(0, None, lambda args: " ".join(go_print(a) for a in args) + "\n"),
}
FUNCTIONS = frozenset(NAVIGATING) | frozenset(RAW) | frozenset(TEXT)


def _need(args: Sequence[Value], low: int, name: str) -> list[Value]:
    if len(args) < low:
        raise TemplateError(f"wrong number of args for {name}: want at least {low} got "
                            f"{len(args)}")
    return list(args)
