"""Why a step was or was not cached: a code and its parameters, made where the cache
decides, kept as data in the build record, rendered by explain.

The codes are the JSON schema's (``docs/explain.md``); a renderer picks words by
code and never reads the words back.  Parameters never hold a build-arg value: an
``arg-changed`` names the argument only, and any input recorded as a digest (one
that quoted an argument's value) is only said to have changed.

A plain slotted class and a str enum: a cached rebuild makes one per step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

SHOWN = 3  # how many reasons one line of text names


class ReasonCode(StrEnum):
    CACHE_HIT = "cache-hit"
    SAME = "same"                        # explain --against: as in the baseline's build
    CONFIG_ONLY = "config-only"          # ENV, LABEL, ...: nothing to cache
    NOT_BUILT_BEFORE = "not-built-before"
    NO_CACHE = "no-cache"
    NO_CACHE_FILTER = "no-cache-filter"  # stage
    PARENT_MISSED = "parent-missed"      # step: the first step above that ran (stage:index)
    PARENT_CHANGED = "parent-changed"    # the step above hit another run's entry
    PARENT_DIFFERS = "parent-differs"    # --against: step, the first step above that differs
    BASE_CHANGED = "base-changed"        # base (FROM text), old, new (image IDs)
    INSTRUCTION_CHANGED = "instruction-changed"  # input, old, new (Dockerfile text)
    FILE_ADDED = "file-added"            # path
    FILE_CHANGED = "file-changed"        # path
    FILE_REMOVED = "file-removed"        # path
    MODE_CHANGED = "mode-changed"        # path, old, new (octal permission bits)
    CONTENT_CHANGED = "content-changed"  # the sources' content (too many files to name)
    ARG_CHANGED = "arg-changed"          # name, change: added|removed|changed
    ENV_CHANGED = "env-changed"          # name, change, old?, new? (absent when digested)
    INPUT_CHANGED = "input-changed"      # input, change, old?, new?
    CACHE_MOUNT_ONLY = "cache-mount-only"  # only a cache mount's options differ: target
    FROM_CHANGED = "from-changed"        # COPY --from's source: old, new (chain IDs)
    LAYER_PRUNED = "layer-pruned"        # same inputs as an earlier run, its layer gone
    LEGACY_ENTRY = "legacy-entry"        # an older pybuild's entry without a layer
    MORE = "more"                        # count: differences not listed
    NOTE = "note"                        # text: a record from an older pybuild


class Reason:
    """One reason: its code and its parameters (strings, all safe to print)."""

    __slots__ = ("code", "params")

    def __init__(self, code: ReasonCode, **params: str) -> None:
        self.code = code
        self.params: dict[str, str] = params

    def to_record(self) -> dict[str, object]:
        return {"code": self.code.value, "params": dict(self.params)}

    @classmethod
    def from_record(cls, record: object) -> Reason | None:
        """A reason a build record kept; None for anything else (an unknown code from a
        newer pybuild reads as its code only, never as text to parse)."""
        if not isinstance(record, dict) or not isinstance(record.get("code"), str):
            return None
        params = record.get("params")
        clean = {str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {}
        try:
            return cls(ReasonCode(record["code"]), **clean)
        except ValueError:
            return cls(ReasonCode.NOTE, text=record["code"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reason) and (self.code, self.params) == (
            other.code, other.params)

    def __repr__(self) -> str:
        return f"Reason({self.code.value}, {self.params})"

    def names_value(self) -> str | None:
        """The key of ``--show-values``'s table (``arg NAME`` / ``env NAME``) this reason
        names; None for a reason about no argument or variable."""
        name = self.params.get("name")
        if not name or self.code not in (ReasonCode.ARG_CHANGED, ReasonCode.ENV_CHANGED):
            return None
        return f"{'arg' if self.code is ReasonCode.ARG_CHANGED else 'env'} {name}"

    def text(self, values: Mapping[str, str] | None = None) -> str:
        """Words for people; ``values`` (``--show-values``: the image's own build-arg and
        env values, keyed ``arg NAME`` / ``env NAME``) adds what a changed one is now."""
        words = _words(self.code, self.params)
        key = self.names_value()
        if values is not None and key is not None:
            value = values.get(key)
            words += " (not in the image)" if value is None else f" (now {value!r})"
        return words


class _Defaulted(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


# Codes whose words depend on which of old/new the reason carries (a digested value
# carries neither: it is only said to have changed).
_VALUED = {ReasonCode.INSTRUCTION_CHANGED: "{input}", ReasonCode.INPUT_CHANGED: "{input}",
           ReasonCode.ENV_CHANGED: "env {name}"}
_WINDOW = 48  # characters of a long value shown around its first difference


def _excerpts(old: str, new: str) -> tuple[str, str]:
    """Both values quoted, long ones cut to a window around where they first differ
    (the start of an edited RUN is usually the same on both sides)."""
    if len(old) <= _WINDOW and len(new) <= _WINDOW:
        return repr(old), repr(new)
    first = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b),
                 min(len(old), len(new)))
    start = max(0, first - _WINDOW // 3)

    def cut(value: str) -> str:
        piece = value[start:start + _WINDOW]
        return ("…" if start else "") + repr(piece) + ("…" if start + _WINDOW < len(value)
                                                       else "")
    return cut(old), cut(new)


def _one(value: str) -> str:
    return repr(value) if len(value) <= _WINDOW else repr(value[:_WINDOW]) + "…"

_WORDS = {
    ReasonCode.CACHE_HIT: "cache hit",
    ReasonCode.SAME: "same as in the baseline",
    ReasonCode.CONFIG_ONLY: "config only",
    ReasonCode.NOT_BUILT_BEFORE: "not built before",
    ReasonCode.NO_CACHE: "--no-cache",
    ReasonCode.NO_CACHE_FILTER: "--no-cache-filter {stage}",
    ReasonCode.PARENT_MISSED: "an earlier step ran ({step}), so this one builds on a new "
                              "result",
    ReasonCode.PARENT_CHANGED: "the step before it is not the one it followed last time "
                               "(lines moved, or it reused another build's result)",
    ReasonCode.BASE_CHANGED: "base image {base} changed: {old} -> {new}",
    ReasonCode.FILE_ADDED: "file {path} added",
    ReasonCode.FILE_CHANGED: "file {path} changed",
    ReasonCode.FILE_REMOVED: "file {path} removed",
    ReasonCode.MODE_CHANGED: "file {path} mode changed: {old} -> {new}",
    ReasonCode.CONTENT_CHANGED: "the sources' content changed",
    ReasonCode.ARG_CHANGED: "arg {name} {change}",
    ReasonCode.CACHE_MOUNT_ONLY: "only a cache mount changed: {target}",
    ReasonCode.LAYER_PRUNED: "inputs equal an earlier run's, but its layer is gone (pruned)",
    ReasonCode.LEGACY_ENTRY: "an older pybuild recorded this step without a layer (a step "
                             "that changes nothing now makes the empty layer, as BuildKit's)",
    ReasonCode.PARENT_DIFFERS: "an earlier step differs ({step})",
    ReasonCode.FROM_CHANGED: "the --from source is another result: {old} -> {new}",
    ReasonCode.MORE: "and {count} more",
    ReasonCode.NOTE: "{text}",
}


def _words(code: ReasonCode, params: Mapping[str, str]) -> str:
    fields = _Defaulted(params)
    if code is ReasonCode.BASE_CHANGED and "base" not in params:
        return "the base image changed: {old} -> {new}".format_map(fields)
    if code is ReasonCode.FROM_CHANGED and "new" not in params:
        return "the --from source is a stage that runs in this build"
    subject = _VALUED.get(code)
    if subject is None:
        return _WORDS[code].format_map(fields)
    name = subject.format_map(fields)
    old, new = params.get("old"), params.get("new")
    if old is not None and new is not None:
        before, after = _excerpts(old, new)
        return f"{name}: {before} -> {after}"
    if new is not None:
        return f"{name} added: {_one(new)}"
    if old is not None:
        return f"{name} removed (was {_one(old)})"
    return f"{name} {params.get('change', 'changed')}"


def summary_text(reasons: Sequence[Reason], values: Mapping[str, str] | None = None,
                 prefix: str = "cache miss: ") -> str:
    """One line: ``cache hit``, or ``cache miss: A; B; C (and N more)`` (``prefix``:
    ``explain --against`` compares with a baseline, not with the cache)."""
    if not reasons:
        return ""
    first = reasons[0].code
    if first in (ReasonCode.CACHE_HIT, ReasonCode.CONFIG_ONLY, ReasonCode.NOTE, ReasonCode.SAME):
        return reasons[0].text(values)
    listed = [r for r in reasons if r.code is not ReasonCode.MORE]
    more = sum(int(r.params.get("count", "0")) for r in reasons if r.code is ReasonCode.MORE)
    more += max(0, len(listed) - SHOWN)
    text = "; ".join(r.text(values) for r in listed[:SHOWN])
    return prefix + text + (f" (and {more} more)" if more else "")


def to_records(reasons: Sequence[Reason]) -> list[dict[str, object]]:
    return [reason.to_record() for reason in reasons]


def from_records(records: object) -> list[Reason]:
    found = (Reason.from_record(item) for item in records) if isinstance(records, list) else ()
    return [reason for reason in found if reason is not None]
