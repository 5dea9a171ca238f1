"""Why a step missed: its inputs against the baseline's, as reason codes.

The baseline is the previous build of the same step (``records.CacheStore.baseline``
picks it); this module only compares two recorded input lists.  Values recorded as
digests (build args, and any input that quoted one) are only said to have changed.
"""

from __future__ import annotations

from builder.cache.keys import (
    DIGESTED_MARK,
    PLANNED,
    Inputs,
    is_digest,
    same_value,
    value_digest,
)
from builder.cache.reasons import Reason, ReasonCode

KEPT = 20   # reasons kept in a record; the rest are counted in one ``more``

# Inputs that are the Dockerfile's own text: a difference is the instruction's.
_INSTRUCTION = frozenset({"instruction", "argv", "sources", "dest", "path", "heredocs",
                          "exclude", "parents", "link", "url", "git", "checksum", "chown",
                          "chmod"})
# Inputs that summarise others or are compared by the caller.
_SKIPPED = frozenset({"parent", "content", DIGESTED_MARK[0]})


_KEPT_CHARS = 1000  # of an old or new value in a record; the text view shows less


def _kept(value: str) -> str:
    return value if len(value) <= _KEPT_CHARS else value[:_KEPT_CHARS] + "…"


def _grouped(inputs: Inputs) -> dict[str, str]:
    """``{"env HOME": value, "file a/b": entry, "mount cache /x": ..., "workdir": ...}``."""
    out: dict[str, str] = {}
    for name, value in inputs:
        if name in ("env", "arg", "file"):
            sub, _, rest = value.partition("=")
            out[f"{name} {sub}"] = rest
        elif name == "mount":
            out["mount " + " ".join(value.split(" ")[:2])] = value
        else:
            out[name] = value
    return out


def _change(name: str, before: dict[str, str], after: dict[str, str]) -> str:
    return "added" if name not in before else "removed" if name not in after else "changed"


def file_reason(path: str, old: str | None, new: str | None) -> Reason:
    if old is None:
        return Reason(ReasonCode.FILE_ADDED, path=path)
    if new is None:
        return Reason(ReasonCode.FILE_REMOVED, path=path)
    # An entry is "kind mode content": same kind and content, other bits: a chmod.
    old_kind, _, old_rest = old.partition(" ")
    new_kind, _, new_rest = new.partition(" ")
    old_mode, _, old_content = old_rest.partition(" ")
    new_mode, _, new_content = new_rest.partition(" ")
    if (old_kind, old_content) == (new_kind, new_content) and old_mode != new_mode:
        return Reason(ReasonCode.MODE_CHANGED, path=path, old=old_mode, new=new_mode)
    return Reason(ReasonCode.FILE_CHANGED, path=path)


def _valued(code: ReasonCode, key: str, name: str, before: dict[str, str],
            after: dict[str, str]) -> Reason:
    """A reason with the old and new values as recorded, unless either is a digest."""
    full = name if key == "input" else f"env {name}"
    params = {key: name, "change": _change(full, before, after)}
    if not any(is_digest(values.get(full, "")) for values in (before, after)):
        if full in before:
            params["old"] = _kept(before[full])
        if full in after:
            params["new"] = _kept(after[full])
    return Reason(code, **params)


def _reason(name: str, before: dict[str, str], after: dict[str, str]) -> Reason:
    kind, _, sub = name.partition(" ")
    if kind == "file":
        return file_reason(sub, before.get(name), after.get(name))
    if kind == "arg":
        return Reason(ReasonCode.ARG_CHANGED, name=sub, change=_change(name, before, after))
    if kind == "env":
        return _valued(ReasonCode.ENV_CHANGED, "name", sub, before, after)
    if name == "from":  # chain IDs; a plan's stage that will run has no chain yet
        params = {"old": before.get(name, "")}
        if not after.get(name, "").startswith(PLANNED):
            params["new"] = after.get(name, "")
        return Reason(ReasonCode.FROM_CHANGED, **params)
    code = ReasonCode.INSTRUCTION_CHANGED if name in _INSTRUCTION else ReasonCode.INPUT_CHANGED
    return _valued(code, "input", name, before, after)


def _salt(inputs: Inputs) -> str:
    return next((value for name, value in inputs if name == "parent"), "")


def differences(old: Inputs, new: Inputs, clear: Inputs | None = None) -> list[Reason]:
    """What differs between two recorded input lists, in the new list's order.

    A value is recorded as a digest salted with its step's parent key, so when the
    parent moved, two digests of one value differ: ``clear`` (this step's inputs before
    ``recorded_inputs``, held in memory only) lets the old digest be recomputed."""
    salt, old_salt = _salt(new), _salt(old)
    before, after, plain = _grouped(old), _grouped(new), _grouped(clear or [])

    def same(name: str) -> bool:
        if same_value(before[name], after[name], salt):
            return True
        value = plain.get(name, plain.get("env " + name[4:]) if name.startswith("arg ")
                          else None)
        if value is None:
            # Two digests under different parents cannot be compared without the value
            # (explain --against): not named; the parent's reason comes first anyway.
            return is_digest(before[name]) and is_digest(after[name]) and old_salt != salt
        return is_digest(before[name]) and value_digest(value, old_salt) == before[name]

    names = [*after, *(name for name in before if name not in after)]
    differing = [name for name in names if name not in _SKIPPED and not (
        name in before and name in after and same(name))]
    if differing and all(name.startswith("mount cache ") for name in differing):
        return [Reason(ReasonCode.CACHE_MOUNT_ONLY, target=name.split(" ")[2])
                for name in differing]
    reasons = [_reason(name, before, after) for name in differing]
    content_moved = before.get("content") != after.get("content")
    if content_moved and not any(name.startswith("file ") for name in differing):
        reasons.append(Reason(ReasonCode.CONTENT_CHANGED))  # more files than were named
    return capped(reasons)


def capped(reasons: list[Reason]) -> list[Reason]:
    """At most ``KEPT`` reasons; the rest counted in one ``more``."""
    if len(reasons) > KEPT:
        reasons[KEPT:] = [Reason(ReasonCode.MORE, count=str(len(reasons) - KEPT))]
    return reasons
