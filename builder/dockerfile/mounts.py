"""``RUN --mount=...`` and ``RUN --device=...`` option strings, as BuildKit reads them.

A mount is a CSV record of ``key=value`` fields (``type=cache,target=/root/.cache``).
The keys are BuildKit's; anything else is an error with a "did you mean"
suggestion, so a Docker-CLI-only option such as ``bind-propagation`` or
``options=`` is rejected instead of silently ignored. Values may contain
variables: BuildKit expands them per field at build time, so ``parse_mount``
takes the expander and the parse is repeated after expansion.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec

from builder.dockerfile.flags import InstructionError, parse_go_bool, parse_go_int, with_suggestion

__all__ = [
    "MOUNT_KEYS",
    "MOUNT_TYPES",
    "Device",
    "Mount",
    "csv_fields",
    "parse_device",
    "parse_mount",
]

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
MOUNT_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size",
    "mode", "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env",
)  # fmt: skip


class Mount(msgspec.Struct, frozen=True):
    """One ``--mount``; field meanings as in BuildKit's ``instructions.Mount``."""

    type: str = "bind"
    target: str = ""
    source: str = ""
    from_: str = ""
    id: str = ""  # cache id / secret id
    sharing: str = ""  # cache only: shared (default), private, locked
    mode: int | None = None  # octal in the text
    uid: int | None = None
    gid: int | None = None
    readonly: bool = True
    required: bool = False
    env: str | None = None  # secret: expose as this environment variable
    size: int = 0  # tmpfs size limit in bytes, 0 = none
    raw: str = ""  # the option text as written


class Device(msgspec.Struct, frozen=True):
    name: str
    required: bool = False


class _CSVError(ValueError):
    pass


def csv_fields(text: str) -> list[str]:
    """One record of Go's ``encoding/csv`` (comma-separated, ``"`` quoting)."""
    if text == "":
        return []
    fields: list[str] = []
    pos, n = 0, len(text)
    while True:
        if pos < n and text[pos] == '"':
            pos += 1
            buf = []
            while True:
                end = text.find('"', pos)
                if end < 0:
                    raise _CSVError('extraneous or missing " in quoted-field')
                buf.append(text[pos:end])
                pos = end + 1
                if pos < n and text[pos] == '"':
                    buf.append('"')
                    pos += 1
                    continue
                break
            fields.append("".join(buf))
            if pos == n:
                return fields
            if text[pos] != ",":
                raise _CSVError('extraneous or missing " in quoted-field')
            pos += 1
        else:
            end = text.find(",", pos)
            value = text[pos:] if end < 0 else text[pos:end]
            if '"' in value:
                raise _CSVError('bare " in non-quoted-field')
            fields.append(value)
            if end < 0:
                return fields
            pos = end + 1


_RAM_RE = re.compile(r"(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?")
_RAM_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """go-units ``RAMInBytes``: ``512m``, ``1g``, ``100`` (binary multiples)."""
    m = _RAM_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid size: '{text}'")
    try:
        number = float(m.group(1))
    except ValueError:
        raise ValueError(f"invalid size: '{text}'") from None
    unit = _RAM_UNITS.get((m.group(2) or "").lower(), 1)
    return int(number * unit)


def parse_mount(text: str, expand: Callable[[str], str] | None = None) -> Mount:
    """Parse one ``--mount`` value; ``expand`` is applied to every value first.

    Without ``expand`` (at parse time) a value holding ``$`` is kept as written
    and its checks wait for the build-time parse; a key is checked either way.
    """
    try:
        fields = csv_fields(text)
    except _CSVError as err:
        raise InstructionError(f"failed to parse csv mounts: {err}") from None
    m: dict[str, object] = {"type": "bind"}
    ro_auto = True
    deferred = False
    for fld in fields:
        key, eq, value = fld.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                m["readonly"], ro_auto = True, False
            elif key in ("readwrite", "rw"):
                m["readonly"], ro_auto = False, False
            elif key == "required":
                if m["type"] not in ("secret", "ssh") and not deferred:
                    raise InstructionError(
                        f"unexpected key '{key}' for mount type '{m['type']}'"
                    )
                m["required"] = True
            else:
                raise InstructionError(f"invalid field '{fld}' must be a key=value pair")
            continue
        if key not in MOUNT_KEYS:
            raise InstructionError(
                with_suggestion(f"unexpected key '{key}' in '{fld}'", key, MOUNT_KEYS, True)
            )
        if key == "from" and "$" in value[:-1]:
            raise InstructionError(
                f"'{key}' doesn't support variable expansion, define alias stage instead"
            )
        if expand is not None:
            value = expand(value)
        elif "$" in value:
            deferred = True
            m[key] = value  # checked again after expansion
            continue
        _apply(m, key, value, deferred)
        if key in ("readonly", "ro", "readwrite", "rw"):
            ro_auto = False
    if deferred:
        return _build(m, text, ro_auto, check=False)
    return _build(m, text, ro_auto, check=True)


def _apply(m: dict[str, object], key: str, value: str, deferred: bool) -> None:
    mtype = m["type"]
    if key == "type":
        low = value.lower()
        if low not in MOUNT_TYPES:
            raise InstructionError(
                with_suggestion(f'unsupported mount type "{value}"', value, MOUNT_TYPES, True)
            )
        m["type"] = low
    elif key == "from":
        m["from_"] = value
    elif key in ("source", "src"):
        m["source"] = value
    elif key in ("target", "dst", "destination"):
        m["target"] = value
    elif key in ("readonly", "ro", "readwrite", "rw"):
        try:
            flag = parse_go_bool(value)
        except ValueError:
            raise InstructionError(f"invalid value for {key}: {value}") from None
        m["readonly"] = flag if key in ("readonly", "ro") else not flag
    elif key == "required":
        if mtype not in ("secret", "ssh") and not deferred:
            raise InstructionError(f"unexpected key '{key}' for mount type '{mtype}'")
        try:
            m["required"] = parse_go_bool(value)
        except ValueError:
            raise InstructionError(f"invalid value for {key}: {value}") from None
    elif key == "size":
        if mtype != "tmpfs" and not deferred:
            raise InstructionError(f"unexpected key '{key}' for mount type '{mtype}'")
        try:
            m["size"] = ram_in_bytes(value)
        except ValueError:
            raise InstructionError(f"invalid value for {key}: {value}") from None
    elif key == "id":
        m["id"] = value
    elif key == "sharing":
        low = value.lower()
        if low not in SHARING_MODES:
            raise InstructionError(
                with_suggestion(f'unsupported sharing value "{value}"', value, SHARING_MODES, True)
            )
        m["sharing"] = low
    elif key in ("mode", "uid", "gid"):
        try:
            m[key] = parse_go_int(value, 32, 8 if key == "mode" else 10, unsigned=True)
        except ValueError:
            raise InstructionError(f"invalid value {value} for {key}") from None
    elif key == "env":
        m["env"] = value


def _build(m: dict[str, object], text: str, ro_auto: bool, check: bool) -> Mount:
    mtype = str(m["type"])
    if check:
        if mtype not in ("secret", "ssh", "cache"):
            for key in ("mode", "uid", "gid"):
                if m.get(key) is not None:
                    raise InstructionError(f'{key} not allowed for "{mtype}" type mounts')
        if mtype == "secret":
            if m.get("from_"):
                raise InstructionError("secret mount should not have a from")
            if m.get("sharing"):
                raise InstructionError("secret mount should not define sharing")
            if not m.get("source") and not m.get("target") and not m.get("id"):
                raise InstructionError("invalid secret mount. one of source, target required")
            if m.get("source") and m.get("id"):
                raise InstructionError("both source and id can't be set")
        if m.get("sharing") and mtype != "cache":
            raise InstructionError(f"invalid cache sharing set for {mtype} mount")
    if ro_auto:
        m["readonly"] = mtype not in ("cache", "tmpfs")
    known = {k: v for k, v in m.items() if k in Mount.__struct_fields__}
    for key in ("type", "target", "source", "from_", "id", "sharing"):
        if key in known and not isinstance(known[key], str):
            known[key] = str(known[key])
    if not check:
        # Deferred values are still text: keep only what is already typed.
        for key in ("mode", "uid", "gid", "size"):
            if isinstance(known.get(key), str):
                known.pop(key)
        for key in ("readonly", "required"):
            if isinstance(known.get(key), str):
                known.pop(key)
    return Mount(**known, raw=text)  # type: ignore[arg-type]


def parse_device(text: str) -> Device:
    """``RUN --device=vendor.com/class=name[,required[=bool]]``."""
    try:
        fields = csv_fields(text)
    except _CSVError as err:
        raise InstructionError(f"failed to parse csv devices: {err}") from None
    name = ""
    required = False
    for fld in fields:
        key, eq, value = fld.partition("=")
        key = key.lower()
        if not eq:
            if key == "required":
                required = True
            elif not name:
                name = fld
            else:
                raise InstructionError(f"invalid field '{fld}' must be a key=value pair")
            continue
        if key == "name":
            if name:
                raise InstructionError(f"device name already set to {name}")
            name = value
        elif key == "required":
            try:
                required = parse_go_bool(value)
            except ValueError:
                raise InstructionError(f"invalid value for {key}: {value}") from None
        elif not name:
            name = fld
        else:
            raise InstructionError(
                with_suggestion(
                    f"unexpected key '{key}' in '{fld}'", key, ("name", "required"), True
                )
            )
    return Device(name, required)
